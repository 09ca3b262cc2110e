//! The per-packet decision for one subscriber leg of one track.
//!
//! [`Forwarder::decide`] looks at a packet's header fields and returns a
//! [`Forward`] value: send with these rewritten fields, or drop for this
//! reason. It never touches the packet or the network; the server applies the
//! decision. No allocation happens here.
//!
//! A simulcast leg ([`Forwarder::decide_layer`]) sees the packets of every
//! layer of its track and forwards one layer at a time (see
//! [`crate::layer`]): a switch restarts the leg's sequence numbers and
//! timestamps so they continue with no gap and no jump, and VP8 descriptors
//! are renumbered ([`crate::vp8`]) for the same reason. A track without
//! simulcast is layer 0 only ([`Forwarder::decide`]).

use std::time::{Duration, Instant};

use crate::av1_dd::DdRewrite;
use crate::extmap::ExtensionMap;
use crate::history::{NackLookup, SentMap};
use crate::layer::{LayerSelector, SpatialLayer, Step, Target};
use crate::seq::{SeqOutcome, SeqRewriter};
use crate::timestamp::TsRewriter;
use crate::vp8::{Vp8Descriptor, Vp8Munger, Vp8Rewrite};

/// The header fields of an incoming RTP packet the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// Payload bytes after removing RTP padding.
    pub payload_len: usize,
}

impl PacketMeta {
    /// The fields of a parsed packet (its payload already excludes padding).
    #[inline]
    pub fn of(p: &rtc::rtp::Packet) -> Self {
        PacketMeta {
            ssrc: p.header.ssrc,
            seq: p.header.sequence_number,
            timestamp: p.header.timestamp,
            payload_type: p.header.payload_type,
            marker: p.header.marker,
            payload_len: p.payload.len(),
        }
    }
}

crate::labelled_enum! {
    /// Why a packet was dropped: for one subscriber (the forwarder's
    /// decisions) or before any subscriber saw it (the server's). Becomes
    /// the `reason` label of `prism_dropped_packets_total`.
    #[non_exhaustive]
    pub enum DropReason {
        /// The publisher muted the track.
        Muted => "muted",
        /// The subscriber leg is not negotiated yet, or paused.
        Paused => "paused",
        /// A padding-only packet (bandwidth probe): nothing for the subscriber.
        Padding => "padding",
        /// The payload type was not negotiated on the publish leg for this track,
        /// or the subscriber did not negotiate its codec.
        UnknownPayloadType => "unknown_payload_type",
        /// Too late to place in the subscriber's sequence.
        TooOld => "too_old",
        /// Video for a subscriber that has not had a keyframe yet: it could not
        /// decode it.
        WaitingForKeyframe => "waiting_for_keyframe",
        /// A packet of a VP9 SVC track whose payload descriptor does not
        /// parse: no leg can tell which layer it belongs to.
        BadPayload => "bad_payload",
        /// A publisher's packet whose SSRC belongs to none of its published
        /// tracks (a stream the negotiation did not announce).
        UnknownSsrc => "unknown_ssrc",
        /// A publisher's packet that arrived after its room closed (its peer
        /// closes in the same turn).
        RoomClosed => "room_closed",
        /// The subscriber's sender was removed between the forwarding decision
        /// and the send (an unsubscribe or leave in the same turn).
        SenderGone => "sender_gone",
        /// A header extension could not be written under the subscriber's id
        /// (the packet would have reached the wrong m-section or none).
        ExtensionRewrite => "extension_rewrite",
        /// The engine refused the packet (the leg is closing, or the sender has
        /// no negotiated stream for it).
        SendFailed => "send_failed",
        /// A NACKed packet of a simulcast layer the leg has left (or of a
        /// paused leg): the subscriber's decoder starts over at the new
        /// layer's keyframe, so resending it only takes bandwidth.
        StaleLayer => "stale_layer",
        /// A NACKed packet over the leg's retransmission budget (a share of
        /// its bandwidth estimate; see `RetransmitBudget`).
        RetransmitBudget => "retransmit_budget",
        /// A codec payload field (the VP8 descriptor's picture id) could not
        /// be rewritten for the subscriber: the packet does not match the
        /// descriptor parsed from it (should stay 0).
        PayloadRewrite => "payload_rewrite",
    }
}

