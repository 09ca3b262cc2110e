//! Room tests on simulated time: several participants publish, packets are
//! lost, reordered and dropped on purpose; what comes out is checked per sink.

use super::*;
use crate::extmap::ExtensionMap;
use crate::forwarder::{DropReason, Forward, PacketMeta, PtMap, SendParams};
use crate::keyframe::is_keyframe_start;
use std::collections::HashMap;

/// A small seeded generator (xorshift64*), so runs repeat exactly.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

fn spec(kind: MediaKind) -> TrackSpec {
    TrackSpec {
        kind,
        source: if kind == MediaKind::Audio {
            Source::Microphone
        } else {
            Source::Camera
        },
        mid: "0".into(),
        codec: if kind == MediaKind::Audio {
            "audio/opus"
        } else {
            "video/VP8"
        }
        .into(),
        clock_rate: if kind == MediaKind::Audio {
            48_000
        } else {
            90_000
        },
    }
}

fn sink_params(ssrc: u32) -> SinkParams {
    SinkParams {
        ssrc,
        payload_types: crate::forwarder::payload_type_table([PtMap { from: 96, to: 100 }]).0,
        extensions: ExtensionMap::default(),
    }
}

fn drain(room: &mut Room) -> Vec<RoomEvent> {
    std::iter::from_fn(|| room.poll_event()).collect()
}

#[test]
fn join_publish_subscribe_leave_events() {
    let t0 = Instant::now();
    let mut room = Room::new("r", RoomConfig::default(), t0);
    let (a, none) = room.join(t0, "ana", "Ana");
    assert_eq!(none, None);
    assert_eq!(drain(&mut room), vec![RoomEvent::ParticipantJoined(a)]);
    let ta = room.publish(a, spec(MediaKind::Video)).unwrap();
    assert_eq!(drain(&mut room), vec![RoomEvent::TrackPublished(ta)]);

    // A late joiner wants the existing track at once.
    let (b, _) = room.join(t0, "bo", "Bo");
    assert_eq!(
        drain(&mut room),
        vec![
            RoomEvent::ParticipantJoined(b),
            RoomEvent::SubscriptionsChanged(b)
        ]
    );
    assert_eq!(
        room.wanted_tracks(b).map(|t| t.id).collect::<Vec<_>>(),
        vec![ta]
    );
    assert_eq!(
        room.wanted_tracks(a).count(),
        0,
        "nobody receives their own track"
    );

    room.unsubscribe(b, &[ta]).unwrap();
    assert_eq!(drain(&mut room), vec![RoomEvent::SubscriptionsChanged(b)]);
    assert_eq!(room.wanted_tracks(b).count(), 0);
    room.subscribe(b, &[ta]).unwrap();
    assert_eq!(drain(&mut room), vec![RoomEvent::SubscriptionsChanged(b)]);
    assert_eq!(
        room.subscribe(b, &[TrackId(999)]),
        Err(RoomError::UnknownTrack(TrackId(999)))
    );

    room.set_muted(a, ta, true).unwrap();
    assert_eq!(room.set_muted(b, ta, true), Err(RoomError::NotOwner(ta)));
    assert_eq!(
        drain(&mut room),
        vec![RoomEvent::TrackMuted {
            track: ta,
            owner: a,
            muted: true
        }]
    );

    assert!(room.leave(t0, a, LeaveCause::Left));
    assert_eq!(
        drain(&mut room),
        vec![
            RoomEvent::TrackUnpublished {
                track: ta,
                owner: a
            },
            RoomEvent::SubscriptionsChanged(b),
            RoomEvent::ParticipantLeft {
                id: a,
                cause: LeaveCause::Left
            },
        ]
    );
    assert!(
        !room.leave(t0, a, LeaveCause::Left),
        "leaving twice is a no-op"
    );
}

