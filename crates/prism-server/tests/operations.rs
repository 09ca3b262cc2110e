//! Operations through the real server: /metrics after a real call, the docs
//! and dashboard only name metrics that exist, /healthz and /readyz, and
//! drain on SIGTERM.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{scrape, value, TestServer};
use prism_client::{ClientOptions, MediaClient, Signaling};
use prism_signal::{ClientMessage, ErrorCode, Join, ServerMessage};

fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Metric names mentioned in a file (`prism_...`), minus histogram suffixes.
fn names_in(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("prism_") {
        let start = i + p;
        let prev_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        if prev_ok && end > start + "prism_".len() {
            let mut n = text[start..end].to_owned();
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = n.strip_suffix(suffix) {
                    n = base.to_owned();
                }
            }
            out.insert(n);
        }
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_real_call() {
    let mut srv = TestServer::start(&[]);
    let before = scrape(&srv).await;
    assert_eq!(value(&before, "prism_rooms"), Some(0.0));
    let a = MediaClient::start(ClientOptions::new(&srv.ws_url(), "m", "a", 1))
        .await
        .unwrap();
    let b = MediaClient::start(ClientOptions::new(&srv.ws_url(), "m", "b", 2))
        .await
        .unwrap();
    for c in [&a, &b] {
        c.wait_for(Duration::from_secs(20), "media", |s| {
            s.received.len() == 2 && s.received.values().all(|t| t.packets > 30)
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = scrape(&srv).await;
    assert_eq!(value(&text, "prism_rooms"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "prism_participants{transport=\"websocket\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "prism_published_tracks{kind=\"audio\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "prism_published_tracks{kind=\"video\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "prism_subscriptions{kind=\"video\"}"),
        Some(2.0)
    );
    assert_eq!(value(&text, "prism_peer_connections"), Some(4.0));
    let rtp_in = value(&text, "prism_rtp_packets_total{direction=\"in\"}").unwrap();
    let rtp_out = value(&text, "prism_rtp_packets_total{direction=\"out\"}").unwrap();
    let sent: u32 = [&a, &b]
        .iter()
        .map(|c| c.snapshot().sent_audio + c.snapshot().sent_video)
        .sum();
    assert!(
        rtp_in > 100.0 && rtp_in <= sent as f64,
        "in {rtp_in}, sent {sent}"
    );
    assert!(
        rtp_out > 100.0 && rtp_out <= rtp_in * 1.05,
        "out {rtp_out} vs in {rtp_in}"
    );
    assert!(value(&text, "prism_rtp_bytes_total{direction=\"out\"}").unwrap() > 10_000.0);
    assert!(value(&text, "prism_forwarding_latency_seconds_count").unwrap() >= rtp_out * 0.9);
    assert_eq!(value(&text, "prism_join_duration_seconds_count"), Some(2.0));
    // Each video subscriber started either from a complete cached GOP or
    // on a fresh keyframe it asked the publisher for (both video tracks
    // were first received by a new subscriber).
    let plis_out = value(
        &text,
        "prism_keyframe_requests_total{direction=\"out\",type=\"pli\"}",
    )
    .unwrap();
    let cache_starts = value(&text, "prism_keyframe_cache_starts_total").unwrap();
    assert!(
        plis_out + cache_starts >= 2.0,
        "PLIs out {plis_out}, cache starts {cache_starts}"
    );
    assert!(value(&text, "prism_participants_joined_total").unwrap() >= 2.0);
    assert!(
        value(
            &text,
            "prism_signaling_messages_total{result=\"ok\",type=\"join\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert!(value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    assert_eq!(value(&text, "prism_draining"), Some(0.0));
    // After both leave, gauges drop and counters keep their totals.
    a.kill();
    b.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = scrape(&srv).await;
    assert_eq!(
        value(&after, "prism_participants{transport=\"websocket\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&after, "prism_published_tracks{kind=\"video\"}"),
        Some(0.0)
    );
    assert!(value(&after, "prism_rtp_packets_total{direction=\"in\"}").unwrap() >= rtp_in);
    // promtool, when installed (the test command installs it), agrees.
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
    {
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else if std::env::var("CI").is_ok() {
        panic!("promtool is not installed; ./scripts/test.sh installs it");
    }
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_and_dashboard_metrics_exist() {
    // A fresh server, before any request: dashboards and alerts must see 0,
    // not "no data".
    let srv = TestServer::start(&[]);
    let text = scrape(&srv).await;
    let have = families(&text);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for file in ["docs/metrics.md", "deploy/grafana/prism.json"] {
        let named = names_in(&format!("{root}/{file}"));
        assert!(named.len() > 10, "{file} names metrics");
        let missing: Vec<_> = named.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics /metrics lacks: {missing:?}"
        );
    }
    // And every exported family is documented.
    let doc = names_in(&format!("{root}/docs/metrics.md"));
    let undocumented: Vec<_> = have
        .iter()
        .filter(|n| n.starts_with("prism_") && !doc.contains(*n))
        .collect();
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");

    // Every known label value is exported at 0 from the start, and is the
    // one docs/metrics.md names.
    let doc_text = std::fs::read_to_string(format!("{root}/docs/metrics.md")).unwrap();
    let mut known: Vec<(&str, &str, String)> = Vec::new();
    for r in prism_core::DropReason::ALL {
        known.push(("prism_dropped_packets_total", "reason", r.as_str().into()));
    }
    for r in prism_core::CacheRefusal::ALL {
        known.push((
            "prism_keyframe_cache_refusals_total",
            "reason",
            r.as_str().into(),
        ));
    }
    for r in prism_server::auth::AuthError::REASONS {
        known.push(("prism_auth_failures_total", "reason", (*r).into()));
    }
    for l in prism_server::metrics::LIMITS {
        known.push(("prism_limit_hits_total", "limit", (*l).into()));
    }
    for f in prism_server::media::sdp::SimulcastForm::ALL {
        known.push(("prism_simulcast_narrowed_total", "form", f.as_str().into()));
    }
    for t in ClientMessage::TYPES {
        known.push(("prism_signaling_messages_total", "type", (*t).into()));
    }
    for e in ["whip", "whep"] {
        known.push(("prism_whip_whep_requests_total", "endpoint", e.into()));
    }
    for (family, label, v) in &known {
        let pair = format!("{label}=\"{v}\"");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&pair));
        assert!(
            line.is_some_and(|l| l.ends_with(" 0")),
            "{family}{{{pair}}} at 0 on a fresh server: {line:?}"
        );
        if *family != "prism_signaling_messages_total" {
            assert!(
                doc_text.contains(&format!("`{v}`")),
                "docs/metrics.md names {family} {label} `{v}`"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_on_sigterm() {
    let mut srv = TestServer::start(&["--drain-timeout", "30s"]);
    let http = format!("http://{}", srv.http);
    assert_eq!(
        reqwest::get(format!("{http}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{http}/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let mut o = ClientOptions::new(&srv.ws_url(), "d", "stayer", 1);
    o.publish_video = false;
    let stayer = MediaClient::start(o).await.unwrap();
    stayer
        .wait_for(Duration::from_secs(20), "published", |s| {
            s.published.len() == 1
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    srv.signal("TERM");
    // Readiness fails, the metric says so, new work is refused.
    let mut ready = 200;
    for _ in 0..50 {
        ready = reqwest::get(format!("{http}/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16();
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready, 503);
    assert_eq!(value(&scrape(&srv).await, "prism_draining"), Some(1.0));
    let mut late = Signaling::connect(&srv.ws_url()).await.unwrap();
    late.send(ClientMessage::Join(Join {
        room: "d".into(),
        name: "late".into(),
        token: None,
        identity: None,
    }))
    .await
    .unwrap();
    let m = late.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert!(
        matches!(m.msg, ServerMessage::Error(ref e) if e.code == ErrorCode::Draining),
        "{m:?}"
    );
    let whip = reqwest::Client::new()
        .post(format!("{http}/whip/d"))
        .header("Content-Type", "application/sdp")
        .body(prism_client::sample_offer(false, 2).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(whip.status().as_u16(), 503);
    assert!(whip.headers().contains_key("retry-after"));
    // The connected participant was told.
    stayer
        .wait_for(Duration::from_secs(5), "draining notice", |s| {
            s.messages
                .iter()
                .any(|m| matches!(m, ServerMessage::Draining(d) if d.deadline_secs == 30))
        })
        .await
        .unwrap();
    assert!(srv.is_running(), "still running while a participant stays");
    // It leaves; the server exits on its own.
    stayer
        .command(prism_client::ClientCommand::Leave)
        .await
        .unwrap();
    let code = srv
        .wait_exit(Duration::from_secs(10))
        .expect("prism exited after the last participant left");
    assert!(code.success(), "clean exit: {code:?}");
}

/// The deploy files parse: Prometheus' config passes `promtool check config`,
/// Compose and Kubernetes YAML load and name what they should. (No Docker
/// engine or cluster runs here: see docs/operations.md.)
#[test]
fn deploy_files_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    match std::process::Command::new("promtool")
        .args([
            "check",
            "config",
            &format!("{root}/deploy/prometheus/prometheus.yml"),
        ])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) if std::env::var("CI").is_err() => eprintln!("promtool not installed; skipped"),
        Err(e) => panic!("promtool: {e} (./scripts/test.sh installs it)"),
    }
    // Python's YAML parser, checking structure as it goes.
    let script = r#"
import sys, yaml, json
root = sys.argv[1]
compose = yaml.safe_load(open(root + "/deploy/compose.yaml"))
assert set(compose["services"]) == {"prism", "prometheus", "grafana"}, compose["services"].keys()
docs = [d for d in yaml.safe_load_all(open(root + "/deploy/kubernetes/prism.yaml")) if d]
kinds = {d["kind"] for d in docs}
assert {"Namespace", "ConfigMap", "Secret", "DaemonSet", "Service"} <= kinds, kinds
ds = next(d for d in docs if d["kind"] == "DaemonSet")
spec = ds["spec"]["template"]["spec"]
assert spec["hostNetwork"] is True
c = spec["containers"][0]
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert spec["terminationGracePeriodSeconds"] > 60
for f in ["datasources/prometheus.yml", "dashboards/prism.yml"]:
    yaml.safe_load(open(root + "/deploy/grafana/provisioning/" + f))
json.load(open(root + "/deploy/grafana/prism.json"))
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, root])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_tells_who_is_left() {
    let mut srv = TestServer::start(&["--drain-timeout", "2s"]);
    let mut sig = Signaling::connect(&srv.ws_url()).await.unwrap();
    sig.send(ClientMessage::Join(Join {
        room: "s".into(),
        name: "stays".into(),
        token: None,
        identity: None,
    }))
    .await
    .unwrap();
    let m = sig.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert!(matches!(m.msg, ServerMessage::Joined(_)), "{m:?}");
    srv.signal("TERM");
    // Draining, then at the deadline `left` with the reason, then the close.
    let mut seen = Vec::new();
    for _ in 0..10 {
        match sig.recv_timeout(Duration::from_secs(10)).await {
            Ok(m) => {
                let end = matches!(m.msg, ServerMessage::Left(_));
                seen.push(m.msg);
                if end {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    assert!(
        matches!(seen.first(), Some(ServerMessage::Draining(d)) if d.deadline_secs == 2),
        "{seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(ServerMessage::Left(l)) if l.reason == prism_signal::LeaveReason::ServerShutdown),
        "{seen:?}"
    );
    let after = sig.recv_timeout(Duration::from_secs(5)).await;
    assert!(
        after
            .as_ref()
            .is_err_and(|e| e.to_string().contains("closed")),
        "the socket closes after `left`: {after:?}"
    );
    let code = srv
        .wait_exit(Duration::from_secs(10))
        .expect("prism exited after the drain timeout");
    assert!(code.success(), "clean exit: {code:?}");
}
