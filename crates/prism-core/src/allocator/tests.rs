//! Allocator tests on simulated time: order and wishes, a budget stepping
//! down and up with hysteresis, and dynacast.

use super::*;

const KBPS: u64 = 1000;

fn layer(kbps: u64, width: u32, height: u32) -> Option<LayerInfo> {
    Some(LayerInfo {
        bitrate: Bitrate(kbps * KBPS),
        width,
        height,
        base: None,
    })
}

/// A camera with the usual three layers: 150 kb/s 320x180, 500 kb/s
/// 640x360, 1500 kb/s 1280x720.
fn camera(id: u32, priority: u8) -> AllocTrack {
    AllocTrack {
        id: TrackId(id),
        kind: MediaKind::Video,
        source: Source::Camera,
        priority,
        wish: Wish::MaxLayer(SpatialLayer::HIGH),
        layers: [
            layer(150, 320, 180),
            layer(500, 640, 360),
            layer(1500, 1280, 720),
        ],
    }
}

fn audio(id: u32) -> AllocTrack {
    AllocTrack {
        id: TrackId(id),
        kind: MediaKind::Audio,
        source: Source::Microphone,
        priority: 0,
        wish: Wish::MaxLayer(SpatialLayer::LOW),
        layers: [layer(40, 0, 0), None, None],
    }
}

fn screen(id: u32) -> AllocTrack {
    AllocTrack {
        id: TrackId(id),
        kind: MediaKind::Video,
        source: Source::Screen,
        priority: 0,
        wish: Wish::MaxLayer(SpatialLayer::HIGH),
        // No simulcast: one layer.
        layers: [layer(1000, 1920, 1080), None, None],
    }
}

/// A target as one char: the layer digit, or `p`.
fn show(a: &[TrackAllocation]) -> String {
    a.iter()
        .map(|a| match a.target {
            Target::Layer(t) => char::from(b'0' + t.spatial.index() as u8),
            Target::Paused => 'p',
        })
        .collect()
}

#[test]
fn order_priority_and_wishes() {
    let t0 = Instant::now();
    let mut hidden = camera(5, 9);
    hidden.wish = Wish::Nothing;
    let mut tile = camera(6, 0);
    tile.wish = Wish::MaxSize {
        width: 700,
        height: 400,
    };
    let mut tiny = camera(7, 0);
    tiny.wish = Wish::MaxSize {
        width: 100,
        height: 100,
    };
    let mut capped = camera(8, 0);
    capped.wish = Wish::MaxLayer(SpatialLayer::MID);
    // (name, estimate in kb/s, tracks, targets in the tracks' order); the
    // budget is 95% of the estimate.
    let rows: Vec<(&str, u64, Vec<AllocTrack>, &str)> = vec![
        (
            "plenty: each at its best",
            5000,
            vec![audio(1), camera(2, 0), screen(3)],
            "020",
        ),
        // Budget 1235: audio 40, screen 1000, the camera's lowest 150 fits.
        (
            "screen before camera",
            1300,
            vec![audio(1), camera(2, 0), screen(3)],
            "000",
        ),
        (
            "audio always, even past the budget",
            30,
            vec![audio(1), camera(2, 0), screen(3)],
            "0pp",
        ),
        // Budget 1900: priority 5 takes 1500, priority 1 gets 150 of the 400 left.
        (
            "cameras by priority",
            2000,
            vec![camera(2, 1), camera(3, 5)],
            "02",
        ),
        (
            "hidden, a tile's size, a tile smaller than any layer",
            10_000,
            vec![hidden, tile, tiny],
            "p10",
        ),
        ("a layer cap", 10_000, vec![capped], "1"),
        (
            "a lowest layer that does not fit",
            100,
            vec![camera(2, 0)],
            "p",
        ),
    ];
    for (name, kbps, tracks, want) in rows {
        let mut a = Allocator::new(AllocatorConfig::default());
        let got = a.allocate(t0, Bitrate(kbps * KBPS), &tracks);
        assert_eq!(show(got), want, "{name}");
        for (g, t) in got.iter().zip(&tracks) {
            assert_eq!(g.track, t.id, "{name}: answers in the tracks' order");
            // A wish of nothing is not a bandwidth pause.
            let starved = g.target == Target::Paused && t.wish != Wish::Nothing;
            assert_eq!(g.paused_for_bandwidth, starved, "{name}");
            assert_eq!(
                g.transition,
                starved.then_some(Transition::Paused),
                "{name}"
            );
        }
    }
}

