//! A broadcast's life as its WHEP viewers see it, and dead publishers.
//!
//! A WHEP viewer is *active* while one of its senders carries a track that is
//! published in the room, *inactive* when none does (its publisher left,
//! timed out or restarted; the viewer waits on the same session for the
//! room's next WHIP publisher, see `rebind_orphans`), and *ended* once it has
//! been inactive for `broadcast_grace`: then it is told so and its session
//! is closed. Viewer counts are refreshed once a second, not per join, so a
//! thousand viewers joining do not wake a thousand event streams a thousand
//! times.

use std::time::Instant;

use prism_core::{LeaveCause, ParticipantId};
use prism_signal::Leg;

use super::super::viewer::{Phase, Status};
use super::{MemberKind, Shard};

impl Shard {
    /// Re-derives each WHEP viewer's phase in room `rk` (after the room's
    /// tracks changed). Inactive viewers start their grace period.
    pub(super) fn update_viewer_phases(&mut self, now: Instant, rk: usize) {
        let Some(r) = self.rooms.get_mut(rk) else {
            return;
        };
        let peers = &self.peers;
        let core = &r.core;
        for m in r.members.values_mut() {
            if m.kind != MemberKind::Whep {
                continue;
            }
            let Some(tx) = &m.status else {
                continue;
            };
            let live = m.subscribe.and_then(|k| peers.get(k)).is_some_and(|p| {
                p.senders
                    .iter()
                    .flatten()
                    .any(|s| core.track(s.track).is_some())
            });
            let phase = tx.borrow().phase;
            let next = match (phase, live) {
                (Phase::Ended, _) => Phase::Ended,
                (_, true) => Phase::Active,
                (_, false) => Phase::Inactive,
            };
            if next == Phase::Inactive && phase != Phase::Inactive {
                m.inactive_since = Some(now);
            } else if next == Phase::Active {
                m.inactive_since = None;
            }
            tx.send_if_modified(|s| {
                let changed = s.phase != next;
                s.phase = next;
                changed
            });
        }
    }

    /// Once a second: refresh every viewer's count, end the broadcast for
    /// viewers past `broadcast_grace`, and remove publishers whose publish leg
    /// went silent past `publish_timeout`.
    pub(super) fn viewer_housekeeping(&mut self, now: Instant) {
        let grace = self.cfg.broadcast_grace;
        let mut ended: Vec<(usize, ParticipantId)> = Vec::new();
        for (rk, r) in self.rooms.iter_mut() {
            let viewers = r
                .members
                .values()
                .filter(|m| m.kind == MemberKind::Whep)
                .count() as u32;
            for (pid, m) in r.members.iter_mut() {
                let Some(tx) = &m.status else {
                    continue;
                };
                tx.send_if_modified(|s| {
                    let changed = s.viewers != viewers;
                    s.viewers = viewers;
                    changed
                });
                if m.inactive_since
                    .is_some_and(|at| now.saturating_duration_since(at) >= grace)
                {
                    tx.send_replace(Status {
                        phase: Phase::Ended,
                        viewers,
                    });
                    ended.push((rk, *pid));
                }
            }
        }
        for (rk, pid) in ended {
            tracing::info!(participant = %pid, grace = ?grace,
                "broadcast ended for a WHEP viewer: no publisher within broadcast_grace");
            self.stats.broadcasts_ended += 1;
            // Its streams end: BYE on each, out before the peer closes.
            if let Some(key) = self.rooms[rk].members.get(&pid).and_then(|m| m.subscribe) {
                let slots = self.peers.get(key).map_or(0, |p| p.senders.len());
                for slot in 0..slots {
                    self.send_bye(now, key, slot, "broadcast ended");
                }
                self.drain(key);
            }
            self.remove_participant(now, rk, pid, LeaveCause::Left);
        }
        self.remove_dead_publishers(now);
    }

    /// A publish leg whose participant has published tracks and that has
    /// received nothing (no RTP, RTCP or consent check) for `publish_timeout`
    /// is a dead publisher: its viewers learn it sooner than `peer_timeout`.
    fn remove_dead_publishers(&mut self, now: Instant) {
        let timeout = self.cfg.publish_timeout.min(self.cfg.peer_timeout);
        let dead: Vec<(usize, ParticipantId)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.leg == Leg::Publish)
            .filter(|(_, p)| now.saturating_duration_since(p.last_rx_at) > timeout)
            .filter(|(_, p)| {
                self.rooms
                    .get(p.room)
                    .is_some_and(|r| r.core.tracks_of(p.participant).next().is_some())
            })
            .map(|(_, p)| (p.room, p.participant))
            .collect();
        for (rk, pid) in dead {
            tracing::info!(shard = self.index, participant = %pid, timeout = ?timeout,
                "publish leg silent past publish_timeout");
            self.stats.dead_publishers += 1;
            self.remove_participant(now, rk, pid, LeaveCause::Timeout);
        }
    }
}
