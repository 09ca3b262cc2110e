//! The forwarding path allocates nothing per packet once warm: a counting
//! global allocator watches `Room::forward` for 100 subscribers, with mutes,
//! drops, reordering and a source change in the mix; and a simulcast leg
//! (three layers, switches, a pause, a temporal cap, VP8 renumbering) with
//! its allocator in the steady state; and a VP9 k-SVC track (three spatial
//! layers in one stream) through a room to legs at different targets that
//! switch up, down and pause, with the room's measurement and allocator;
//! and the same for an AV1 SVC track, its layers read from the dependency
//! descriptor (`Room::forward_packet`) and each leg's active decode targets
//! worked out per packet.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prism_core::{
    AllocTrack, Allocator, AllocatorConfig, Bitrate, ExtensionMap, Forward, Forwarder, LayerInfo,
    LayerTarget, MediaKind, PacketMeta, PtMap, Room, RoomConfig, SinkId, SinkParams, Source,
    SpatialLayer, Target, TemporalLayer, TrackId, TrackSpec, Vp8Descriptor, Wish,
};

/// The counter is global: tests that count run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    /// Counting is on for this thread: the test harness's own threads
    /// (printing another test's result) are not the code under test.
    static COUNTING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Turns counting on or off for the calling thread.
struct CountingSwitch;
impl CountingSwitch {
    fn store(&self, on: bool, _: Ordering) {
        COUNTING_HERE.with(|c| c.set(on));
    }
    fn load(&self, _: Ordering) -> bool {
        // A thread being torn down has no thread-locals left: not counted.
        COUNTING_HERE.try_with(|c| c.get()).unwrap_or(false)
    }
}
static COUNTING: CountingSwitch = CountingSwitch;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forward_allocates_nothing_per_packet() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut room = Room::new("r", RoomConfig::default(), t0);
    let (publisher, _) = room.join(t0, "pub", "pub");
    let track = room
        .publish(
            publisher,
            TrackSpec {
                kind: MediaKind::Video,
                source: Source::Camera,
                mid: "0".into(),
                codec: "video/VP8".into(),
                clock_rate: 90_000,
            },
        )
        .unwrap();
    for i in 0..100u32 {
        let (s, _) = room.join(t0, &format!("sub{i}"), "s");
        let params = SinkParams {
            ssrc: 1000 + i,
            payload_types: prism_core::payload_type_table([PtMap { from: 96, to: 100 }]).0,
            extensions: ExtensionMap::default(),
        };
        room.attach(track, s, SinkId(i as u64), Some(params))
            .unwrap();
    }
    while room.poll_event().is_some() {}

    let mut sent = 0u64;
    // Packets to store are built up front: building them allocates, storing
    // them (moving into the history and keyframe cache) must not.
    let mut packets: Vec<Option<rtc::rtp::Packet>> = (0..3200u32)
        .map(|i| {
            Some(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    sequence_number: i as u16,
                    timestamp: i * 3000,
                    marker: true,
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(&[0x10, 0x00, 1, 2, 3]),
            })
        })
        .collect();
    let mut run = |room: &mut Room, from: u32, to: u32, ssrc: u32| {
        for i in from..to {
            // Reorder every 10th pair; every 50th is padding (dropped).
            let seq = if i % 10 == 3 {
                i + 1
            } else if i % 10 == 4 {
                i - 1
            } else {
                i
            } as u16;
            let meta = PacketMeta {
                ssrc,
                seq,
                timestamp: i * 3000,
                payload_type: 96,
                marker: i % 3 == 0,
                payload_len: if i % 50 == 7 { 0 } else { 1100 },
            };
            // A keyframe every 30 packets; deltas otherwise (VP8 descriptors).
            let payload: &[u8] = if i % 30 == 0 {
                &[0x10, 0x00]
            } else {
                &[0x10, 0x01]
            };
            room.forward(
                t0 + Duration::from_millis(i as u64 * 33),
                track,
                &meta,
                payload,
                |_, _, f| {
                    if let Forward::Send(_) = f {
                        sent += 1;
                    }
                },
            );
            if let Some(p) = packets[i as usize].take() {
                room.store(t0 + Duration::from_millis(i as u64 * 33), track, p);
            }
        }
    };
    run(&mut room, 0, 100, 7); // warm up
    COUNTING.store(true, Ordering::SeqCst);
    // The counter works: a deliberate allocation is seen.
    drop(std::hint::black_box(Vec::<u8>::with_capacity(64)));
    assert_eq!(
        ALLOCS.swap(0, Ordering::SeqCst),
        1,
        "the counting allocator counts"
    );
    run(&mut room, 100, 2100, 7);
    room.set_muted(publisher, track, true).unwrap();
    run(&mut room, 2100, 2200, 7);
    room.set_muted(publisher, track, false).unwrap();
    run(&mut room, 2200, 3200, 9); // a new source SSRC
    COUNTING.store(false, Ordering::SeqCst);
    // set_muted queues an event and the source change queues a keyframe
    // request: each queue may grow once.
    let allocs = ALLOCS.load(Ordering::SeqCst);
    assert!(allocs <= 3, "{allocs} allocations while forwarding");
    assert!(sent > 240_000, "packets were forwarded: {sent}");
}

