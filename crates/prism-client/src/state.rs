//! What the client saw: [`ClientState`], and how a received packet is
//! recorded into it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use prism_signal::{ErrorBody, LayersWanted, MidTrack, ServerMessage};
use rtc::rtp;

use crate::histogram::Histogram;
use crate::payload::{now_us, LayerTag, Probe};

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
    /// packet (single-stream tracks; simulcast layers keep their own).
    pub seen: SeqWindow,
    /// Simulcast: what arrived of each layer (by index, 0 = lowest), as the
    /// payloads' probes say.
    pub layers: BTreeMap<u8, ReceivedLayer>,
    /// Simulcast: the layers in the order they arrived, one run per stretch
    /// of one layer; a new run is a layer switch. At most [`MAX_LAYER_RUNS`]
    /// (a server that interleaves layers would make one per packet); later
    /// switches go on extending the last run and counting in
    /// `layer_switches`.
    pub layer_runs: Vec<LayerRun>,
    /// Layer switches seen (runs after the first), capped or not.
    pub layer_switches: u64,
}

/// How many [`LayerRun`]s a received track keeps.
pub const MAX_LAYER_RUNS: usize = 4096;

/// One simulcast layer of a received track.
#[derive(Debug, Clone, Default)]
pub struct ReceivedLayer {
    /// Packets (each probe once) and their payload bytes.
    pub packets: u64,
    pub bytes: u64,
    /// The picture size its probes claim (the latest).
    pub width: u16,
    pub height: u16,
    /// Keyframes (first packets) received.
    pub keyframes: u64,
    pub seen: SeqWindow,
}

/// A stretch of packets of one layer, between two switches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerRun {
    pub layer: u8,
    /// The layer's probe sequences: lowest and highest received in the run.
    pub first_seq: u32,
    pub last_seq: u32,
    pub packets: u64,
    /// Probes of this layer between `first_seq` and `last_seq` that did
    /// not arrive: loss inside the run (a switch away is not loss).
    pub missing: u64,
}

impl ReceivedTrack {
    /// The layer of the latest run (the one being received).
    pub fn current_layer(&self) -> Option<u8> {
        self.layer_runs.last().map(|r| r.layer)
    }

    /// The layers received, in order, one entry per switch.
    pub fn layer_sequence(&self) -> Vec<u8> {
        self.layer_runs.iter().map(|r| r.layer).collect()
    }

    /// Notes one new (not duplicate) packet of a simulcast layer.
    fn note_layer(&mut self, l: LayerTag, seq: u32, bytes: usize, key: bool) {
        let rx = self.layers.entry(l.index).or_default();
        rx.packets += 1;
        rx.bytes += bytes as u64;
        (rx.width, rx.height) = (l.width, l.height);
        rx.keyframes += u64::from(key);
        let runs = &mut self.layer_runs;
        let n = runs.len();
        if n >= 1 && runs[n - 1].layer == l.index {
            runs[n - 1].add(seq);
        } else if n >= 2 && runs[n - 2].layer == l.index && seq <= runs[n - 2].last_seq {
            // A late packet (a retransmission) of the layer before the
            // switch: it fills that run's gap, it is not a switch back.
            runs[n - 2].add(seq);
        } else {
            if n > 0 {
                self.layer_switches += 1;
            }
            if n >= MAX_LAYER_RUNS {
                // Bounded memory: the last run takes the packet.
                runs[n - 1].layer = l.index;
                runs[n - 1].packets += 1;
                return;
            }
            runs.push(LayerRun {
                layer: l.index,
                first_seq: seq,
                last_seq: seq,
                packets: 1,
                missing: 0,
            });
        }
    }
}

