//! Retransmission history: one per published stream, shared by every
//! subscriber, indexed by the publisher's sequence number.
//!
//! A ring of slots addressed by `seq % capacity`; a slot holds the packet
//! moved in by the driver (no copy) and when it arrived. A lookup succeeds if
//! the slot holds that very sequence number and is younger than `max_age`.
//! Bounded by both: `capacity` packets and `max_age`, and packets past
//! `max_age` are released as new ones arrive, so a stream holds about
//! `max_age` of packets however large `capacity` is (a 1 Mbit/s video track
//! ~270 KB rather than a full ring of 1200-byte packets). Subscribers keep
//! only a map from their own sequence numbers back to the source
//! ([`SentMap`]).

use std::time::{Duration, Instant};

use crate::layer::SpatialLayer;
use rtc::rtp;

#[derive(Debug)]
struct Stored {
    at: Instant,
    packet: rtp::Packet,
}

#[derive(Debug)]
pub struct PacketHistory {
    slots: Vec<Option<Stored>>,
    mask: usize,
    max_age: Duration,
    /// The oldest sequence number that may still be held: where releasing
    /// aged packets resumes.
    oldest: Option<u16>,
}

/// Slots looked at per insert when releasing aged packets: more than one,
/// so the release keeps up after a gap, and bounded, so an insert stays O(1).
const RELEASE_STEPS: usize = 4;

impl PacketHistory {
    /// `capacity` is rounded up to a power of two (at least 16).
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let cap = capacity.max(16).next_power_of_two();
        let mut slots = Vec::with_capacity(cap);
        slots.resize_with(cap, || None);
        PacketHistory {
            slots,
            mask: cap - 1,
            max_age,
            oldest: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Stores a packet, replacing whatever its slot held, and releases a
    /// few of the oldest packets if they are past `max_age`.
    pub fn insert(&mut self, now: Instant, packet: rtp::Packet) {
        let newest = packet.header.sequence_number;
        let idx = newest as usize & self.mask;
        self.slots[idx] = Some(Stored { at: now, packet });
        let mut oldest = self.oldest.unwrap_or(newest);
        let behind = newest.wrapping_sub(oldest) as usize;
        if behind >= 0x8000 {
            // A late packet (older than where releasing stands): nothing to do.
            return;
        }
        if behind > self.mask {
            // Whatever was older has been overwritten (or the stream jumped).
            oldest = newest.wrapping_sub(self.mask as u16);
        }
        for _ in 0..RELEASE_STEPS {
            if oldest == newest {
                break;
            }
            let slot = &mut self.slots[oldest as usize & self.mask];
            match slot {
                Some(s) if s.packet.header.sequence_number == oldest => {
                    if now.saturating_duration_since(s.at) <= self.max_age {
                        break;
                    }
                    *slot = None;
                }
                // Lost, or the slot already holds a newer packet.
                _ => {}
            }
            oldest = oldest.wrapping_add(1);
        }
        self.oldest = Some(oldest);
    }

    /// Packets currently held (walks the ring).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// What the slot for `seq` holds: its sequence number and age (diagnostics).
    pub fn slot(&self, now: Instant, seq: u16) -> Option<(u16, Duration)> {
        self.slots[seq as usize & self.mask].as_ref().map(|s| {
            (
                s.packet.header.sequence_number,
                now.saturating_duration_since(s.at),
            )
        })
    }

    /// The packet with this publisher sequence number, if still held.
    pub fn get(&self, now: Instant, seq: u16) -> Option<&rtp::Packet> {
        match &self.slots[seq as usize & self.mask] {
            Some(s)
                if s.packet.header.sequence_number == seq
                    && now.saturating_duration_since(s.at) <= self.max_age =>
            {
                Some(&s.packet)
            }
            _ => None,
        }
    }
}

/// One entry of a subscriber's sent map.
#[derive(Debug, Clone, Copy)]
struct Sent {
    out_seq: u16,
    src_seq: u16,
    out_ts: u32,
    /// The simulcast layer `src_seq` belongs to (each has its own numbers).
    layer: SpatialLayer,
    /// The marker bit it was sent with (an SVC leg sets its own).
    marker: bool,
    /// Milliseconds (wrapping) since the map's epoch of the last
    /// retransmission, 0 = never.
    resent_ms: u32,
}

/// Entries in a [`SentMap`]: how far back a subscriber can NACK.
pub const SENT_MAP_LEN: usize = 512;

/// A subscriber leg's map from its own sequence numbers to the publisher's,
/// for answering its NACKs from the shared history. Fixed size, allocated once.
#[derive(Debug, Clone)]
pub struct SentMap {
    entries: Box<[Sent; SENT_MAP_LEN]>,
    epoch: Instant,
}

/// What a subscriber's NACK of one sequence number resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackLookup {
    /// Retransmit the publisher's packet `src_seq` of `layer` as `out_seq`
    /// with `out_ts`.
    Resend {
        src_seq: u16,
        out_seq: u16,
        out_ts: u32,
        layer: SpatialLayer,
        /// The marker bit it was sent with.
        marker: bool,
    },
    /// Never sent, or sent too long ago to know.
    Unknown,
    /// Retransmitted within the last `min_interval`: ignored.
    Duplicate,
}