#[test]
fn a_simulcast_leg_and_its_allocator_allocate_nothing_once_warm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut fwd = Forwarder::new(90_000, true);
    fwd.enable_nack(t0);
    fwd.set_params(Some(SinkParams {
        ssrc: 0xAAAA,
        payload_types: prism_core::payload_type_table([PtMap { from: 96, to: 100 }]).0,
        extensions: ExtensionMap::default(),
    }));
    let info = |kbps: u64| {
        Some(LayerInfo {
            bitrate: Bitrate(kbps * 1000),
            width: 0,
            height: 0,
            base: Some(Bitrate(kbps * 500)),
        })
    };
    let tracks = [AllocTrack {
        id: TrackId(1),
        kind: MediaKind::Video,
        source: Source::Camera,
        priority: 0,
        wish: Wish::MaxLayer(SpatialLayer::HIGH),
        layers: [info(150), info(500), info(1500)],
    }];
    let mut alloc = Allocator::new(AllocatorConfig::default());
    let mut sent = 0u64;
    let mut run = |fwd: &mut Forwarder, alloc: &mut Allocator, from: u32, to: u32| {
        for i in from..to {
            let now = t0 + Duration::from_millis(u64::from(i) * 33);
            if i % 30 == 0 {
                // Once a second: the allocator, its target to the leg (an
                // estimate that swings between layers and a pause).
                let kbps = [3000, 3000, 3000, 3000, 3000, 3000, 800, 800, 100, 100]
                    [(i / 30 % 10) as usize];
                let a = alloc.allocate(now, Bitrate(kbps * 1000), &tracks);
                fwd.set_target(a[0].target);
                fwd.poll_keyframe_request(now, Duration::from_millis(500));
            }
            if i % 60 == 45 {
                fwd.set_target(Target::Layer(LayerTarget {
                    spatial: SpatialLayer::MID,
                    temporal: TemporalLayer::BASE,
                }));
            }
            for l in SpatialLayer::ALL {
                let pid = (i as u16).wrapping_add(l.index() as u16 * 1000) & 0x7FFF;
                let tid = [0u8, 2, 1, 2][i as usize % 4];
                let mut payload = [
                    0x90,
                    0xE0,
                    0x80 | (pid >> 8) as u8,
                    pid as u8,
                    i as u8,
                    tid << 6,
                    0,
                ];
                let d = Vp8Descriptor::parse(&payload).unwrap();
                let meta = PacketMeta {
                    ssrc: 100 + l.index() as u32,
                    seq: (i as u16).wrapping_add(l.index() as u16 * 20_000),
                    timestamp: i * 2970,
                    payload_type: 96,
                    marker: true,
                    payload_len: 1000,
                };
                if let Forward::Send(s) = fwd.decide_layer(now, &meta, l, Some(&d), i % 15 == 0) {
                    if let Some(w) = s.vp8 {
                        w.apply(&mut payload).unwrap();
                    }
                    sent += 1;
                }
            }
        }
    };
    run(&mut fwd, &mut alloc, 0, 300); // warm up: buffers reach their size
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    run(&mut fwd, &mut alloc, 300, 3300);
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.swap(0, Ordering::SeqCst);
    assert_eq!(allocs, 0, "{allocs} allocations on a simulcast leg");
    assert!(sent > 1000, "packets were forwarded: {sent}");
}

