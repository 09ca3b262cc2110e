//! The decision for one packet of a spatially scalable stream (VP9 k-SVC:
//! every spatial layer in one SSRC), for one subscriber leg.
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
use crate::layer::svc::SvcPacket;
use crate::layer::{SpatialLayer, SvcStep};
use crate::seq::SeqOutcome;
use crate::vp9::Vp9Descriptor;

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
                sid: d.sid(),
                tid: d.tid(),
                switching_up: d.switching_up(),
                keyframe_start: d.keyframe_start(),
                announced: d.ss.map_or(0, |ss| ss.spatial_layers),
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
        let marker = p.marker || (d.end && top == Some(usize::from(d.sid())));
        match self.seq.forward(p.seq) {
            SeqOutcome::Send(seq) => {
                let timestamp = self.ts.rewrite(now, p.timestamp);
                if let Some(m) = &mut self.sent {
                    // One stream: its history is the track's layer 0.
                    m.record(seq, p.seq, timestamp, SpatialLayer::LOW, marker);
                }
                self.packets_sent = self.packets_sent.wrapping_add(1);
                self.octets_sent = self.octets_sent.wrapping_add(p.payload_len as u32);
                Forward::Send(SendParams {
                    ssrc,
                    payload_type: pt,
                    seq,
                    timestamp,
                    marker,
                    vp8: None,
                })
            }
            SeqOutcome::TooOld => Forward::Drop(DropReason::TooOld),
        }
    }
}
