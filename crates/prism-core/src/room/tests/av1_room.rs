//! An AV1 `L3T3_KEY` track through a room, its layers named by the
//! dependency descriptor extension: the track becomes SVC from the
//! keyframe's structure, two subscribers get different layers of the one
//! stream with their own active decode targets, the allocator sees the
//! structure's resolutions, a late subscriber starts from the cache with
//! its layers only, and a packet without a descriptor leaves no hole.

use super::*;
use crate::av1_dd::tests::{l3t3_key, tid_of, write, Extra};
use crate::layer::{LayerTarget, Target};

/// The publisher's id for the dependency descriptor.
const DD_ID: u8 = 12;

/// A subscriber's parameters with the dependency descriptor negotiated.
fn av1_sink(ssrc: u32) -> SinkParams {
    let dd = crate::av1_dd::DEPENDENCY_DESCRIPTOR_URI;
    SinkParams {
        extensions: ExtensionMap::build([(dd, u16::from(DD_ID))], [(dd, 4u16)]),
        ..sink_params(ssrc)
    }
}

fn av1_spec() -> TrackSpec {
    TrackSpec {
        codec: "video/AV1".into(),
        ..spec(MediaKind::Video)
    }
}

/// Packets of picture `n` (three layers, one packet each, all T0); `key`:
/// the structure on the first, an AV1 payload starting a new coded video
/// sequence. `with_dd`: false leaves the extension off.
fn picture(n: u16, key: bool, with_dd: bool) -> Vec<rtc::rtp::Packet> {
    let s = l3t3_key(0, Some(&[(320, 180), (640, 360), (1280, 720)]));
    (0..3u8)
        .map(|sid| {
            let template = if key { 4 * sid } else { 4 * sid + 1 };
            let x = Extra {
                structure: (key && sid == 0).then_some(&s),
                ..Default::default()
            };
            let dd = write(true, true, tid_of(0, template), n * 3 + u16::from(sid), &x);
            let mut header = rtc::rtp::header::Header {
                ssrc: 7,
                sequence_number: n * 3 + u16::from(sid),
                timestamp: u32::from(n) * 3000,
                payload_type: 96,
                marker: sid == 2,
                ..Default::default()
            };
            if with_dd {
                header.extension = true;
                header.extension_profile = rtc::rtp::header::EXTENSION_PROFILE_TWO_BYTE;
                header
                    .set_extension(DD_ID, dd.into())
                    .expect("a two-byte extension fits");
            }
            // Aggregation header: N (a new coded video sequence) on the key.
            let agg: u8 = if key && sid == 0 { 0x18 } else { 0x10 };
            let payload = vec![agg; 100 * (1 << sid)];
            rtc::rtp::Packet {
                header,
                payload: payload.into(),
            }
        })
        .collect()
}

type Sent = HashMap<SinkId, Vec<(u16, bool, Option<u32>)>>;

fn forward(
    room: &mut Room,
    track: TrackId,
    sent: &mut Sent,
    pkts: &[rtc::rtp::Packet],
    at: Instant,
) {
    for p in pkts {
        room.forward_packet(at, track, SpatialLayer::LOW, p, |sink, _, f| {
            if let Forward::Send(s) = f {
                sent.entry(sink)
                    .or_default()
                    .push((s.seq, s.marker, s.dd.map(|d| d.active)));
            }
        });
    }
}

