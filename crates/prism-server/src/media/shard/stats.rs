//! The shard's metrics: what the engine knows about each peer (loss, jitter,
//! RTT, the NACKs/PLIs/FIRs it sent), sampled once a second, and the
//! once-a-second copy of everything for the exporter.

use std::time::{Duration, Instant};

use prism_core::labels::Counts;
use prism_core::{MediaKind, RoomCounters};
use prism_signal::Leg;
use rtc::statistics::report::RTCStatsReportEntry;
use rtc::statistics::StatsSelector;

use super::super::engine_log::{self, EngineError};
use super::super::stun::DatagramDrop;
use super::{MemberKind, Shard};

/// At most one summary line of dropped and refused datagrams per shard in
/// this long: a flood costs counter increments, never a line per datagram.
pub const DROP_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// The drop counts at the last summary line, to log only what changed.
#[derive(Debug, Clone)]
pub struct DropSummary {
    at: Instant,
    datagrams: Counts<DatagramDrop>,
    engine: Counts<EngineError>,
}

impl DropSummary {
    pub fn new(now: Instant) -> Self {
        DropSummary {
            at: now,
            datagrams: Counts::default(),
            engine: Counts::default(),
        }
    }
}

/// Cumulative engine counters last seen for one peer, to add only deltas
/// (so a peer's removal loses nothing and totals never go down).
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineSeen {
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    pub lost: u64,
}

impl Shard {
    /// Reads each peer's engine statistics: publish legs' inbound streams
    /// (loss, jitter, the NACK/PLI/FIR Prism sent upstream), subscribe legs'
    /// remote-inbound streams (round-trip time from receiver reports).
    pub(super) fn sample_engine_stats(&mut self, now: Instant) {
        for (_, p) in self.peers.iter_mut() {
            if !p.connected {
                continue;
            }
            let report = p.pc.get_stats(now, StatsSelector::None);
            let mut seen = EngineSeen::default();
            for entry in report.iter() {
                match entry {
                    RTCStatsReportEntry::InboundRtp(s) if p.leg == Leg::Publish => {
                        seen.nacks += s.nack_count as u64;
                        seen.plis += s.pli_count as u64;
                        seen.firs += s.fir_count as u64;
                        seen.lost += s.received_rtp_stream_stats.packets_lost.max(0) as u64;
                        self.stats
                            .jitter
                            .observe(s.received_rtp_stream_stats.jitter);
                    }
                    RTCStatsReportEntry::RemoteInboundRtp(s)
                        if p.leg == Leg::Subscribe && s.round_trip_time_measurements > 0 =>
                    {
                        self.stats.rtt.observe(s.round_trip_time);
                    }
                    _ => {}
                }
            }
            let last = p.engine_seen;
            self.stats.nacks_out += seen.nacks.saturating_sub(last.nacks);
            self.stats.firs_out += seen.firs.saturating_sub(last.firs);
            // The engine counts the PLIs Prism writes itself too; keep the max.
            self.stats.packets_lost += seen.lost.saturating_sub(last.lost);
            p.engine_seen = EngineSeen {
                nacks: seen.nacks.max(last.nacks),
                plis: seen.plis.max(last.plis),
                firs: seen.firs.max(last.firs),
                lost: seen.lost.max(last.lost),
            };
        }
    }

    /// Takes the engine warnings this shard's thread raised (see
    /// `engine_log`) into its counters; at most every
    /// [`DROP_SUMMARY_INTERVAL`], one line saying what was dropped since the
    /// last line, by reason (nothing when nothing was).
    pub(super) fn count_drops(&mut self, now: Instant) {
        for (r, n) in EngineError::ALL.iter().zip(engine_log::take()) {
            self.stats.engine_errors.add_n(*r, n);
        }
        let last = &mut self.drop_summary;
        if now.saturating_duration_since(last.at) < DROP_SUMMARY_INTERVAL {
            return;
        }
        let datagrams = self.stats.datagram_drops.since(&last.datagrams).nonzero();
        let engine = self.stats.engine_errors.since(&last.engine).nonzero();
        let secs = now.saturating_duration_since(last.at).as_secs();
        *last = DropSummary {
            at: now,
            datagrams: self.stats.datagram_drops,
            engine: self.stats.engine_errors,
        };
        if datagrams.is_empty() && engine.is_empty() {
            return;
        }
        tracing::info!(
            shard = self.index,
            secs,
            dropped = ?datagrams,
            engine_refused = ?engine,
            "datagrams dropped by the shard or refused by the engine (prism_dropped_datagrams_total, prism_engine_errors_total)"
        );
    }

    /// Gauges from the current state, room counters (live rooms plus closed
    /// ones), then the copy the exporter reads.
    pub(super) fn publish_stats(&mut self) {
        let s = &mut self.stats;
        if let Some(tcp) = &self.tcp {
            s.ice_tcp = tcp.stats;
        }
        s.rooms = self.rooms.len() as u64;
        s.peers = self.peers.len() as u64;
        s.participants = [0; 3];
        s.tracks = [0; 2];
        s.subscriptions = [0; 2];
        let mut rc: RoomCounters = self.closed_rooms.clone();
        for (_, r) in &self.rooms {
            rc.absorb(&r.core.counters);
            for m in r.members.values() {
                let i = match m.kind {
                    MemberKind::Socket => 0,
                    MemberKind::Whip => 1,
                    MemberKind::Whep => 2,
                };
                s.participants[i] += 1;
            }
            for t in r.core.tracks() {
                let i = usize::from(t.spec.kind == MediaKind::Video);
                s.tracks[i] += 1;
                s.subscriptions[i] += t.subscriber_count() as u64;
            }
        }
        s.drops = rc.drops;
        s.drops.add(&self.drops);
        s.nacks_in = rc.nacks_in;
        s.retransmits = rc.retransmits;
        s.nack_misses = rc.nack_misses + rc.nack_expired;
        s.keyframe_requests_out = rc.keyframe_requests_out;
        s.keyframe_cache_starts = rc.cache_starts;
        s.layer_skips = rc.layer_skips;
        // (direction, reason): up/down × to the target / fallback.
        let [fall_up, fall_down] = rc.layer_switches_fallback;
        s.layer_switches = [
            rc.layer_switches_up.saturating_sub(fall_up),
            rc.layer_switches_down.saturating_sub(fall_down),
            fall_up,
            fall_down,
        ];
        s.keyframe_cache_refusals = rc.cache_refusals;
        s.publish(&self.published);
    }
}