#[test]
fn same_identity_replaces_and_empty_room_expires() {
    let t0 = Instant::now();
    let cfg = RoomConfig {
        empty_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let mut room = Room::new("r", cfg, t0);
    let (a1, _) = room.join(t0, "ana", "Ana");
    room.publish(a1, spec(MediaKind::Audio)).unwrap();
    drain(&mut room);
    let (a2, replaced) = room.join(t0, "ana", "Ana");
    assert_eq!(replaced, Some(a1));
    assert_ne!(a1, a2);
    let ev = drain(&mut room);
    assert!(ev.contains(&RoomEvent::ParticipantLeft {
        id: a1,
        cause: LeaveCause::Replaced
    }));
    assert_eq!(room.participant_count(), 1);
    assert_eq!(
        room.tracks().count(),
        0,
        "the old connection's tracks are gone"
    );

    assert_eq!(room.poll_timeout(), None, "occupied rooms do not expire");
    let t1 = t0 + Duration::from_secs(1);
    room.leave(t1, a2, LeaveCause::Disconnected);
    assert_eq!(room.poll_timeout(), Some(t1 + Duration::from_secs(5)));
    assert!(!room.is_expired(t1 + Duration::from_secs(4)));
    assert!(room.is_expired(t1 + Duration::from_secs(5)));
}

/// Three participants each publish audio and video; each receives the other
/// two's four tracks through `forward`, with seeded upstream loss and
/// reordering and a mute in the middle. Every sink's output sequence must have
/// holes only where upstream lost packets, and none for the muted stretch.
#[test]
fn fan_out_three_participants_simulated() {
    let t0 = Instant::now();
    let mut room = Room::new("sim", RoomConfig::default(), t0);
    let ids: Vec<ParticipantId> = ["a", "b", "c"]
        .iter()
        .map(|n| room.join(t0, n, n).0)
        .collect();
    let mut tracks = Vec::new();
    for &p in &ids {
        tracks.push((p, room.publish(p, spec(MediaKind::Audio)).unwrap()));
        tracks.push((p, room.publish(p, spec(MediaKind::Video)).unwrap()));
    }
    drain(&mut room);
    // Attach every wanted track to a sink: sink id = subscriber * 100 + track.
    let mut next_ssrc = 1000;
    for &s in &ids {
        let wanted: Vec<TrackId> = room.wanted_tracks(s).map(|t| t.id).collect();
        assert_eq!(wanted.len(), 4);
        for t in wanted {
            next_ssrc += 1;
            let sink = SinkId(s.0 as u64 * 100 + t.0 as u64);
            room.attach(t, s, sink, Some(sink_params(next_ssrc)))
                .unwrap();
        }
    }
    let mut rng = Rng(42);
    let mut out: HashMap<SinkId, Vec<SendParams>> = HashMap::new();
    let muted_track = tracks[1].1;
    let mut now = t0;
    for i in 0..3000u32 {
        now += Duration::from_millis(10);
        if i == 1000 {
            room.set_muted(tracks[1].0, muted_track, true).unwrap();
        }
        if i == 1500 {
            room.set_muted(tracks[1].0, muted_track, false).unwrap();
        }
        for (k, &(_, t)) in tracks.iter().enumerate() {
            let seq = (i as u16).wrapping_add(60_000 + k as u16 * 1000);
            // 2% upstream loss: the packet never reaches the server.
            if rng.chance(0.02) {
                continue;
            }
            let meta = PacketMeta {
                ssrc: 7 + k as u32,
                seq,
                timestamp: i * 3000,
                payload_type: 96,
                marker: true,
                payload_len: 900,
            };
            room.forward(now, t, &meta, &[0x10, 0x00], |sink, _, f| {
                if let Forward::Send(p) = f {
                    out.entry(sink).or_default().push(p);
                }
            });
        }
    }
    assert_eq!(out.len(), 12, "3 subscribers × 4 tracks");
    for (sink, sent) in &out {
        // Output numbering never repeats and advances by 1 except across an
        // upstream loss (a gap of ≥ 2 stays; 2% loss makes long gaps rare).
        let mut holes = 0;
        for w in sent.windows(2) {
            let step = w[1].seq.wrapping_sub(w[0].seq);
            assert!((1..10).contains(&step), "sink {sink:?}: step {step}");
            holes += (step - 1) as usize;
        }
        let track = TrackId((sink.0 % 100) as u32);
        let expected_total = if track == muted_track { 2500 } else { 3000 };
        // Upstream loss shows as holes; the muted stretch must not.
        assert!(
            holes < expected_total / 25,
            "sink {sink:?}: {holes} holes for {expected_total} packets"
        );
        assert!(sent.len() + holes >= expected_total - 5, "sink {sink:?}");
        assert!(sent.iter().all(|p| p.payload_type == 100));
    }
    let drops = room.counters.drops.get(DropReason::Muted);
    assert!(
        drops > 450 * 2 && drops <= 500 * 2,
        "muted packets were dropped for both subscribers: {drops}"
    );
}

/// 100 subscribers each send a PLI every 10 ms for 5 s: at most one request
/// per throttle window goes upstream, and the last one is not lost.
#[test]
fn pli_storm_is_merged_per_throttle_window() {
    let t0 = Instant::now();
    let mut room = Room::new("storm", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, spec(MediaKind::Video)).unwrap();
    let subs: Vec<ParticipantId> = (0..100)
        .map(|i| room.join(t0, &format!("s{i}"), "s").0)
        .collect();
    drain(&mut room);
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut now = t0;
    let end = t0 + Duration::from_secs(5);
    while now < end {
        for _ in &subs {
            room.request_keyframe(now, track);
        }
        if room.poll_timeout().is_some_and(|t| t <= now) {
            room.handle_timeout(now);
        }
        while let Some(t) = room.poll_keyframe_request() {
            assert_eq!(t, (track, SpatialLayer::LOW));
            sent_at.push(now);
        }
        now += Duration::from_millis(10);
    }
    // Let the last deferred request fire.
    let due = room.poll_timeout().expect("a request is deferred");
    room.handle_timeout(due);
    while room.poll_keyframe_request().is_some() {
        sent_at.push(due);
    }
    for w in sent_at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(500),
            "{:?}",
            w[1] - w[0]
        );
    }
    // 5 s / 500 ms windows, plus the trailing one.
    assert!(
        (10..=11).contains(&sent_at.len()),
        "{} requests",
        sent_at.len()
    );
    assert_eq!(room.counters.keyframe_requests_in, 50_000);
    assert_eq!(room.counters.keyframe_requests_out, sent_at.len() as u64);
}

