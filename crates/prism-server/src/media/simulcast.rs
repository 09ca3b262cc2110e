//! Which of a publisher's simulcast encodings is which layer.
//!
//! The offer lists its encodings' rids (`a=simulcast:send`) in the order
//! the publisher chose, which says nothing about their size. The layers are
//! ordered lowest first by the sizes the publisher declared with its offer
//! (`tracks[].layers`, the web client and the Rust client do), else by the
//! usual rid names (`q`/`h`/`f`, `l`/`m`/`h`, `low`/`mid`/`high`), else in
//! the offer's order. A WHIP publisher cannot declare sizes: its layers are
//! ordered by name, and their sizes stay unknown (0) until measured.

use prism_signal::LayerDecl;

/// One layer as the server keeps it: its rid and declared picture size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub rid: String,
    pub width: u32,
    pub height: u32,
}

/// The layers of a simulcast m-section, lowest first, from its rids (in the
/// offer's order) and what the publisher declared. At most `max`.
pub fn order_layers(rids: &[String], declared: &[LayerDecl], max: usize) -> Vec<Layer> {
    let mut layers: Vec<Layer> = rids
        .iter()
        .map(|rid| {
            let d = declared.iter().find(|d| &d.rid == rid);
            Layer {
                rid: rid.clone(),
                width: d.map_or(0, |d| d.width),
                height: d.map_or(0, |d| d.height),
            }
        })
        .collect();
    let all_declared = layers.iter().all(|l| l.width > 0 && l.height > 0);
    if all_declared {
        layers.sort_by_key(|l| u64::from(l.width) * u64::from(l.height));
    } else if let Some(rank) = name_ranks(rids) {
        layers.sort_by_key(|l| rank(&l.rid));
    }
    layers.truncate(max);
    layers
}

/// A ranking by the usual rid names, if every rid is one of a known set.
fn name_ranks(rids: &[String]) -> Option<fn(&str) -> usize> {
    const SETS: [fn(&str) -> Option<usize>; 3] = [
        |r| ["q", "h", "f"].iter().position(|x| *x == r),
        |r| ["l", "m", "h"].iter().position(|x| *x == r),
        |r| ["low", "mid", "high"].iter().position(|x| *x == r),
    ];
    const RANKS: [fn(&str) -> usize; 3] = [
        |r| SETS[0](r).unwrap_or(usize::MAX),
        |r| SETS[1](r).unwrap_or(usize::MAX),
        |r| SETS[2](r).unwrap_or(usize::MAX),
    ];
    (0..SETS.len())
        .find(|&i| rids.iter().all(|r| SETS[i](r).is_some()))
        .map(|i| RANKS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn decl(rid: &str, w: u32, h: u32) -> LayerDecl {
        LayerDecl {
            rid: rid.into(),
            width: w,
            height: h,
            max_bitrate: None,
        }
    }

    fn order(r: &[&str], d: &[LayerDecl]) -> Vec<String> {
        order_layers(&rids(r), d, 3)
            .into_iter()
            .map(|l| l.rid)
            .collect()
    }

    #[test]
    fn declared_sizes_decide() {
        let d = [
            decl("a", 1280, 720),
            decl("b", 320, 180),
            decl("c", 640, 360),
        ];
        assert_eq!(order(&["a", "b", "c"], &d), ["b", "c", "a"]);
        let l = order_layers(&rids(&["a", "b", "c"]), &d, 3);
        assert_eq!((l[0].width, l[0].height), (320, 180));
    }

    #[test]
    fn usual_names_decide_without_sizes() {
        assert_eq!(order(&["f", "h", "q"], &[]), ["q", "h", "f"]);
        assert_eq!(order(&["h", "m", "l"], &[]), ["l", "m", "h"]);
        assert_eq!(order(&["high", "low"], &[]), ["low", "high"]);
        // "h" alone is ambiguous: the set decides (q/h/f first).
        assert_eq!(order(&["h", "q"], &[]), ["q", "h"]);
    }

    #[test]
    fn otherwise_the_offer_order_and_at_most_max() {
        assert_eq!(order(&["x", "y", "z"], &[]), ["x", "y", "z"]);
        let l = order_layers(&rids(&["1", "2", "3", "4"]), &[], 3);
        assert_eq!(l.len(), 3);
        // A partial declaration does not count as sizes.
        assert_eq!(order(&["f", "q"], &[decl("f", 1280, 720)]), ["q", "f"]);
    }
}
