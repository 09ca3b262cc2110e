//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz, nightly) and
//! for `tests/fuzz_corpus.rs`, which replays the committed corpora on
//! stable. Each takes arbitrary bytes and must never panic.
//!
//! - [`signaling`]: a WebSocket frame through the signaling parser.
//! - [`sdp_offer`]: an SDP offer the way the shard handles a publish offer
//!   (parse, our m-section scan, a fresh engine peer connection, answer).
//! - [`packet_path`]: a byte program driving a prism-core room and the
//!   shard's own per-packet code: RTP in (forward, [`shard::rewrite`],
//!   [`egress::prepare`] with mid/abs-send-time stamping and RTX, store),
//!   subscriber RTCP in through [`feedback::read_subscriber_rtcp`] (NACK →
//!   retransmission, PLI, FIR, REMB; TWCC, SR), time passing,
//!   mute/subscribe/attach churn and keyframe cache starts. Every packet the
//!   shard would hand the engine is checked on the wire.

use std::time::{Duration, Instant};

use bytes::Bytes;
use prism_core::{
    ExtensionMap, Forward, LeaveCause, MediaKind, PacketMeta, PtMap, Room, RoomConfig, SinkId,
    SinkParams, Source, TrackId, TrackSpec,
};
use prism_signal::Leg;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::shared::marshal::Unmarshal;

use crate::media::peer::{Peer, PeerSettings, RtxInfo, SenderSlot};
use crate::media::shard::{egress, feedback};
use crate::media::{sdp, shard, stun};

/// A signaling frame: parse it; whatever parses must serialize and parse
/// back to the same message.
pub fn signaling(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = prism_signal::parse_client(text) {
        let again = serde_json::to_string(&env).expect("a parsed message serializes");
        let back = prism_signal::parse_client(&again).expect("a serialized message parses");
        assert_eq!(back.msg.type_name(), env.msg.type_name());
    }
}

/// An SDP publish offer, handled as the shard does: our section scan and
/// ICE helpers, then the engine's parse, remote description and answer on a
/// peer connection built like the shard's.
pub fn sdp_offer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sections = sdp::media_sections(text);
    let _ = sdp::ice_credentials(text);
    let _ = sdp::candidates_in(text);
    let _ = sdp::parse_fragment(text);
    let _ = sdp::with_ice_credentials(text, "ufrag", "password");
    // The engine sees what a publish offer becomes in the shard; narrowing
    // again changes nothing.
    let narrowed = sdp::narrow_simulcast(text, true);
    if let Some(n) = &narrowed {
        assert!(
            sdp::narrow_simulcast(&n.sdp, true).is_none(),
            "narrowing is idempotent"
        );
        assert_eq!(sdp::media_sections(&n.sdp), sections);
    }
    let text = narrowed.as_ref().map_or(text, |n| n.sdp.as_str());
    let max = crate::config::Config::default().max_tracks_per_participant;
    if sections.is_empty() || sections.len() > max {
        return; // refused before the engine sees it
    }
    let Ok(offer) = RTCSessionDescription::offer(text.to_owned()) else {
        return;
    };
    let now = Instant::now();
    let cfg = crate::config::Config::default();
    let settings = PeerSettings::new(
        vec![std::net::SocketAddr::new(cfg.media_ip, cfg.udp_port)],
        cfg.peer_timeout,
    );
    let Ok((mut peer, candidates)) = Peer::new(
        now,
        &settings,
        0,
        prism_core::ParticipantId(1),
        Leg::Publish,
    ) else {
        return;
    };
    // What the client would get back: an answer covering every section,
    // or a refusal.
    if let Ok(answer) = peer.answer(now, offer, sections.len()) {
        let answer = sdp::with_candidates(&answer, &candidates);
        assert_eq!(sdp::media_sections(&answer).len(), sections.len());
    }
    let _ = rtc::sansio::Protocol::close(&mut peer.pc);
}