/// One plain counter per [`DropReason`].
pub type DropCounts = crate::labels::Counts<DropReason>;

/// The rewritten header fields for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendParams {
    pub ssrc: u32,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    /// The RTP marker bit: the publisher's, except on an SVC leg, where it
    /// ends the picture at the highest spatial layer the leg forwards.
    pub marker: bool,
    /// New VP8 descriptor values to write into this subscriber's copy of the
    /// payload (simulcast legs given the packet's descriptor only).
    pub vp8: Option<Vp8Rewrite>,
    /// The active decode targets to write into this subscriber's copy of
    /// the AV1 dependency descriptor (legs of an AV1 SVC track).
    pub dd: Option<DdRewrite>,
}

/// What to do with a packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    Send(SendParams),
    Drop(DropReason),
    /// Not for this subscriber: a simulcast layer it does not take, or a
    /// temporal layer above its cap. Not a drop (every subscriber skips most
    /// of a simulcast track's packets), so not a [`DropReason`]: rooms count
    /// skips apart.
    Skip,
}

/// One payload-type pair: the publisher's number and the subscriber's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtMap {
    pub from: u8,
    pub to: u8,
}

/// How many of a publisher's codecs (RTX excluded) one subscriber can be
/// sent: the first this many the publisher negotiated, in its order of
/// preference. A publisher normally sends one; a packet of a codec beyond
/// these is dropped as `unknown_payload_type` (counted), and the server logs
/// the overflow once per negotiation.
pub const MAX_MAPPED_PAYLOAD_TYPES: usize = 8;

/// A payload-type table from (publisher → subscriber) pairs: the first
/// [`MAX_MAPPED_PAYLOAD_TYPES`], and how many did not fit.
pub fn payload_type_table(
    maps: impl IntoIterator<Item = PtMap>,
) -> ([Option<PtMap>; MAX_MAPPED_PAYLOAD_TYPES], usize) {
    let mut table = [None; MAX_MAPPED_PAYLOAD_TYPES];
    let mut overflow = 0;
    for (i, m) in maps.into_iter().enumerate() {
        match table.get_mut(i) {
            Some(slot) => *slot = Some(m),
            None => overflow += 1,
        }
    }
    (table, overflow)
}

/// Everything a subscriber leg negotiated for one track: set when its
/// negotiation completes, replaced on renegotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkParams {
    /// The SSRC of the subscriber leg's sender.
    pub ssrc: u32,
    /// Payload types, publisher → subscriber: a small array, no allocation
    /// per packet. See [`MAX_MAPPED_PAYLOAD_TYPES`].
    pub payload_types: [Option<PtMap>; MAX_MAPPED_PAYLOAD_TYPES],
    /// Header extension ids, publisher → subscriber.
    pub extensions: ExtensionMap,
}

impl SinkParams {
    pub fn map_pt(&self, from: u8) -> Option<u8> {
        self.payload_types
            .iter()
            .flatten()
            .find(|m| m.from == from)
            .map(|m| m.to)
    }
}

#[derive(Debug, Clone)]
pub struct Forwarder {
    params: Option<SinkParams>,
    seq: SeqRewriter,
    ts: TsRewriter,
    /// SSRC of the publisher stream currently feeding this leg.
    source_ssrc: Option<u32>,
    muted: bool,
    /// Which layer flows, which is wanted, and whether a keyframe is awaited
    /// (a track without simulcast is layer 0 only).
    layers: LayerSelector,
    /// VP8 descriptor continuity across switches and temporal drops.
    vp8: Vp8Munger,
    /// This leg's sequence numbers → the publisher's, to answer NACKs.
    sent: Option<SentMap>,
    /// Packets and payload octets sent on this leg (for sender reports; RFC
    /// 3550 counters wrap).
    pub packets_sent: u32,
    pub octets_sent: u32,
}

