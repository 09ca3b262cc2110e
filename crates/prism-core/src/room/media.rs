//! The packet path of a room: forwarding each publisher packet to its
//! subscribers, layer by layer; the retransmission history and keyframe
//! cache of each layer; sender reports; NACKs; keyframe requests per layer.
//!
//! A track without simulcast has one layer ([`SpatialLayer::LOW`]); a
//! simulcast track has one [`LayerStream`] per encoding, lowest first, each
//! with its own sequence numbers, history, keyframes and bitrate. A VP9
//! k-SVC track, or an AV1 track whose dependency descriptor structure has
//! several spatial layers, has one stream holding every spatial layer: its
//! legs decide by the packet's place in it (`Forwarder::decide_svc_frame`,
//! from the VP9 payload descriptor or the AV1 dependency descriptor), and
//! its layers' bitrates and sizes come from the descriptors (`room/svc.rs`).

use std::time::{Duration, Instant};

use super::svc::{cached_svc_frame, extension, svc_descriptor, SvcPacket};
use super::{ntp_duration, MediaKind, ParticipantId, Room, SenderReportValues, SinkId, TrackId};
use crate::allocator::{Bitrate, LayerInfo};
use crate::forwarder::{Forward, Forwarder, PacketMeta, SendParams, SinkParams};
use crate::gop::GopCache;
use crate::history::{NackLookup, PacketHistory};
use crate::keyframe::{is_keyframe_start, VideoCodec};
use crate::layer::{SpatialLayer, Target, MAX_SPATIAL_LAYERS};
use crate::vp8::Vp8Descriptor;

/// One encoding of a published track: its own packets and keyframes.
#[derive(Debug)]
pub(super) struct LayerStream {
    /// The publisher's recent packets, shared by all subscribers' NACKs.
    pub(super) history: PacketHistory,
    /// The keyframe cache: where the latest GOP lies in `history` (video
    /// whose keyframes are recognised; unused otherwise).
    pub(super) gop: GopCache,
    /// When the last keyframe request for this layer went upstream.
    pub(super) kf_sent_at: Option<Instant>,
    /// A request arrived inside the throttle window: send it when it ends.
    pub(super) kf_pending: bool,
    /// Payload bytes since the last [`Room::measure`], and the bitrate it
    /// measured (kept while the layer is silent: a layer switched off by
    /// dynacast keeps its last known cost).
    bytes: u64,
    bitrate: Bitrate,
    /// Payload bytes of base temporal layer frames (VP8 TID 0) since the
    /// last measure, and whether any frame of a higher one came; the base
    /// layer's bitrate when it has temporal layers.
    base_bytes: u64,
    upper_seen: bool,
    base: Option<Bitrate>,
    /// The picture size the publisher declared (0: unknown).
    width: u32,
    height: u32,
}

impl LayerStream {
    pub(super) fn new(packets: usize, age: Duration, cache_packets: usize) -> Self {
        LayerStream {
            history: PacketHistory::new(packets, age),
            gop: GopCache::new(cache_packets.min(packets), age),
            kf_sent_at: None,
            kf_pending: false,
            bytes: 0,
            bitrate: Bitrate(0),
            base_bytes: 0,
            upper_seen: false,
            base: None,
            width: 0,
            height: 0,
        }
    }
}

impl super::Track {
    /// Its layers' declared picture sizes, lowest first (one layer, size
    /// unknown (0, 0), without simulcast).
    pub fn layer_sizes(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.streams.iter().map(|s| (s.width, s.height))
    }
}

/// What a forwarded packet carries besides its payload, as the subscribe
/// leg's estimate counts it (transport-cc reports RTP packet sizes): the
/// 12-byte header and the extensions Prism sends (one-byte form with
/// `mid`, `abs-send-time`, transport-wide sequence number, padded to 4).
const RTP_HEADER_BYTES: usize = 28;

/// How often [`Room::measure`] is expected to run (its window).
const MEASURE_MIN: Duration = Duration::from_millis(200);

