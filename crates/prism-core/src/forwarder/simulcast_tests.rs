//! A simulcast leg on simulated time: a publisher sends three layers (one
//! packet per frame each, its own SSRC, sequence and timestamp base), the
//! table scripts targets, keyframes and silences frame by frame, and every
//! row checks which layer reached the subscriber and that its stream is one
//! stream: one SSRC, sequence numbers +1, timestamps advancing by the time
//! that passed.

use super::*;
use crate::layer::{LayerTarget, TemporalLayer, MAX_SPATIAL_LAYERS};
use crate::vp8::Vp8Descriptor;

const FRAME: Duration = Duration::from_millis(33);
/// 33 ms at 90 kHz: each layer's timestamps advance with the wall clock.
const TICKS: u32 = 2970;
const SSRC: [u32; MAX_SPATIAL_LAYERS] = [100, 101, 102];

fn params() -> SinkParams {
    SinkParams {
        ssrc: 0xAAAA,
        payload_types: payload_type_table([PtMap { from: 96, to: 120 }]).0,
        extensions: ExtensionMap::default(),
    }
}

/// One table row. Strings have one char per frame; a shorter string means
/// "as its last char" (schedules) or "nothing" (keyframes).
struct Row {
    name: &'static str,
    gated: bool,
    /// Target per frame: a layer digit or `p` (paused).
    target: &'static str,
    /// Per layer: `K` where the layer's packet starts a keyframe.
    keyframes: [&'static str; MAX_SPATIAL_LAYERS],
    /// Per layer: `-` where the layer sends nothing, `p` where it sends
    /// only padding.
    alive: [&'static str; MAX_SPATIAL_LAYERS],
    /// A digit where the server declares that layer gone.
    gone: &'static str,
    /// The layer of the last packet sent in each frame, `.` for none.
    out: &'static str,
    /// [`Forwarder::wants_keyframe`] after each frame.
    wants: &'static str,
    /// Drops counted as paused, and as waiting for a keyframe.
    paused: u64,
    waits: u64,
}

fn at(s: &str, i: usize) -> Option<char> {
    s.chars().nth(i).or_else(|| s.chars().last())
}

fn run(r: &Row) {
    let t0 = Instant::now();
    let mut f = Forwarder::new(90_000, r.gated);
    f.set_params(Some(params()));
    f.layers.set_layer_timeout(Duration::from_millis(200));
    let (mut out, mut wants) = (String::new(), String::new());
    let (mut paused, mut waits) = (0, 0);
    let mut last: Option<(usize, SendParams)> = None;
    let mut target = None;
    for i in 0..r.out.len() {
        let now = t0 + FRAME * i as u32;
        let t = match at(r.target, i) {
            Some('p') => Target::Paused,
            Some(c) => Target::Layer(LayerTarget::spatial(
                SpatialLayer::new(c.to_digit(10).unwrap() as u8).unwrap(),
            )),
            None => Target::default(),
        };
        if target != Some(t) {
            f.set_target(t);
            target = Some(t);
        }
        if let Some(c) = r.gone.chars().nth(i).and_then(|c| c.to_digit(10)) {
            f.set_layer_gone(SpatialLayer::new(c as u8).unwrap());
        }
        let mut sent_layer = '.';
        for l in SpatialLayer::ALL {
            if at(r.alive[l.index()], i) == Some('-') {
                continue;
            }
            let keyframe = r.keyframes[l.index()].chars().nth(i) == Some('K');
            let meta = PacketMeta {
                ssrc: SSRC[l.index()],
                // Each layer numbers on its own, far apart.
                seq: (l.index() as u16 * 20_000).wrapping_add(i as u16),
                timestamp: (l.index() as u32 * 1_000_000_007).wrapping_add(i as u32 * TICKS),
                payload_type: 96,
                marker: true,
                payload_len: if at(r.alive[l.index()], i) == Some('p') {
                    0
                } else {
                    1000
                },
            };
            match f.decide_layer(now, &meta, l, None, keyframe) {
                Forward::Send(s) => {
                    assert_eq!(s.ssrc, 0xAAAA, "{}: the subscriber's SSRC", r.name);
                    if let Some((j, p)) = last {
                        assert_eq!(s.seq, p.seq.wrapping_add(1), "{}: frame {i}: seq", r.name);
                        // Same frame: the rewriter moves on by one tick.
                        let want = if i == j { 1 } else { (i - j) as u32 * TICKS };
                        assert_eq!(
                            s.timestamp.wrapping_sub(p.timestamp),
                            want,
                            "{}: frame {i}: timestamp",
                            r.name
                        );
                    }
                    last = Some((i, s));
                    sent_layer = char::from(b'0' + l.index() as u8);
                }
                Forward::Drop(DropReason::Paused) => paused += 1,
                Forward::Drop(DropReason::WaitingForKeyframe) => waits += 1,
                Forward::Drop(DropReason::Padding) => {}
                Forward::Drop(d) => panic!("{}: frame {i}: unexpected drop {d:?}", r.name),
                Forward::Skip => {}
            }
        }
        out.push(sent_layer);
        wants.push(
            f.wants_keyframe(now)
                .map_or('.', |l| char::from(b'0' + l.index() as u8)),
        );
    }
    assert_eq!(out, r.out, "{}: layers sent", r.name);
    assert_eq!(wants, r.wants, "{}: keyframe wanted", r.name);
    assert_eq!(
        (paused, waits),
        (r.paused, r.waits),
        "{}: (paused, waits)",
        r.name
    );
}

const ALL_ALIVE: [&str; MAX_SPATIAL_LAYERS] = ["1", "1", "1"];

#[test]
fn simulcast_switching_table() {
    let rows = [
        Row {
            name: "starts at the first keyframe of its layer",
            gated: true,
            target: "0",
            keyframes: ["..K", "K", "K"],
            alive: ALL_ALIVE,
            gone: "",
            out: "..0000",
            wants: "00....",
            paused: 0,
            waits: 2,
        },
        Row {
            name: "switch up at the high layer's keyframe, no freeze before",
            gated: true,
            target: "00002",
            keyframes: ["K", "K", "K.......K"],
            alive: ALL_ALIVE,
            gone: "",
            out: "00000000222",
            wants: "....2222...",
            paused: 0,
            waits: 0,
        },
        Row {
            name: "switch down at the low layer's keyframe",
            gated: true,
            target: "22220",
            keyframes: ["K.....K", "K", "K"],
            alive: ALL_ALIVE,
            gone: "",
            out: "22222200000",
            wants: "....00.....",
            paused: 0,
            waits: 0,
        },
        Row {
            name: "keyframe never comes: the current layer keeps flowing",
            gated: true,
            target: "002",
            keyframes: ["K", "K", "K"],
            alive: ALL_ALIVE,
            gone: "",
            out: "0000000000",
            wants: "..22222222",
            paused: 0,
            waits: 0,
        },
        Row {
            name: "the current layer goes silent: the next one down after the timeout",
            gated: true,
            target: "2",
            keyframes: ["K", "K.............K", "K"],
            alive: ["1", "1", "111111-"],
            gone: "",
            // Silent from frame 6 (last seen at 165 ms); gone after 200 ms,
            // at frame 12; layer 1's keyframe at 14.
            out: "222222........1111",
            wants: "............11....",
            paused: 0,
            waits: 0,
        },
        Row {
            name: "the current layer sends only padding (switched off): as if silent",
            gated: true,
            target: "2",
            keyframes: ["K", "K.............K", "K"],
            alive: ["1", "1", "111111p"],
            gone: "",
            out: "222222........1111",
            wants: "............11....",
            paused: 0,
            waits: 0,
        },
        Row {
            name: "the server declares the current layer gone: no timeout",
            gated: true,
            target: "2",
            keyframes: ["K", "K.....K", "K"],
            alive: ["1", "1", "111-"],
            gone: "...2",
            out: "222...111111",
            wants: "...111......",
            paused: 0,
            waits: 0,
        },
        Row {
            name: "paused, then resumed at the next keyframe",
            gated: true,
            target: "000ppp0",
            keyframes: ["K.......K", "K", "K"],
            alive: ALL_ALIVE,
            gone: "",
            out: "000.....000",
            wants: "......00...",
            // Only the paused layer's packets count as drops.
            paused: 3,
            waits: 2,
        },
        Row {
            name: "the target layer does not exist: the best below it",
            gated: true,
            target: "2",
            keyframes: ["K", "K", ""],
            alive: ["1", "1", "-"],
            gone: "",
            out: "1111",
            wants: "....",
            paused: 0,
            waits: 0,
        },
        Row {
            name: "keyframes not recognised: switch at once",
            gated: false,
            target: "0022p0",
            keyframes: ["", "", ""],
            alive: ALL_ALIVE,
            gone: "",
            out: "0022.0",
            wants: "......",
            paused: 1,
            waits: 0,
        },
    ];
    for r in &rows {
        run(r);
    }
}

#[test]
fn keyframe_requests_are_throttled_while_the_current_layer_flows() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(90_000, true);
    let pkt = |layer: usize, i: u16| PacketMeta {
        ssrc: SSRC[layer],
        seq: i,
        timestamp: u32::from(i) * TICKS,
        payload_type: 96,
        marker: true,
        payload_len: 1000,
    };
    let throttle = Duration::from_millis(500);
    assert_eq!(
        f.poll_keyframe_request(t0, throttle),
        None,
        "not negotiated: nothing to ask for"
    );
    f.set_params(Some(params()));
    f.decide_layer(t0, &pkt(0, 0), SpatialLayer::LOW, None, true);
    f.decide_layer(t0, &pkt(2, 0), SpatialLayer::HIGH, None, false);
    f.set_target(Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH)));
    let mut asked = Vec::new();
    let mut sent = 0;
    for i in 1..=90u16 {
        let now = t0 + FRAME * u32::from(i);
        if let Forward::Send(_) = f.decide_layer(now, &pkt(0, i), SpatialLayer::LOW, None, false) {
            sent += 1;
        }
        f.decide_layer(now, &pkt(2, i), SpatialLayer::HIGH, None, false);
        if let Some(l) = f.poll_keyframe_request(now, throttle) {
            asked.push((i, l));
        }
    }
    assert_eq!(sent, 90, "layer 0 never stopped");
    // Frames are 33 ms apart: a request at frame 1, then every 16 frames.
    let frames: Vec<u16> = asked.iter().map(|(i, _)| *i).collect();
    assert_eq!(frames, [1, 17, 33, 49, 65, 81]);
    assert!(asked.iter().all(|(_, l)| *l == SpatialLayer::HIGH));
    assert_eq!(
        f.layers()
            .next_keyframe_request_at(t0 + FRAME * 90, throttle),
        Some(t0 + FRAME * 81 + throttle)
    );
    // The keyframe comes: the switch ends the requests.
    let now = t0 + FRAME * 91;
    assert!(matches!(
        f.decide_layer(now, &pkt(2, 91), SpatialLayer::HIGH, None, true),
        Forward::Send(_)
    ));
    assert_eq!(f.poll_keyframe_request(now + throttle, throttle), None);
}

