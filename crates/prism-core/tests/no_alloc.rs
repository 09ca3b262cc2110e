//! The forwarding path allocates nothing per packet once warm: a counting
//! global allocator watches `Room::forward` for 100 subscribers, with mutes,
//! drops, reordering and a source change in the mix.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prism_core::{
    ExtensionMap, Forward, MediaKind, PacketMeta, PtMap, Room, RoomConfig, SinkId, SinkParams,
    Source, TrackSpec,
};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

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