#[test]
fn a_budget_stepping_down_and_up() {
    let t0 = Instant::now();
    let mut a = Allocator::new(AllocatorConfig {
        upgrade_hold: Duration::from_millis(2500),
        ..AllocatorConfig::default()
    });
    let tracks = [audio(1), camera(2, 0)];
    use Transition::{Paused as P, Resumed as R};
    // (second, estimate in kb/s, the camera's target, transition). Hold:
    // 2.5 s; budget: 95%; layers 150 / 500 / 1500 kb/s plus 40 of audio.
    // Pause hold: 2 s.
    let rows: [(u64, u64, char, Option<Transition>); 27] = [
        (0, 3000, '2', None),
        (1, 1200, '1', None), // down at once
        (2, 400, '0', None),
        (3, 100, '0', None), // the lowest layer does not fit: kept for the pause hold
        (4, 400, '0', None), // a dip: fits again, the pause hold starts over
        (5, 100, '0', None),
        (6, 100, '0', None),
        (7, 100, 'p', Some(P)), // short for the whole pause hold
        (8, 100, 'p', None),
        (9, 1000, 'p', None), // layer 1 fits from here: hold
        (10, 1000, 'p', None),
        (11, 1000, 'p', None),
        (12, 1000, '0', Some(R)), // one step: the lowest layer
        (13, 1000, '0', None),
        (14, 1000, '0', None),
        (15, 1000, '0', None),
        (16, 1000, '1', None),
        (17, 3000, '1', None),
        (18, 1700, '1', None), // still covers layer 2 (1615 - 40)
        (19, 1500, '1', None), // no longer: the hold starts over
        (20, 3000, '1', None),
        (21, 3000, '1', None),
        (22, 3000, '1', None),
        (23, 3000, '2', None),
        (24, 1000, '1', None),
        (25, 100, '0', None), // from above the lowest: down to it, not paused
        (26, 100, '0', None),
    ];
    for (sec, kbps, want, transition) in rows {
        let now = t0 + Duration::from_secs(sec);
        let got = a.allocate(now, Bitrate(kbps * KBPS), &tracks);
        assert_eq!(show(got), format!("0{want}"), "second {sec}");
        assert_eq!(got[1].transition, transition, "second {sec}");
        let used: u64 = got.iter().map(|g| g.bitrate.0).sum();
        assert!(
            used <= kbps * KBPS * 95 / 100 || want == 'p' || kbps == 100,
            "second {sec}: {used} within the budget"
        );
    }
}

#[test]
fn a_layer_that_stops_and_a_track_that_goes() {
    let t0 = Instant::now();
    let mut a = Allocator::new(AllocatorConfig::default());
    let mut cam = camera(2, 0);
    assert_eq!(show(a.allocate(t0, Bitrate(3000 * KBPS), &[cam])), "2");
    // The publisher stops sending its top layer: down at once.
    cam.layers[2] = None;
    assert_eq!(show(a.allocate(t0, Bitrate(3000 * KBPS), &[cam])), "1");
    // Hidden, then shown again: starts at what fits, no hold, no transition.
    cam.wish = Wish::Nothing;
    assert_eq!(show(a.allocate(t0, Bitrate(3000 * KBPS), &[cam])), "p");
    cam.wish = Wish::MaxLayer(SpatialLayer::HIGH);
    let got = a.allocate(t0, Bitrate(3000 * KBPS), &[cam]);
    assert_eq!((show(got), got[0].transition), ("1".into(), None));
    // Gone from the list: forgotten, so it starts afresh later.
    a.allocate(t0, Bitrate(3000 * KBPS), &[]);
    cam.layers[2] = layer(1500, 1280, 720);
    assert_eq!(show(a.allocate(t0, Bitrate(3000 * KBPS), &[cam])), "2");
}

#[test]
fn the_lowest_layer_at_its_base_frame_rate_before_a_pause() {
    let t0 = Instant::now();
    let mut a = Allocator::new(AllocatorConfig {
        upgrade_hold: Duration::from_millis(2000),
        pause_hold: Duration::from_millis(2000),
        ..AllocatorConfig::default()
    });
    // 150 kb/s at 320x180, of which 80 kb/s its base temporal layer.
    let mut cam = camera(2, 0);
    for l in cam.layers.iter_mut().flatten() {
        l.base = Some(Bitrate(l.bitrate.0 * 8 / 15));
    }
    let tracks = [audio(1), cam];
    let target = |g: &[TrackAllocation]| match g[1].target {
        Target::Paused => "p".to_string(),
        Target::Layer(t) => format!("{}t{}", t.spatial.index(), t.temporal.value()),
    };
    // (second, estimate kb/s, camera target, transition). The budget is
    // 95 % of the estimate, audio takes 40: 190 → 140 left (base only),
    // 100 → 55 (nothing).
    let rows: [(u64, u64, &str, Option<Transition>); 10] = [
        (0, 400, "0t3", None),
        (1, 190, "0t0", None), // the whole layer no longer fits: its base
        (2, 190, "0t0", None),
        (3, 400, "0t0", None), // fits again: back to all frames after the hold
        (4, 400, "0t0", None),
        (5, 400, "0t3", None),
        (6, 100, "0t0", None), // not even the base fits: kept through the pause hold
        (7, 100, "0t0", None),
        (8, 100, "p", Some(Transition::Paused)),
        (9, 190, "p", None), // a pause ends only when the whole layer fits
    ];
    for (sec, kbps, want, transition) in rows {
        let got = a.allocate(t0 + Duration::from_secs(sec), Bitrate(kbps * KBPS), &tracks);
        assert_eq!(target(got), want, "second {sec}");
        assert_eq!(got[1].transition, transition, "second {sec}");
    }
}