/// A VP8 payload: descriptor with 15-bit picture id, TL0PICIDX and TID.
fn vp8_payload(pid: u16, tl0: u8, tid: u8) -> [u8; 7] {
    [
        0x90,
        0xE0,
        0x80 | (pid >> 8) as u8,
        pid as u8,
        tl0,
        tid << 6,
        0x9d,
    ]
}

/// Chromium's L1T3 pattern: TID 0 2 1 2 0 2 1 2 ...
const TIDS: [u8; 4] = [0, 2, 1, 2];

/// The lowest layer with temporal layers up to `t`.
fn cap(t: u8) -> Target {
    Target::Layer(LayerTarget {
        spatial: SpatialLayer::LOW,
        temporal: TemporalLayer::new(t).unwrap(),
    })
}

/// A packet of layer 0 (one per frame `i`), its descriptor in `payload`.
fn layer0_meta(seq: u16, i: u16, payload: &[u8]) -> PacketMeta {
    PacketMeta {
        ssrc: SSRC[0],
        seq,
        timestamp: u32::from(i) * TICKS,
        payload_type: 96,
        marker: true,
        payload_len: payload.len(),
    }
}

#[test]
fn temporal_cap_and_layer_switch_keep_vp8_and_seq_continuous() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(90_000, true);
    f.set_params(Some(params()));
    let mut sends = Vec::new();
    let mut skips = 0;
    for i in 0..24u16 {
        // Cap at TID 1 from frame 8, back to all from frame 16.
        match i {
            8 => f.set_target(cap(1)),
            16 => f.set_target(cap(3)),
            _ => {}
        }
        // Layer 0 numbers its pictures from 32760 (wrapping at 15 bits).
        let pid = (32_760 + i) % (1 << 15);
        let tid = TIDS[usize::from(i) % 4];
        let tl0 = 252u8.wrapping_add((i / 4) as u8);
        let mut payload = vp8_payload(pid, tl0, tid);
        let d = Vp8Descriptor::parse(&payload).unwrap();
        let meta = layer0_meta(65_530u16.wrapping_add(i), i, &payload);
        let now = t0 + FRAME * u32::from(i);
        match f.decide_layer(now, &meta, SpatialLayer::LOW, Some(&d), i == 0) {
            Forward::Send(s) => {
                s.vp8.unwrap().apply(&mut payload).unwrap();
                let o = Vp8Descriptor::parse(&payload).unwrap();
                sends.push((
                    i,
                    s.seq,
                    o.picture_id.unwrap().value,
                    o.tl0_pic_idx.unwrap(),
                    o.temporal(),
                ));
            }
            Forward::Skip => skips += 1,
            Forward::Drop(r) => panic!("frame {i}: {r:?}"),
        }
    }
    // Frames 9, 11, 13, 15 (TID 2) are skipped.
    assert_eq!(skips, 4);
    assert!(sends.iter().all(|s| !(8..16).contains(&s.0) || s.4 <= 1));
    for w in sends.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "seq has no gap: {w:?}");
        assert_eq!(
            w[1].2,
            (w[0].2 + 1) % (1 << 15),
            "picture id has no gap: {w:?}"
        );
    }
    // TL0PICIDX passes through (only TID 0 frames move it), wrapping at 8 bits.
    assert_eq!(sends.last().unwrap().3, 252u8.wrapping_add(5));

    // Now a switch to layer 1, whose picture ids and TL0PICIDX are its own.
    let (_, last_seq, last_pid, last_tl0, _) = *sends.last().unwrap();
    f.set_target(Target::Layer(LayerTarget::spatial(SpatialLayer::MID)));
    let mut payload = vp8_payload(9, 77, 0);
    let d = Vp8Descriptor::parse(&payload).unwrap();
    let meta = PacketMeta {
        ssrc: SSRC[1],
        seq: 4000,
        timestamp: 123,
        payload_type: 96,
        marker: true,
        payload_len: payload.len(),
    };
    let Forward::Send(s) =
        f.decide_layer(t0 + FRAME * 24, &meta, SpatialLayer::MID, Some(&d), true)
    else {
        panic!("the keyframe of the target layer is sent");
    };
    s.vp8.unwrap().apply(&mut payload).unwrap();
    let o = Vp8Descriptor::parse(&payload).unwrap();
    assert_eq!(s.seq, last_seq.wrapping_add(1));
    assert_eq!(o.picture_id.unwrap().value, (last_pid + 1) % (1 << 15));
    assert_eq!(o.tl0_pic_idx, Some(last_tl0.wrapping_add(1)));
}

