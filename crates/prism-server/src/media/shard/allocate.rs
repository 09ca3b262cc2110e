//! Per-subscriber bandwidth allocation and dynacast, once a second.
//!
//! Each subscribe leg's estimate (TWCC, else the subscriber's REMB) is
//! shared over the tracks it receives by its `prism_core::Allocator`: audio
//! first, then screen shares, then the other video, each at the highest
//! simulcast layer that fits its wish (`track_settings`) and what is left.
//! The targets go to the leg's forwarders, which switch at the target
//! layer's next keyframe. A simulcast track whose lowest layer does not fit
//! is paused and its subscriber told (`track_paused`, then `track_resumed`).
//! A track without simulcast has nothing lower to offer: it keeps flowing
//! (its publisher is asked, by REMB, to send what its weakest subscriber
//! takes) unless its subscriber hid it.
//!
//! Dynacast: per simulcast track, the layers some subscriber takes (or still
//! receives while it switches) are told to its publisher (`layers_wanted`);
//! the others can be switched off. The lowest layer is always wanted, so a
//! new subscriber starts at once.

use std::time::Instant;

use prism_core::{
    AllocTrack, Bitrate, LayerTarget, MediaKind, ParticipantId, SpatialLayer, Target, TrackId,
    Transition, Wish as CoreWish,
};
use prism_signal::{self as sig, Leg, ServerEnvelope, ServerMessage};

use super::{MemberKind, Shard, Wish};

/// What a subscriber without an estimate yet is assumed to take.
const NO_ESTIMATE: u64 = super::SUBSCRIBER_MAX_ESTIMATE as u64;

impl Wish {
    /// The allocator's form: nothing, a size, or a quality.
    fn to_core(self) -> CoreWish {
        if !self.enabled {
            return CoreWish::Nothing;
        }
        if self.max_width > 0 || self.max_height > 0 {
            return CoreWish::MaxSize {
                width: if self.max_width == 0 {
                    u32::MAX
                } else {
                    self.max_width
                },
                height: if self.max_height == 0 {
                    u32::MAX
                } else {
                    self.max_height
                },
            };
        }
        CoreWish::MaxLayer(match self.quality {
            sig::Quality::Low => SpatialLayer::LOW,
            sig::Quality::Medium => SpatialLayer::MID,
            sig::Quality::High => SpatialLayer::HIGH,
        })
    }
}

