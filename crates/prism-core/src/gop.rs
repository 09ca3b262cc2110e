//! The keyframe cache: where the latest group of pictures (GOP) of a video
//! stream starts and ends, and whether a new subscriber may start from it.
//!
//! A subscriber started from a cached keyframe must also get every packet
//! that depends on it, up to the live edge, or its decoder runs deltas on a
//! reference it never had (corruption, or a freeze until the next keyframe).
//! So the cache is the whole GOP, and it is usable only when all of it is
//! still there.
//!
//! The packets themselves are not copied: they are the track's shared
//! retransmission history ([`PacketHistory`]), which holds every packet by
//! the publisher's sequence number for `max_age`. [`GopCache`] only remembers
//! the keyframe's first sequence number, the newest one since, the SSRC and
//! when the keyframe arrived (a few words per track). [`GopCache::check`]
//! answers, at a subscriber's start, either the run of sequence numbers to
//! send (keyframe first, every packet present) or why not
//! ([`CacheRefusal`]): then the subscriber waits for a fresh keyframe.
//!
//! Memory bound: nothing beyond the history's own (which is bounded by its
//! packets and age). The burst sent to one new subscriber is at most
//! `max_packets` packets.

use std::time::{Duration, Instant};

use crate::history::PacketHistory;

/// `a` is newer than `b` in RTP sequence space (RFC 3550 wraparound).
#[inline]
fn newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

crate::labelled_enum! {
    /// Why a new subscriber could not start from the keyframe cache (it
    /// then waits for a fresh keyframe, requested at once). Becomes the
    /// `reason` label of `prism_keyframe_cache_refusals_total`.
    #[non_exhaustive]
    pub enum CacheRefusal {
        /// No keyframe of the current stream seen yet (a new publisher, or a new
        /// SSRC since the last keyframe).
        NoKeyframe => "no_keyframe",
        /// The keyframe is older than the cache's age bound (the history no
        /// longer holds it): a long GOP.
        Stale => "stale",
        /// The GOP holds more packets than the cache's packet bound.
        OverBound => "over_bound",
        /// A packet of the GOP is missing: lost and not (yet) repaired by the
        /// publisher, or overwritten in the history.
        Incomplete => "incomplete",
    }
}

/// One plain counter per [`CacheRefusal`].
pub type RefusalCounts = crate::labels::Counts<CacheRefusal>;

/// The latest GOP of one video stream, as sequence numbers into its history.
#[derive(Debug, Clone)]
pub struct GopCache {
    /// The stream (SSRC) seen last and its newest sequence number: the live
    /// edge.
    edge: Option<(u32, u16)>,
    /// The latest keyframe of that stream: its first packet's sequence
    /// number, and when that arrived.
    keyframe: Option<(u16, Instant)>,
    max_packets: usize,
    max_age: Duration,
}

impl GopCache {
    /// A subscriber may start from a GOP of at most `max_packets` packets
    /// whose keyframe is at most `max_age` old.
    pub fn new(max_packets: usize, max_age: Duration) -> Self {
        GopCache {
            edge: None,
            keyframe: None,
            // Half the sequence space at most: beyond that "newer" is
            // ambiguous.
            max_packets: max_packets.min(0x8000),
            max_age,
        }
    }

    /// A packet of the stream arrived (call for every packet, in arrival
    /// order, before [`GopCache::check`]); `keyframe`: it starts a keyframe.
    /// No allocation.
    #[inline]
    pub fn on_packet(&mut self, now: Instant, ssrc: u32, seq: u16, keyframe: bool) {
        match &mut self.edge {
            Some((s, last)) if *s == ssrc => {
                if newer(seq, *last) {
                    *last = seq;
                }
            }
            _ => {
                // A new encoder behind the track: its packets continue
                // nothing of the old GOP; only its own keyframe starts one.
                self.edge = Some((ssrc, seq));
                self.keyframe = None;
            }
        }
        if keyframe {
            // A newer keyframe replaces the old GOP; a retransmitted older
            // keyframe start does not move it back.
            if self.keyframe.is_none_or(|(first, _)| newer(seq, first)) {
                self.keyframe = Some((seq, now));
            }
        }
    }