/// The state [`packet_path`] drives: one publisher (audio and video), two
/// subscribers attached to both tracks.
struct Bench {
    room: Room,
    now: Instant,
    publisher: prism_core::ParticipantId,
    subs: [prism_core::ParticipantId; 2],
    tracks: [TrackId; 2],
    /// Each subscriber's senders, one per track (the shard's per-leg table).
    senders: [Vec<Option<SenderSlot>>; 2],
    reached: Reached,
}

/// How far a program got: packets forwarded, retransmitted, and of those
/// sent as RTX (so the seeds can be checked to reach the paths they were
/// written for).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub sent: u64,
    pub resent: u64,
    pub rtx: u64,
}

fn spec(kind: MediaKind) -> TrackSpec {
    let audio = kind == MediaKind::Audio;
    TrackSpec {
        kind,
        source: if audio {
            Source::Microphone
        } else {
            Source::Camera
        },
        mid: if audio { "0" } else { "1" }.into(),
        codec: if audio { "audio/opus" } else { "video/VP8" }.into(),
        clock_rate: if audio { 48_000 } else { 90_000 },
    }
}

fn params(ssrc: u32) -> SinkParams {
    let ext = ExtensionMap::build(
        [
            ("urn:ietf:params:rtp-hdrext:ssrc-audio-level", 1u16),
            ("urn:ietf:params:rtp-hdrext:sdes:mid", 4),
            (
                "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                3,
            ),
        ],
        [
            ("urn:ietf:params:rtp-hdrext:ssrc-audio-level", 10u16),
            ("urn:ietf:params:rtp-hdrext:sdes:mid", 9),
            (prism_core::extmap::ABS_SEND_TIME_URI, 12),
        ],
    );
    SinkParams {
        ssrc,
        payload_types: prism_core::payload_type_table([
            PtMap { from: 96, to: 100 },
            PtMap { from: 111, to: 109 },
            PtMap { from: 98, to: 98 },
        ])
        .0,
        extensions: ext,
    }
}

fn sink(i: usize, track: usize) -> SinkId {
    SinkId(((i as u64) << 32) | track as u64)
}

fn unsink(s: SinkId) -> (usize, usize) {
    ((s.0 >> 32) as usize, (s.0 & 0xFFFF_FFFF) as usize)
}

/// Subscriber `i`'s sender for track `ti` (video with RTX), as the shard
/// keeps it after negotiation.
fn sender_slot(i: usize, ti: usize, track: TrackId) -> SenderSlot {
    let ssrc = 0x1000 + (i * 2 + ti) as u32;
    let p = params(ssrc);
    SenderSlot {
        track,
        sender: rtc::rtp_transceiver::RTCRtpSenderId::from(ti),
        ssrc,
        codec: Default::default(),
        mid: Some(Bytes::from(ti.to_string())),
        mid_ext_id: p.extensions.mid_id,
        params: Some(p),
        rtx: (ti == 1).then(|| RtxInfo {
            ssrc: 0x2000 + i as u32,
            payload_types: vec![(100, 101)],
        }),
        rtx_seq: 0,
    }
}

impl Bench {
    fn new() -> Bench {
        let now = Instant::now();
        let mut room = Room::new("fuzz", RoomConfig::default(), now);
        let (publisher, _) = room.join(now, "pub", "Pub");
        let a = room
            .publish(publisher, spec(MediaKind::Audio))
            .expect("publisher is in the room");
        let v = room
            .publish(publisher, spec(MediaKind::Video))
            .expect("publisher is in the room");
        let senders = [0, 1].map(|i| vec![Some(sender_slot(i, 0, a)), Some(sender_slot(i, 1, v))]);
        let mut b = Bench {
            room,
            now,
            publisher,
            subs: [prism_core::ParticipantId(0); 2],
            tracks: [a, v],
            senders,
            reached: Reached::default(),
        };
        for i in 0..2 {
            let (s, _) = b.room.join(now, &format!("sub{i}"), "Sub");
            b.subs[i] = s;
            b.attach(i);
        }
        b
    }

