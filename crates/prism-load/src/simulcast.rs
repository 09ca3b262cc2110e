//! Simulcast in a run: the weak subscribers' bitrate flag, and the report's
//! per-layer rows.

use std::collections::BTreeMap;

use crate::report::LayerRow;
use crate::Member;

/// `300k`, `1.5M`, `800000` → bits per second.
pub fn parse_bitrate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, scale) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a bitrate such as 300k, 1.5M or 800000"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?}: the bitrate must be positive"));
    }
    Ok((v * scale).round() as u64)
}

/// Per simulcast layer and group of receivers (weak, others; or all): the
/// mean bitrate a receiver got of it over the hold, and on how many
/// received tracks it is the current layer at the end.
pub fn layer_rows(
    members: &[Member],
    before: &[BTreeMap<u8, (u64, u16, u16)>],
    after: &[BTreeMap<u8, (u64, u16, u16)>],
    hold_secs: f64,
) -> Vec<LayerRow> {
    let any_weak = members.iter().any(|m| m.spec.weak);
    let mut rows = Vec::new();
    for (group, weak) in [("all", None), ("weak", Some(true)), ("others", Some(false))] {
        if any_weak != weak.is_some() {
            continue;
        }
        let who: Vec<usize> = (0..members.len())
            .filter(|i| !members[*i].spec.sources.is_empty())
            .filter(|i| weak.is_none_or(|w| members[*i].spec.weak == w))
            .collect();
        let mut per_layer: BTreeMap<u8, (u64, u16, u16, usize)> = BTreeMap::new();
        for &i in &who {
            for (layer, (bytes, w, h)) in &after[i] {
                let was = before[i].get(layer).map_or(0, |b| b.0);
                let e = per_layer.entry(*layer).or_insert((0, *w, *h, 0));
                e.0 += bytes - was;
            }
            for layer in members[i].current_layers() {
                if let Some(e) = per_layer.get_mut(&layer) {
                    e.3 += 1;
                }
            }
        }
        for (layer, (bytes, width, height, on)) in per_layer {
            rows.push(LayerRow {
                group: group.to_owned(),
                layer,
                width,
                height,
                kbps_per_receiver: bytes as f64 * 8.0
                    / 1000.0
                    / hold_secs.max(1e-3)
                    / who.len().max(1) as f64,
                tracks_on: on,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::parse_bitrate;

    #[test]
    fn bitrates_parse_with_suffixes() {
        for (text, bps) in [("300k", 300_000), ("1.5M", 1_500_000), ("800000", 800_000)] {
            assert_eq!(parse_bitrate(text), Ok(bps), "{text}");
        }
        for bad in ["", "k", "-3k", "fast", "0"] {
            assert!(parse_bitrate(bad).is_err(), "{bad}");
        }
    }
}