/// A new video subscriber waits for a keyframe and asks for one at once.
#[test]
fn new_subscriber_waits_for_keyframe_and_asks_for_one() {
    let t0 = Instant::now();
    let mut room = Room::new("kf", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, spec(MediaKind::Video)).unwrap();
    let (s, _) = room.join(t0, "sub", "sub");
    room.attach(track, s, SinkId(1), Some(sink_params(5)))
        .unwrap();
    let meta = |seq| PacketMeta {
        ssrc: 1,
        seq,
        timestamp: seq as u32 * 3000,
        payload_type: 96,
        marker: true,
        payload_len: 500,
    };
    let mut got = Vec::new();
    let delta: &[u8] = &[0x10, 0x01];
    let key: &[u8] = &[0x10, 0x00];
    room.forward(t0, track, &meta(1), delta, |_, _, f| got.push(f));
    assert_eq!(got, vec![Forward::Drop(DropReason::WaitingForKeyframe)]);
    assert_eq!(
        room.poll_keyframe_request(),
        Some((track, SpatialLayer::LOW)),
        "asked at once"
    );
    room.forward(t0, track, &meta(2), delta, |_, _, f| got.push(f));
    assert_eq!(
        room.poll_keyframe_request(),
        None,
        "merged within the window"
    );
    room.forward(t0, track, &meta(3), key, |_, _, f| got.push(f));
    room.forward(t0, track, &meta(4), delta, |_, _, f| got.push(f));
    assert!(matches!(got[2], Forward::Send(_)) && matches!(got[3], Forward::Send(_)));
    // Audio never waits.
    let a = room.publish(p, spec(MediaKind::Audio)).unwrap();
    room.attach(a, s, SinkId(2), Some(sink_params(6))).unwrap();
    let mut first = None;
    room.forward(t0, a, &meta(1), b"opus", |_, _, f| first = Some(f));
    assert!(matches!(first, Some(Forward::Send(_))));
}

/// A WHEP viewer (hidden) stays when its publisher's track goes away; the
/// room's next track of the same kind and clock rate continues its leg:
/// the same sink, sequence numbers right after the last sent, timestamps
/// moving on, from the new source's first keyframe.
#[test]
fn a_hidden_viewer_continues_on_the_next_publishers_track() {
    let t0 = Instant::now();
    let mut room = Room::new("bc", RoomConfig::default(), t0);
    let (p1, _) = room.join(t0, "obs", "obs");
    let v1 = room.publish(p1, spec(MediaKind::Video)).unwrap();
    let viewer = room.join_hidden(t0, "whep-1");
    let sink = SinkId(7);
    room.attach(v1, viewer, sink, Some(sink_params(5))).unwrap();
    let meta = |ssrc, seq: u16, ts| PacketMeta {
        ssrc,
        seq,
        timestamp: ts,
        payload_type: 96,
        marker: true,
        payload_len: 500,
    };
    let (key, delta): (&[u8], &[u8]) = (&[0x10, 0x00], &[0x10, 0x01]);
    let mut out: Vec<Forward> = Vec::new();
    for (i, body) in [key, delta, delta].iter().enumerate() {
        room.forward(
            t0,
            v1,
            &meta(1, 100 + i as u16, 9000 * i as u32),
            body,
            |_, _, f| out.push(f),
        );
    }
    let Some(Forward::Send(last)) = out.last().copied() else {
        panic!("{out:?}")
    };
    // The publisher goes (a restart): the viewer stays, its forwarder kept.
    assert!(room.leave(t0, p1, LeaveCause::Timeout));
    assert_eq!(
        room.orphans(viewer).collect::<Vec<_>>(),
        vec![(sink, MediaKind::Video, 90_000)]
    );
    let (p2, _) = room.join(t0, "obs", "obs");
    let audio = room.publish(p2, spec(MediaKind::Audio)).unwrap();
    assert!(!room.adopt(audio, viewer, sink), "another kind");
    let v2 = room.publish(p2, spec(MediaKind::Video)).unwrap();
    assert!(!room.adopt(v2, viewer, SinkId(8)), "not this viewer's sink");
    assert!(room.adopt(v2, viewer, sink));
    assert_eq!(room.orphans(viewer).count(), 0);
    let t1 = t0 + std::time::Duration::from_secs(3);
    out.clear();
    // Until attach gives the new parameters, nothing is sent.
    room.forward(t1, v2, &meta(2, 40_000, 777), key, |_, _, f| out.push(f));
    assert!(
        !out.iter().any(|f| matches!(f, Forward::Send(_))),
        "{out:?}"
    );
    room.attach(v2, viewer, sink, Some(sink_params(5))).unwrap();
    out.clear();
    room.forward(t1, v2, &meta(2, 40_001, 3777), delta, |_, _, f| out.push(f));
    room.forward(t1, v2, &meta(2, 40_002, 6777), key, |_, _, f| out.push(f));
    room.forward(t1, v2, &meta(2, 40_003, 9777), delta, |_, _, f| out.push(f));
    assert_eq!(
        out[0],
        Forward::Drop(DropReason::WaitingForKeyframe),
        "the new source starts at a keyframe"
    );
    let (Forward::Send(a), Forward::Send(b)) = (out[1], out[2]) else {
        panic!("{out:?}")
    };
    assert_eq!(a.ssrc, last.ssrc, "the same sender");
    assert_eq!(a.seq, last.seq.wrapping_add(1), "numbering continues");
    assert_eq!(b.seq, a.seq.wrapping_add(1));
    let gap = a.timestamp.wrapping_sub(last.timestamp);
    assert!(
        (250_000..300_000).contains(&gap),
        "about 3 s of 90 kHz later: {gap}"
    );
    assert_eq!(b.timestamp.wrapping_sub(a.timestamp), 3000);
    // Orphaned again when that publisher goes; gone with the viewer.
    assert!(room.leave(t1, p2, LeaveCause::Left));
    assert_eq!(room.orphans(viewer).count(), 1);
    assert!(room.leave(t1, viewer, LeaveCause::Left));
    assert_eq!(room.orphans(viewer).count(), 0);
}

