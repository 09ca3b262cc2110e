//! Layer choice for a spatially scalable stream in one SSRC (VP9 k-SVC,
//! e.g. Chromium's `L3T3_KEY`).
//!
//! Every picture arrives as one layer frame per spatial layer (SID),
//! lowest first, in one sequence-number space. A leg whose current layer
//! is S forwards the frames of SID ≤ S and skips the others; its current
//! layer moves:
//!
//! - **up** only at a keyframe picture: outside keyframes a k-SVC layer
//!   predicts only from its own earlier frames, which the leg did not get
//!   (its keyframe is requested, throttled, like a simulcast switch);
//! - **down** at the next picture start: a lower layer never references a
//!   higher one, so the leg can stop the higher frames between two pictures;
//! - to the best **available** layer (one whose frames came within the
//!   layer timeout, or that the keyframe's scalability structure announced)
//!   at or below the target, as for simulcast. A silence of the whole
//!   stream longer than the timeout takes no layer away: the layers seen
//!   before it count as available again when it resumes.
//!
//! The temporal cap goes down at a picture start and up at a switching-up
//! point of a temporal layer above it (VP9: a frame of that layer with U
//! set, one layer at a time; AV1: a frame that is a Switch for that
//! layer's decode target), or at a keyframe. Decisions are a few comparisons, with no allocation.

use std::time::Instant;

use super::{LayerSelector, SpatialLayer, Target, TemporalLayer, MAX_SPATIAL_LAYERS};

/// One packet's layer fields, as the selector needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SvcPacket {
    /// The RTP timestamp: one per picture.
    pub timestamp: u32,
    pub sid: u8,
    pub tid: u8,
    /// The highest temporal layer a leg can start taking at this packet's
    /// frame (0: none above the base): VP9, the frame's own TID when its U
    /// bit is set; AV1, the highest decode target of the frame's spatial
    /// layer it is a switch point of.
    pub switch_up_to: u8,
    /// The first packet of a keyframe picture (B, not P, SID 0).
    pub keyframe_start: bool,
    /// Spatial layers its scalability structure announces (0: none).
    pub announced: u8,
    /// The leg could send this packet (negotiated, not muted): only then
    /// may it start from it.
    pub can_start: bool,
}

/// What to do with one packet of an SVC stream, for one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SvcStep {
    /// Forward it. `start`: the leg starts (or resumes) with this packet,
    /// its numbering continues from what it sent before.
    Flow { start: bool },
    /// A spatial layer above the leg's, or a temporal layer above its cap:
    /// not for this leg (its sequence number is closed up).
    Skip,
    /// Nothing flows yet: the leg waits for a keyframe.
    Wait,
    /// The leg is paused.
    Paused,
}

/// `a` is a later RTP timestamp than `b` (wrapping).
fn newer_ts(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

impl LayerSelector {
    /// Classifies one packet of an SVC stream (and notes that its layer is
    /// alive). See the module doc for the rules.
    pub(crate) fn step_svc(&mut self, now: Instant, p: SvcPacket) -> SvcStep {
        self.svc = true;
        let layer = SpatialLayer::new(p.sid);
        // A picture starts with a later timestamp; and a leg that waits
        // (a new leg, or a new publisher stream whose timestamps start
        // anywhere) takes a keyframe's first packet as one.
        let picture_start = self.picture_ts.is_none_or(|ts| newer_ts(p.timestamp, ts))
            || (p.keyframe_start && self.current.is_none());
        if picture_start {
            if let Some(prev) = self.picture_at {
                // The whole stream was silent (a network outage, a paused
                // encoder): the layers it had before are not gone, they
                // simply come after this packet of its lowest one.
                if now.saturating_duration_since(prev) >= self.layer_timeout {
                    // All judged as they were at `prev`, before any is
                    // refreshed (a refreshed one would overtake the rest).
                    let alive = SpatialLayer::ALL.map(|l| self.available(prev, l));
                    for (l, alive) in SpatialLayer::ALL.into_iter().zip(alive) {
                        if alive {
                            self.last_seen[l.index()] = Some(now);
                        }
                    }
                }
            }
            self.picture_ts = Some(p.timestamp);
            self.picture_at = Some(now);
        }
        if let Some(l) = layer {
            self.note_seen(now, l);
        }
        if p.keyframe_start {
            // The keyframe announces its layers: a leg starting from it
            // can take them at once instead of waiting for the next one.
            for i in 0..usize::from(p.announced).min(MAX_SPATIAL_LAYERS) {
                self.last_seen[i] = Some(now);
                self.gone[i] = false;
            }
        }
        let mut start = false;
        // The layer to aim at is worked out only where it can matter: at a
        // picture start (the only place a leg switches: a late keyframe
        // packet, reordered or a repair, is no place to), and while nothing
        // flows (waiting, or paused). Inside a picture a flowing leg only
        // compares the packet's layers with its own.
        if picture_start || self.current.is_none() {
            let Some(aim) = self.aim(now) else {
                // Paused: count the layers the leg had as paused drops,
                // once per packet it would have sent.
                let had = self
                    .paused_from
                    .is_some_and(|f| layer.is_some_and(|l| l <= f));
                return if had { SvcStep::Paused } else { SvcStep::Skip };
            };
            if picture_start {
                let keyframe_ok = p.keyframe_start || !self.gated;
                match self.current {
                    None if keyframe_ok && p.can_start => {
                        self.current = Some(aim);
                        self.paused_from = None;
                        self.last_keyframe_request = None;
                        start = true;
                    }
                    // Up: the higher layer's frames reference only its own
                    // earlier ones outside keyframes.
                    Some(c) if aim > c && keyframe_ok => {
                        self.current = Some(aim);
                        self.last_keyframe_request = None;
                    }
                    // Down: lower layers never reference higher ones.
                    Some(c) if aim < c => self.current = Some(aim),
                    _ => {}
                }
                self.retune_temporal(&p);
            }
        }
        let Some(current) = self.current else {
            return SvcStep::Wait;
        };
        if layer.is_none_or(|l| l > current) {
            return SvcStep::Skip;
        }
        if self.temporal != TemporalLayer::MAX && p.tid > self.temporal.value() {
            return SvcStep::Skip;
        }
        SvcStep::Flow { start }
    }

    /// The temporal cap at a picture start: down at once, up at a
    /// keyframe, or at a switching-up point of the next layer above it.
    fn retune_temporal(&mut self, p: &SvcPacket) {
        let Target::Layer(t) = self.target else {
            return;
        };
        if p.keyframe_start || t.temporal < self.temporal {
            self.temporal = t.temporal;
        } else if t.temporal > self.temporal && p.switch_up_to > self.temporal.value() {
            // From a switching-up point of layer `switch_up_to` on, that
            // layer's frames need nothing the leg skipped; the layers above
            // it wait for their own.
            self.temporal =
                TemporalLayer::new(p.switch_up_to).map_or(t.temporal, |l| l.min(t.temporal));
        }
    }
}
