//! Benches of prism-core's packet path: forwarding fan-out, the shared
//! retransmission history, NACK answering and keyframe detection.
//!
//! Run: `cargo bench -p prism-benches --bench core`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use prism_core::{
    is_keyframe_start, ExtensionMap, LayerTarget, MediaKind, PacketHistory, PacketMeta, PtMap,
    Room, RoomConfig, SinkId, SinkParams, Source, SpatialLayer, Target, TrackId, TrackSpec,
    VideoCodec,
};
use rtc::rtp;

fn packet(seq: u16) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            sequence_number: seq,
            timestamp: seq as u32 * 3000,
            payload_type: 96,
            ssrc: 7,
            ..Default::default()
        },
        payload: Bytes::from_static(&[0x10, 0x01, 0, 0, 0, 0, 0, 0]),
    }
}

/// A room with one VP8 track and `n` attached subscribers.
fn room_with(n: usize, cfg: RoomConfig) -> (Room, TrackId, Vec<prism_core::ParticipantId>) {
    let t0 = Instant::now();
    let mut room = Room::new("bench", cfg, t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room
        .publish(
            p,
            TrackSpec {
                kind: MediaKind::Video,
                source: Source::Camera,
                mid: "0".into(),
                codec: "video/VP8".into(),
                clock_rate: 90_000,
            },
        )
        .unwrap();
    let mut subs = Vec::new();
    for i in 0..n {
        let (s, _) = room.join(t0, &format!("s{i}"), "s");
        let params = SinkParams {
            ssrc: 1000 + i as u32,
            payload_types: prism_core::payload_type_table([PtMap { from: 96, to: 100 }]).0,
            extensions: ExtensionMap::default(),
        };
        room.attach(track, s, SinkId(i as u64), Some(params))
            .unwrap();
        subs.push(s);
    }
    while room.poll_event().is_some() {}
    // Start every subscriber with a keyframe so the bench measures steady state.
    let meta = meta(0);
    room.forward(t0, track, &meta, &[0x10, 0x00], |_, _, _| {});
    (room, track, subs)
}

fn meta(seq: u16) -> PacketMeta {
    PacketMeta {
        ssrc: 7,
        seq,
        timestamp: seq as u32 * 3000,
        payload_type: 96,
        marker: true,
        payload_len: 1100,
    }
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    for n in [1usize, 10, 100, 1000] {
        let (mut room, track, _) = room_with(n, RoomConfig::default());
        let now = Instant::now();
        let mut seq = 1u16;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("subscribers", n), &n, |b, _| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let mut sent = 0u32;
                // A Chromium VP8 packet's descriptor: X, 15-bit picture
                // id, TL0PICIDX, TID 0 (each leg renumbers it).
                let pid = seq & 0x7FFF;
                let payload = [
                    0x90,
                    0xE0,
                    0x80 | (pid >> 8) as u8,
                    pid as u8,
                    seq as u8,
                    0x20,
                    0x9d,
                ];
                room.forward(now, track, &meta(seq), &payload, |_, _, f| {
                    sent += matches!(f, prism_core::Forward::Send(_)) as u32;
                    black_box(f);
                });
                sent
            })
        });
    }
    g.finish();
}

/// A VP9 k-SVC packet's descriptor (I, L, 15-bit picture id, TID/U/SID/D,
/// TL0PICIDX; B and E: one packet per layer frame), and two bytes of data.
fn vp9(pid: u16, sid: u8, key: bool) -> [u8; 7] {
    let b0 = 0xAC | if key { 0 } else { 0x40 };
    let l = 0x10 | sid << 1 | u8::from(key && sid > 0);
    [b0, 0x80 | (pid >> 8) as u8, pid as u8, l, 0, 0x82, 0x49]
}

/// One packet of a VP9 SVC track (three spatial layers in one SSRC) to
/// `n` subscribers, a third of them at each spatial layer: the descriptor
/// parsed once, each leg forwarding or skipping it.
fn forward_svc(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward_vp9_svc");
    for n in [10usize, 100] {
        let t0 = Instant::now();
        let mut room = Room::new("bench", RoomConfig::default(), t0);
        let (p, _) = room.join(t0, "pub", "pub");
        let track = room
            .publish(
                p,
                TrackSpec {
                    kind: MediaKind::Video,
                    source: Source::Camera,
                    mid: "0".into(),
                    codec: "video/VP9".into(),
                    clock_rate: 90_000,
                },
            )
            .unwrap();
        for i in 0..n {
            let (s, _) = room.join(t0, &format!("s{i}"), "s");
            let params = SinkParams {
                ssrc: 1000 + i as u32,
                payload_types: prism_core::payload_type_table([PtMap { from: 96, to: 100 }]).0,
                extensions: ExtensionMap::default(),
            };
            room.attach(track, s, SinkId(i as u64), Some(params))
                .unwrap();
            let layer = SpatialLayer::ALL[i % 3];
            room.set_target(track, s, Target::Layer(LayerTarget::spatial(layer)));
        }
        while room.poll_event().is_some() {}
        // Every leg starts at a keyframe picture.
        for sid in 0..3u8 {
            let mut m = meta(u16::from(sid));
            m.timestamp = 0;
            room.forward(t0, track, &m, &vp9(0, sid, true), |_, _, _| {});
        }
        let mut i = 3u32;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("subscribers", n), &n, |b, _| {
            b.iter(|| {
                i += 1;
                let (picture, sid) = (i / 3, (i % 3) as u8);
                let mut m = meta(i as u16);
                m.timestamp = picture * 3000;
                let payload = vp9((picture & 0x7FFF) as u16, sid, false);
                let mut sent = 0u32;
                room.forward(t0, track, &m, &payload, |_, _, f| {
                    sent += matches!(f, prism_core::Forward::Send(_)) as u32;
                    black_box(f);
                });
                sent
            })
        });
    }
    g.finish();
}