impl Shard {
    /// Measures every layer's bitrate, allocates every subscribe leg, and
    /// tells publishers which layers are wanted.
    pub(super) fn allocate(&mut self, now: Instant) {
        for (_, r) in self.rooms.iter_mut() {
            r.core.measure(now);
        }
        let legs: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, p)| p.leg == Leg::Subscribe)
            .map(|(k, _)| k)
            .collect();
        let mut tracks: Vec<AllocTrack> = Vec::new();
        let mut tell: Vec<(usize, ParticipantId, ServerMessage)> = Vec::new();
        let (mut total_used, mut total_estimate) = (0u64, 0u64);
        for key in legs {
            if let Some((used, estimate)) = self.allocate_leg(now, key, &mut tracks, &mut tell) {
                total_used += used;
                total_estimate += estimate;
            }
        }
        self.stats.allocated_bps = total_used;
        self.stats.estimated_bps = total_estimate;
        for (rk, pid, msg) in tell {
            self.send_to(rk, pid, ServerEnvelope::new(msg));
        }
        if self.cfg.dynacast {
            self.dynacast(now);
        }
    }

    /// Allocates one subscribe leg's estimate over its tracks and sets its
    /// forwarders' targets; the pause/resume messages for its subscriber go
    /// to `tell`. Returns (allocated, estimate) in bits per second.
    fn allocate_leg(
        &mut self,
        now: Instant,
        key: usize,
        tracks: &mut Vec<AllocTrack>,
        tell: &mut Vec<(usize, ParticipantId, ServerMessage)>,
    ) -> Option<(u64, u64)> {
        let p = self.peers.get_mut(key)?;
        let (rk, pid) = (p.room, p.participant);
        let r = self.rooms.get_mut(rk)?;
        let m = r.members.get(&pid)?;
        tracks.clear();
        for s in p.senders.iter().flatten() {
            let Some(t) = r.core.track(s.track) else {
                continue;
            };
            let wish = m.wishes.get(&t.id).copied().unwrap_or(m.default_wish);
            tracks.push(AllocTrack {
                id: t.id,
                kind: t.spec.kind,
                source: t.spec.source,
                priority: 0,
                wish: if t.spec.kind == MediaKind::Audio {
                    CoreWish::MaxLayer(SpatialLayer::LOW)
                } else {
                    wish.to_core()
                },
                layers: r.core.layer_infos(t.id),
            });
        }
        let estimate = match p.available_bitrate() {
            0 => NO_ESTIMATE,
            bps => bps,
        };
        let allocs = p.allocator.allocate(now, Bitrate(estimate), tracks);
        let mut used = 0u64;
        for (a, t) in allocs.iter().zip(tracks.iter()) {
            used += a.bitrate.bps();
            let simulcast = t.layers.iter().flatten().count() > 1;
            let target = match a.target {
                // Nothing lower to offer: it flows, unless hidden.
                Target::Paused if !simulcast && t.wish != CoreWish::Nothing => {
                    Target::Layer(LayerTarget::spatial(SpatialLayer::LOW))
                }
                other => other,
            };
            r.core.set_target(a.track, pid, target);
            if !simulcast || m.kind != MemberKind::Socket {
                continue;
            }
            match a.transition {
                Some(Transition::Paused) => {
                    self.stats.tracks_paused += 1;
                    tell.push((
                        rk,
                        pid,
                        ServerMessage::TrackPaused(sig::TrackPaused {
                            track_id: a.track.to_string(),
                            reason: "bandwidth".into(),
                        }),
                    ));
                }
                Some(Transition::Resumed) => tell.push((
                    rk,
                    pid,
                    ServerMessage::TrackResumed(sig::TrackRef {
                        track_id: a.track.to_string(),
                    }),
                )),
                None => {}
            }
        }
        p.congestions_seen = p.estimate.congestions();
        Some((used, estimate))
    }

    /// A subscribe leg's estimate fell for congestion: allocate it again now
    /// rather than at the next tick, so its layers come down within a
    /// feedback interval.
    pub(super) fn reallocate_congested(&mut self, now: Instant, key: usize) {
        let mut tracks = Vec::new();
        let mut tell = Vec::new();
        if self
            .allocate_leg(now, key, &mut tracks, &mut tell)
            .is_some()
        {
            self.stats.congestion_reallocations += 1;
        }
        for (rk, pid, msg) in tell {
            self.send_to(rk, pid, ServerEnvelope::new(msg));
        }
    }

    /// Tells each simulcast publisher (over its WebSocket) which of its
    /// layers some subscriber takes, when that changed.
    fn dynacast(&mut self, now: Instant) {
        let mut tell: Vec<(usize, ParticipantId, ServerMessage)> = Vec::new();
        for (key, p) in self.peers.iter_mut() {
            if p.leg != Leg::Publish {
                continue;
            }
            let Some(r) = self.rooms.get(p.room) else {
                continue;
            };
            if r.members.get(&p.participant).map(|m| m.kind) != Some(MemberKind::Socket) {
                continue;
            }
            for pt in p.pub_tracks.iter_mut().filter(|pt| pt.rids.len() > 1) {
                let wanted = wanted_layers(&r.core, now, pt.track);
                // A layer goes off only after DYNACAST_HOLD unwanted: a
                // leg's target moves faster than an encoder restarts.
                let mut mask = wanted;
                for (i, since) in pt.unwanted_since.iter_mut().enumerate() {
                    if wanted & (1 << i) != 0 {
                        *since = None;
                        continue;
                    }
                    let at = *since.get_or_insert(now);
                    if now.saturating_duration_since(at) < DYNACAST_HOLD {
                        mask |= 1 << i;
                    }
                }
                if pt.wanted_sent == Some(mask) {
                    continue;
                }
                pt.wanted_sent = Some(mask);
                let rids = pt
                    .rids
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, r)| r.clone())
                    .collect();
                tracing::debug!(peer = key, track = %pt.track, mask, "dynacast: layers wanted");
                tell.push((
                    p.room,
                    p.participant,
                    ServerMessage::LayersWanted(sig::LayersWanted {
                        track_id: pt.track.to_string(),
                        rids,
                    }),
                ));
            }
        }
        for (rk, pid, msg) in tell {
            self.send_to(rk, pid, ServerEnvelope::new(msg));
        }
    }
}

/// How long a layer must be unwanted before its publisher is told to stop
/// it.
const DYNACAST_HOLD: std::time::Duration = std::time::Duration::from_secs(3);

/// The layers of `track` someone targets, aims at or still receives (a bit
/// each); always the lowest.
fn wanted_layers(room: &prism_core::Room, now: Instant, track: TrackId) -> u8 {
    let mut mask = 1u8;
    room.each_leg_layers(now, track, |target, aim, current| {
        if let Target::Layer(l) = target {
            mask |= 1 << l.spatial.index();
        }
        for l in [aim, current].into_iter().flatten() {
            mask |= 1 << l.index();
        }
    });
    mask
}
