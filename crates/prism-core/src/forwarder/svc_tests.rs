//! A VP9 k-SVC leg on simulated time: a publisher sends every picture as
//! up to three spatial layer frames (two packets each, one SSRC, one
//! sequence space), temporal layers in the `L3T3` pattern 0,2,1,2 with
//! every frame a switching-up point. The table scripts targets, keyframes
//! and missing layers picture by picture; every row checks which layers
//! reached the subscriber, and that what it got is one stream: sequence
//! numbers +1, one marker bit per picture on its last packet, timestamps
//! advancing with the clock, picture ids as the publisher sent them. The
//! same table runs for AV1 (`L3T3_KEY` described by dependency descriptors
//! read against the keyframe's structure), where each packet also carries
//! the leg's active decode targets.

use super::*;
use crate::av1_dd::tests::{l3t3_key, tid_of, write, Extra};
use crate::av1_dd::DdTracker;
use crate::layer::{LayerTarget, TemporalLayer};
use crate::vp9::tests::svc_packet;
use crate::vp9::Vp9Descriptor;

const FRAME: Duration = Duration::from_millis(50);
/// 50 ms at 90 kHz.
const TICKS: u32 = 4500;
const SSRC: u32 = 0x5EC0;

fn params() -> SinkParams {
    SinkParams {
        ssrc: 0xAAAA,
        payload_types: payload_type_table([PtMap { from: 98, to: 120 }]).0,
        extensions: ExtensionMap::default(),
    }
}

/// A publisher: numbers, and the pictures it sends.
struct Publisher {
    seq: u16,
    ts: u32,
    pid: u16,
    n: usize,
    /// AV1: the structure its descriptors are read against (the room's
    /// part), and the frame number.
    av1: Option<Box<DdTracker>>,
    frame: u16,
}

impl Publisher {
    fn new(seq: u16, ts: u32, pid: u16) -> Self {
        Publisher {
            seq,
            ts,
            pid,
            n: 0,
            av1: None,
            frame: 0,
        }
    }

    /// An AV1 publisher whose stream the room has seen a keyframe of
    /// before the leg (its structure is known from the first picture on).
    fn av1(seq: u16, ts: u32) -> Self {
        let mut dd = Box::<DdTracker>::default();
        let structure = l3t3_key(7, Some(&[(320, 180), (640, 360), (1280, 720)]));
        let x = Extra {
            structure: Some(&structure),
            ..Default::default()
        };
        dd.on_packet(&write(true, true, 7, 65_400, &x))
            .expect("the writer writes valid descriptors");
        Publisher {
            av1: Some(dd),
            frame: 65_500,
            ..Publisher::new(seq, ts, 0)
        }
    }
}

/// One packet as the forwarder sees it.
struct Pkt {
    meta: PacketMeta,
    /// VP9 (for AV1 packets, what the same picture would be in VP9).
    d: Vp9Descriptor,
    f: SvcFrame,
}

impl Publisher {
    /// The packets of the next picture: layers 0..`layers`, two packets
    /// each; `key`: a keyframe picture (with an SS announcing 3 layers).
    fn picture(&mut self, key: bool, layers: u8) -> Vec<Pkt> {
        let tid = if key { 0 } else { [0, 2, 1, 2][self.n % 4] };
        let mut out = Vec::new();
        for sid in 0..layers {
            for k in 0..2 {
                let (begin, end) = (k == 0, k == 1);
                let ss: Option<&[(u16, u16)]> =
                    (key && sid == 0 && begin).then_some(&[(320, 180), (640, 360), (1280, 720)]);
                let bytes = svc_packet(self.pid, sid, tid, true, begin, end, !key, ss);
                let d = Vp9Descriptor::parse(&bytes).expect("the builder writes valid descriptors");
                let f = match self.av1.as_deref_mut() {
                    None => SvcFrame::from_vp9(&d),
                    Some(dd) => {
                        // Templates: 4 per spatial layer, the keyframe's
                        // first, then T0, T1, T2.
                        let template = match key {
                            true => 4 * sid,
                            false => 4 * sid + 1 + tid,
                        };
                        let structure = l3t3_key(7, Some(&[(320, 180), (640, 360), (1280, 720)]));
                        let x = Extra {
                            structure: (key && sid == 0 && begin).then_some(&structure),
                            ..Default::default()
                        };
                        let ext = write(begin, end, tid_of(7, template), self.frame, &x);
                        let read = dd
                            .on_packet(&ext)
                            .expect("the writer writes valid descriptors");
                        SvcFrame::from_av1(&read, dd, key && sid == 0 && begin)
                    }
                };
                if end {
                    self.frame = self.frame.wrapping_add(1);
                }
                out.push(Pkt {
                    meta: PacketMeta {
                        ssrc: SSRC,
                        seq: self.seq,
                        timestamp: self.ts,
                        payload_type: 98,
                        marker: end && sid + 1 == layers,
                        payload_len: 100,
                    },
                    d,
                    f,
                });
                self.seq = self.seq.wrapping_add(1);
            }
        }
        self.ts = self.ts.wrapping_add(TICKS);
        self.pid = (self.pid + 1) & 0x7FFF;
        self.n += 1;
        out
    }
}

