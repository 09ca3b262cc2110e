//! What the client saw: [`ClientState`], and how a received packet is
//! recorded into it.

use std::collections::HashMap;
use std::time::Instant;

use prism_signal::{ErrorBody, MidTrack, ServerMessage};
use rtc::rtp;

use crate::histogram::Histogram;
use crate::payload::{now_us, Probe};

/// What one subscribed track delivered.
#[derive(Debug, Clone, Default)]
pub struct ReceivedTrack {
    pub track_id: String,
    pub packets: u64,
    /// Payloads whose bytes did not verify.
    pub corrupt: u64,
    /// RTP sequence numbers as received on the subscribe leg.
    pub rtp_seqs: Vec<u16>,
    /// RTP SSRCs seen on the subscribe leg.
    pub ssrcs: Vec<u32>,
    /// (sender, probe sequence) of each verified payload.
    pub probes: Vec<(u32, u32)>,
    pub video: bool,
    /// One-way delay per packet, µs (same clock on loopback).
    pub latencies_us: Vec<u64>,
    /// The first bytes of the first payload received (its codec descriptor).
    pub first_payload: Vec<u8>,
    /// Probe sequence numbers of the keyframes received.
    pub keyframes: Vec<u32>,
    /// The latest packet's RTP timestamp and its probe's send time (µs since
    /// the UNIX epoch), to check sender reports against.
    pub last_rtp: Option<(u32, u64)>,
    /// Probe sequences seen lately, to tell a retransmitted copy from a new
    /// packet.
    pub seen: SeqWindow,
}

/// The highest probe sequence seen and which of the 127 before it arrived
/// (bit k: `highest - k`).
#[derive(Debug, Clone, Default)]
pub struct SeqWindow {
    highest: Option<u32>,
    bits: u128,
}

impl SeqWindow {
    /// Records `seq`; false if it was seen already.
    pub fn insert(&mut self, seq: u32) -> bool {
        let Some(h) = self.highest else {
            self.highest = Some(seq);
            self.bits = 1;
            return true;
        };
        if seq > h {
            self.bits = self.bits.checked_shl(seq - h).unwrap_or(0) | 1;
            self.highest = Some(seq);
            return true;
        }
        let Some(bit) = 1u128.checked_shl(h - seq) else {
            return true; // too old to tell: count it
        };
        let new = self.bits & bit == 0;
        self.bits |= bit;
        new
    }
}

impl ReceivedTrack {
    /// Fraction of the sender's packets that arrived, over the span this
    /// receiver saw. Video counts from the second keyframe it saw, so the
    /// ratio measures steady forwarding only (how a subscriber starts, from
    /// the server's keyframe cache or a requested keyframe, has its own
    /// tests).
    pub fn delivered_ratio(&self) -> f64 {
        match self.steady_span() {
            Some((span, got)) => got as f64 / span as f64,
            None => 0.0,
        }
    }

    /// Probes missing inside the same span as [`Self::delivered_ratio`];
    /// `u64::MAX` when nothing arrived.
    pub fn missing(&self) -> u64 {
        match self.steady_span() {
            Some((span, got)) => span - got,
            None => u64::MAX,
        }
    }

    /// (probes the sender sent over the span this receiver saw, probes that
    /// arrived), video from the second keyframe.
    fn steady_span(&self) -> Option<(u64, u64)> {
        let from = if self.video {
            self.keyframes.get(1).copied().unwrap_or(0)
        } else {
            0
        };
        let seqs: std::collections::BTreeSet<u32> = self
            .probes
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| *s >= from)
            .collect();
        let (first, last) = (seqs.first()?, seqs.last()?);
        Some((u64::from(last - first) + 1, seqs.len() as u64))
    }
}

