//! The decision for one packet of a spatially scalable stream (VP9 k-SVC,
//! or AV1 with the dependency descriptor: every spatial layer in one
//! SSRC), for one subscriber leg.
//!
//! The codec only tells where a packet lies ([`SvcFrame`]: its frame's
//! spatial and temporal layer, frame start and end, keyframe start); VP9
//! reads it from the payload descriptor, AV1 from the dependency
//! descriptor header extension and the track's template structure. The
//! rules below are the same for both.
//!
//! The leg's [`LayerSelector`](crate::layer::LayerSelector) says which
//! layer frames it takes (`layer/svc.rs`); the forwarder numbers what it
//! sends with no gap for what it skipped (one sequence space: a skipped
//! packet is closed up like a dropped one) and sets the marker bit on the
//! last packet of the highest spatial layer the leg forwards, so the
//! subscriber's depacketizer sees each picture end where its picture ends.
//! Picture ids are left as the publisher sent them: a VP9 receiver reads
//! which picture a frame references from the picture id (the scalability
//! structure's picture group in non-flexible mode, P_DIFF in flexible
//! mode), so renumbering around a skipped temporal picture would point its
//! references at the wrong pictures; the gap a skipped picture leaves is
//! one the receiver expects (it knows from the picture group, or the
//! references, that a higher temporal layer is not needed).

use std::time::Instant;

use super::{DropReason, Forward, Forwarder, PacketMeta, SendParams};
use crate::av1_dd::{DdTargets, DdTracker, DependencyDescriptor, Dti};
use crate::layer::svc::SvcPacket;
use crate::layer::{SpatialLayer, SvcStep};
use crate::vp9::Vp9Descriptor;

/// One packet's place in a spatially scalable stream, whatever codec
/// described it: the VP9 payload descriptor ([`SvcFrame::from_vp9`]) or the
/// AV1 dependency descriptor and its structure ([`SvcFrame::from_av1`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvcFrame {
    /// The spatial layer of the packet's frame (0: lowest resolution).
    pub sid: u8,
    /// Its temporal layer.
    pub tid: u8,
    /// The highest temporal layer a leg can start taking at this frame (0:
    /// none above the base). VP9: the frame's TID when U is set (from it
    /// on, that layer needs no earlier frame of the same or a higher one);
    /// AV1: the highest temporal decode target of the frame's spatial
    /// layer that the frame is a Switch indication of.
    pub switch_up_to: u8,
    /// The first packet of a keyframe picture.
    pub keyframe_start: bool,
    /// Spatial layers the packet announces (VP9 SS, AV1 attached
    /// structure); 0: none.
    pub announced: u8,
    /// The packet starts its layer frame.
    pub begin: bool,
    /// The packet ends its layer frame.
    pub end: bool,
    /// AV1: the decode targets per layer, for the leg to announce its own
    /// (the dependency descriptor's active decode targets).
    pub dd_targets: Option<DdTargets>,
}

impl SvcFrame {
    /// From a VP9 payload descriptor.
    pub fn from_vp9(d: &Vp9Descriptor) -> Self {
        SvcFrame {
            sid: d.sid(),
            tid: d.tid(),
            switch_up_to: match d.switching_up() {
                true => d.tid(),
                false => 0,
            },
            keyframe_start: d.keyframe_start(),
            announced: d.ss.map_or(0, |ss| ss.spatial_layers),
            begin: d.begin,
            end: d.end,
            dd_targets: None,
        }
    }

    /// From an AV1 dependency descriptor read against the track's
    /// structure (`dd`, after reading it). `keyframe`: the payload starts
    /// a new coded video sequence (the AV1 aggregation header's N bit); a
    /// structure is attached to keyframes only, either tells.
    pub fn from_av1(d: &DependencyDescriptor, dd: &DdTracker, keyframe: bool) -> Self {
        let s = dd.structure();
        let targets = dd.targets();
        let (mut switch_up_to, mut active_layers) = (0, 0);
        for (dt, &(spatial, temporal)) in s
            .target_layers
            .iter()
            .enumerate()
            .take(usize::from(s.decode_targets))
        {
            if spatial == d.spatial_id && d.dtis.get(dt) == Dti::Switch {
                switch_up_to = switch_up_to.max(temporal);
            }
            // The publisher may send fewer layers than its structure
            // describes (Chromium starts so while its estimate grows):
            // its active decode targets say which it sends.
            if targets.active >> dt & 1 == 1 {
                active_layers = active_layers.max(spatial + 1);
            }
        }
        SvcFrame {
            sid: d.spatial_id,
            tid: d.temporal_id,
            switch_up_to,
            keyframe_start: d.start_of_frame
                && d.spatial_id == 0
                && (d.structure_attached || keyframe),
            announced: match d.structure_attached {
                true => active_layers,
                false => 0,
            },
            begin: d.start_of_frame,
            end: d.end_of_frame,
            dd_targets: Some(targets),
        }
    }