mod lossy {
    //! A subscriber behind a lossy, jittery link that NACKs like a browser.
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap, HashMap};

    const ONE_WAY: Duration = Duration::from_millis(20);
    const PLAYOUT: Duration = Duration::from_millis(300);
    const RENACK: Duration = Duration::from_millis(60);

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Ev {
        /// The publisher sends packet `i`.
        Publish(u32),
        /// A packet reaches the subscriber: out seq, source index.
        Arrive(u16, u32),
        /// A NACK reaches the server.
        Nack(Vec<u16>),
        /// The subscriber checks for packets still missing.
        Check,
    }

    struct Sim {
        rng: Rng,
        queue: BinaryHeap<Reverse<(Duration, u64, Ev)>>,
        n: u64,
        t0: Instant,
    }

    impl Sim {
        fn at(&mut self, t: Duration, e: Ev) {
            self.n += 1;
            self.queue.push(Reverse((t, self.n, e)));
        }
        fn link(&mut self, loss: f64) -> Option<Duration> {
            if self.rng.chance(loss) {
                None
            } else {
                Some(ONE_WAY + Duration::from_micros(self.rng.next() % 10_000))
            }
        }
    }

    /// Runs `count` packets at 100/s; returns the fraction each subscriber got
    /// in time and the room's counters.
    fn run(
        sub_loss: f64,
        pub_loss: f64,
        subscribers: usize,
        count: u32,
    ) -> (Vec<f64>, RoomCounters) {
        let t0 = Instant::now();
        let mut room = Room::new("sim", RoomConfig::default(), t0);
        let (p, _) = room.join(t0, "pub", "pub");
        let track = room.publish(p, spec(MediaKind::Video)).unwrap();
        let subs: Vec<ParticipantId> = (0..subscribers)
            .map(|i| room.join(t0, &format!("s{i}"), "s").0)
            .collect();
        for (i, s) in subs.iter().enumerate() {
            room.attach(
                track,
                *s,
                SinkId(i as u64),
                Some(sink_params(100 + i as u32)),
            )
            .unwrap();
        }
        drain(&mut room);
        let mut sim = Sim {
            rng: Rng(7),
            queue: BinaryHeap::new(),
            n: 0,
            t0,
        };
        // Per subscriber: out seq → (source index, arrival time).
        let mut got: Vec<HashMap<u16, Duration>> = vec![HashMap::new(); subscribers];
        let mut sent: Vec<BTreeMap<u16, u32>> = vec![BTreeMap::new(); subscribers];
        let mut highest: Vec<Option<u16>> = vec![None; subscribers];
        let mut last_nack: Vec<HashMap<u16, Duration>> = vec![HashMap::new(); subscribers];
        for i in 0..count {
            sim.at(Duration::from_millis(i as u64 * 10), Ev::Publish(i));
        }
        sim.at(Duration::from_millis(5), Ev::Check);
        // Which subscriber a NACK comes from travels with it: encode in the Vec's first element.
        while let Some(Reverse((t, _, ev))) = sim.queue.pop() {
            let now = sim.t0 + t;
            match ev {
                Ev::Publish(i) if sim.rng.chance(pub_loss) => {
                    // Lost between publisher and server: the server NACKs
                    // upstream (the engine does) and gets it one RTT later,
                    // as a late arrival.
                    sim.at(t + ONE_WAY * 3, Ev::Arrive(u16::MAX, i));
                }
                // Published now, or arriving late after an upstream NACK.
                Ev::Publish(i) | Ev::Arrive(u16::MAX, i) => {
                    forward_one(&mut room, &mut sim, &mut sent, track, now, t, i, sub_loss);
                }
                Ev::Arrive(out, i) => {
                    let s = (i >> 24) as usize;
                    got[s].entry(out).or_insert(t);
                    if highest[s].is_none_or(|h| out.wrapping_sub(h) < 0x8000) {
                        highest[s] = Some(out);
                    }
                }
                Ev::Nack(seqs) => {
                    let s = seqs[0] as usize;
                    let sub = subs[s];
                    room.nack(
                        now,
                        track,
                        sub,
                        seqs[1..].iter().copied(),
                        |sink, _, sp, pkt| {
                            let src = pkt.header.sequence_number as u32;
                            let _ = sink;
                            if let Some(d) = sim.link(sub_loss) {
                                sim.at(t + d, Ev::Arrive(sp.seq, src | ((s as u32) << 24)));
                            }
                            true
                        },
                    );
                }
                Ev::Check => {
                    // Each subscriber NACKs what is missing below its highest
                    // sequence number, again every RENACK until the deadline.
                    for s in 0..subscribers {
                        let Some(h) = highest[s] else { continue };
                        let mut missing = vec![s as u16];
                        // Only the playout window (30 packets) can still matter.
                        for (&out, &src) in sent[s].range(h.saturating_sub(64)..=h) {
                            let deadline = Duration::from_millis(src as u64 * 10) + PLAYOUT;
                            if got[s].contains_key(&out) || t > deadline {
                                continue;
                            }
                            if last_nack[s].get(&out).is_some_and(|&at| t < at + RENACK) {
                                continue;
                            }
                            last_nack[s].insert(out, t);
                            missing.push(out);
                        }
                        if missing.len() > 1 && !sim.rng.chance(sub_loss) {
                            sim.at(t + ONE_WAY, Ev::Nack(missing));
                        }
                    }
                    if t < Duration::from_millis(count as u64 * 10) + PLAYOUT {
                        sim.at(t + Duration::from_millis(10), Ev::Check);
                    }
                }
            }
        }
        let ratios = (0..subscribers)
            .map(|s| {
                let in_time = sent[s]
                    .iter()
                    .filter(|(out, src)| {
                        got[s].get(out).is_some_and(|&at| {
                            at <= Duration::from_millis(**src as u64 * 10) + PLAYOUT
                        })
                    })
                    .count();
                in_time as f64 / count as f64
            })
            .collect();
        (ratios, room.counters.clone())
    }

    /// Packet `i` reaches the server: forward it to every subscriber over
    /// its lossy link, and keep it in the history.
    #[allow(clippy::too_many_arguments)]
    fn forward_one(
        room: &mut Room,
        sim: &mut Sim,
        sent: &mut [BTreeMap<u16, u32>],
        track: TrackId,
        now: Instant,
        t: Duration,
        i: u32,
        sub_loss: f64,
    ) {
        // A keyframe every 100 packets (VP8 descriptors).
        let payload: &[u8] = if i.is_multiple_of(100) {
            &[0x10, 0x00]
        } else {
            &[0x10, 0x01]
        };
        let meta = &PacketMeta {
            ssrc: 1,
            seq: i as u16,
            timestamp: i * 900,
            payload_type: 96,
            marker: true,
            payload_len: 1000,
        };
        let mut out = Vec::new();
        room.forward(now, track, meta, payload, |sink, _, f| {
            if let Forward::Send(sp) = f {
                out.push((sink.0 as usize, sp.seq));
            }
        });
        for (s, seq) in out {
            sent[s].insert(seq, i);
            if let Some(d) = sim.link(sub_loss) {
                sim.at(t + d, Ev::Arrive(seq, i | ((s as u32) << 24)));
            }
        }
        let pkt = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                sequence_number: meta.seq,
                payload_type: 96,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"x"),
        };
        room.store(now, track, pkt);
    }

    #[test]
    fn five_percent_subscriber_loss_is_recovered_before_playout() {
        let (ratios, c) = run(0.05, 0.0, 3, 3000);
        for r in &ratios {
            assert!(*r >= 0.995, "delivered in time: {ratios:?}");
        }
        assert!(
            c.retransmits > 3 * 3000 / 25,
            "retransmissions happened: {c:?}"
        );
        assert_eq!(
            c.nack_misses + c.nack_expired,
            0,
            "history covered every NACK: {c:?}"
        );
    }

    #[test]
    fn publisher_side_loss_recovered_upstream_reaches_every_subscriber() {
        // 5% of packets arrive late at the server (after its upstream NACK):
        // they are forwarded with their place in each subscriber's sequence.
        let (ratios, c) = run(0.0, 0.05, 4, 2000);
        for r in &ratios {
            assert!(*r >= 0.999, "late packets reached everyone: {ratios:?}");
        }
        assert_eq!(c.drops.get(DropReason::TooOld), 0);
    }
}