/// One table row: one char per picture; a shorter string repeats its last
/// char (`keys`: a shorter string means no more keyframes).
struct Row {
    name: &'static str,
    /// Spatial target per picture: a digit, or `p` (paused).
    target: &'static str,
    /// Temporal cap per picture (a digit).
    temporal: &'static str,
    /// `K` where the picture is a keyframe.
    keys: &'static str,
    /// How many spatial layers the publisher sends in each picture.
    layers: &'static str,
    /// The highest spatial layer sent of each picture, `.` for none.
    out: &'static str,
    /// [`Forwarder::wants_keyframe`] after each picture.
    wants: &'static str,
}

fn at(s: &str, i: usize) -> char {
    s.chars().nth(i).or_else(|| s.chars().last()).unwrap_or('.')
}

fn run(r: &Row, mut publisher: Publisher) {
    let first_pid = publisher.pid;
    let t0 = Instant::now();
    let mut f = Forwarder::new(90_000, true);
    f.set_params(Some(params()));
    f.layers.set_layer_timeout(Duration::from_millis(200));
    let (mut out, mut wants) = (String::new(), String::new());
    let mut last: Option<SendParams> = None;
    let mut last_at = t0;
    for i in 0..r.out.len() {
        let now = t0 + FRAME * i as u32;
        let temporal = TemporalLayer::new(at(r.temporal, i) as u8 - b'0').unwrap();
        let target = match at(r.target, i) {
            'p' => Target::Paused,
            c => Target::Layer(LayerTarget {
                spatial: SpatialLayer::new(c as u8 - b'0').unwrap(),
                temporal,
            }),
        };
        f.set_target(target);
        let layers = at(r.layers, i) as u8 - b'0';
        let packets = publisher.picture(r.keys.chars().nth(i) == Some('K'), layers);
        let mut sent_sids = Vec::new();
        let mut markers = Vec::new();
        for p in &packets {
            if let Forward::Send(s) = f.decide_svc_frame(now, &p.meta, &p.f) {
                if let Some(l) = last {
                    assert_eq!(
                        s.seq,
                        l.seq.wrapping_add(1),
                        "{}: picture {i}: no gap",
                        r.name
                    );
                    let ticks = s.timestamp.wrapping_sub(l.timestamp);
                    let elapsed = (now - last_at).as_millis() as u32 * 90;
                    assert_eq!(ticks, elapsed, "{}: picture {i}: timestamps", r.name);
                }
                assert_eq!(s.ssrc, 0xAAAA);
                match publisher.av1.as_deref() {
                    None => assert_eq!(
                        p.d.picture_id.map(|p| p.value),
                        Some(first_pid.wrapping_add(i as u16) & 0x7FFF),
                        "picture ids pass through"
                    ),
                    // The leg announces the decode targets of its layers.
                    Some(dd) => {
                        let l = f.layers();
                        let top = l.current().map_or(0, |c| c.index() as u8);
                        let cap = match l.temporal_cap() {
                            TemporalLayer::MAX => u8::MAX,
                            c => c.value(),
                        };
                        let want = dd.structure().targets_up_to(top, cap);
                        assert_eq!(
                            s.dd.map(|d| (d.active, d.decode_targets)),
                            Some((want, 9)),
                            "{}: picture {i}: active decode targets",
                            r.name
                        );
                    }
                }
                sent_sids.push(p.f.sid);
                markers.push(s.marker);
                last = Some(s);
                last_at = now;
            }
        }
        match sent_sids.last() {
            Some(&top) => {
                // Layers 0..=top, two packets each, the marker on the last.
                let want: Vec<u8> = (0..=top).flat_map(|s| [s, s]).collect();
                assert_eq!(sent_sids, want, "{}: picture {i}: layers sent", r.name);
                let mut m = vec![false; markers.len()];
                *m.last_mut().unwrap() = true;
                assert_eq!(markers, m, "{}: picture {i}: marker", r.name);
                out.push(char::from(b'0' + top));
            }
            None => out.push('.'),
        }
        wants.push(
            f.wants_keyframe(now)
                .map_or('.', |l| char::from(b'0' + l.index() as u8)),
        );
    }
    assert_eq!(out, r.out, "{}: layers out", r.name);
    assert_eq!(wants, r.wants, "{}: keyframe wanted", r.name);
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "starts at a keyframe with the target's layers",
            target: "1",
            temporal: "3",
            keys: "..K",
            layers: "3",
            out: "..1111",
            wants: "11....",
        },
        Row {
            name: "a new leg takes every layer the keyframe announces",
            target: "2",
            temporal: "3",
            keys: "K",
            layers: "3",
            out: "2222",
            wants: "....",
        },
        Row {
            name: "down at the next picture, no keyframe needed",
            target: "2220",
            temporal: "3",
            keys: "K",
            layers: "3",
            out: "222000",
            wants: "......",
        },
        Row {
            name: "up waits for a keyframe, lower layers flowing",
            target: "00222222",
            temporal: "3",
            keys: "K.....K",
            layers: "3",
            out: "00000022",
            wants: "..2222..",
        },
        Row {
            name: "a keyframe that never comes: the current layer keeps flowing",
            target: "02",
            temporal: "3",
            keys: "K",
            layers: "3",
            out: "0000000000",
            wants: ".222222222",
        },
        Row {
            name: "the top layer disappears: down to the best left, up at its keyframe",
            target: "2",
            temporal: "3",
            // Timeout 200 ms = 4 pictures.
            keys: "K..........K",
            layers: "33222222223333",
            out: "22111111111222",
            wants: "..........2...",
        },
        Row {
            name: "the whole stream silent past the timeout: its layers resume as they were",
            target: "2",
            temporal: "3",
            keys: "K",
            layers: "330000000033",
            out: "22........22",
            wants: "............",
        },
        Row {
            name: "paused: nothing; resumed: at the next keyframe",
            target: "11pp1111",
            temporal: "3",
            keys: "K.....K",
            layers: "3",
            out: "11....11",
            wants: "....11..",
        },
        Row {
            name: "temporal cap: TID above it skipped, up at a switching-up point",
            target: "2",
            // Pictures 0..: TID 0 (key), 2, 1, 2, 0, 2, 1, 2, 0, 2.
            temporal: "0000001112",
            keys: "K",
            layers: "3",
            out: "2...2.2.22",
            wants: "..........",
        },
    ]
}

