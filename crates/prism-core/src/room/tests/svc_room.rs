//! A VP9 k-SVC track through a room: two subscribers with different
//! targets get different layers of the one stream, keyframe requests go to
//! the stream (layer 0) whichever layer a leg aims at, the allocator's view
//! has the SS sizes and cumulative bitrates, and switches are counted.

use super::*;
use crate::layer::{LayerTarget, Target};
use crate::vp9::tests::svc_packet;

fn vp9_spec() -> TrackSpec {
    TrackSpec {
        codec: "video/VP9".into(),
        ..spec(MediaKind::Video)
    }
}

/// Packets of picture `n` (three layers, one packet each), `key` with SS.
fn picture(n: u16, key: bool) -> Vec<(PacketMeta, Vec<u8>)> {
    (0..3u8)
        .map(|sid| {
            let ss: Option<&[(u16, u16)]> =
                (key && sid == 0).then_some(&[(320, 180), (640, 360), (1280, 720)]);
            let payload = svc_packet(n, sid, 0, true, true, true, !key, ss);
            let meta = PacketMeta {
                ssrc: 7,
                seq: n * 3 + u16::from(sid),
                timestamp: u32::from(n) * 3000,
                payload_type: 96,
                marker: sid == 2,
                payload_len: 100 * (1 << sid),
            };
            (meta, payload)
        })
        .collect()
}

#[test]
fn two_subscribers_take_different_layers_of_one_stream() {
    let t0 = Instant::now();
    let mut room = Room::new("svc", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, vp9_spec()).unwrap();
    let (low, _) = room.join(t0, "low", "low");
    let (high, _) = room.join(t0, "high", "high");
    room.attach(track, low, SinkId(1), Some(sink_params(11)))
        .unwrap();
    room.attach(track, high, SinkId(2), Some(sink_params(12)))
        .unwrap();
    let spatial = |l| Target::Layer(LayerTarget::spatial(l));
    room.set_target(track, low, spatial(SpatialLayer::LOW));
    room.set_target(track, high, spatial(SpatialLayer::HIGH));
    let mut sent: HashMap<SinkId, Vec<(u16, bool)>> = HashMap::new();
    let run = |room: &mut Room,
               sent: &mut HashMap<SinkId, Vec<(u16, bool)>>,
               n: u16,
               key: bool,
               at: Instant| {
        for (meta, payload) in picture(n, key) {
            room.forward(at, track, &meta, &payload, |sink, _, f| {
                if let Forward::Send(s) = f {
                    sent.entry(sink).or_default().push((s.seq, s.marker));
                }
            });
        }
    };
    assert!(!room.is_svc(track));
    run(&mut room, &mut sent, 0, true, t0);
    assert!(
        room.is_svc(track),
        "the keyframe's SS announces three layers"
    );
    assert_eq!(room.layer_count(track), 3);
    for n in 1..10 {
        run(
            &mut room,
            &mut sent,
            n,
            false,
            t0 + Duration::from_millis(u64::from(n) * 50),
        );
    }
    let low_got = &sent[&SinkId(1)];
    let high_got = &sent[&SinkId(2)];
    assert_eq!(low_got.len(), 10, "one packet (SID 0) per picture");
    assert_eq!(high_got.len(), 30, "every layer");
    assert!(low_got.iter().all(|(_, m)| *m), "SID 0 ends each picture");
    assert_eq!(high_got.iter().filter(|(_, m)| *m).count(), 10);
    for got in [low_got, high_got] {
        for w in got.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "no gaps");
        }
    }
    assert_eq!(room.counters.layer_skips, 20);

    // The allocator's view after a measurement.
    room.measure(t0 + Duration::from_secs(1));
    let infos = room.layer_infos(track);
    let sizes: Vec<(u32, u32)> = infos
        .iter()
        .flatten()
        .map(|l| (l.width, l.height))
        .collect();
    assert_eq!(sizes, [(320, 180), (640, 360), (1280, 720)]);
    let bps: Vec<u64> = infos.iter().flatten().map(|l| l.bitrate.bps()).collect();
    assert!(bps[0] < bps[1] && bps[1] < bps[2], "cumulative: {bps:?}");

    // The low leg wants the top layer: a keyframe of the stream (layer 0)
    // is asked for, and it switches there.
    while room.poll_keyframe_request().is_some() {}
    room.set_target(track, low, spatial(SpatialLayer::HIGH));
    let t1 = t0 + Duration::from_secs(2);
    run(&mut room, &mut sent, 10, false, t1);
    assert_eq!(
        room.poll_keyframe_request(),
        Some((track, SpatialLayer::LOW)),
        "one stream: its keyframe serves every layer"
    );
    let before = sent[&SinkId(1)].len();
    run(
        &mut room,
        &mut sent,
        11,
        true,
        t1 + Duration::from_millis(50),
    );
    assert_eq!(
        sent[&SinkId(1)].len(),
        before + 3,
        "the keyframe picture whole"
    );
    assert_eq!(room.counters.layer_switches_up, 1);

    // And back down at the next picture, no keyframe.
    room.set_target(track, low, spatial(SpatialLayer::LOW));
    run(
        &mut room,
        &mut sent,
        12,
        false,
        t1 + Duration::from_millis(100),
    );
    assert_eq!(sent[&SinkId(1)].len(), before + 3 + 1);
    assert_eq!(room.counters.layer_switches_down, 1);
    assert_eq!(room.poll_keyframe_request(), None);
}

