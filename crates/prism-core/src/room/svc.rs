//! What a room learns about a spatially scalable track (VP9 k-SVC: every
//! spatial layer in one SSRC) from its packets: how many spatial layers it
//! has (the highest SID seen, or the count its keyframes' scalability
//! structure announces), their picture sizes (from that structure), and
//! the bytes each layer sends, so the allocator sees SVC layers the way it
//! sees simulcast layers.
//!
//! A track is SVC once it showed more than one spatial layer; until then
//! its packets take the path of a track without layers.

use crate::allocator::{Bitrate, LayerInfo};
use crate::layer::MAX_SPATIAL_LAYERS;
use crate::vp9::Vp9Descriptor;

/// A track's spatial layers as its packets show them.
#[derive(Debug, Clone, Default)]
pub(super) struct SvcLayers {
    /// Spatial layers seen (at most [`MAX_SPATIAL_LAYERS`] are used).
    spatial: u8,
    /// Picture sizes from the latest scalability structure, lowest first
    /// ((0, 0): unknown).
    sizes: [(u32, u32); MAX_SPATIAL_LAYERS],
    /// Payload bytes per spatial layer since the last measurement, and the
    /// bitrate measured (kept while a layer is silent).
    bytes: [u64; MAX_SPATIAL_LAYERS],
    bitrate: [Bitrate; MAX_SPATIAL_LAYERS],
}

impl SvcLayers {
    /// The track sends more than one spatial layer in its stream.
    pub(super) fn active(&self) -> bool {
        self.spatial > 1
    }

    /// How many spatial layers the track has (0 before any was seen).
    pub(super) fn count(&self) -> usize {
        usize::from(self.spatial).min(MAX_SPATIAL_LAYERS)
    }

    /// Notes one packet's layer and bytes.
    pub(super) fn on_packet(&mut self, d: &Vp9Descriptor, payload_len: usize) {
        self.spatial = self.spatial.max(d.spatial_layers_seen());
        if let Some(bytes) = self.bytes.get_mut(usize::from(d.sid())) {
            *bytes += payload_len as u64;
        }
        if let Some(sizes) = d.ss.and_then(|ss| ss.sizes) {
            for (o, (w, h)) in self.sizes.iter_mut().zip(sizes) {
                *o = (u32::from(w), u32::from(h));
            }
        }
    }

    /// Turns the bytes counted over the last `ms` milliseconds into each
    /// layer's bitrate.
    pub(super) fn measure(&mut self, ms: u64) {
        for (b, rate) in self.bytes.iter_mut().zip(&mut self.bitrate) {
            if *b > 0 {
                *rate = Bitrate(*b * 8 * 1000 / ms.max(1));
            }
            *b = 0;
        }
    }

    /// The layers as the allocator sees them, lowest first. Forwarding
    /// layer S sends every layer up to S, so each costs the sum of the
    /// bitrates up to it.
    pub(super) fn infos(&self) -> [Option<LayerInfo>; MAX_SPATIAL_LAYERS] {
        let mut out = [None; MAX_SPATIAL_LAYERS];
        let mut sum = 0u64;
        for (i, o) in out.iter_mut().enumerate().take(self.count()) {
            sum += self.bitrate[i].bps();
            *o = Some(LayerInfo {
                bitrate: Bitrate(sum),
                width: self.sizes[i].0,
                height: self.sizes[i].1,
                base: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vp9::tests::svc_packet;

    fn parse(b: &[u8]) -> Vp9Descriptor {
        Vp9Descriptor::parse(b).expect("valid")
    }

    #[test]
    fn learns_layers_sizes_and_cumulative_bitrates() {
        let mut s = SvcLayers::default();
        assert!(!s.active());
        s.on_packet(
            &parse(&svc_packet(1, 0, 0, false, true, true, true, None)),
            100,
        );
        assert!(!s.active(), "one layer seen: not SVC yet");
        assert_eq!(s.infos().iter().flatten().count(), 1);
        let ss = [(320, 180), (640, 360), (1280, 720)];
        s.on_packet(
            &parse(&svc_packet(2, 0, 0, false, true, false, false, Some(&ss))),
            1000,
        );
        assert!(s.active(), "the SS announces three");
        s.on_packet(
            &parse(&svc_packet(2, 1, 0, false, true, true, false, None)),
            2000,
        );
        s.on_packet(
            &parse(&svc_packet(2, 2, 0, false, true, true, false, None)),
            4000,
        );
        // Layer 2 silent from here: it keeps its last bitrate.
        s.measure(1000);
        let i = s.infos();
        let bps: Vec<u64> = i.iter().flatten().map(|l| l.bitrate.bps()).collect();
        assert_eq!(bps, [8_800, 24_800, 56_800]);
        let sizes: Vec<(u32, u32)> = i.iter().flatten().map(|l| (l.width, l.height)).collect();
        assert_eq!(sizes, [(320, 180), (640, 360), (1280, 720)]);
        s.on_packet(
            &parse(&svc_packet(3, 0, 0, false, true, true, true, None)),
            500,
        );
        s.measure(500);
        assert_eq!(
            s.infos()[2].map(|l| l.bitrate.bps()),
            Some(8_000 + 16_000 + 32_000)
        );
    }

    #[test]
    fn a_sid_above_the_layers_kept_counts_as_seen_not_as_bytes() {
        let mut s = SvcLayers::default();
        s.on_packet(
            &parse(&svc_packet(1, 5, 0, false, true, true, true, None)),
            100,
        );
        assert_eq!(s.count(), MAX_SPATIAL_LAYERS);
        s.measure(1000);
        assert!(s.infos().iter().flatten().all(|l| l.bitrate.bps() == 0));
    }
}