impl Room {
    /// Declares `track` a simulcast track with these layers (picture sizes,
    /// lowest first; at most [`MAX_SPATIAL_LAYERS`]). Each gets its own
    /// history and keyframe cache. Returns false for an unknown track.
    pub fn set_layers(&mut self, track: TrackId, sizes: &[(u32, u32)]) -> bool {
        let (packets, age) = self.cfg.video_history;
        let cache = self.cfg.keyframe_cache_packets;
        let Some(t) = self.tracks.get_mut(&track) else {
            return false;
        };
        let n = sizes.len().clamp(1, MAX_SPATIAL_LAYERS);
        while t.streams.len() < n {
            t.streams.push(LayerStream::new(packets, age, cache));
        }
        t.streams.truncate(n);
        for (s, &(w, h)) in t.streams.iter_mut().zip(sizes) {
            s.width = w;
            s.height = h;
        }
        true
    }

    /// How many layers `track` has (1 without simulcast).
    pub fn layer_count(&self, track: TrackId) -> usize {
        self.tracks
            .get(&track)
            .map_or(0, |t| t.streams.len().max(t.svc.count()))
    }

    /// The publisher negotiated the AV1 dependency descriptor extension
    /// under `id` for `track` (None: not negotiated): its packets' layers
    /// are read from it ([`Room::forward_packet`]).
    pub fn set_dependency_descriptor_id(&mut self, track: TrackId, id: Option<u8>) {
        if let Some(t) = self.tracks.get_mut(&track) {
            t.svc.set_dd_ext_id(id);
        }
    }

    /// `track` is spatially scalable in one stream (VP9 k-SVC or AV1 with
    /// more than one spatial layer seen).
    pub fn is_svc(&self, track: TrackId) -> bool {
        self.tracks.get(&track).is_some_and(|t| t.svc.active())
    }

    /// The layers of `track` as the allocator sees them: measured bitrate
    /// and declared size, lowest first.
    pub fn layer_infos(&self, track: TrackId) -> [Option<LayerInfo>; MAX_SPATIAL_LAYERS] {
        let mut out = [None; MAX_SPATIAL_LAYERS];
        if let Some(t) = self.tracks.get(&track) {
            if t.svc.active() {
                return t.svc.infos();
            }
            for (o, s) in out.iter_mut().zip(&t.streams) {
                *o = Some(LayerInfo {
                    bitrate: s.bitrate,
                    width: s.width,
                    height: s.height,
                    base: s.base,
                });
            }
        }
        out
    }