fn history(c: &mut Criterion) {
    let mut g = c.benchmark_group("history");
    let now = Instant::now();
    let mut h = PacketHistory::new(4096, Duration::from_secs(2));
    let mut seq = 0u16;
    g.bench_function("insert", |b| {
        b.iter_batched(
            || {
                seq = seq.wrapping_add(1);
                packet(seq)
            },
            |p| h.insert(now, p),
            BatchSize::SmallInput,
        )
    });
    for s in 0..4096u16 {
        h.insert(now, packet(s));
    }
    let mut i = 0u16;
    g.bench_function("get", |b| {
        b.iter(|| {
            i = (i + 7) % 4096;
            black_box(h.get(now, i).is_some())
        })
    });
    g.finish();
}

fn nack(c: &mut Criterion) {
    let cfg = RoomConfig {
        nack_min_interval: Duration::ZERO,
        ..Default::default()
    };
    let (mut room, track, subs) = room_with(1, cfg);
    let now = Instant::now();
    for s in 1..600u16 {
        room.forward(now, track, &meta(s), &[0x10, 0x01], |_, _, _| {});
        room.store(now, track, packet(s));
    }
    let sub = subs[0];
    let mut q = 0u16;
    c.bench_function("nack/lookup_and_resend_one", |b| {
        b.iter(|| {
            q = (q + 13) % 500 + 50;
            let mut hits = 0;
            room.nack(now, track, sub, [q], |_, _, sp, p| {
                black_box((sp, p.payload.len()));
                hits += 1;
                true
            });
            hits
        })
    });
}

fn keyframes(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyframe_detection");
    let vp8_key: &[u8] = &[0x90, 0xE0, 0x85, 0x23, 0x07, 0x20, 0x00, 0x9d, 0x01, 0x2a];
    let vp8_delta: &[u8] = &[0x90, 0x80, 0x85, 0x23, 0x01];
    let h264_stap: &[u8] = &[
        0x18, 0x00, 0x0a, 0x67, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x04, 0x68, 0xce, 0, 0, 0x00,
        0x02, 0x65, 0x88,
    ];
    let av1: &[u8] = &[0x18, 0x0a, 0x0b];
    for (name, codec, p) in [
        ("vp8_key", VideoCodec::Vp8, vp8_key),
        ("vp8_delta", VideoCodec::Vp8, vp8_delta),
        ("h264_stap_a_idr", VideoCodec::H264, h264_stap),
        ("av1_new_sequence", VideoCodec::Av1, av1),
    ] {
        g.bench_function(name, |b| b.iter(|| is_keyframe_start(codec, black_box(p))));
    }
    g.finish();
}

/// SRTP protect of one outgoing packet as a subscribe leg does it: the
/// engine's context with the crypto provider it uses (ring), for the two
/// profiles browsers negotiate. Prism encrypts each egress packet once per
/// subscriber, so this is a floor under the per-packet cost.
fn srtp(c: &mut Criterion) {
    use rtc::shared::marshal::Marshal;
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;
    let provider = rtc::crypto::default_provider().expect("a crypto provider");
    let mut g = c.benchmark_group("srtp_protect");
    for (name, profile) in [
        ("aead_aes128_gcm", ProtectionProfile::AeadAes128Gcm),
        (
            "aes128_cm_hmac_sha1_80",
            ProtectionProfile::Aes128CmHmacSha1_80,
        ),
    ] {
        for size in [160usize, 1200] {
            let key = vec![7u8; profile.key_len()];
            let salt = vec![9u8; profile.salt_len()];
            let mut ctx = Context::new(&key, &salt, profile, None, None, provider.crypto())
                .expect("SRTP context");
            let mut p = packet(1);
            p.payload = Bytes::from(vec![0xAB; size]);
            let mut seq = 0u16;
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    p.header.sequence_number = seq;
                    let plain = p.marshal().expect("marshal");
                    black_box(ctx.encrypt_rtp(&plain).expect("encrypt"))
                })
            });
        }
    }
    g.finish();
}

/// Parsing and validating a signaling message, as the session task does for
/// every WebSocket frame: a small one and an offer with a real-size SDP.
fn signaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("signaling_parse");
    let mute = r#"{"type":"mute","id":7,"track_id":"TR_abcdefgh"}"#;
    let sdp = include_str!("../../fuzz/corpus/sdp_offer/chrome-simulcast.sdp");
    let offer = serde_json::json!({
        "type": "offer", "id": 3, "leg": "publish", "sdp": sdp,
        "tracks": [{"mid": "0", "source": "microphone"}, {"mid": "1", "source": "camera"}],
    })
    .to_string();
    for (name, text) in [("mute", mute.to_owned()), ("offer", offer)] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(prism_signal::parse_client(black_box(&text)).expect("valid")))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    forward,
    forward_svc,
    history,
    nack,
    keyframes,
    srtp,
    signaling
);
criterion_main!(benches);