/// One packet a publisher sends in a keyframe-cache scenario.
#[derive(Debug, Clone, Copy)]
enum Pub {
    /// `ms` after t0, sequence number, starts a keyframe.
    K(u64, u16),
    /// A delta packet.
    D(u64, u16),
    /// A delta lost on the way to the server (never forwarded or stored).
    Lost(u64, u16),
}

/// What a late subscriber of one track got from the keyframe cache and after.
#[derive(Debug, PartialEq, Eq)]
struct CacheOutcome {
    /// Publisher sequence numbers sent at once from the cache.
    cached: Vec<u16>,
    /// Publisher sequence numbers forwarded live afterwards.
    live: Vec<u16>,
    /// Why the cache was refused, if it was.
    refused: Option<crate::gop::CacheRefusal>,
    /// A keyframe request went upstream at the start.
    requested: bool,
}

/// Feeds `before` to a room, starts a subscriber at `join_ms`, feeds `after`;
/// checks that everything the subscriber got is numbered contiguously (its
/// sequence numbers 0, 1, 2, ... and, for video, the publisher's without a
/// gap from a keyframe on) and returns what it got.
fn cache_scenario(
    kind: MediaKind,
    cfg: RoomConfig,
    before: &[Pub],
    join_ms: u64,
    after: &[Pub],
) -> CacheOutcome {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut room = Room::new("cache", cfg, t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, spec(kind)).unwrap();
    let feed = |room: &mut Room, op: Pub, out: &mut Vec<(u16, u16, bool)>| {
        let (ms, seq, key, lost) = match op {
            Pub::K(ms, seq) => (ms, seq, true, false),
            Pub::D(ms, seq) => (ms, seq, false, false),
            Pub::Lost(ms, seq) => (ms, seq, false, true),
        };
        if lost {
            return;
        }
        let payload: &'static [u8] = if key {
            &[0x10, 0x00, 1, 2]
        } else {
            &[0x00, 0x00, 3, 4]
        };
        let pkt = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                ssrc: 9,
                sequence_number: seq,
                timestamp: ms as u32 * 90,
                payload_type: 96,
                marker: true,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(payload),
        };
        room.forward(at(ms), track, &PacketMeta::of(&pkt), payload, |_, _, f| {
            if let Forward::Send(sp) = f {
                out.push((seq, sp.seq, key));
            }
        });
        room.store(at(ms), track, pkt);
    };
    let mut ignored = Vec::new();
    for op in before {
        feed(&mut room, *op, &mut ignored);
    }
    while room.poll_keyframe_request().is_some() {}
    // Let any throttle window of the publisher's own start pass.
    room.handle_timeout(at(join_ms));
    while room.poll_keyframe_request().is_some() {}

    let (s, _) = room.join(at(join_ms), "late", "late");
    room.attach(track, s, SinkId(7), Some(sink_params(55)))
        .unwrap();
    let refusals_before = room.counters.cache_refusals;
    let mut got = Vec::new();
    let n = room.start_from_cache(at(join_ms), track, s, |sink, _, sp, pkt| {
        assert_eq!(sink, SinkId(7));
        let key = is_keyframe_start(VideoCodec::Vp8, &pkt.payload);
        got.push((pkt.header.sequence_number, sp.seq, key));
    });
    assert_eq!(n, got.len());
    let cached: Vec<u16> = got.iter().map(|g| g.0).collect();
    let requested = room.poll_keyframe_request() == Some((track, SpatialLayer::LOW));
    let refused = crate::gop::CacheRefusal::ALL
        .iter()
        .copied()
        .find(|r| room.counters.cache_refusals.get(*r) > refusals_before.get(*r));
    assert_eq!(
        room.counters.cache_starts,
        u64::from(!cached.is_empty()),
        "a start from the cache is counted once"
    );
    for op in after {
        feed(&mut room, *op, &mut got);
    }
    let live = got[cached.len()..].iter().map(|g| g.0).collect();
    // Whatever the subscriber got: its sequence numbers are contiguous...
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.1, i as u16, "subscriber numbering is contiguous: {got:?}");
    }
    if kind == MediaKind::Video && !got.is_empty() {
        // ... it starts at a keyframe, and no publisher packet is missing
        // from there on (nothing references a frame it never got).
        assert!(got[0].2, "first packet starts a keyframe: {got:?}");
        for w in got.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "no gap: {got:?}");
        }
    }
    CacheOutcome {
        cached,
        live,
        refused,
        requested,
    }
}

