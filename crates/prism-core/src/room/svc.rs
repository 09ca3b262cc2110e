//! What a room learns about a spatially scalable track (VP9 k-SVC, or AV1
//! with the dependency descriptor: every spatial layer in one SSRC) from
//! its packets: how many spatial layers it has (VP9: the highest SID seen,
//! or the count its keyframes' scalability structure announces; AV1: the
//! spatial layers of the latest template structure), their picture sizes
//! (from those structures), and the bytes each layer sends, so the
//! allocator sees SVC layers the way it sees simulcast layers.
//!
//! A track is SVC once it showed more than one spatial layer; until then
//! its packets take the path of a track without layers.

use crate::allocator::{Bitrate, LayerInfo};
use crate::av1_dd::{DdError, DdTracker, DependencyDescriptor};
use crate::forwarder::{PacketMeta, SvcFrame};
use crate::keyframe::{is_keyframe_start, VideoCodec};
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
    /// AV1: the publisher's id for the dependency descriptor extension,
    /// and the template structure its keyframes attach (boxed once: a few
    /// kilobytes of fixed-size arrays).
    dd_ext_id: Option<u8>,
    dd: Option<Box<DdTracker>>,
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

    /// Notes one VP9 packet's layer and bytes.
    pub(super) fn on_packet(&mut self, d: &Vp9Descriptor, payload_len: usize) {
        self.spatial = self.spatial.max(d.spatial_layers_seen());
        self.count_bytes(d.sid(), payload_len);
        if let Some(sizes) = d.ss.and_then(|ss| ss.sizes) {
            for (o, (w, h)) in self.sizes.iter_mut().zip(sizes) {
                *o = (u32::from(w), u32::from(h));
            }
        }
    }

    fn count_bytes(&mut self, sid: u8, payload_len: usize) {
        if let Some(bytes) = self.bytes.get_mut(usize::from(sid)) {
            *bytes += payload_len as u64;
        }
    }

    /// The publisher negotiated the dependency descriptor under `id` (an
    /// AV1 track: its layers come from that extension).
    pub(super) fn set_dd_ext_id(&mut self, id: Option<u8>) {
        self.dd_ext_id = id;
        if id.is_some() && self.dd.is_none() {
            self.dd = Some(Box::default());
        }
    }

    /// The publisher's dependency descriptor id, if negotiated.
    pub(super) fn dd_ext_id(&self) -> Option<u8> {
        self.dd_ext_id
    }

    /// Reads one AV1 packet's dependency descriptor against the track's
    /// structure (keeping a structure it attaches), and notes its layer
    /// and bytes. The spatial layers are the latest structure's: a
    /// publisher that drops to one spatial layer sends a new structure at
    /// its keyframe.
    pub(super) fn on_av1(
        &mut self,
        ext: &[u8],
        payload_len: usize,
    ) -> Result<DependencyDescriptor, DdError> {
        let Some(dd) = self.dd.as_deref_mut() else {
            return Err(DdError::UnknownTemplate);
        };
        let d = dd.on_packet(ext)?;
        let s = dd.structure();
        self.spatial = s.spatial_layers;
        if d.structure_attached {
            if let Some(res) = s.resolutions {
                for (o, r) in self.sizes.iter_mut().zip(res) {
                    *o = r;
                }
            }
        }
        self.count_bytes(d.spatial_id, payload_len);
        Ok(d)
    }

    /// Reads a descriptor of a packet from the history (a cache start)
    /// without keeping what it attaches.
    pub(super) fn peek_av1(&mut self, ext: &[u8]) -> Result<DependencyDescriptor, DdError> {
        match self.dd.as_deref_mut() {
            Some(dd) => dd.peek(ext),
            None => Err(DdError::UnknownTemplate),
        }
    }

    /// An AV1 SVC track's decode targets per layer (None otherwise).
    pub(super) fn dd_targets(&self) -> Option<crate::av1_dd::DdTargets> {
        match self.active() {
            true => self.dd.as_deref().map(DdTracker::targets),
            false => None,
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

/// How the legs of a track decide on one packet.
#[derive(Debug, Clone, Copy)]
pub(super) enum SvcPacket {
    /// Not an SVC track: by the packet's (simulcast) layer.
    No,
    /// An SVC track: by the packet's place in the stream (from its VP9
    /// or AV1 dependency descriptor).
    Layers(SvcFrame),
    /// An SVC track, and the packet has no descriptor (padding, or one
    /// that does not parse).
    Unparsed,
}

impl SvcPacket {
    /// The first packet of a picture (or not an SVC track: `None`).
    pub(super) fn picture_start(&self) -> Option<bool> {
        match self {
            SvcPacket::No => None,
            SvcPacket::Layers(f) => Some(f.picture_start()),
            SvcPacket::Unparsed => Some(false),
        }
    }
}

/// The extension `id` of a packet, borrowed.
pub(super) fn extension(p: &rtc::rtp::Packet, id: u8) -> Option<&[u8]> {
    if !p.header.extension {
        return None;
    }
    p.header
        .extensions
        .iter()
        .find(|e| e.id == id)
        .map(|e| &e.payload[..])
}

/// A VP9 packet's descriptor, or an AV1 packet's dependency descriptor,
/// noted in the track's SVC layers. Once per packet, not per leg.
pub(super) fn svc_descriptor(
    svc: &mut SvcLayers,
    codec: VideoCodec,
    meta: &PacketMeta,
    payload: &[u8],
    dd: Option<&[u8]>,
    keyframe: bool,
) -> SvcPacket {
    if codec == VideoCodec::Av1 && svc.dd_ext_id().is_some() {
        let Some(ext) = dd else {
            // No descriptor on a packet of an SVC track (padding, or a
            // publisher that stopped sending it): no leg can place it.
            return match svc.active() {
                true => SvcPacket::Unparsed,
                false => SvcPacket::No,
            };
        };
        return match svc.on_av1(ext, meta.payload_len) {
            Ok(d) => match (svc.active(), svc.dd.as_deref()) {
                (true, Some(dd)) => SvcPacket::Layers(SvcFrame::from_av1(&d, dd, keyframe)),
                _ => SvcPacket::No,
            },
            Err(_) if svc.active() => SvcPacket::Unparsed,
            // Before a structure arrived (the keyframe's first packet was
            // lost, or the publisher never sends one) the track has no
            // layers yet and its packets pass as they came.
            Err(_) => SvcPacket::No,
        };
    }
    if codec != VideoCodec::Vp9 {
        return SvcPacket::No;
    }
    match Vp9Descriptor::parse(payload) {
        Ok(d) => {
            svc.on_packet(&d, meta.payload_len);
            match svc.active() {
                true => SvcPacket::Layers(SvcFrame::from_vp9(&d)),
                false => SvcPacket::No,
            }
        }
        Err(_) if svc.active() => SvcPacket::Unparsed,
        // Before the track shows layers a bad payload is forwarded as it
        // came (the subscriber's decoder judges it), as for any codec.
        Err(_) => SvcPacket::No,
    }
}

/// A cached packet's place in an SVC track (read again, keeping nothing:
/// its structure, if it attaches one, is already the track's).
pub(super) fn cached_svc_frame(
    svc: &mut SvcLayers,
    codec: VideoCodec,
    p: &rtc::rtp::Packet,
    first: bool,
) -> SvcPacket {
    if codec == VideoCodec::Av1 {
        let dd = svc.dd_ext_id().and_then(|id| extension(p, id));
        let keyframe = first && is_keyframe_start(codec, &p.payload);
        let read = dd.map(|ext| svc.peek_av1(ext));
        return match (read, svc.dd.as_deref()) {
            (Some(Ok(d)), Some(dd)) => SvcPacket::Layers(SvcFrame::from_av1(&d, dd, keyframe)),
            _ => SvcPacket::Unparsed,
        };
    }
    match Vp9Descriptor::parse(&p.payload) {
        Ok(d) => SvcPacket::Layers(SvcFrame::from_vp9(&d)),
        Err(_) => SvcPacket::Unparsed,
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