impl Forwarder {
    /// `gate_on_keyframe`: hold packets back until a keyframe starts (video
    /// whose codec's keyframes can be recognised).
    pub fn new(clock_rate: u32, gate_on_keyframe: bool) -> Self {
        Forwarder {
            params: None,
            seq: SeqRewriter::new(0),
            ts: TsRewriter::new(clock_rate),
            source_ssrc: None,
            muted: false,
            layers: LayerSelector::new(gate_on_keyframe),
            vp8: Vp8Munger::new(),
            sent: None,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// Keep a map of what was sent so NACKs can be answered (allocated once).
    pub fn enable_nack(&mut self, epoch: Instant) {
        if self.sent.is_none() {
            self.sent = Some(SentMap::new(epoch));
        }
    }

    /// The publisher SSRC currently feeding this leg.
    pub fn source_ssrc(&self) -> Option<u32> {
        self.source_ssrc
    }

    /// Subscriber timestamp = publisher timestamp - offset, for the current
    /// source (None before its first packet was sent).
    pub fn ts_offset(&self) -> Option<u32> {
        self.ts.offset()
    }

    /// Resolves a NACKed sequence number of this leg.
    pub fn nack(
        &mut self,
        now: Instant,
        out_seq: u16,
        min_interval: std::time::Duration,
    ) -> NackLookup {
        match &mut self.sent {
            Some(m) => m.lookup(now, out_seq, min_interval),
            None => NackLookup::Unknown,
        }
    }

    /// The subscriber still waits for its first keyframe (from this source,
    /// or after a pause): nothing flows. A leg switching layers while the
    /// current one flows is not waiting; see [`Forwarder::wants_keyframe`].
    pub fn waiting_for_keyframe(&self) -> bool {
        self.layers.waiting()
    }

    /// The leg's layer state: target, current layer, availability.
    pub fn layers(&self) -> &LayerSelector {
        &self.layers
    }

    /// What the leg should forward (from the allocator). A new spatial layer
    /// is taken at its next keyframe while the current one keeps flowing;
    /// [`Target::Paused`] drops everything at once, with no hole in the
    /// leg's numbering, and resuming waits for a keyframe.
    pub fn set_target(&mut self, target: Target) {
        self.layers.set_target(target);
    }

    /// The server learned that a layer stopped: the leg aims at the best
    /// layer still available at once, not after the layer timeout.
    pub fn set_layer_gone(&mut self, layer: SpatialLayer) {
        self.layers.set_layer_gone(layer);
    }

    /// The layer a keyframe is needed on (the one the leg aims at, while it
    /// is not the one flowing), if the leg is negotiated. For a PLI on that
    /// layer's SSRC; see [`Forwarder::poll_keyframe_request`] to throttle.
    pub fn wants_keyframe(&self, now: Instant) -> Option<SpatialLayer> {
        self.params.as_ref()?;
        self.layers.wants_keyframe(now)
    }

    /// [`Forwarder::wants_keyframe`], at most once per `min_interval` for
    /// this leg: the layer to request a keyframe on now. A keyframe that
    /// never comes is asked for again every `min_interval`, while the
    /// current layer keeps flowing.
    pub fn poll_keyframe_request(
        &mut self,
        now: Instant,
        min_interval: Duration,
    ) -> Option<SpatialLayer> {
        self.params.as_ref()?;
        self.layers.poll_keyframe_request(now, min_interval)
    }

    /// Set (or replace) what the subscriber leg negotiated. Until this is
    /// called, packets are dropped as [`DropReason::Paused`].
    pub fn set_params(&mut self, params: Option<SinkParams>) {
        self.params = params;
    }

    pub fn params(&self) -> Option<&SinkParams> {
        self.params.as_ref()
    }

    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Decide what to do with one packet of a track without simulcast
    /// (layer 0). `keyframe`: the packet starts a keyframe.
    pub fn decide(&mut self, now: Instant, p: &PacketMeta, keyframe: bool) -> Forward {
        self.decide_layer(now, p, SpatialLayer::LOW, None, keyframe)
    }

    /// Decide what to do with one packet of simulcast layer `layer`.
    /// `vp8`: the packet's VP8 descriptor, if the track is VP8 (then the
    /// temporal cap applies and [`SendParams::vp8`] carries the renumbered
    /// descriptor). `keyframe`: the packet starts a keyframe.
    pub fn decide_layer(
        &mut self,
        now: Instant,
        p: &PacketMeta,
        layer: SpatialLayer,
        vp8: Option<&Vp8Descriptor>,
        keyframe: bool,
    ) -> Forward {
        // Padding-only packets probe the publisher's uplink: nothing for a
        // subscriber (its leg probes on its own), and no sign of life of a
        // layer — Chromium pads simulcast layers it has switched off, and a
        // leg that took that padding for its layer's packets stayed on a
        // layer sending no pictures (a frozen tile) instead of moving to one
        // that did. In the stream being forwarded they close up their hole.
        if p.payload_len == 0 {
            return match self.layers.current() {
                Some(l) if l == layer && self.source_ssrc == Some(p.ssrc) => {
                    self.drop(true, p, DropReason::Padding)
                }
                Some(_) => Forward::Skip,
                None => Forward::Drop(DropReason::Padding),
            };
        }
        // A new publisher stream behind the layer being forwarded (the
        // publisher restarted its encoder or renegotiated): its deltas
        // reference frames this subscriber never got, so the leg starts it
        // like a switch: at its keyframe, numbering continuous.
        if self.layers.current() == Some(layer) && self.source_ssrc != Some(p.ssrc) {
            self.layers.lose_current();
        }
        let step = self.layers.step(now, layer, keyframe);
        match step {
            // Another layer's packets are in another SSRC's sequence space:
            // they must not touch this leg's numbering.
            Step::Skip => return Forward::Skip,
            // Paused by the allocator: the resume restarts the numbering, so
            // nothing needs closing up.
            Step::Paused => return Forward::Drop(DropReason::Paused),
            Step::Flow | Step::Switch | Step::Wait => {}
        }
        // Only packets of the stream being numbered close up their holes
        // when dropped; a stream not started yet has no holes to close.
        let flowing = step == Step::Flow;
        let Some(params) = &self.params else {
            return self.drop(flowing, p, DropReason::Paused);
        };
        // Muted: the subscriber gets nothing and no hole to NACK; numbering
        // continues seamlessly on unmute.
        if self.muted {
            return self.drop(flowing, p, DropReason::Muted);
        }
        let Some(pt) = params.map_pt(p.payload_type) else {
            return self.drop(flowing, p, DropReason::UnknownPayloadType);
        };
        let ssrc = params.ssrc;
        match step {
            // A subscriber that has not had a keyframe could not decode this.
            Step::Wait => return Forward::Drop(DropReason::WaitingForKeyframe),
            // The keyframe of the layer the leg aims at, and it is being
            // sent: from here the leg carries this stream, its numbers
            // continuing the old ones.
            Step::Switch => {
                self.layers.commit(layer);
                self.seq.restart();
                self.ts.restart();
                self.vp8.restart();
                self.source_ssrc = Some(p.ssrc);
            }
            Step::Flow => {
                // A frame above the temporal cap: skipped, and its sequence
                // numbers and picture id taken out so the subscriber sees no
                // loss.
                if let Some(d) = vp8 {
                    let cap = self
                        .layers
                        .temporal_cap_at(d.frame_start(), d.temporal() == 0 || d.layer_sync);
                    if d.temporal() > cap.value() {
                        self.seq.drop_packet(p.seq);
                        self.vp8.drop_picture(d);
                        return Forward::Skip;
                    }
                }
            }
            Step::Skip | Step::Paused => {}
        }
        let Some((seq, timestamp)) = self.number(now, p, layer, p.marker) else {
            return Forward::Drop(DropReason::TooOld);
        };
        Forward::Send(SendParams {
            ssrc,
            payload_type: pt,
            seq,
            timestamp,
            marker: p.marker,
            vp8: vp8.map(|d| self.vp8.forward(d)),
            dd: None,
        })
    }

    /// Numbers a packet that goes out: the leg's next sequence number and
    /// its timestamp, recorded for NACKs (with the layer it came from and
    /// the marker it carries) and counted for sender reports. `None`: too
    /// old to place.
    fn number(
        &mut self,
        now: Instant,
        p: &PacketMeta,
        layer: SpatialLayer,
        marker: bool,
    ) -> Option<(u16, u32)> {
        let SeqOutcome::Send(seq) = self.seq.forward(p.seq) else {
            return None;
        };
        let timestamp = self.ts.rewrite(now, p.timestamp);
        if let Some(m) = &mut self.sent {
            m.record(seq, p.seq, timestamp, layer, marker);
        }
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(p.payload_len as u32);
        Some((seq, timestamp))
    }

    /// The descriptor values for a copy of an already forwarded packet of
    /// the current source (a retransmission): the numbering it went out
    /// with.
    pub fn vp8_rewrite(&mut self, d: &Vp8Descriptor) -> Vp8Rewrite {
        self.vp8.forward(d)
    }

    fn drop(&mut self, flowing: bool, p: &PacketMeta, reason: DropReason) -> Forward {
        if flowing {
            self.seq.drop_packet(p.seq);
        }
        Forward::Drop(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_type_table_keeps_the_first_and_counts_the_rest() {
        let maps = |n: u8| {
            (0..n).map(|i| PtMap {
                from: 96 + i,
                to: 100 + i,
            })
        };
        let (t, over) = payload_type_table(maps(3));
        assert_eq!((t.iter().flatten().count(), over), (3, 0));
        let (t, over) = payload_type_table(maps(MAX_MAPPED_PAYLOAD_TYPES as u8 + 2));
        assert_eq!(
            (t.iter().flatten().count(), over),
            (MAX_MAPPED_PAYLOAD_TYPES, 2)
        );
        let p = SinkParams {
            ssrc: 1,
            payload_types: t,
            extensions: ExtensionMap::default(),
        };
        assert_eq!(p.map_pt(96), Some(100), "the publisher's first choice");
        assert_eq!(
            p.map_pt(96 + MAX_MAPPED_PAYLOAD_TYPES as u8),
            None,
            "past the table"
        );
    }

    #[test]
    fn every_drop_reason_has_a_counter_slot_and_a_label() {
        // Before: rooms counted into `[u64; 8]` indexed by the enum; a ninth
        // reason panicked on the packet path.
        let mut c = DropCounts::default();
        for r in DropReason::ALL {
            c.inc(*r);
            c.inc(*r);
        }
        assert_eq!(c.total(), 2 * DropReason::COUNT as u64);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "ALL is in declaration order");
            assert_eq!(c.get(*r), 2);
        }
        let labels: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DropReason::COUNT, "labels are unique");
        let mut sum = DropCounts::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.get(DropReason::SendFailed), 4);
        assert_eq!(sum.iter().count(), DropReason::COUNT);
    }
    use std::time::Duration;