/// Deltas `from..from + n`, one per 33 ms from `ms`.
fn deltas(ms: u64, from: u16, n: u16) -> Vec<Pub> {
    (0..n)
        .map(|i| Pub::D(ms + 33 * u64::from(i), from.wrapping_add(i)))
        .collect()
}

/// The keyframe cache never lies: a late subscriber starts from it only with
/// the whole GOP (keyframe to live edge, nothing missing, within the
/// bounds) and then continues live without a gap; otherwise it gets nothing
/// until a fresh keyframe, which is requested at once.
#[test]
fn keyframe_cache_table() {
    use crate::gop::CacheRefusal::*;
    use MediaKind::*;
    let video = RoomConfig::default();
    let small = RoomConfig {
        keyframe_cache_packets: 16,
        ..RoomConfig::default()
    };
    let seqs = |from: u16, n: u16| -> Vec<u16> { (0..n).map(|i| from.wrapping_add(i)).collect() };
    // (name, kind, config, before, join at ms, after, expected)
    type Row = (
        &'static str,
        MediaKind,
        RoomConfig,
        Vec<Pub>,
        u64,
        Vec<Pub>,
        CacheOutcome,
    );
    let rows: Vec<Row> = vec![
        (
            "fresh keyframe",
            Video,
            video.clone(),
            vec![Pub::K(0, 100)],
            10,
            deltas(33, 101, 2),
            CacheOutcome {
                cached: vec![100],
                live: vec![101, 102],
                refused: None,
                requested: false,
            },
        ),
        (
            "keyframe then N deltas within bound",
            Video,
            video.clone(),
            [vec![Pub::K(0, 100)], deltas(33, 101, 40)].concat(),
            1400,
            deltas(1400, 141, 3),
            CacheOutcome {
                cached: seqs(100, 41),
                live: vec![141, 142, 143],
                refused: None,
                requested: false,
            },
        ),
        (
            "GOP past the age bound (2 s)",
            Video,
            video.clone(),
            [vec![Pub::K(0, 100)], deltas(33, 101, 70)].concat(),
            2400,
            [
                deltas(2400, 171, 2),
                vec![Pub::K(2480, 173)],
                deltas(2500, 174, 2),
            ]
            .concat(),
            CacheOutcome {
                cached: vec![],
                live: vec![173, 174, 175],
                refused: Some(Stale),
                requested: true,
            },
        ),
        (
            "the issue's case: a keyframe 41 s old",
            Video,
            video.clone(),
            [vec![Pub::K(0, 100)], deltas(40_000, 5000, 30)].concat(),
            41_000,
            [
                vec![Pub::D(41_010, 5030), Pub::K(41_050, 5031)],
                deltas(41_080, 5032, 1),
            ]
            .concat(),
            CacheOutcome {
                cached: vec![],
                live: vec![5031, 5032],
                refused: Some(Stale),
                requested: true,
            },
        ),
        (
            "GOP past the packet bound",
            Video,
            small.clone(),
            [vec![Pub::K(0, 100)], deltas(33, 101, 16)].concat(),
            600,
            [deltas(600, 117, 1), vec![Pub::K(640, 118)]].concat(),
            CacheOutcome {
                cached: vec![],
                live: vec![118],
                refused: Some(OverBound),
                requested: true,
            },
        ),
        (
            "GOP exactly at the packet bound",
            Video,
            small.clone(),
            [vec![Pub::K(0, 100)], deltas(33, 101, 15)].concat(),
            600,
            deltas(600, 116, 1),
            CacheOutcome {
                cached: seqs(100, 16),
                live: vec![116],
                refused: None,
                requested: false,
            },
        ),
        (
            "a hole in the GOP",
            Video,
            video.clone(),
            vec![
                Pub::K(0, 100),
                Pub::D(33, 101),
                Pub::Lost(66, 102),
                Pub::D(99, 103),
            ],
            120,
            vec![Pub::D(133, 104), Pub::K(166, 105)],
            CacheOutcome {
                cached: vec![],
                live: vec![105],
                refused: Some(Incomplete),
                requested: true,
            },
        ),
        (
            "a hole the publisher repaired",
            Video,
            video.clone(),
            vec![
                Pub::K(0, 100),
                Pub::Lost(33, 101),
                Pub::D(66, 102),
                Pub::D(90, 101),
            ],
            120,
            deltas(133, 103, 1),
            CacheOutcome {
                cached: vec![100, 101, 102],
                live: vec![103],
                refused: None,
                requested: false,
            },
        ),
        (
            "a new keyframe replaces the old",
            Video,
            video.clone(),
            [
                vec![Pub::K(0, 100)],
                deltas(33, 101, 20),
                vec![Pub::K(700, 121)],
                deltas(733, 122, 3),
            ]
            .concat(),
            900,
            deltas(900, 125, 1),
            CacheOutcome {
                cached: seqs(121, 4),
                live: vec![125],
                refused: None,
                requested: false,
            },
        ),
        (
            "no keyframe yet",
            Video,
            video.clone(),
            deltas(0, 10, 5),
            200,
            vec![Pub::D(233, 15), Pub::K(266, 16)],
            CacheOutcome {
                cached: vec![],
                live: vec![16],
                refused: Some(NoKeyframe),
                requested: true,
            },
        ),
        (
            "sequence wraparound",
            Video,
            video.clone(),
            [vec![Pub::K(0, 65530)], deltas(33, 65531, 10)].concat(),
            400,
            deltas(400, 5, 2),
            CacheOutcome {
                cached: seqs(65530, 11),
                live: vec![5, 6],
                refused: None,
                requested: false,
            },
        ),
        (
            "audio unaffected",
            Audio,
            video.clone(),
            deltas(0, 10, 5),
            200,
            deltas(200, 15, 2),
            CacheOutcome {
                cached: vec![],
                live: vec![15, 16],
                refused: None,
                requested: false,
            },
        ),
    ];
    for (name, kind, cfg, before, join, after, want) in rows {
        eprintln!("row: {name}");
        assert_eq!(
            cache_scenario(kind, cfg, &before, join, &after),
            want,
            "row: {name}"
        );
    }
}