/// A k-SVC packet's VP9 descriptor on the stack: I, L (15-bit picture id,
/// TID/U/SID/D, TL0PICIDX), B/E, P on deltas, and on a keyframe's first
/// packet an SS with three sizes.
fn vp9_descriptor(
    pid: u16,
    sid: u8,
    tid: u8,
    key: bool,
    begin: bool,
    end: bool,
) -> ([u8; 18], usize) {
    let mut b = [0u8; 18];
    b[0] = 0xA0
        | if key { 0 } else { 0x40 }
        | if begin { 0x08 } else { 0 }
        | if end { 0x04 } else { 0 };
    b[1] = 0x80 | (pid >> 8) as u8;
    b[2] = pid as u8;
    b[3] = tid << 5 | 0x10 | sid << 1 | u8::from(key && sid > 0);
    b[4] = 0;
    let mut n = 5;
    if key && sid == 0 && begin {
        b[0] |= 0x02;
        b[5] = (2 << 5) | 0x10;
        let sizes: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];
        for (i, (w, h)) in sizes.iter().enumerate() {
            b[6 + i * 4..8 + i * 4].copy_from_slice(&w.to_be_bytes());
            b[8 + i * 4..10 + i * 4].copy_from_slice(&h.to_be_bytes());
        }
        n = 18;
    }
    (b, n)
}

#[test]
fn a_vp9_svc_track_allocates_nothing_once_warm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut room = Room::new("svc", RoomConfig::default(), t0);
    let (publisher, _) = room.join(t0, "pub", "pub");
    let track = room
        .publish(
            publisher,
            TrackSpec {
                kind: MediaKind::Video,
                source: Source::Camera,
                mid: "0".into(),
                codec: "video/VP9".into(),
                clock_rate: 90_000,
            },
        )
        .unwrap();
    let mut subs = Vec::new();
    for i in 0..20u32 {
        let (s, _) = room.join(t0, &format!("sub{i}"), "s");
        let params = SinkParams {
            ssrc: 1000 + i,
            payload_types: prism_core::payload_type_table([PtMap { from: 98, to: 98 }]).0,
            extensions: ExtensionMap::default(),
        };
        room.attach(track, s, SinkId(u64::from(i)), Some(params))
            .unwrap();
        subs.push(s);
    }
    while room.poll_event().is_some() {}
    let mut alloc = Allocator::new(AllocatorConfig::default());
    let mut tracks = [AllocTrack {
        id: track,
        kind: MediaKind::Video,
        source: Source::Camera,
        priority: 0,
        wish: Wish::MaxLayer(SpatialLayer::HIGH),
        layers: [None; 3],
    }];
    // Two packets per layer frame, three layers per picture.
    let pictures = 1200u32;
    let mut packets: Vec<Option<rtc::rtp::Packet>> = (0..pictures * 6)
        .map(|i| {
            Some(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    ssrc: 7,
                    sequence_number: i as u16,
                    timestamp: (i / 6) * 3000,
                    payload_type: 98,
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(&[0x08, 0x00]),
            })
        })
        .collect();
    let mut sent = 0u64;
    let mut skipped = 0u64;
    let mut run = |room: &mut Room, alloc: &mut Allocator, from: u32, to: u32| {
        for n in from..to {
            let now = t0 + Duration::from_millis(u64::from(n) * 33);
            // A keyframe half-way between two allocations: a switch up
            // waits for it.
            let key = n % 30 == 15;
            if n % 30 == 0 {
                // Once a second: measure, allocate (an estimate swinging
                // between the layers and a pause), and every leg its own
                // target around it.
                room.measure(now);
                tracks[0].layers = room.layer_infos(track);
                let kbps = [5000, 5000, 400, 400, 50, 5000][(n / 30 % 6) as usize];
                let a = alloc.allocate(now, Bitrate(kbps * 1000), &tracks);
                for (i, s) in subs.iter().enumerate() {
                    let target = match (i % 4, a[0].target) {
                        (0, t) => t,
                        (1, _) => Target::Layer(LayerTarget::spatial(SpatialLayer::LOW)),
                        (2, _) => Target::Layer(LayerTarget {
                            spatial: SpatialLayer::ALL[(n / 30 % 3) as usize],
                            temporal: TemporalLayer::new((n / 60 % 3) as u8).unwrap(),
                        }),
                        _ => Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH)),
                    };
                    room.set_target(track, *s, target);
                }
                room.handle_timeout(now);
                while room.poll_keyframe_request().is_some() {}
            }
            let tid = if key {
                0
            } else {
                [0u8, 2, 1, 2][n as usize % 4]
            };
            for sid in 0..3u8 {
                for k in 0..2u32 {
                    let i = n * 6 + u32::from(sid) * 2 + k;
                    let (payload, len) =
                        vp9_descriptor((n & 0x7FFF) as u16, sid, tid, key, k == 0, k == 1);
                    let meta = PacketMeta {
                        ssrc: 7,
                        seq: i as u16,
                        timestamp: n * 3000,
                        payload_type: 98,
                        marker: sid == 2 && k == 1,
                        payload_len: 300 * (1 << sid),
                    };
                    room.forward(now, track, &meta, &payload[..len], |_, _, f| match f {
                        Forward::Send(_) => sent += 1,
                        Forward::Skip => skipped += 1,
                        Forward::Drop(_) => {}
                    });
                    if let Some(p) = packets[i as usize].take() {
                        room.store(now, track, p);
                    }
                }
            }
        }
    };
    run(&mut room, &mut alloc, 0, 200); // warm up
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    run(&mut room, &mut alloc, 200, pictures);
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.swap(0, Ordering::SeqCst);
    assert_eq!(allocs, 0, "{allocs} allocations on a VP9 SVC track");
    assert!(room.is_svc(track));
    assert!(
        sent > 50_000 && skipped > 20_000,
        "sent {sent}, skipped {skipped}"
    );
    assert!(
        room.counters.layer_switches_up > 0 && room.counters.layer_switches_down > 0,
        "up {} down {}",
        room.counters.layer_switches_up,
        room.counters.layer_switches_down
    );
}