#[test]
fn svc_table() {
    for r in &rows() {
        run(r, Publisher::new(1000, 90_000, 10));
    }
    // Every row again across the wraparound of sequence numbers, RTP
    // timestamps and 15-bit picture ids.
    for r in &rows() {
        run(r, Publisher::new(65_530, u32::MAX - 3 * TICKS, 0x7FFE));
    }
}

#[test]
fn av1_svc_table() {
    for r in rows() {
        // A T2 frame is a switch point for no decode target (`--D`): the
        // cap rises to 2 only at a T0 or T1 frame (`SSS`, `-DS`), and
        // none comes after picture 9 asks for it.
        let r = match r.name.starts_with("temporal cap") {
            true => Row {
                out: "2...2.2.2.",
                ..r
            },
            false => r,
        };
        run(&r, Publisher::av1(1000, 90_000));
        // Across the wraparound of sequence numbers, timestamps and frame
        // numbers.
        run(&r, Publisher::av1(65_530, u32::MAX - 3 * TICKS));
    }
}

#[test]
fn skipped_layers_are_counted_as_skips_and_drops_keep_their_reasons() {
    let t = Instant::now();
    let mut f = Forwarder::new(90_000, true);
    let mut p = Publisher::new(0, 0, 0);
    let key = p.picture(true, 3);
    assert_eq!(
        f.decide_svc(t, &key[0].meta, &key[0].d),
        Forward::Drop(DropReason::Paused),
        "not negotiated: no start"
    );
    f.set_params(Some(params()));
    f.set_target(Target::Layer(LayerTarget::spatial(SpatialLayer::LOW)));
    let key = p.picture(true, 3);
    let got: Vec<Forward> = key.iter().map(|k| f.decide_svc(t, &k.meta, &k.d)).collect();
    assert!(matches!(got[0], Forward::Send(_)) && matches!(got[1], Forward::Send(_)));
    assert!(got[2..].iter().all(|g| *g == Forward::Skip));
    f.set_muted(true);
    let delta = p.picture(false, 3);
    assert_eq!(
        f.decide_svc(t, &delta[0].meta, &delta[0].d),
        Forward::Drop(DropReason::Muted)
    );
    assert_eq!(f.decide_svc(t, &delta[2].meta, &delta[2].d), Forward::Skip);
}

