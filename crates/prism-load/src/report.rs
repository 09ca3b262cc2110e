//! The run's figures: a table for people, JSON for `compare` and scripts.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub target: String,
    pub shape: String,
    /// Simulated participants (publishers and viewers).
    pub members: usize,
    /// Members that receive media, and how many of them did.
    pub receivers: usize,
    pub receiving: usize,
    /// Server-side peer connections carrying media to receivers (Prism: one
    /// per receiver; Janus: one per receiver and source).
    pub subscriber_legs: usize,
    pub join_failures: usize,
    /// Join to first media packet, over receivers.
    pub join_ms_p50: f64,
    pub join_ms_p99: f64,
    pub hold_secs: f64,
    /// Media packets the receivers got during the hold.
    pub egress_packets: u64,
    pub egress_pps: f64,
    /// Received ÷ what the receivers' sources sent, during the hold.
    pub delivered_ratio: f64,
    /// Copies of packets already received (retransmissions that crossed).
    #[serde(default)]
    pub duplicate_packets: u64,
    /// Publisher's send time → receiver's receipt (one clock), µs.
    pub latency_us_p50: u64,
    pub latency_us_p95: u64,
    pub latency_us_p99: u64,
    pub latency_us_max: u64,
    pub server_cpu_secs: f64,
    /// Of one core.
    pub server_cpu_pct: f64,
    pub server_cpu_us_per_egress_packet: f64,
    pub server_cpu_pct_per_subscriber_leg: f64,
    pub server_rss_before_mib: f64,
    pub server_rss_hold_mib: f64,
    pub server_rss_kib_per_subscriber_leg: f64,
    /// The load generator's own CPU (of one core) and cost per packet it
    /// received: its ceiling is about 1e6 / this many packets per core.
    pub load_cpu_pct: f64,
    pub load_cpu_us_per_packet: f64,
    /// Simulcast (`--simulcast`): what the receivers got of each layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRow>,
}

/// One simulcast layer, as a group of receivers got it during the hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRow {
    /// `all`, or `weak` / `others` with `--weak-subscribers`.
    pub group: String,
    /// 0 = lowest.
    pub layer: u8,
    /// The picture size the layer's payloads claim.
    pub width: u16,
    pub height: u16,
    /// Bits of this layer received per second, averaged over the group's
    /// receivers, kbit/s.
    pub kbps_per_receiver: f64,
    /// Received tracks whose current layer this is at the end of the hold.
    pub tracks_on: usize,
}

/// (label, value formatter) rows shared by `table` and `compare`.
type Row = (
    &'static str,
    fn(&Report) -> String,
    Option<fn(&Report) -> f64>,
);