/// Everything the client saw, for tests to assert on.
#[derive(Debug, Clone, Default)]
pub struct ClientState {
    pub participant_id: Option<String>,
    /// Every server message, in order.
    pub messages: Vec<ServerMessage>,
    pub errors: Vec<ErrorBody>,
    pub received: HashMap<String, ReceivedTrack>,
    /// Track ids the server gave our published m-sections.
    pub published: Vec<MidTrack>,
    pub sent_audio: u32,
    pub sent_video: u32,
    pub publish_connected: bool,
    pub subscribe_connected: bool,
    /// Every `a=candidate` line the server sent, on either leg.
    pub server_candidates: Vec<String>,
    /// The server's ICE credentials (ufrag, pwd) of each leg, from its SDP:
    /// for tests that play an attacker who saw it.
    pub server_ice: Vec<(String, String)>,
    /// Times a leg left the connected state (ICE or DTLS trouble, or close).
    pub disconnects: u32,
    /// Subscribe-leg offers received.
    pub offers: u32,
    /// Keyframe requests (PLI/FIR) received on the publish leg.
    pub keyframe_requests: u32,
    /// Keyframes sent.
    pub keyframes_sent: u32,
    /// REMB bitrates (bits/s) the server sent to this publisher.
    pub rembs: Vec<u64>,
    /// WHIP/WHEP: when the offer was POSTed, and the session URL.
    pub posted_at: Option<Instant>,
    pub session_url: Option<String>,
    /// WHIP/WHEP: the `Link` header values of the POST answer (ICE
    /// servers, the WHEP events extension).
    pub links: Vec<String>,
    /// WHIP/WHEP: the status of the DELETE sent by `Leave`.
    pub delete_status: Option<u16>,
    /// When the first media packet arrived on the subscribe leg.
    pub first_packet_at: Option<Instant>,
    /// Sender reports received on the subscribe leg: (SSRC, NTP time, RTP
    /// time, packet count, when received as µs since the UNIX epoch).
    pub sender_reports: Vec<(u32, u64, u32, u32, u64)>,
    /// SSRCs the server ended with RTCP BYE on the subscribe leg.
    pub byes: Vec<u32>,
    /// The signaling socket closed.
    pub closed: bool,
    /// Media packets received on the subscribe leg, all tracks, each probe
    /// once (a retransmitted copy counts in `duplicates_in`).
    pub packets_in: u64,
    pub duplicates_in: u64,
    /// Their payload bytes.
    pub bytes_in: u64,
    /// One-way delay (publisher's send time to receipt) of verified payloads.
    pub latency: Histogram,
    /// Janus: this publisher's feed id in its VideoRoom.
    pub janus_feed: Option<u64>,
}

impl ClientState {
    /// Track ids of other participants currently published, from events.
    pub fn remote_tracks(&self) -> Vec<String> {
        let mut live: Vec<String> = Vec::new();
        for m in &self.messages {
            match m {
                ServerMessage::Joined(j) => {
                    for p in &j.participants {
                        live.extend(p.tracks.iter().map(|t| t.id.clone()));
                    }
                }
                ServerMessage::ParticipantJoined(p) => {
                    live.extend(p.participant.tracks.iter().map(|t| t.id.clone()))
                }
                ServerMessage::TrackPublished(t) => live.push(t.track.id.clone()),
                ServerMessage::TrackUnpublished(t) => live.retain(|x| *x != t.track_id),
                _ => {}
            }
        }
        live
    }
}

pub(crate) fn record(st: &mut ClientState, track_id: String, pkt: &rtp::Packet, full: bool) {
    let probe = Probe::decode(&pkt.payload);
    let ClientState {
        received,
        packets_in,
        duplicates_in,
        bytes_in,
        latency,
        ..
    } = st;
    let t = received
        .entry(track_id)
        .or_insert_with_key(|id| ReceivedTrack {
            track_id: id.clone(),
            ..Default::default()
        });
    if probe.as_ref().map_or(true, |p| t.seen.insert(p.seq)) {
        *packets_in += 1;
        *bytes_in += pkt.payload.len() as u64;
        if let Ok(p) = &probe {
            latency.record(now_us().saturating_sub(p.sent_at_us));
        }
    } else {
        *duplicates_in += 1;
    }
    t.packets += 1;
    if t.first_payload.is_empty() {
        t.first_payload = pkt.payload.iter().take(4).copied().collect();
    }
    if full {
        t.rtp_seqs.push(pkt.header.sequence_number);
    }
    if !t.ssrcs.contains(&pkt.header.ssrc) {
        t.ssrcs.push(pkt.header.ssrc);
    }
    match probe {
        Ok(p) => {
            t.video = p.video;
            t.last_rtp = Some((pkt.header.timestamp, p.sent_at_us));
            if crate::payload::is_key_payload(&pkt.payload) {
                t.keyframes.push(p.seq);
            }
            if full {
                t.probes.push((p.sender, p.seq));
                t.latencies_us.push(now_us().saturating_sub(p.sent_at_us));
            }
        }
        Err(_) => t.corrupt += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::SeqWindow;

    #[test]
    fn seq_window_tells_copies_from_new_packets() {
        let mut w = SeqWindow::default();
        assert!(w.insert(10));
        assert!(!w.insert(10));
        assert!(w.insert(12));
        assert!(w.insert(11)); // late, not a copy
        assert!(!w.insert(11));
        assert!(w.insert(300)); // a jump past the window
        assert!(!w.insert(300));
        assert!(w.insert(299));
        assert!(w.insert(12)); // too old to tell: counted
        for s in 301..1000 {
            assert!(w.insert(s));
        }
        assert!(!w.insert(999 - 127));
        assert!(w.insert(999 - 128)); // just past the window: counted
    }
}