#[test]
fn two_subscribers_take_different_layers_and_announce_their_targets() {
    let t0 = Instant::now();
    let mut room = Room::new("av1", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, av1_spec()).unwrap();
    room.set_dependency_descriptor_id(track, Some(DD_ID));
    let (low, _) = room.join(t0, "low", "low");
    let (high, _) = room.join(t0, "high", "high");
    room.attach(track, low, SinkId(1), Some(av1_sink(11)))
        .unwrap();
    room.attach(track, high, SinkId(2), Some(av1_sink(12)))
        .unwrap();
    let spatial = |l| Target::Layer(LayerTarget::spatial(l));
    room.set_target(track, low, spatial(SpatialLayer::LOW));
    room.set_target(track, high, spatial(SpatialLayer::HIGH));
    let mut sent = Sent::new();
    assert!(!room.is_svc(track));
    forward(&mut room, track, &mut sent, &picture(0, true, true), t0);
    assert!(room.is_svc(track), "the structure has three spatial layers");
    assert_eq!(room.layer_count(track), 3);
    for n in 1..10 {
        let at = t0 + Duration::from_millis(u64::from(n) * 50);
        forward(&mut room, track, &mut sent, &picture(n, false, true), at);
    }
    let (low_got, high_got) = (&sent[&SinkId(1)], &sent[&SinkId(2)]);
    assert_eq!(low_got.len(), 10, "one packet (S0) per picture");
    assert_eq!(high_got.len(), 30, "every layer");
    assert!(low_got.iter().all(|(_, m, _)| *m), "S0 ends each picture");
    assert_eq!(high_got.iter().filter(|(_, m, _)| *m).count(), 10);
    assert!(
        low_got.iter().all(|(_, _, dd)| *dd == Some(0b000_000_111)),
        "S0's three decode targets"
    );
    assert!(high_got.iter().all(|(_, _, dd)| *dd == Some(0x1FF)));
    for got in [low_got, high_got] {
        for w in got.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "no gaps");
        }
    }
    assert_eq!(room.counters.layer_skips, 20);

    room.measure(t0 + Duration::from_secs(1));
    let infos = room.layer_infos(track);
    let sizes: Vec<(u32, u32)> = infos
        .iter()
        .flatten()
        .map(|l| (l.width, l.height))
        .collect();
    assert_eq!(
        sizes,
        [(320, 180), (640, 360), (1280, 720)],
        "the structure's"
    );
    let bps: Vec<u64> = infos.iter().flatten().map(|l| l.bitrate.bps()).collect();
    assert!(bps[0] < bps[1] && bps[1] < bps[2], "cumulative: {bps:?}");

    // Up at a keyframe (asked for on the one stream), down at the next
    // picture.
    while room.poll_keyframe_request().is_some() {}
    room.set_target(track, low, spatial(SpatialLayer::HIGH));
    let t1 = t0 + Duration::from_secs(2);
    forward(&mut room, track, &mut sent, &picture(10, false, true), t1);
    assert_eq!(
        room.poll_keyframe_request(),
        Some((track, SpatialLayer::LOW))
    );
    let before = sent[&SinkId(1)].len();
    let t2 = t1 + Duration::from_millis(50);
    forward(&mut room, track, &mut sent, &picture(11, true, true), t2);
    assert_eq!(sent[&SinkId(1)].len(), before + 3, "the keyframe whole");
    assert_eq!(sent[&SinkId(1)].last().map(|s| s.2), Some(Some(0x1FF)));
    room.set_target(track, low, spatial(SpatialLayer::LOW));
    let t3 = t2 + Duration::from_millis(50);
    forward(&mut room, track, &mut sent, &picture(12, false, true), t3);
    assert_eq!(sent[&SinkId(1)].len(), before + 4);
    assert_eq!(
        (
            room.counters.layer_switches_up,
            room.counters.layer_switches_down
        ),
        (1, 1)
    );

    // A packet without its descriptor: no leg can place it; the legs
    // close up its number.
    let mut p13 = picture(13, false, true);
    p13[0] = picture(13, false, false).remove(0);
    let drops = room.counters.drops.get(DropReason::BadPayload);
    forward(
        &mut room,
        track,
        &mut sent,
        &p13,
        t3 + Duration::from_millis(50),
    );
    assert_eq!(room.counters.drops.get(DropReason::BadPayload), drops + 2);
    let t4 = t3 + Duration::from_millis(100);
    forward(&mut room, track, &mut sent, &picture(14, false, true), t4);
    for sink in [SinkId(1), SinkId(2)] {
        let got = &sent[&sink];
        for w in got.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "{sink:?}: no hole");
        }
    }
}