    fn attach(&mut self, i: usize) {
        for (ti, t) in self.tracks.into_iter().enumerate() {
            let _ = self.room.attach(
                t,
                self.subs[i],
                sink(i, ti),
                Some(params(0x1000 + (i * 2 + ti) as u32)),
            );
        }
    }

    fn rtp(&mut self, track: usize, bytes: &[u8]) {
        // The demultiplexer's first look at a datagram.
        let _ = stun::is_stun(bytes);
        let _ = stun::local_ufrag(bytes);
        let _ = stun::classify(bytes);
        let _ = stun::parse_binding_request(bytes);
        let mut buf = Bytes::copy_from_slice(bytes);
        let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut buf) else {
            return;
        };
        let meta = PacketMeta::of(&packet);
        let t = self.tracks[track];
        let mut sent = 0;
        let senders = &mut self.senders;
        let now = self.now;
        self.room
            .forward(self.now, t, &meta, &packet.payload, |sink, p, d| {
                if let Forward::Send(sp) = d {
                    if let Ok(out) = shard::rewrite(&packet, sp, &p.extensions) {
                        send(senders, now, sink, out, &sp, &packet.payload, None);
                        sent += 1;
                    }
                }
            });
        self.reached.sent += sent;
        self.room.store(self.now, t, packet);
    }

    fn rtcp(&mut self, sub: usize, bytes: &[u8]) {
        let mut buf = Bytes::copy_from_slice(bytes);
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut buf) else {
            return;
        };
        let who = self.subs[sub];
        for p in &packets {
            // Whatever decodes must encode again.
            let _ = p.marshal();
        }
        // The shard's reading of the batch, then what it does with it.
        let f = feedback::read_subscriber_rtcp(&self.senders[sub], &packets);
        assert!(
            f.keyframes.windows(2).all(|w| w[0] < w[1]),
            "sorted, once each"
        );
        for t in f.keyframes {
            self.room.request_keyframe(self.now, t);
        }
        for (track, seqs) in f.nacks {
            let (mut resent, mut rtx) = (0u64, 0u64);
            let senders = &mut self.senders;
            let now = self.now;
            self.room.nack(now, track, who, seqs, |sink, p, sp, pkt| {
                if let Ok(out) = shard::rewrite(pkt, sp, &p.extensions) {
                    send(senders, now, sink, out, &sp, &pkt.payload, Some(&mut rtx));
                    resent += 1;
                }
                true
            });
            self.reached.resent += resent;
            self.reached.rtx += rtx;
        }
        for p in &packets {
            let any = p.as_any();
            if let Some(cc) = any.downcast_ref::<TransportLayerCc>() {
                let _ = cc.packet_chunks.len() + cc.recv_deltas.len();
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                let t = self.tracks[(sr.ssrc & 1) as usize];
                self.room
                    .on_sender_report(self.now, t, sr.ssrc, sr.ntp_time, sr.rtp_time);
                self.room.sender_reports(self.now, t, |_, _| {});
            }
        }
    }

    fn control(&mut self, op: u8, arg: u8) {
        let i = (arg & 1) as usize;
        let ti = ((arg >> 1) & 1) as usize;
        let (t, s) = (self.tracks[ti], self.subs[i]);
        match op % 6 {
            0 => {
                let _ = self.room.set_muted(self.publisher, t, arg & 4 != 0);
            }
            1 => {
                let _ = self.room.unsubscribe(s, &[t]);
            }
            2 => {
                let _ = self.room.subscribe(s, &[t]);
                self.attach(i);
            }
            3 => self.room.detach(t, s),
            4 => {
                let senders = &mut self.senders;
                let now = self.now;
                let _ = self.room.start_from_cache(now, t, s, |sink, p, sp, pkt| {
                    if let Ok(out) = shard::rewrite(pkt, sp, &p.extensions) {
                        send(senders, now, sink, out, &sp, &pkt.payload, None);
                    }
                });
            }
            _ => {
                // A subscriber leaves and comes back (a refresh).
                self.room.leave(self.now, s, LeaveCause::Left);
                let (n, _) = self.room.join(self.now, &format!("sub{i}"), "Sub");
                self.subs[i] = n;
                self.attach(i);
            }
        }
    }
}