    /// Turns each layer's byte count since the last call into its bitrate.
    /// Call about once a second.
    pub fn measure(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.measured_at);
        if elapsed < MEASURE_MIN {
            return;
        }
        self.measured_at = now;
        let ms = elapsed.as_millis().max(1) as u64;
        for t in self.tracks.values_mut() {
            if t.streams.len() > 1 && tracing::enabled!(tracing::Level::DEBUG) {
                // A timeline of each layer and each leg, for diagnosing a
                // subscriber's stalled picture (debug level only).
                let kbps: Vec<u64> = t.streams.iter().map(|s| s.bytes * 8 / ms).collect();
                let base_kbps: Vec<Option<u64>> = t
                    .streams
                    .iter()
                    .map(|s| s.upper_seen.then(|| s.base_bytes * 8 / ms))
                    .collect();
                let legs: Vec<String> = t
                    .downstream
                    .iter()
                    .map(|d| {
                        let l = d.fwd.layers();
                        format!(
                            "{}:{:?}/{:?}/{:?}",
                            d.subscriber,
                            l.target(),
                            l.aim(now),
                            l.current()
                        )
                    })
                    .collect();
                tracing::debug!(track = %t.id, ?kbps, ?base_kbps, ?legs, "layers");
            }
            for s in &mut t.streams {
                if s.bytes > 0 {
                    s.bitrate = Bitrate(s.bytes * 8 * 1000 / ms);
                    // Kept, like the bitrate, while the layer is silent.
                    s.base = s.upper_seen.then(|| Bitrate(s.base_bytes * 8 * 1000 / ms));
                }
                s.bytes = 0;
                s.base_bytes = 0;
                s.upper_seen = false;
            }
            t.svc.measure(ms);
        }
    }

    /// Sets what `subscriber`'s leg of `track` forwards (from the allocator).
    /// A leg of an AV1 SVC track whose subscriber did not negotiate the
    /// dependency descriptor is held at the lowest spatial layer: without
    /// it a receiver cannot tell the layers of one picture apart (Chromium
    /// decodes nothing above the lowest).
    pub fn set_target(&mut self, track: TrackId, subscriber: ParticipantId, target: Target) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let av1_svc = t.svc.dd_targets().is_some();
        if let Some(d) = t.downstream.iter_mut().find(|d| d.subscriber == subscriber) {
            let blind = d
                .fwd
                .params()
                .is_some_and(|p| p.extensions.dependency_descriptor_id.is_none());
            let target = match target {
                Target::Layer(l) if av1_svc && blind => Target::Layer(crate::layer::LayerTarget {
                    spatial: SpatialLayer::LOW,
                    ..l
                }),
                other => other,
            };
            if d.fwd.layers().target() != target {
                tracing::debug!(track = %track, subscriber = %subscriber, ?target,
                    current = ?d.fwd.layers().current(), "layer target");
            }
            d.fwd.set_target(target);
        }
    }

    /// For each subscriber leg of `track`: its target, the layer it aims at
    /// now (the target's, or the nearest available while the target's is
    /// silent) and the layer it receives (dynacast keeps all three
    /// publishing).
    pub fn each_leg_layers(
        &self,
        now: Instant,
        track: TrackId,
        mut f: impl FnMut(Target, Option<SpatialLayer>, Option<SpatialLayer>),
    ) {
        if let Some(t) = self.tracks.get(&track) {
            for d in &t.downstream {
                let l = d.fwd.layers();
                f(l.target(), l.aim(now), l.current());
            }
        }
    }

    /// Decides, for every subscriber attached to `track`, what to do with one
    /// packet of a track without simulcast. See [`Room::forward_layer`].
    pub fn forward(
        &mut self,
        now: Instant,
        track: TrackId,
        meta: &PacketMeta,
        payload: &[u8],
        apply: impl FnMut(SinkId, &SinkParams, Forward),
    ) -> bool {
        self.forward_layer(now, track, SpatialLayer::LOW, meta, payload, apply)
    }

    /// Decides, for every subscriber attached to `track`, what to do with one
    /// packet of its `layer`, and calls `apply` with each decision. A
    /// subscriber that needs a keyframe (to start, or to switch layers) has
    /// one requested on the layer it aims at. No allocation. The packet's
    /// header extensions are not looked at: see [`Room::forward_packet`].
    pub fn forward_layer(
        &mut self,
        now: Instant,
        track: TrackId,
        layer: SpatialLayer,
        meta: &PacketMeta,
        payload: &[u8],
        apply: impl FnMut(SinkId, &SinkParams, Forward),
    ) -> bool {
        self.forward_inner(now, track, layer, meta, payload, None, apply)
    }

    /// [`Room::forward_layer`] for a whole packet: an AV1 track's legs also
    /// read its dependency descriptor extension (under the id given with
    /// [`Room::set_dependency_descriptor_id`]). No allocation.
    pub fn forward_packet(
        &mut self,
        now: Instant,
        track: TrackId,
        layer: SpatialLayer,
        packet: &rtc::rtp::Packet,
        apply: impl FnMut(SinkId, &SinkParams, Forward),
    ) -> bool {
        let dd_id = self.tracks.get(&track).and_then(|t| t.svc.dd_ext_id());
        let dd = dd_id.and_then(|id| extension(packet, id));
        let meta = PacketMeta::of(packet);
        self.forward_inner(now, track, layer, &meta, &packet.payload, dd, apply)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_inner(
        &mut self,
        now: Instant,
        track: TrackId,
        layer: SpatialLayer,
        meta: &PacketMeta,
        payload: &[u8],
        dd: Option<&[u8]>,
        mut apply: impl FnMut(SinkId, &SinkParams, Forward),
    ) -> bool {
        let Some(t) = self.tracks.get_mut(&track) else {
            return false;
        };
        let Some(stream) = t.streams.get_mut(layer.index()) else {
            self.counters.drops.inc(crate::DropReason::UnknownSsrc);
            return false;
        };
        t.counters.packets_in += 1;
        t.counters.bytes_in += meta.payload_len as u64;
        // A layer's cost as the subscriber's estimate counts it: the RTP
        // packet, header and extensions included (audio's small packets
        // cost a third more than their payload).
        stream.bytes += (meta.payload_len + RTP_HEADER_BYTES) as u64;
        let keyframe = t.codec.detects_keyframes() && is_keyframe_start(t.codec, payload);
        // VP8: each leg renumbers picture ids (and TL0PICIDX, KEYIDX) so a
        // layer switch or a publisher's new encoder continues the numbers
        // the subscriber has; Chromium's decoder drops pictures whose id
        // jumps back (a frozen tile after a switch).
        let vp8 = match t.codec {
            VideoCodec::Vp8 => Vp8Descriptor::parse(payload).ok(),
            _ => None,
        };
        // Per temporal layer: what the base costs alone (the allocator's
        // step before a pause).
        match vp8.as_ref().and_then(|d| d.tid) {
            Some(0) => stream.base_bytes += (meta.payload_len + RTP_HEADER_BYTES) as u64,
            Some(_) => stream.upper_seen = true,
            None => {}
        }
        if t.codec.detects_keyframes() {
            stream.gop.on_packet(now, meta.ssrc, meta.seq, keyframe);
        }
        let svc = svc_descriptor(&mut t.svc, t.codec, meta, payload, dd, keyframe);
        let svc_picture_start = svc.picture_start();
        // Layers someone needs a keyframe of: a bit per layer.
        let mut wanted: u8 = 0;
        for d in &mut t.downstream {
            let before = d.fwd.layers().current();
            let decision = decide(&mut d.fwd, now, meta, layer, &svc, vp8.as_ref(), keyframe);
            // A leg changes layers only with a packet it sends (simulcast)
            // or at a picture start (SVC): either way its current layer
            // moved from one to another.
            if let (Some(b), Some(a)) = (before, d.fwd.layers().current()) {
                if a != b {
                    if a > b {
                        self.counters.layer_switches_up += 1;
                    } else {
                        self.counters.layer_switches_down += 1;
                    }
                    // To a layer other than its target's: the target's
                    // layer was not being sent (switched off, or gone).
                    let to_target = matches!(
                        d.fwd.layers().target(),
                        Target::Layer(t) if t.spatial == a
                    );
                    if !to_target {
                        self.counters.layer_switches_fallback[usize::from(a < b)] += 1;
                    }
                }
            }
            // A leg whose packet went out is flowing; only the others (a
            // new leg waiting, a switch pending) can need a keyframe. On an
            // SVC track a flowing leg can want a higher layer too; asked
            // once per picture, at its first packet (requests are
            // throttled far longer anyway).
            let check = match svc_picture_start {
                Some(first) => first,
                None => !matches!(decision, Forward::Send(_)),
            };
            if check {
                if let Some(l) = d.fwd.wants_keyframe(now) {
                    wanted |= 1 << l.index();
                }
            }
            match decision {
                Forward::Send(_) => {
                    t.counters.packets_out += 1;
                    t.counters.bytes_out += meta.payload_len as u64;
                    self.counters.packets_forwarded += 1;
                }
                Forward::Drop(r) => self.counters.drops.inc(r),
                Forward::Skip => self.counters.layer_skips += 1,
            }
            // A sink with no params yet only ever gets Drop(Paused), and the
            // driver needs no params for a drop; skip the call.
            if let Some(params) = d.fwd.params() {
                apply(d.sink, params, decision);
            }
        }
        for l in SpatialLayer::ALL {
            if wanted & (1 << l.index()) != 0 {
                self.request_keyframe_layer(now, track, l);
            }
        }
        true
    }

    /// Keeps a forwarded packet in the track's retransmission history (moved,
    /// not copied). Call after [`Room::forward`] with the same packet.
    pub fn store(&mut self, now: Instant, track: TrackId, packet: rtc::rtp::Packet) {
        self.store_layer(now, track, SpatialLayer::LOW, packet);
    }

    /// [`Room::store`] for a packet of `layer`.
    pub fn store_layer(
        &mut self,
        now: Instant,
        track: TrackId,
        layer: SpatialLayer,
        packet: rtc::rtp::Packet,
    ) {
        if let Some(s) = self
            .tracks
            .get_mut(&track)
            .and_then(|t| t.streams.get_mut(layer.index()))
        {
            s.history.insert(now, packet);
        }
    }

    /// The publisher sent a sender report for `track`'s stream `ssrc`: its NTP
    /// wall clock ↔ RTP clock mapping, which lets receivers line up audio and
    /// video. Kept to derive each subscriber leg's reports.
    pub fn on_sender_report(
        &mut self,
        now: Instant,
        track: TrackId,
        ssrc: u32,
        ntp: u64,
        rtp: u32,
    ) {
        if let Some(t) = self.tracks.get_mut(&track) {
            // One per stream (a simulcast layer each): replace this SSRC's,
            // else the oldest.
            let slot = t
                .sender_reports
                .iter()
                .position(|r| r.is_some_and(|r| r.2 == ssrc))
                .or_else(|| t.sender_reports.iter().position(Option::is_none))
                .unwrap_or_else(|| {
                    (0..t.sender_reports.len())
                        .min_by_key(|&i| t.sender_reports[i].map(|r| r.3))
                        .unwrap_or(0)
                });
            t.sender_reports[slot] = Some((ntp, rtp, ssrc, now));
        }
    }

    /// Sender reports for every subscriber of `track`, derived from the
    /// publisher's latest one: the same NTP ↔ RTP mapping, advanced to `now`
    /// at the track's clock rate and moved into each subscriber's timestamp
    /// space (its forwarder's offset). A subscriber that has not been sent a
    /// packet of the reported stream yet gets none.
    pub fn sender_reports(
        &self,
        now: Instant,
        track: TrackId,
        mut f: impl FnMut(SinkId, SenderReportValues),
    ) {
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        for d in &t.downstream {
            let (Some(params), Some(offset)) = (d.fwd.params(), d.fwd.ts_offset()) else {
                continue;
            };
            // The report of the stream this leg carries now.
            let Some((ntp, rtp, _, at)) = t
                .sender_reports
                .iter()
                .flatten()
                .find(|r| d.fwd.source_ssrc() == Some(r.2))
                .copied()
            else {
                continue;
            };
            let elapsed = now.saturating_duration_since(at);
            let ntp_now = ntp.wrapping_add(ntp_duration(elapsed));
            let ticks = (elapsed.as_nanos() * t.spec.clock_rate as u128 / 1_000_000_000) as u32;
            let rtp_now = rtp.wrapping_add(ticks);
            f(
                d.sink,
                SenderReportValues {
                    ssrc: params.ssrc,
                    ntp_time: ntp_now,
                    rtp_time: rtp_now.wrapping_sub(offset),
                    packet_count: d.fwd.packets_sent,
                    octet_count: d.fwd.octets_sent,
                },
            );
        }
    }

    /// Starts a subscriber that waits for a keyframe from the keyframe cache
    /// of the layer it aims at, if the cache can start it without a lie: the
    /// latest keyframe and every packet of that layer since (the whole GOP,
    /// up to the live edge) go to `apply` at once, numbered contiguously by
    /// the subscriber's forwarder, so live packets continue right after
    /// them. The cache is refused (counted by reason in
    /// `counters.cache_refusals`) when the keyframe is older than the video
    /// history's age, the GOP is longer than `keyframe_cache_packets`, or a
    /// packet of it is missing (lost and not repaired): then nothing is
    /// sent, a fresh keyframe is requested at once (throttled), and the
    /// subscriber starts with it. Returns the packets sent.
    ///
    /// Call right after [`Room::attach`] gave the subscriber its parameters.
    pub fn start_from_cache(
        &mut self,
        now: Instant,
        track: TrackId,
        subscriber: ParticipantId,
        mut apply: impl FnMut(SinkId, &SinkParams, SendParams, &rtc::rtp::Packet),
    ) -> usize {
        let Some(t) = self.tracks.get_mut(&track) else {
            return 0;
        };
        let Some(d) = t.downstream.iter_mut().find(|d| d.subscriber == subscriber) else {
            return 0;
        };
        // Only a negotiated subscriber that still needs a keyframe starts
        // (audio and codecs without keyframe detection never wait).
        if !d.fwd.waiting_for_keyframe() || d.fwd.params().is_none() {
            return 0;
        }
        // An SVC track's layers are all in its one stream.
        let layer = match t.svc.active() {
            true => SpatialLayer::LOW,
            false => d.fwd.wants_keyframe(now).unwrap_or(SpatialLayer::LOW),
        };
        let Some(stream) = t.streams.get(layer.index()) else {
            return 0;
        };
        let (first, len) = match stream.gop.check(now, &stream.history) {
            Ok(run) => run,
            Err(reason) => {
                self.counters.cache_refusals.inc(reason);
                self.request_keyframe_layer(now, track, layer);
                return 0;
            }
        };
        let mut sent = 0;
        for i in 0..len {
            // `check` found every packet of the run in the history just now.
            let Some(p) = stream.history.get(now, first.wrapping_add(i as u16)) else {
                break;
            };
            let meta = PacketMeta::of(p);
            let svc = match t.svc.active() {
                false => SvcPacket::No,
                true => cached_svc_frame(&mut t.svc, t.codec, p, i == 0),
            };
            let vp8 = match t.codec {
                VideoCodec::Vp8 => Vp8Descriptor::parse(&p.payload).ok(),
                _ => None,
            };
            let decision = decide(&mut d.fwd, now, &meta, layer, &svc, vp8.as_ref(), i == 0);
            match (decision, d.fwd.params()) {
                (Forward::Send(sp), Some(params)) => {
                    apply(d.sink, params, sp, p);
                    sent += 1;
                }
                // The keyframe itself did not go (muted, or a payload type
                // this subscriber lacks): it keeps waiting, as it would for
                // a live keyframe.
                _ if i == 0 => return 0,
                // Padding or a payload type this subscriber lacks: its
                // forwarder closed the hole, as it does live.
                (Forward::Drop(r), _) => self.counters.drops.inc(r),
                (Forward::Skip, _) => self.counters.layer_skips += 1,
                (Forward::Send(_), None) => {}
            }
        }
        self.counters.cache_starts += 1;
        self.counters.cache_packets += sent as u64;
        sent
    }

    /// Answers a subscriber's NACK for its sequence numbers `seqs` on `track`
    /// from the shared history of the layer each was sent from: `resend` is
    /// called with the rewritten fields and the publisher's packet for each
    /// one still held; it returns false when the leg's retransmission budget
    /// refuses it (counted as a `retransmit_budget` drop). Duplicates (asked
    /// again within `nack_min_interval`) and misses are counted, not sent.
    pub fn nack(
        &mut self,
        now: Instant,
        track: TrackId,
        subscriber: ParticipantId,
        seqs: impl IntoIterator<Item = u16>,
        mut resend: impl FnMut(SinkId, &SinkParams, SendParams, &rtc::rtp::Packet) -> bool,
    ) {
        let min_interval = self.cfg.nack_min_interval;
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let Some(d) = t.downstream.iter_mut().find(|d| d.subscriber == subscriber) else {
            return;
        };
        for seq in seqs {
            self.counters.nacks_in += 1;
            match d.fwd.nack(now, seq, min_interval) {
                NackLookup::Duplicate => self.counters.nack_duplicates += 1,
                NackLookup::Unknown => self.counters.nack_misses += 1,
                NackLookup::Resend {
                    src_seq,
                    out_seq,
                    out_ts,
                    layer,
                    marker,
                } => {
                    if d.fwd.layers().current() != Some(layer) {
                        self.counters.drops.inc(crate::DropReason::StaleLayer);
                        continue;
                    }
                    let held = t
                        .streams
                        .get(layer.index())
                        .and_then(|s| s.history.get(now, src_seq));
                    // The copy carries the picture id the original went
                    // out with.
                    let vp8 = match (t.codec, held) {
                        (VideoCodec::Vp8, Some(p)) => Vp8Descriptor::parse(&p.payload)
                            .ok()
                            .map(|desc| d.fwd.vp8_rewrite(&desc)),
                        _ => None,
                    };
                    let (Some(p), Some(params)) = (held, d.fwd.params()) else {
                        tracing::trace!(track = %track, src_seq, out_seq, "NACKed packet not in history");
                        self.counters.nack_expired += 1;
                        continue;
                    };
                    let Some(pt) = params.map_pt(p.header.payload_type) else {
                        self.counters.nack_misses += 1;
                        continue;
                    };
                    // An AV1 SVC leg's copy announces its decode targets,
                    // as the original did.
                    let l = d.fwd.layers();
                    let dd = t
                        .svc
                        .dd_targets()
                        .map(|tg| tg.for_leg(layer.index() as u8, l.temporal_cap().value()));
                    let sp = SendParams {
                        ssrc: params.ssrc,
                        payload_type: pt,
                        seq: out_seq,
                        timestamp: out_ts,
                        marker,
                        vp8,
                        dd,
                    };
                    if resend(d.sink, params, sp, p) {
                        self.counters.retransmits += 1;
                    } else {
                        self.counters.drops.inc(crate::DropReason::RetransmitBudget);
                    }
                }
            }
        }
    }

    /// Someone needs a keyframe of `track` (a subscriber's PLI/FIR, or a new
    /// publisher for waiting viewers): requested on every layer a subscriber
    /// receives or aims at (layer 0 when nobody is attached).
    pub fn request_keyframe(&mut self, now: Instant, track: TrackId) {
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        let mut wanted: u8 = 0;
        for d in &t.downstream {
            if let Some(l) = d.fwd.wants_keyframe(now).or(d.fwd.layers().current()) {
                wanted |= 1 << l.index();
            }
        }
        if wanted == 0 {
            wanted = 1;
        }
        for l in SpatialLayer::ALL {
            if wanted & (1 << l.index()) != 0 {
                self.request_keyframe_layer(now, track, l);
            }
        }
    }

    /// `subscriber` lost its picture (its PLI/FIR): a keyframe of the layer
    /// it receives (or aims at).
    pub fn request_keyframe_for(
        &mut self,
        now: Instant,
        track: TrackId,
        subscriber: ParticipantId,
    ) {
        let layer = self
            .tracks
            .get(&track)
            .and_then(|t| t.downstream.iter().find(|d| d.subscriber == subscriber))
            .and_then(|d| d.fwd.layers().current().or(d.fwd.wants_keyframe(now)))
            .unwrap_or(SpatialLayer::LOW);
        self.request_keyframe_layer(now, track, layer);
    }

    /// A keyframe of one layer of `track`. Merged per (track, layer): sent at
    /// once if none went out within the throttle window, else once when the
    /// window ends.
    pub fn request_keyframe_layer(&mut self, now: Instant, track: TrackId, layer: SpatialLayer) {
        let throttle = self.cfg.keyframe_throttle;
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if !t.codec.detects_keyframes() && t.spec.kind == MediaKind::Audio {
            return;
        }
        // An SVC track's keyframe comes in its one stream, for all layers.
        let layer = match t.svc.active() {
            true => SpatialLayer::LOW,
            false => layer,
        };
        let Some(s) = t.streams.get_mut(layer.index()) else {
            return;
        };
        self.counters.keyframe_requests_in += 1;
        match s.kf_sent_at {
            Some(at) if now < at + throttle => {
                if !s.kf_pending {
                    s.kf_pending = true;
                    let due = at + throttle;
                    self.kf_due = Some(self.kf_due.map_or(due, |d| d.min(due)));
                }
            }
            _ => {
                s.kf_sent_at = Some(now);
                s.kf_pending = false;
                self.counters.keyframe_requests_out += 1;
                self.kf_requests.push_back((track, layer));
            }
        }
    }

    /// The next (track, layer) whose publisher should be asked for a
    /// keyframe.
    pub fn poll_keyframe_request(&mut self) -> Option<(TrackId, SpatialLayer)> {
        self.kf_requests.pop_front()
    }

    /// Sends deferred keyframe requests whose window has ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.kf_due.is_none_or(|d| now < d) {
            return;
        }
        let throttle = self.cfg.keyframe_throttle;
        let mut next: Option<Instant> = None;
        for t in self.tracks.values_mut() {
            for (i, s) in t.streams.iter_mut().enumerate() {
                if !s.kf_pending {
                    continue;
                }
                let due = s.kf_sent_at.map_or(now, |at| at + throttle);
                if now >= due {
                    s.kf_pending = false;
                    s.kf_sent_at = Some(now);
                    self.counters.keyframe_requests_out += 1;
                    let layer = SpatialLayer::new(i as u8).unwrap_or(SpatialLayer::LOW);
                    self.kf_requests.push_back((t.id, layer));
                } else {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
        }
        self.kf_due = next;
    }
}

/// One leg's decision: by the packet's place in an SVC track, else by the
/// packet's (simulcast) layer.
fn decide(
    fwd: &mut Forwarder,
    now: Instant,
    meta: &PacketMeta,
    layer: SpatialLayer,
    svc: &SvcPacket,
    vp8: Option<&Vp8Descriptor>,
    keyframe: bool,
) -> Forward {
    match svc {
        SvcPacket::Layers(f) => fwd.decide_svc_frame(now, meta, f),
        SvcPacket::Unparsed => fwd.decide_svc_unparsed(meta),
        SvcPacket::No => fwd.decide_layer(now, meta, layer, vp8, keyframe),
    }
}