#[test]
fn a_late_subscriber_starts_from_the_cached_keyframe_with_its_layers_only() {
    let t0 = Instant::now();
    let mut room = Room::new("svc", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, vp9_spec()).unwrap();
    for n in 0..4 {
        let at = t0 + Duration::from_millis(u64::from(n) * 50);
        for (meta, payload) in picture(n, n == 0) {
            room.forward(at, track, &meta, &payload, |_, _, _| {});
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    ssrc: meta.ssrc,
                    sequence_number: meta.seq,
                    timestamp: meta.timestamp,
                    payload_type: meta.payload_type,
                    marker: meta.marker,
                    ..Default::default()
                },
                payload: payload.clone().into(),
            };
            room.store(at, track, packet);
        }
    }
    let (s, _) = room.join(t0, "late", "late");
    room.attach(track, s, SinkId(9), Some(sink_params(19)))
        .unwrap();
    room.set_target(
        track,
        s,
        Target::Layer(LayerTarget::spatial(SpatialLayer::MID)),
    );
    let mut got = Vec::new();
    let n = room.start_from_cache(t0 + Duration::from_millis(160), track, s, |_, _, sp, p| {
        got.push((sp.marker, p.header.sequence_number));
    });
    assert_eq!(n, 8, "SID 0 and 1 of four pictures");
    assert!(got.iter().all(|(_, seq)| seq % 3 != 2), "no SID 2");
    assert_eq!(
        got.iter().filter(|(m, _)| *m).count(),
        4,
        "one marker per picture"
    );
}

#[test]
fn padding_and_bad_descriptors_leave_no_hole_and_no_switch() {
    let t0 = Instant::now();
    let mut room = Room::new("svc", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, vp9_spec()).unwrap();
    let (s, _) = room.join(t0, "sub", "sub");
    room.attach(track, s, SinkId(1), Some(sink_params(11)))
        .unwrap();
    room.set_target(
        track,
        s,
        Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH)),
    );
    let mut got = Vec::new();
    for (meta, payload) in picture(0, true) {
        room.forward(t0, track, &meta, &payload, |_, _, f| got.push(f));
    }
    // Between two pictures: a padding packet (a probe) and one whose
    // descriptor announces a picture id it does not carry.
    let mut pad = picture(1, false)[0].0;
    pad.seq = 3;
    pad.payload_len = 0;
    room.forward(t0, track, &pad, &[], |_, _, f| got.push(f));
    let mut bad = pad;
    bad.seq = 4;
    bad.payload_len = 1;
    room.forward(t0, track, &bad, &[0x80], |_, _, f| got.push(f));
    assert_eq!(
        got[3..],
        [
            Forward::Drop(DropReason::Padding),
            Forward::Drop(DropReason::BadPayload)
        ]
    );
    let at = t0 + Duration::from_millis(50);
    for (mut meta, payload) in picture(1, false) {
        meta.seq += 2;
        room.forward(at, track, &meta, &payload, |_, _, f| got.push(f));
    }
    let seqs: Vec<u16> = got
        .iter()
        .filter_map(|f| match f {
            Forward::Send(sp) => Some(sp.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), 6, "both pictures whole: {got:?}");
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1), "no hole: {seqs:?}");
    }
    assert_eq!(room.counters.layer_switches_down, 0);
}