fn rows() -> Vec<Row> {
    vec![
        ("shape", |r| r.shape.clone(), None),
        (
            "receiving / receivers",
            |r| format!("{}/{}", r.receiving, r.receivers),
            None,
        ),
        ("subscriber legs", |r| r.subscriber_legs.to_string(), None),
        ("join failures", |r| r.join_failures.to_string(), None),
        (
            "join → first media p50 (ms)",
            |r| format!("{:.1}", r.join_ms_p50),
            Some(|r| r.join_ms_p50),
        ),
        (
            "join → first media p99 (ms)",
            |r| format!("{:.1}", r.join_ms_p99),
            Some(|r| r.join_ms_p99),
        ),
        ("hold (s)", |r| format!("{:.1}", r.hold_secs), None),
        (
            "egress packets/s",
            |r| format!("{:.0}", r.egress_pps),
            Some(|r| r.egress_pps),
        ),
        ("delivered", |r| format!("{:.4}", r.delivered_ratio), None),
        ("duplicates", |r| r.duplicate_packets.to_string(), None),
        (
            "latency p50 (µs)",
            |r| r.latency_us_p50.to_string(),
            Some(|r| r.latency_us_p50 as f64),
        ),
        (
            "latency p95 (µs)",
            |r| r.latency_us_p95.to_string(),
            Some(|r| r.latency_us_p95 as f64),
        ),
        (
            "latency p99 (µs)",
            |r| r.latency_us_p99.to_string(),
            Some(|r| r.latency_us_p99 as f64),
        ),
        ("latency max (µs)", |r| r.latency_us_max.to_string(), None),
        (
            "server CPU (% of a core)",
            |r| format!("{:.1}", r.server_cpu_pct),
            Some(|r| r.server_cpu_pct),
        ),
        (
            "server CPU per egress packet (µs)",
            |r| format!("{:.2}", r.server_cpu_us_per_egress_packet),
            Some(|r| r.server_cpu_us_per_egress_packet),
        ),
        (
            "server CPU per subscriber leg (% of a core)",
            |r| format!("{:.3}", r.server_cpu_pct_per_subscriber_leg),
            Some(|r| r.server_cpu_pct_per_subscriber_leg),
        ),
        (
            "server RSS before → hold (MiB)",
            |r| {
                format!(
                    "{:.1} → {:.1}",
                    r.server_rss_before_mib, r.server_rss_hold_mib
                )
            },
            None,
        ),
        (
            "server RSS per subscriber leg (KiB)",
            |r| format!("{:.0}", r.server_rss_kib_per_subscriber_leg),
            Some(|r| r.server_rss_kib_per_subscriber_leg),
        ),
        (
            "load CPU (% of a core)",
            |r| format!("{:.1}", r.load_cpu_pct),
            None,
        ),
        (
            "load CPU per packet (µs)",
            |r| format!("{:.2}", r.load_cpu_us_per_packet),
            None,
        ),
        (
            "load ceiling (packets/s per core)",
            |r| {
                if r.load_cpu_us_per_packet > 0.0 {
                    format!("{:.0}", 1e6 / r.load_cpu_us_per_packet)
                } else {
                    "-".into()
                }
            },
            None,
        ),
    ]
}

pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} | |\n|---|---|", r.label);
    for (name, f, _) in rows() {
        let _ = writeln!(out, "| {name} | {} |", f(r));
    }
    if !r.layers.is_empty() {
        let _ = writeln!(
            out,
            "\n| receivers | layer | size | kbit/s per receiver | tracks on it at the end |\n|---|---|---|---|---|"
        );
        for l in &r.layers {
            let _ = writeln!(
                out,
                "| {} | {} | {}×{} | {:.0} | {} |",
                l.group, l.layer, l.width, l.height, l.kbps_per_receiver, l.tracks_on
            );
        }
    }
    if r.load_cpu_pct > 85.0 {
        let _ = writeln!(
            out,
            "\nwarning: the load generator used {:.0}% of a core: the figures may be bounded by it, not the server",
            r.load_cpu_pct
        );
    }
    out
}

