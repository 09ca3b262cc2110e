//! A simulcast track through a room: a leg whose target layer stops (the
//! publisher switched it off) falls back to the next one down at its
//! keyframe, and the switch is counted as a fallback, not a target switch.

use super::*;
use crate::layer::{LayerTarget, Target};

/// A VP8 packet of `layer` (its own SSRC and numbering), frame `n`.
fn packet(layer: SpatialLayer, n: u16, key: bool) -> (PacketMeta, [u8; 10]) {
    let i = layer.index() as u16;
    let pid = 1000 * (i + 1) + n;
    // X, I|L|T, 15-bit picture id, TL0PICIDX, TID 0; then a VP8 frame
    // header whose P bit is 0 for a keyframe.
    let payload = [
        0x90,
        0xE0,
        0x80 | (pid >> 8) as u8,
        pid as u8,
        n as u8,
        0x00,
        if key { 0x10 } else { 0x11 },
        0x02,
        0x00,
        0x9d,
    ];
    let meta = PacketMeta {
        ssrc: 100 + u32::from(i),
        seq: 10_000 * i + n,
        timestamp: u32::from(n) * 3000,
        payload_type: 96,
        marker: true,
        payload_len: payload.len(),
    };
    (meta, payload)
}

#[test]
fn a_target_layer_switched_off_is_left_for_the_next_one_down_as_a_fallback() {
    let t0 = Instant::now();
    let mut room = Room::new("sim", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, spec(MediaKind::Video)).unwrap();
    assert!(room.set_layers(track, &[(320, 180), (640, 360), (1280, 720)]));
    let (s, _) = room.join(t0, "sub", "sub");
    room.attach(track, s, SinkId(1), Some(sink_params(11)))
        .unwrap();
    room.set_target(
        track,
        s,
        Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH)),
    );
    let mut got: Vec<SpatialLayer> = Vec::new();
    // 33 ms frames on every layer; keyframes on all at frame 0 and on the
    // middle layer at 30; the top layer stops after frame 10.
    for n in 0..40u16 {
        let at = t0 + Duration::from_millis(u64::from(n) * 33);
        for l in SpatialLayer::ALL {
            if l == SpatialLayer::HIGH && n > 10 {
                continue;
            }
            let key = n == 0 || (n == 30 && l == SpatialLayer::MID);
            let (meta, payload) = packet(l, n, key);
            room.forward_layer(at, track, l, &meta, &payload, |_, _, f| {
                if let Forward::Send(_) = f {
                    got.push(l);
                }
            });
        }
        while room.poll_keyframe_request().is_some() {}
    }
    // At the start the leg takes the first keyframe that comes (the lowest
    // layer's: nothing else was seen yet) and climbs through the others in
    // the same frame (two fallback switches up, then its target); then
    // the top layer until it stopped, nothing until the middle layer's
    // keyframe, the middle layer from there (a fallback switch down).
    let count = |l| got.iter().filter(|g| **g == l).count();
    assert_eq!(count(SpatialLayer::LOW), 1);
    assert_eq!(count(SpatialLayer::HIGH), 11);
    assert_eq!(count(SpatialLayer::MID), 1 + 10);
    assert_eq!(room.counters.layer_switches_up, 2);
    assert_eq!(room.counters.layer_switches_down, 1);
    assert_eq!(room.counters.layer_switches_fallback, [1, 1]);
}