/// A dependency descriptor for an `L3T1_KEY`-shaped AV1 stream, built
/// before counting: three decode targets (one per spatial layer), templates
/// `2 × sid` (the keyframe's layer frame) and `2 × sid + 1` (a delta), no
/// chains, resolutions; the structure on the keyframe's first packet.
fn av1_descriptor(sid: u8, key: bool, begin: bool, end: bool, frame: u16) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::new();
    let mut put = |v: u32, n: u32| {
        for i in (0..n).rev() {
            bits.push((v >> i) & 1 == 1);
        }
    };
    put(u32::from(begin), 1);
    put(u32::from(end), 1);
    put(u32::from(2 * sid + u8::from(!key)), 6);
    put(u32::from(frame), 16);
    if key && sid == 0 && begin {
        put(0b10000, 5); // a structure, no mask, no custom fields
        put(0, 6); // template id offset
        put(2, 5); // 3 decode targets
        for idc in [0, 2, 0, 2, 0, 3] {
            put(idc, 2);
        }
        let dtis: [[u32; 3]; 6] = [
            [2, 2, 2],
            [2, 0, 0],
            [0, 2, 2],
            [0, 2, 0],
            [0, 0, 2],
            [0, 0, 2],
        ];
        for t in dtis {
            for d in t {
                put(d, 2);
            }
        }
        for fdiff in [0, 3, 1, 3, 1, 3] {
            if fdiff > 0 {
                put(1, 1);
                put(fdiff - 1, 4);
            }
            put(0, 1);
        }
        put(0, 2); // ns(4) = 0: no chains
        put(1, 1);
        for (w, h) in [(320, 180), (640, 360), (1280, 720)] {
            put(w - 1, 16);
            put(h - 1, 16);
        }
    }
    bits.chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |b, (i, &bit)| b | u8::from(bit) << (7 - i))
        })
        .collect()
}