#[test]
fn a_new_publisher_stream_starts_at_its_keyframe_and_switches_as_before() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(90_000, true);
    f.set_params(Some(params()));
    f.set_target(Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH)));
    let mut p = Publisher::new(100, 3_000_000_000, 0);
    let mut last = None;
    let mut feed = |f: &mut Forwarder, pkts: Vec<Pkt>, ssrc: u32, at: Instant| {
        let mut top = None;
        for mut k in pkts {
            k.meta.ssrc = ssrc;
            if let Forward::Send(s) = f.decide_svc(at, &k.meta, &k.d) {
                if let Some(l) = last {
                    assert_eq!(s.seq, u16::wrapping_add(l, 1), "numbering continues");
                }
                last = Some(s.seq);
                top = Some(k.d.sid());
            }
        }
        top
    };
    assert_eq!(feed(&mut f, p.picture(true, 3), SSRC, t0), Some(2));
    assert_eq!(feed(&mut f, p.picture(false, 3), SSRC, t0 + FRAME), Some(2));
    // The encoder restarts: a new SSRC whose timestamps are far "behind".
    p.ts = 2_000_000_000;
    p.seq = 40_000;
    let at = |i: u32| t0 + FRAME * (2 + i);
    assert_eq!(
        feed(&mut f, p.picture(false, 3), SSRC + 1, at(0)),
        None,
        "waits"
    );
    assert_eq!(feed(&mut f, p.picture(true, 3), SSRC + 1, at(1)), Some(2));
    // A switch down still happens at the next picture.
    f.set_target(Target::Layer(LayerTarget::spatial(SpatialLayer::LOW)));
    assert_eq!(feed(&mut f, p.picture(false, 3), SSRC + 1, at(2)), Some(0));
}

#[test]
fn a_late_keyframe_packet_is_no_switching_point() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(90_000, true);
    f.set_params(Some(params()));
    f.set_target(Target::Layer(LayerTarget::spatial(SpatialLayer::LOW)));
    let mut p = Publisher::new(0, 0, 0);
    let key = p.picture(true, 3);
    for k in &key {
        f.decide_svc(t0, &k.meta, &k.d);
    }
    let delta = p.picture(false, 3);
    for k in &delta {
        f.decide_svc(t0 + FRAME, &k.meta, &k.d);
    }
    f.set_target(Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH)));
    // The keyframe's first packet again (a late repair): no switch up.
    f.decide_svc(t0 + FRAME * 2, &key[0].meta, &key[0].d);
    let next = p.picture(false, 3);
    let sent: Vec<u8> = next
        .iter()
        .filter(|k| {
            matches!(
                f.decide_svc(t0 + FRAME * 2, &k.meta, &k.d),
                Forward::Send(_)
            )
        })
        .map(|k| k.d.sid())
        .collect();
    assert_eq!(sent, [0, 0], "still layer 0 only, waiting for a keyframe");
    assert_eq!(f.wants_keyframe(t0 + FRAME * 2), Some(SpatialLayer::HIGH));
}