impl SentMap {
    pub fn new(epoch: Instant) -> Self {
        let mut entries = Box::new(
            [Sent {
                out_seq: 0,
                src_seq: 0,
                out_ts: 0,
                layer: SpatialLayer::LOW,
                marker: false,
                resent_ms: 0,
            }; SENT_MAP_LEN],
        );
        // Mark every slot as not holding its own index, so nothing matches.
        for (i, e) in entries.iter_mut().enumerate() {
            e.out_seq = !(i as u16);
        }
        SentMap { entries, epoch }
    }

    #[inline]
    pub fn record(
        &mut self,
        out_seq: u16,
        src_seq: u16,
        out_ts: u32,
        layer: SpatialLayer,
        marker: bool,
    ) {
        self.entries[out_seq as usize % SENT_MAP_LEN] = Sent {
            out_seq,
            src_seq,
            out_ts,
            layer,
            marker,
            resent_ms: 0,
        };
    }

    /// Resolves a NACKed sequence number, marking it retransmitted.
    pub fn lookup(&mut self, now: Instant, out_seq: u16, min_interval: Duration) -> NackLookup {
        let e = &mut self.entries[out_seq as usize % SENT_MAP_LEN];
        if e.out_seq != out_seq {
            return NackLookup::Unknown;
        }
        let now_ms = (now.saturating_duration_since(self.epoch).as_millis() as u32).max(1);
        if e.resent_ms != 0 && now_ms.wrapping_sub(e.resent_ms) < min_interval.as_millis() as u32 {
            return NackLookup::Duplicate;
        }
        e.resent_ms = now_ms;
        NackLookup::Resend {
            src_seq: e.src_seq,
            out_seq,
            out_ts: e.out_ts,
            layer: e.layer,
            marker: e.marker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                sequence_number: seq,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![seq as u8; 10]),
        }
    }

    #[test]
    fn history_bounds_by_count_and_age() {
        let t0 = Instant::now();
        let mut h = PacketHistory::new(100, Duration::from_secs(2));
        assert_eq!(h.capacity(), 128);
        for seq in 65500u16..=65535 {
            h.insert(t0, pkt(seq));
        }
        for seq in 0u16..100 {
            h.insert(t0, pkt(seq));
        }
        assert!(h.get(t0, 65535).is_some(), "across the wrap");
        assert!(h.get(t0, 99).is_some());
        assert!(
            h.get(t0, 65500).is_none(),
            "overwritten by seq 92 (same slot)"
        );
        assert!(h.get(t0, 100).is_none(), "never stored");
        assert!(
            h.get(t0 + Duration::from_millis(2001), 99).is_none(),
            "too old"
        );
        assert_eq!(h.get(t0, 5).unwrap().payload[0], 5);
    }

    #[test]
    fn aged_packets_are_released_as_new_ones_arrive() {
        let t0 = Instant::now();
        let mut h = PacketHistory::new(4096, Duration::from_secs(2));
        // 100 packets a second for 10 s: about 2 s worth stays held.
        for i in 0..1000u32 {
            let at = t0 + Duration::from_millis(10 * u64::from(i));
            h.insert(at, pkt(60_000u16.wrapping_add(i as u16)));
        }
        let end = t0 + Duration::from_millis(9990);
        let held = h.held();
        assert!((200..=205).contains(&held), "held {held}");
        // The newest 2 s answer; older ones are gone.
        let last = 60_000u16.wrapping_add(999);
        assert!(h.get(end, last).is_some());
        assert!(h.get(end, last.wrapping_sub(150)).is_some());
        assert!(h.get(end, last.wrapping_sub(300)).is_none());
        // A gap (the publisher paused 5 s): the next packets release the
        // stale ones a few at a time.
        let later = end + Duration::from_secs(5);
        for k in 1..=60u16 {
            h.insert(later, pkt(last.wrapping_add(k)));
        }
        assert_eq!(h.held(), 60, "only the fresh packets remain");
        // A late packet and a jump do not break it.
        h.insert(later, pkt(last));
        h.insert(later, pkt(last.wrapping_add(30_000)));
        assert!(h.get(later, last.wrapping_add(30_000)).is_some());
    }

    #[test]
    fn sent_map_resolves_and_rejects_duplicates() {
        let t0 = Instant::now();
        let mut m = SentMap::new(t0);
        assert_eq!(
            m.lookup(t0, 0, Duration::ZERO),
            NackLookup::Unknown,
            "fresh map"
        );
        assert_eq!(m.lookup(t0, 7, Duration::ZERO), NackLookup::Unknown);
        m.record(7, 1007, 90_000, SpatialLayer::MID, true);
        let r = m.lookup(t0, 7, Duration::from_millis(100));
        assert_eq!(
            r,
            NackLookup::Resend {
                src_seq: 1007,
                out_seq: 7,
                out_ts: 90_000,
                layer: SpatialLayer::MID,
                marker: true,
            }
        );
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!(
            m.lookup(t1, 7, Duration::from_millis(100)),
            NackLookup::Duplicate
        );
        let t2 = t0 + Duration::from_millis(150);
        assert!(matches!(
            m.lookup(t2, 7, Duration::from_millis(100)),
            NackLookup::Resend { .. }
        ));
        // Overwritten by a sequence number SENT_MAP_LEN later.
        m.record(7 + SENT_MAP_LEN as u16, 2000, 0, SpatialLayer::LOW, false);
        assert_eq!(m.lookup(t2, 7, Duration::ZERO), NackLookup::Unknown);
    }
}