    /// Whether a subscriber starting `now` can start from the cached GOP:
    /// the first sequence number and the count of packets to send (the
    /// keyframe first, every one of them held by `history`), or why not.
    pub fn check(
        &self,
        now: Instant,
        history: &PacketHistory,
    ) -> Result<(u16, usize), CacheRefusal> {
        let (Some((ssrc, last)), Some((first, at))) = (self.edge, self.keyframe) else {
            return Err(CacheRefusal::NoKeyframe);
        };
        if now.saturating_duration_since(at) > self.max_age {
            return Err(CacheRefusal::Stale);
        }
        let len = last.wrapping_sub(first) as usize + 1;
        if len > self.max_packets {
            return Err(CacheRefusal::OverBound);
        }
        // Bounded by `max_packets`; runs once per subscriber start, never
        // per packet.
        for i in 0..len {
            match history.get(now, first.wrapping_add(i as u16)) {
                Some(p) if p.header.ssrc == ssrc => {}
                _ => return Err(CacheRefusal::Incomplete),
            }
        }
        Ok((first, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ssrc: u32, seq: u16) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                ssrc,
                sequence_number: seq,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"x"),
        }
    }

    /// One input to a cache and its history.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        /// A keyframe start arrives (and is stored), `ms` after t0.
        K(u64, u32, u16),
        /// Another packet arrives (and is stored).
        P(u64, u32, u16),
        /// A packet arrives but is lost before the history (a hole).
        Lost(u64, u32, u16),
    }
    use Op::*;

    fn run(max_packets: usize, ops: &[Op], at_ms: u64) -> Result<(u16, usize), CacheRefusal> {
        let t0 = Instant::now();
        let age = Duration::from_secs(2);
        let mut h = PacketHistory::new(1024, age);
        let mut c = GopCache::new(max_packets, age);
        for op in ops {
            let (ms, ssrc, seq, key, store) = match *op {
                K(ms, s, q) => (ms, s, q, true, true),
                P(ms, s, q) => (ms, s, q, false, true),
                Lost(ms, s, q) => (ms, s, q, false, false),
            };
            let now = t0 + Duration::from_millis(ms);
            if store {
                c.on_packet(now, ssrc, seq, key);
                h.insert(now, pkt(ssrc, seq));
            }
        }
        c.check(t0 + Duration::from_millis(at_ms), &h)
    }

    #[test]
    fn table() {
        use CacheRefusal::*;
        // (name, packet bound, inputs, check at ms, expected)
        type Row = (
            &'static str,
            usize,
            Vec<Op>,
            u64,
            Result<(u16, usize), CacheRefusal>,
        );
        let deltas = |from: u16, n: u16, ms: u64| -> Vec<Op> {
            (0..n)
                .map(|i| P(ms + u64::from(i) * 33, 1, from.wrapping_add(i)))
                .collect()
        };
        let rows: Vec<Row> = vec![
            ("nothing yet", 512, vec![], 0, Err(NoKeyframe)),
            ("deltas only", 512, deltas(10, 5, 0), 200, Err(NoKeyframe)),
            ("fresh keyframe", 512, vec![K(0, 1, 100)], 10, Ok((100, 1))),
            (
                "keyframe then N deltas within bound",
                512,
                [vec![K(0, 1, 100)], deltas(101, 30, 33)].concat(),
                1100,
                Ok((100, 31)),
            ),
            (
                "GOP past the packet bound",
                16,
                [vec![K(0, 1, 100)], deltas(101, 16, 33)].concat(),
                600,
                Err(OverBound),
            ),
            (
                "GOP exactly at the packet bound",
                16,
                [vec![K(0, 1, 100)], deltas(101, 15, 33)].concat(),
                600,
                Ok((100, 16)),
            ),
            (
                "GOP past the age bound",
                512,
                [vec![K(0, 1, 100)], deltas(101, 70, 33)].concat(),
                2001,
                Err(Stale),
            ),
            (
                "a keyframe 41 s old, no delta since",
                512,
                vec![K(0, 1, 100)],
                41_000,
                Err(Stale),
            ),
            (
                "a hole in the GOP",
                512,
                vec![K(0, 1, 100), P(33, 1, 101), Lost(66, 1, 102), P(99, 1, 103)],
                120,
                Err(Incomplete),
            ),
            (
                "a hole the publisher repaired",
                512,
                vec![K(0, 1, 100), P(33, 1, 101), P(99, 1, 103), P(130, 1, 102)],
                140,
                Ok((100, 4)),
            ),
            (
                "the keyframe's own first packet arrives late",
                512,
                vec![P(0, 1, 101), P(5, 1, 102), K(40, 1, 100)],
                50,
                Ok((100, 3)),
            ),
            (
                "a new keyframe replaces the old (and its age)",
                512,
                [
                    vec![K(0, 1, 100)],
                    deltas(101, 60, 33),
                    vec![K(2000, 1, 161)],
                    deltas(162, 3, 2033),
                ]
                .concat(),
                3000,
                Ok((161, 4)),
            ),
            (
                "a late retransmitted old keyframe does not move it back",
                512,
                vec![K(0, 1, 100), K(10, 1, 200), P(20, 1, 201), K(30, 1, 100)],
                40,
                Ok((200, 2)),
            ),
            (
                "sequence wraparound",
                512,
                [vec![K(0, 1, 65530)], deltas(65531, 10, 33)].concat(),
                400,
                Ok((65530, 11)),
            ),
            (
                "a hole across the wrap",
                512,
                vec![K(0, 1, 65535), Lost(33, 1, 0), P(66, 1, 1)],
                100,
                Err(Incomplete),
            ),
            (
                "a new SSRC without its keyframe",
                512,
                vec![K(0, 1, 100), P(33, 1, 101), P(66, 2, 5000)],
                100,
                Err(NoKeyframe),
            ),
            (
                "a new SSRC's keyframe",
                512,
                vec![K(0, 1, 100), P(33, 2, 4999), K(66, 2, 5000), P(99, 2, 5001)],
                100,
                Ok((5000, 2)),
            ),
        ];
        for (name, max, ops, at, want) in rows {
            assert_eq!(run(max, &ops, at), want, "row: {name}");
        }
    }

    #[test]
    fn refusal_counts_have_a_slot_and_a_label_each() {
        let mut c = RefusalCounts::default();
        for r in CacheRefusal::ALL {
            c.inc(*r);
        }
        let mut sum = RefusalCounts::default();
        sum.add(&c);
        sum.add(&c);
        for (i, (r, n)) in sum.iter().enumerate() {
            assert_eq!(r as usize, i, "ALL is in declaration order");
            assert_eq!(n, 2);
        }
        let labels: std::collections::HashSet<_> =
            CacheRefusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), CacheRefusal::COUNT);
    }
}