    fn params() -> SinkParams {
        SinkParams {
            ssrc: 0xAAAA,
            payload_types: payload_type_table([PtMap { from: 96, to: 120 }]).0,
            extensions: ExtensionMap::default(),
        }
    }

    fn pkt(ssrc: u32, seq: u16, ts: u32) -> PacketMeta {
        PacketMeta {
            ssrc,
            seq,
            timestamp: ts,
            payload_type: 96,
            marker: false,
            payload_len: 100,
        }
    }

    fn sent(f: Forward) -> SendParams {
        match f {
            Forward::Send(s) => s,
            Forward::Drop(r) => panic!("dropped: {r:?}"),
            Forward::Skip => panic!("skipped"),
        }
    }

    #[test]
    fn paused_until_negotiated() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000, false);
        assert_eq!(
            f.decide(t, &pkt(1, 10, 0), false),
            Forward::Drop(DropReason::Paused)
        );
        f.set_params(Some(params()));
        let s = sent(f.decide(t, &pkt(1, 11, 3000), false));
        assert_eq!((s.ssrc, s.payload_type, s.timestamp), (0xAAAA, 120, 3000));
    }

    #[test]
    fn mute_unmute_keeps_sequence_and_time_continuous() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000, false);
        f.set_params(Some(params()));
        let a = sent(f.decide(t, &pkt(1, 100, 1000), false));
        f.set_muted(true);
        for i in 1..50u16 {
            assert_eq!(
                f.decide(t, &pkt(1, 100 + i, 1000 + i as u32 * 3000), false),
                Forward::Drop(DropReason::Muted)
            );
        }
        f.set_muted(false);
        let b = sent(f.decide(t, &pkt(1, 150, 151_000), false));
        assert_eq!(b.seq, a.seq.wrapping_add(1), "no hole after unmute");
        assert_eq!(
            b.timestamp, 151_000,
            "timestamps follow the publisher's clock"
        );
    }

    #[test]
    fn new_source_ssrc_continues_the_leg() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000, false);
        f.set_params(Some(params()));
        let a = sent(f.decide(t, &pkt(1, 100, 1000), false));
        let b = sent(f.decide(t + Duration::from_millis(50), &pkt(2, 9, 55), false));
        assert_eq!(b.seq, a.seq.wrapping_add(1));
        assert_eq!(b.timestamp, 1000 + 4500);
        assert_eq!(b.ssrc, a.ssrc);
    }

    #[test]
    fn padding_and_unknown_pt_are_dropped_without_holes() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000, false);
        f.set_params(Some(params()));
        let a = sent(f.decide(t, &pkt(1, 1, 0), false));
        let mut pad = pkt(1, 2, 0);
        pad.payload_len = 0;
        assert_eq!(f.decide(t, &pad, false), Forward::Drop(DropReason::Padding));
        let mut other = pkt(1, 3, 0);
        other.payload_type = 97;
        assert_eq!(
            f.decide(t, &other, false),
            Forward::Drop(DropReason::UnknownPayloadType)
        );
        let b = sent(f.decide(t, &pkt(1, 4, 0), false));
        assert_eq!(b.seq, a.seq.wrapping_add(1));
    }

    #[test]
    fn video_starts_at_a_keyframe_and_again_after_a_source_change() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000, true);
        f.set_params(Some(params()));
        for seq in 1..5u16 {
            assert_eq!(
                f.decide(t, &pkt(1, seq, 0), false),
                Forward::Drop(DropReason::WaitingForKeyframe)
            );
        }
        assert!(f.waiting_for_keyframe());
        let k = sent(f.decide(t, &pkt(1, 5, 0), true));
        let d = sent(f.decide(t, &pkt(1, 6, 0), false));
        assert_eq!(
            d.seq,
            k.seq.wrapping_add(1),
            "deltas after the keyframe flow"
        );
        assert!(!f.waiting_for_keyframe());
        // The publisher restarts its encoder: wait again, numbering continues.
        assert_eq!(
            f.decide(t, &pkt(2, 900, 0), false),
            Forward::Drop(DropReason::WaitingForKeyframe)
        );
        let k2 = sent(f.decide(t, &pkt(2, 901, 0), true));
        assert_eq!(k2.seq, d.seq.wrapping_add(1));
    }
}

mod svc;
pub use svc::SvcFrame;

#[cfg(test)]
mod simulcast_tests;
#[cfg(test)]
mod svc_tests;