#[test]
fn an_av1_svc_track_allocates_nothing_once_warm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut room = Room::new("av1", RoomConfig::default(), t0);
    let (publisher, _) = room.join(t0, "pub", "pub");
    let track = room
        .publish(
            publisher,
            TrackSpec {
                kind: MediaKind::Video,
                source: Source::Camera,
                mid: "0".into(),
                codec: "video/AV1".into(),
                clock_rate: 90_000,
            },
        )
        .unwrap();
    room.set_dependency_descriptor_id(track, Some(9));
    let mut subs = Vec::new();
    for i in 0..20u32 {
        let (s, _) = room.join(t0, &format!("sub{i}"), "s");
        let params = SinkParams {
            ssrc: 1000 + i,
            payload_types: prism_core::payload_type_table([PtMap { from: 45, to: 45 }]).0,
            // The descriptor negotiated: without it a leg stays at layer 0.
            extensions: ExtensionMap::build(
                [(prism_core::DEPENDENCY_DESCRIPTOR_URI, 9u16)],
                [(prism_core::DEPENDENCY_DESCRIPTOR_URI, 4u16)],
            ),
        };
        room.attach(track, s, SinkId(u64::from(i)), Some(params))
            .unwrap();
        subs.push(s);
    }
    while room.poll_event().is_some() {}
    let mut alloc = Allocator::new(AllocatorConfig::default());
    let mut tracks = [AllocTrack {
        id: track,
        kind: MediaKind::Video,
        source: Source::Camera,
        priority: 0,
        wish: Wish::MaxLayer(SpatialLayer::HIGH),
        layers: [None; 3],
    }];
    // Two packets per layer frame, three layers per picture; a keyframe
    // half-way between two allocations (a switch up waits for it).
    let pictures = 1200u32;
    let mut packets: Vec<Option<rtc::rtp::Packet>> = (0..pictures * 6)
        .map(|i| {
            let (n, sid, k) = (i / 6, (i % 6 / 2) as u8, i % 2);
            let key = n % 30 == 15;
            let mut header = rtc::rtp::header::Header {
                ssrc: 7,
                sequence_number: i as u16,
                timestamp: n * 3000,
                payload_type: 45,
                marker: sid == 2 && k == 1,
                extension: true,
                extension_profile: rtc::rtp::header::EXTENSION_PROFILE_TWO_BYTE,
                ..Default::default()
            };
            let dd = av1_descriptor(sid, key, k == 0, k == 1, (n * 3 + u32::from(sid)) as u16);
            header.set_extension(9, dd.into()).unwrap();
            let agg: &'static [u8] = match key && sid == 0 && k == 0 {
                true => &[0x18, 0x0a],
                false => &[0x10, 0x00],
            };
            Some(rtc::rtp::Packet {
                header,
                payload: bytes::Bytes::from_static(agg),
            })
        })
        .collect();
    let mut sent = 0u64;
    let mut skipped = 0u64;
    let mut run = |room: &mut Room, alloc: &mut Allocator, from: u32, to: u32| {
        for n in from..to {
            let now = t0 + Duration::from_millis(u64::from(n) * 33);
            if n % 30 == 0 {
                room.measure(now);
                tracks[0].layers = room.layer_infos(track);
                let kbps = [5000, 5000, 400, 400, 50, 5000][(n / 30 % 6) as usize];
                let a = alloc.allocate(now, Bitrate(kbps * 1000), &tracks);
                for (i, s) in subs.iter().enumerate() {
                    let target = match (i % 4, a[0].target) {
                        (0, t) => t,
                        (1, _) => Target::Layer(LayerTarget::spatial(SpatialLayer::LOW)),
                        (2, _) => Target::Layer(LayerTarget::spatial(
                            SpatialLayer::ALL[(n / 30 % 3) as usize],
                        )),
                        _ => Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH)),
                    };
                    room.set_target(track, *s, target);
                }
                room.handle_timeout(now);
                while room.poll_keyframe_request().is_some() {}
            }
            for j in 0..6 {
                let i = (n * 6 + j) as usize;
                let Some(p) = packets[i].take() else {
                    continue;
                };
                room.forward_packet(now, track, SpatialLayer::LOW, &p, |_, _, f| match f {
                    Forward::Send(s) => {
                        assert!(s.dd.is_some(), "an AV1 SVC leg announces its targets");
                        sent += 1
                    }
                    Forward::Skip => skipped += 1,
                    Forward::Drop(_) => {}
                });
                room.store(now, track, p);
            }
        }
    };
    run(&mut room, &mut alloc, 0, 200); // warm up
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    run(&mut room, &mut alloc, 200, pictures);
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.swap(0, Ordering::SeqCst);
    assert_eq!(allocs, 0, "{allocs} allocations on an AV1 SVC track");
    assert!(room.is_svc(track));
    assert!(
        sent > 50_000 && skipped > 20_000,
        "sent {sent}, skipped {skipped}"
    );
    assert!(
        room.counters.layer_switches_up > 0 && room.counters.layer_switches_down > 0,
        "up {} down {}",
        room.counters.layer_switches_up,
        room.counters.layer_switches_down
    );
}