#[test]
fn without_the_extension_negotiated_av1_is_forwarded_whole() {
    let t0 = Instant::now();
    let mut room = Room::new("av1", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, av1_spec()).unwrap();
    let (s, _) = room.join(t0, "sub", "sub");
    room.attach(track, s, SinkId(1), Some(av1_sink(11)))
        .unwrap();
    room.set_target(
        track,
        s,
        Target::Layer(LayerTarget::spatial(SpatialLayer::LOW)),
    );
    let mut sent = Sent::new();
    for n in 0..3 {
        let at = t0 + Duration::from_millis(u64::from(n) * 50);
        forward(&mut room, track, &mut sent, &picture(n, n == 0, true), at);
    }
    assert!(!room.is_svc(track), "no descriptor id: no layers known");
    assert_eq!(sent[&SinkId(1)].len(), 9, "every packet");
    assert!(sent[&SinkId(1)].iter().all(|s| s.2.is_none()));
}

#[test]
fn a_late_subscriber_starts_from_the_cached_keyframe_with_its_layers_only() {
    let t0 = Instant::now();
    let mut room = Room::new("av1", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, av1_spec()).unwrap();
    room.set_dependency_descriptor_id(track, Some(DD_ID));
    for n in 0..4 {
        let at = t0 + Duration::from_millis(u64::from(n) * 50);
        for packet in picture(n, n == 0, true) {
            room.forward_packet(at, track, SpatialLayer::LOW, &packet, |_, _, _| {});
            room.store(at, track, packet);
        }
    }
    let (s, _) = room.join(t0, "late", "late");
    room.attach(track, s, SinkId(9), Some(av1_sink(19)))
        .unwrap();
    room.set_target(
        track,
        s,
        Target::Layer(LayerTarget::spatial(SpatialLayer::MID)),
    );
    let mut got = Vec::new();
    let n = room.start_from_cache(t0 + Duration::from_millis(160), track, s, |_, _, sp, p| {
        got.push((sp.marker, p.header.sequence_number, sp.dd.map(|d| d.active)));
    });
    assert_eq!(n, 8, "S0 and S1 of four pictures");
    assert!(got.iter().all(|(_, seq, _)| seq % 3 != 2), "no S2");
    assert_eq!(got.iter().filter(|(m, _, _)| *m).count(), 4);
    assert!(
        got.iter().all(|(_, _, dd)| *dd == Some(0b000_111_111)),
        "S0 and S1's decode targets"
    );
}

#[test]
fn a_subscriber_without_the_descriptor_is_held_at_the_lowest_layer() {
    let t0 = Instant::now();
    let mut room = Room::new("av1", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, av1_spec()).unwrap();
    room.set_dependency_descriptor_id(track, Some(DD_ID));
    let (with, _) = room.join(t0, "with", "with");
    let (without, _) = room.join(t0, "without", "without");
    room.attach(track, with, SinkId(1), Some(av1_sink(11)))
        .unwrap();
    room.attach(track, without, SinkId(2), Some(sink_params(12)))
        .unwrap();
    let mut sent = Sent::new();
    forward(&mut room, track, &mut sent, &picture(0, true, true), t0);
    let high = Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH));
    room.set_target(track, with, high);
    room.set_target(track, without, high);
    let t1 = t0 + Duration::from_millis(50);
    forward(&mut room, track, &mut sent, &picture(1, true, true), t1);
    // Both start at the lowest layer; the allocator's target reaches them
    // once the keyframe showed the layers.
    assert_eq!(sent[&SinkId(1)].len(), 1 + 3, "then every layer");
    assert_eq!(
        sent[&SinkId(2)].len(),
        2,
        "S0 only: it could not decode more"
    );
}