    /// The first packet of a picture (of its lowest layer frame).
    pub fn picture_start(&self) -> bool {
        self.begin && self.sid == 0
    }
}

impl Forwarder {
    /// A packet of an SVC track without a VP9 descriptor: padding (a
    /// bandwidth probe), or a payload too short for the descriptor its
    /// bits announce. No leg can place it in a layer; a flowing leg closes
    /// up its sequence number, as for any packet dropped on purpose.
    pub fn decide_svc_unparsed(&mut self, p: &PacketMeta) -> Forward {
        let flowing = self.layers.current().is_some() && self.source_ssrc == Some(p.ssrc);
        let reason = match p.payload_len {
            0 => DropReason::Padding,
            _ => DropReason::BadPayload,
        };
        self.drop(flowing, p, reason)
    }

    /// Decide what to do with one packet of an SVC track, given its VP9
    /// descriptor. See the module doc.
    pub fn decide_svc(&mut self, now: Instant, p: &PacketMeta, d: &Vp9Descriptor) -> Forward {
        self.decide_svc_frame(now, p, &SvcFrame::from_vp9(d))
    }

    /// Decide what to do with one packet of an SVC track, given its place
    /// in the stream (from a VP9 or an AV1 descriptor). See the module doc.
    pub fn decide_svc_frame(&mut self, now: Instant, p: &PacketMeta, d: &SvcFrame) -> Forward {
        // A new publisher stream (encoder restart, renegotiation): its
        // frames reference nothing this leg sent; start it at a keyframe.
        if self.layers.current().is_some() && self.source_ssrc != Some(p.ssrc) {
            self.layers.lose_current();
        }
        let pt = self.params.as_ref().and_then(|s| s.map_pt(p.payload_type));
        let can_send = pt.is_some() && !self.muted && p.payload_len > 0;
        let step = self.layers.step_svc(
            now,
            SvcPacket {
                timestamp: p.timestamp,
                sid: d.sid,
                tid: d.tid,
                switch_up_to: d.switch_up_to,
                keyframe_start: d.keyframe_start,
                announced: d.announced,
                can_start: can_send,
            },
        );
        let start = match step {
            // A layer frame above the leg's layers: taken out of its
            // numbering, so the subscriber sees no loss.
            SvcStep::Skip => {
                self.seq.drop_packet(p.seq);
                return Forward::Skip;
            }
            // Paused by the allocator: the resume restarts the numbering.
            SvcStep::Paused => return Forward::Drop(DropReason::Paused),
            SvcStep::Wait if self.params.is_none() => return Forward::Drop(DropReason::Paused),
            SvcStep::Wait => return Forward::Drop(DropReason::WaitingForKeyframe),
            SvcStep::Flow { start } => start,
        };
        // The same order of reasons as a stream without layers; the packets
        // of a flowing leg close their holes.
        let Some(params) = &self.params else {
            return self.drop(!start, p, DropReason::Paused);
        };
        let ssrc = params.ssrc;
        if self.muted {
            return self.drop(!start, p, DropReason::Muted);
        }
        if p.payload_len == 0 {
            return self.drop(!start, p, DropReason::Padding);
        }
        let Some(pt) = pt else {
            return self.drop(!start, p, DropReason::UnknownPayloadType);
        };
        if start {
            self.seq.restart();
            self.ts.restart();
            self.source_ssrc = Some(p.ssrc);
        }
        // The picture ends for this leg at its highest layer's last packet
        // (or where the publisher ended it, lower).
        let top = self.layers.current().map(SpatialLayer::index);
        let marker = p.marker || (d.end && top == Some(usize::from(d.sid)));
        // AV1: the subscriber is told which decode targets it can decode
        // (those of its layers), not the publisher's every one.
        let dd = d
            .dd_targets
            .zip(top)
            .map(|(t, top)| t.for_leg(top as u8, self.layers.temporal_cap().value()));
        // One stream: its history is the track's layer 0.
        let Some((seq, timestamp)) = self.number(now, p, SpatialLayer::LOW, marker) else {
            return Forward::Drop(DropReason::TooOld);
        };
        Forward::Send(SendParams {
            ssrc,
            payload_type: pt,
            seq,
            timestamp,
            marker,
            vp8: None,
            dd,
        })
    }
}