/// The shard's last step for one subscriber ([`egress::prepare`]), then the
/// wire check of what it would hand the engine.
fn send(
    senders: &mut [Vec<Option<SenderSlot>>; 2],
    now: Instant,
    sink: SinkId,
    pkt: rtc::rtp::Packet,
    sp: &prism_core::SendParams,
    payload: &Bytes,
    // Some: a retransmission, counting those sent as RTX.
    retransmission: Option<&mut u64>,
) {
    let (i, ti) = unsink(sink);
    let Some(Some(slot)) = senders.get_mut(i).and_then(|v| v.get_mut(ti)) else {
        return;
    };
    let mut t = egress::SendTime::new(now.elapsed());
    match egress::prepare(pkt, slot, retransmission.is_some(), &mut t) {
        Ok(egress::Outgoing::Media(p)) => check_wire(&p, sp, payload),
        Ok(egress::Outgoing::Rtx(p)) => {
            let Some(n) = retransmission else {
                panic!("only a retransmission goes as RTX");
            };
            *n += 1;
            let wire = check_marshal(&p);
            let back = rtc::rtp::Packet::unmarshal(&mut wire.clone()).expect("RTX parses");
            assert_eq!(
                &back.payload[..2],
                &sp.seq.to_be_bytes(),
                "RTX carries the OSN"
            );
            assert_eq!(&back.payload[2..], &payload[..]);
        }
        Err(_) => {}
    }
}

/// What the shard hands the engine must be what goes on the wire: the
/// packet marshals to exactly its declared size (the extension padding
/// bookkeeping is right: a mismatch makes SRTP drop the packet) and parses
/// back to the rewritten fields and the publisher's payload.
fn check_wire(out: &rtc::rtp::Packet, sp: &prism_core::SendParams, payload: &Bytes) {
    let wire = check_marshal(out);
    let back = rtc::rtp::Packet::unmarshal(&mut wire.clone()).expect("and parses back");
    let h = &back.header;
    assert_eq!(
        (h.ssrc, h.sequence_number, h.timestamp, h.payload_type),
        (sp.ssrc, sp.seq, sp.timestamp, sp.payload_type)
    );
    assert_eq!(&back.payload, payload);
}

/// Marshals a packet, checking it fills exactly its declared size.
fn check_marshal(p: &rtc::rtp::Packet) -> Bytes {
    use rtc::shared::marshal::{Marshal, MarshalSize};
    let size = p.marshal_size();
    let wire = p.marshal().expect("a packet for the engine marshals");
    assert_eq!(wire.len(), size, "marshal_size agrees with the bytes");
    wire.freeze()
}

/// Runs a byte program against a room. Each step is `op len payload…`:
/// op 0–1 RTP on the audio/video track, 2–3 RTCP from subscriber 0/1,
/// 4 time passes `len` ms, 5 a control action (`len` picks which).
pub fn packet_path(data: &[u8]) {
    run_program(data);
}

/// [`packet_path`], returning how far it got.
pub fn run_program(data: &[u8]) -> Reached {
    let mut b = Bench::new();
    let mut rest = data;
    let mut steps = 0;
    while rest.len() >= 2 && steps < 4096 {
        steps += 1;
        let (op, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let body = &rest[..len.min(rest.len())];
        match op % 6 {
            0 | 1 => b.rtp((op % 2) as usize, body),
            2 | 3 => b.rtcp((op % 2) as usize, body),
            4 => {
                b.now += Duration::from_millis(len as u64);
                b.room.handle_timeout(b.now);
                while b.room.poll_keyframe_request().is_some() {}
                while b.room.poll_event().is_some() {}
                continue;
            }
            _ => {
                b.control(op / 6, len as u8);
                while b.room.poll_event().is_some() {}
                continue;
            }
        }
        rest = &rest[body.len()..];
    }
    b.reached
}