#[test]
fn a_raised_temporal_cap_waits_for_a_base_layer_frame() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(90_000, true);
    f.set_params(Some(params()));
    let mut out = String::new();
    for i in 0..12u16 {
        // The base layer only from frame 2; every layer again from frame 5
        // (a TID 2 frame: its references may be frames this leg skipped).
        match i {
            2 => f.set_target(cap(0)),
            5 => f.set_target(cap(3)),
            _ => {}
        }
        let tid = TIDS[usize::from(i) % 4];
        let payload = vp8_payload(100 + i, 7 + (i / 4) as u8, tid);
        let d = Vp8Descriptor::parse(&payload).unwrap();
        let meta = layer0_meta(100 + i, i, &payload);
        let now = t0 + FRAME * u32::from(i);
        out.push(
            match f.decide_layer(now, &meta, SpatialLayer::LOW, Some(&d), i == 0) {
                Forward::Send(_) => char::from(b'0' + tid),
                Forward::Skip => '.',
                Forward::Drop(r) => panic!("frame {i}: {r:?}"),
            },
        );
    }
    // Down at once (frame 2, TID 1, skipped); up only at frame 8, the next
    // TID 0 frame: 5 (TID 2), 6 (TID 1) and 7 (TID 2) stay skipped.
    assert_eq!(out, "02..0...0212");
}