/// A subscriber leg's sender report carries the publisher's NTP ↔ RTP
/// mapping, advanced to now and moved by the leg's timestamp offset.
#[test]
fn sender_reports_follow_the_publishers_mapping() {
    let t0 = Instant::now();
    let mut room = Room::new("sr", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, spec(MediaKind::Audio)).unwrap();
    let (s, _) = room.join(t0, "sub", "sub");
    room.attach(track, s, SinkId(3), Some(sink_params(77)))
        .unwrap();
    let meta = |ssrc, seq: u16, ts| PacketMeta {
        ssrc,
        seq,
        timestamp: ts,
        payload_type: 96,
        marker: false,
        payload_len: 100,
    };
    // First source: offset 0.
    room.forward(t0, track, &meta(5, 1, 48_000), b"a", |_, _, _| {});
    let ntp0: u64 = 0xE000_0000_0000_0000;
    room.on_sender_report(t0, track, 5, ntp0, 48_000);
    let mut got = Vec::new();
    let t1 = t0 + Duration::from_millis(500);
    room.sender_reports(t1, track, |sink, sr| got.push((sink, sr)));
    assert_eq!(got.len(), 1);
    let (sink, sr) = got[0];
    assert_eq!(sink, SinkId(3));
    assert_eq!(sr.ssrc, 77);
    assert_eq!(sr.rtp_time, 48_000 + 24_000, "advanced 500 ms at 48 kHz");
    assert_eq!(sr.ntp_time, ntp0 + (1u64 << 31), "advanced 0.5 s in NTP");
    assert_eq!((sr.packet_count, sr.octet_count), (1, 100));
    // The publisher restarts with a new SSRC: the leg's offset changes; no
    // report until the new stream's own sender report arrives.
    room.forward(t1, track, &meta(6, 900, 7_000_000), b"a", |_, _, _| {});
    got.clear();
    room.sender_reports(t1, track, |sink, sr| got.push((sink, sr)));
    assert!(
        got.is_empty(),
        "the old stream's mapping does not describe the new one"
    );
    room.on_sender_report(t1, track, 6, ntp0 + (1u64 << 31), 7_000_000);
    room.sender_reports(t1, track, |sink, sr| got.push((sink, sr)));
    // The leg continued at 48000 + 24000 (+1 tick minimum): its offset maps
    // 7_000_000 there, and the report says so.
    assert_eq!(got[0].1.rtp_time, 72_000);
}