impl LayerRun {
    fn add(&mut self, seq: u32) {
        self.packets += 1;
        if seq > self.last_seq {
            self.missing += u64::from(seq - self.last_seq - 1);
            self.last_seq = seq;
        } else if seq < self.first_seq {
            self.missing += u64::from(self.first_seq - seq - 1);
            self.first_seq = seq;
        } else {
            // Inside the run: a gap filled late.
            self.missing = self.missing.saturating_sub(1);
        }
    }
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
    /// Simulcast publisher: what went out per layer, by rid.
    pub layers_sent: BTreeMap<String, SentLayer>,
    /// Simulcast publisher: layers switched off or back on by dynacast.
    pub dynacast_switches: u32,
    /// Every `layers_wanted` the server sent, in order.
    pub layers_wanted: Vec<LayersWanted>,
    /// Subscribed tracks the server has paused (`track_paused`, not yet
    /// `track_resumed`), and how many pauses and resumes arrived.
    pub paused_tracks: BTreeSet<String>,
    pub track_pauses: u32,
    pub track_resumes: u32,
    /// A weak subscriber: REMBs it sent on its subscribe leg.
    pub rembs_sent: u32,
}

/// One simulcast layer a publisher sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentLayer {
    pub packets: u64,
    pub keyframes: u32,
    /// Keyframe requests (PLI/FIR) naming this layer's SSRC.
    pub keyframe_requests: u32,
    /// Switched off by dynacast (`layers_wanted` did not list it).
    pub paused: bool,
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
    let fresh = match &probe {
        Ok(Probe {
            layer: Some(l),
            seq,
            ..
        }) => t.layers.entry(l.index).or_default().seen.insert(*seq),
        Ok(p) => t.seen.insert(p.seq),
        Err(_) => true,
    };
    if let (
        true,
        Ok(Probe {
            layer: Some(l),
            seq,
            ..
        }),
    ) = (fresh, &probe)
    {
        let key = crate::payload::is_key_payload(&pkt.payload);
        t.note_layer(*l, *seq, pkt.payload.len(), key);
    }
    if fresh {
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
    use super::{LayerTag, ReceivedTrack, SeqWindow, MAX_LAYER_RUNS};

    #[test]
    fn layer_runs_show_switches_and_loss_within_a_run() {
        let tag = |index| LayerTag {
            index,
            width: 320 << index,
            height: 180 << index,
        };
        // (layer, probe seq) in arrival order → the runs (layer, first, last, missing).
        type Row<'a> = (&'a str, &'a [(u8, u32)], &'a [(u8, u32, u32, u64)]);
        let rows: &[Row] = &[
            (
                "one layer, no loss",
                &[(0, 1), (0, 2), (0, 3)],
                &[(0, 1, 3, 0)],
            ),
            ("a gap is loss", &[(0, 1), (0, 4)], &[(0, 1, 4, 2)]),
            (
                "a late packet fills it",
                &[(0, 1), (0, 3), (0, 2)],
                &[(0, 1, 3, 0)],
            ),
            (
                "a switch up and back",
                &[(0, 1), (0, 2), (2, 50), (2, 51), (0, 9)],
                &[(0, 1, 2, 0), (2, 50, 51, 0), (0, 9, 9, 0)],
            ),
            (
                "a retransmission of the layer before the switch",
                &[(0, 1), (0, 3), (1, 7), (0, 2), (1, 8)],
                &[(0, 1, 3, 0), (1, 7, 8, 0)],
            ),
        ];
        for (name, packets, want) in rows {
            let mut t = ReceivedTrack::default();
            for (layer, seq) in packets.iter() {
                t.note_layer(tag(*layer), *seq, 100, false);
            }
            let got: Vec<_> = t
                .layer_runs
                .iter()
                .map(|r| (r.layer, r.first_seq, r.last_seq, r.missing))
                .collect();
            assert_eq!(got, *want, "{name}");
            assert_eq!(
                t.layers.values().map(|l| l.packets).sum::<u64>(),
                packets.len() as u64,
                "{name}"
            );
        }
        let mut t = ReceivedTrack::default();
        t.note_layer(tag(1), 1, 1000, true);
        assert_eq!((t.layers[&1].width, t.layers[&1].height), (640, 360));
        assert_eq!(t.layers[&1].keyframes, 1);
        assert_eq!(t.current_layer(), Some(1));

        // Interleaved layers: bounded runs, every switch counted.
        let mut t = ReceivedTrack::default();
        for seq in 0..(MAX_LAYER_RUNS as u32 + 100) {
            t.note_layer(tag((seq % 2) as u8), seq, 10, false);
        }
        assert_eq!(t.layer_runs.len(), MAX_LAYER_RUNS);
        assert_eq!(t.layer_switches, MAX_LAYER_RUNS as u64 + 99);
    }

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