/// Reports side by side; numeric rows also as a ratio to the first report.
pub fn compare(rs: &[Report]) -> String {
    let mut out = String::new();
    if rs.is_empty() {
        return out;
    }
    let _ = write!(out, "| |");
    for r in rs {
        let _ = write!(out, " {} |", r.label);
    }
    for r in &rs[1..] {
        let _ = write!(out, " {} ÷ {} |", r.label, rs[0].label);
    }
    let _ = write!(out, "\n|---|");
    for _ in 0..(2 * rs.len() - 1) {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for (name, f, num) in rows() {
        let _ = write!(out, "| {name} |");
        for r in rs {
            let _ = write!(out, " {} |", f(r));
        }
        for r in &rs[1..] {
            match num {
                Some(n) if n(&rs[0]) > 0.0 => {
                    let _ = write!(out, " {:.2}× |", n(r) / n(&rs[0]));
                }
                _ => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Each numeric field's median over `rs` (the upper one of an even count);
/// text fields from the first.
pub fn median(rs: &[Report]) -> anyhow::Result<Report> {
    let values: Vec<serde_json::Value> = rs
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let Some(serde_json::Value::Object(first)) = values.first() else {
        anyhow::bail!("no reports");
    };
    let mut out = first.clone();
    for (k, v) in out.iter_mut() {
        if !v.is_number() {
            continue;
        }
        let mut xs: Vec<f64> = values
            .iter()
            .filter_map(|r| r.get(k).and_then(|x| x.as_f64()))
            .collect();
        xs.sort_by(f64::total_cmp);
        let m = xs[xs.len() / 2];
        *v = if v.is_u64() {
            serde_json::json!(m.round() as u64)
        } else {
            serde_json::json!(m)
        };
    }
    if let Some(l) = out.get_mut("label") {
        *l = serde_json::json!(format!(
            "{} (median of {})",
            first["label"].as_str().unwrap_or(""),
            rs.len()
        ));
    }
    Ok(serde_json::from_value(serde_json::Value::Object(out))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(label: &str, us: f64) -> Report {
        Report {
            label: label.into(),
            target: label.into(),
            shape: "broadcast 1->2".into(),
            members: 3,
            receivers: 2,
            receiving: 2,
            subscriber_legs: 2,
            join_failures: 0,
            join_ms_p50: 50.0,
            join_ms_p99: 80.0,
            hold_secs: 10.0,
            egress_packets: 1000,
            egress_pps: 100.0,
            delivered_ratio: 1.0,
            duplicate_packets: 0,
            latency_us_p50: 300,
            latency_us_p95: 500,
            latency_us_p99: 800,
            latency_us_max: 900,
            server_cpu_secs: 1.0,
            server_cpu_pct: 10.0,
            server_cpu_us_per_egress_packet: us,
            server_cpu_pct_per_subscriber_leg: 5.0,
            server_rss_before_mib: 10.0,
            server_rss_hold_mib: 11.0,
            server_rss_kib_per_subscriber_leg: 512.0,
            load_cpu_pct: 20.0,
            load_cpu_us_per_packet: 4.0,
            layers: Vec::new(),
        }
    }

    #[test]
    fn compare_prints_ratios_to_the_first() {
        let t = compare(&[sample("prism", 2.0), sample("janus", 20.0)]);
        assert!(
            t.contains("| server CPU per egress packet (µs) | 2.00 | 20.00 | 10.00× |"),
            "{t}"
        );
        let row = t.lines().find(|l| l.starts_with("| shape")).unwrap();
        assert_eq!(row, "| shape | broadcast 1->2 | broadcast 1->2 | |");
    }

    #[test]
    fn median_is_per_field() {
        let m = median(&[sample("a", 3.0), sample("a", 1.0), sample("a", 2.0)]).unwrap();
        assert_eq!(m.server_cpu_us_per_egress_packet, 2.0);
        assert_eq!(m.label, "a (median of 3)");
        assert_eq!(m.egress_packets, 1000);
    }

    #[test]
    fn json_round_trips() {
        let r = sample("prism", 2.5);
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.server_cpu_us_per_egress_packet, 2.5);
        assert!(table(&back).contains("| latency p99 (µs) | 800 |"));
    }

    #[test]
    fn layer_rows_are_tabled_and_round_trip() {
        let mut r = sample("prism", 2.5);
        r.layers = vec![LayerRow {
            group: "weak".into(),
            layer: 0,
            width: 320,
            height: 180,
            kbps_per_receiver: 151.2,
            tracks_on: 3,
        }];
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.layers, r.layers);
        assert!(
            table(&back).contains("| weak | 0 | 320×180 | 151 | 3 |"),
            "{}",
            table(&back)
        );
        // Reports from before simulcast still read.
        let mut v = serde_json::to_value(sample("old", 1.0)).unwrap();
        v.as_object_mut().unwrap().remove("layers");
        let old: Report = serde_json::from_value(v).unwrap();
        assert!(old.layers.is_empty());
    }
}