/// A hidden viewer (WHEP) receives like a subscriber but nobody hears of it.
#[test]
fn hidden_viewers_are_not_announced() {
    let t0 = Instant::now();
    let mut room = Room::new("h", RoomConfig::default(), t0);
    let (p, _) = room.join(t0, "pub", "pub");
    let track = room.publish(p, spec(MediaKind::Video)).unwrap();
    drain(&mut room);
    let v = room.join_hidden(t0, "viewer-1");
    assert_eq!(
        drain(&mut room),
        vec![],
        "no joined event, no renegotiation"
    );
    assert_eq!(room.participants().count(), 1, "not listed");
    room.attach(track, v, SinkId(1), Some(sink_params(9)))
        .unwrap();
    let mut sent = 0;
    room.forward(
        t0,
        track,
        &PacketMeta {
            ssrc: 1,
            seq: 1,
            timestamp: 0,
            payload_type: 96,
            marker: true,
            payload_len: 10,
        },
        &[0x10, 0x00],
        |_, _, f| {
            sent += matches!(f, Forward::Send(_)) as u32;
        },
    );
    assert_eq!(sent, 1, "but it receives");
    room.unpublish(track).unwrap();
    assert_eq!(
        drain(&mut room),
        vec![RoomEvent::TrackUnpublished { track, owner: p }],
        "no subscription change for the viewer"
    );
    assert!(room.leave(t0, v, LeaveCause::Left));
    assert_eq!(drain(&mut room), vec![], "no left event");
}

#[cfg(test)]
mod av1_room;
#[cfg(test)]
mod simulcast_room;
#[cfg(test)]
mod svc_room;
