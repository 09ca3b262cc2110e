//! Dependency descriptor tests: descriptors built with a test-only writer in
//! the shapes Chromium sends for `L3T3_KEY` and `L1T3` (a structure on the
//! keyframe's first packet, mandatory fields alone afterwards, an active
//! decode targets bitmask, custom frame diffs), then truncated and garbage
//! input.

use super::*;

/// Bits, most significant first (the writer mirrors [`Bits`]).
#[derive(Default)]
pub(crate) struct Writer {
    bytes: Vec<u8>,
    bits: usize,
}

impl Writer {
    pub(crate) fn put(&mut self, v: u64, n: u32) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let bit = ((v >> i) & 1) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= bit << (7 - (self.bits % 8));
            self.bits += 1;
        }
    }

    fn ns(&mut self, n: u32, v: u32) {
        let w = 32 - n.leading_zeros();
        let m = (1u32 << w) - n;
        if v < m {
            self.put(u64::from(v), w - 1);
        } else {
            self.put(u64::from((v + m) >> 1), w - 1);
            self.put(u64::from((v + m) & 1), 1);
        }
    }
}

/// A template as the writer takes it.
#[derive(Clone)]
pub(crate) struct T {
    pub sid: u8,
    pub tid: u8,
    /// One DTI (0–3) per decode target.
    pub dtis: Vec<u8>,
    pub fdiffs: Vec<u16>,
    /// One diff per chain.
    pub chains: Vec<u8>,
}

/// A structure as the writer takes it (templates in layer order).
#[derive(Clone)]
pub(crate) struct S {
    pub offset: u8,
    pub dts: u8,
    pub templates: Vec<T>,
    pub chains: u8,
    pub protected_by: Vec<u8>,
    pub resolutions: Option<Vec<(u32, u32)>>,
}

/// What one packet's descriptor carries beyond the mandatory fields.
#[derive(Clone, Default)]
pub(crate) struct Extra<'a> {
    pub structure: Option<&'a S>,
    /// (mask, DtCnt).
    pub active: Option<(u32, u8)>,
    pub custom_fdiffs: Option<&'a [u16]>,
    /// (DTIs, DtCnt).
    pub custom_dtis: Option<(&'a [u8], u8)>,
}

/// A dependency descriptor's bytes.
pub(crate) fn write(start: bool, end: bool, template_id: u8, frame: u16, x: &Extra) -> Vec<u8> {
    let mut w = Writer::default();
    w.put(u64::from(start), 1);
    w.put(u64::from(end), 1);
    w.put(u64::from(template_id), 6);
    w.put(u64::from(frame), 16);
    let extended = x.structure.is_some()
        || x.active.is_some()
        || x.custom_fdiffs.is_some()
        || x.custom_dtis.is_some();
    if extended {
        w.put(u64::from(x.structure.is_some()), 1);
        w.put(u64::from(x.active.is_some()), 1);
        w.put(u64::from(x.custom_dtis.is_some()), 1);
        w.put(u64::from(x.custom_fdiffs.is_some()), 1);
        w.put(0, 1);
        if let Some(s) = x.structure {
            write_structure(&mut w, s);
        }
        if let Some((mask, dts)) = x.active {
            w.put(u64::from(mask), u32::from(dts));
        }
        if let Some((dtis, _)) = x.custom_dtis {
            for d in dtis {
                w.put(u64::from(*d), 2);
            }
        }
        if let Some(fdiffs) = x.custom_fdiffs {
            for &f in fdiffs {
                let v = u64::from(f - 1);
                let size = match v {
                    0..=0xF => 1,
                    0x10..=0xFF => 2,
                    _ => 3,
                };
                w.put(size, 2);
                w.put(v, 4 * size as u32);
            }
            w.put(0, 2);
        }
    }
    w.bytes
}

fn write_structure(w: &mut Writer, s: &S) {
    w.put(u64::from(s.offset), 6);
    w.put(u64::from(s.dts - 1), 5);
    for pair in s.templates.windows(2) {
        let idc = match (pair[0].sid == pair[1].sid, pair[1].tid > pair[0].tid) {
            (true, false) => 0,
            (true, true) => 1,
            (false, _) => 2,
        };
        w.put(idc, 2);
    }
    w.put(3, 2);
    for t in &s.templates {
        for d in &t.dtis {
            w.put(u64::from(*d), 2);
        }
    }
    for t in &s.templates {
        for f in &t.fdiffs {
            w.put(1, 1);
            w.put(u64::from(f - 1), 4);
        }
        w.put(0, 1);
    }
    w.ns(u32::from(s.dts) + 1, u32::from(s.chains));
    if s.chains > 0 {
        for p in &s.protected_by {
            w.ns(u32::from(s.chains), u32::from(*p));
        }
        for t in &s.templates {
            for c in &t.chains {
                w.put(u64::from(*c), 4);
            }
        }
    }
    match &s.resolutions {
        Some(res) => {
            w.put(1, 1);
            for (wd, h) in res {
                w.put(u64::from(wd - 1), 16);
                w.put(u64::from(h - 1), 16);
            }
        }
        None => w.put(0, 1),
    }
}

/// An `L3T3_KEY`-shaped structure as libwebrtc builds it: 9 decode targets
/// (S×3 + T), one chain per spatial layer, per spatial layer a keyframe
/// template and T0/T1/T2 templates; the keyframe's S0 frame is needed by
/// every decode target, outside keyframes a layer's frames only by its own
/// targets. DTIs: T0 frames are switch points of their layer's targets
/// (`SSS`), T1 frames discardable for T1 and a switch point for T2
/// (`-DS`), T2 frames discardable (`--D`).
pub(crate) fn l3t3_key(offset: u8, sizes: Option<&[(u32, u32)]>) -> S {
    let mut templates = Vec::new();
    for s in 0..3u8 {
        let dtis = |tid: u8, key: bool| -> Vec<u8> {
            (0..9u8)
                .map(|dt| {
                    let (ds, dtid) = (dt / 3, dt % 3);
                    let mine = if key { ds >= s } else { ds == s };
                    match (mine && dtid >= tid, tid == 0 || dtid > tid) {
                        (false, _) => 0,
                        (true, true) => 2,
                        (true, false) => 1,
                    }
                })
                .collect()
        };
        let key_fdiffs = if s == 0 { vec![] } else { vec![1] };
        templates.push(T {
            sid: s,
            tid: 0,
            dtis: dtis(0, true),
            fdiffs: key_fdiffs,
            chains: vec![0; 3],
        });
        templates.push(T {
            sid: s,
            tid: 0,
            dtis: dtis(0, false),
            fdiffs: vec![12],
            chains: vec![12, 12, 12],
        });
        templates.push(T {
            sid: s,
            tid: 1,
            dtis: dtis(1, false),
            fdiffs: vec![6],
            chains: vec![6, 6, 6],
        });
        templates.push(T {
            sid: s,
            tid: 2,
            dtis: dtis(2, false),
            fdiffs: vec![3],
            chains: vec![3, 3, 3],
        });
    }
    S {
        offset,
        dts: 9,
        templates,
        chains: 3,
        protected_by: (0..9).map(|dt| dt / 3).collect(),
        resolutions: sizes.map(<[_]>::to_vec),
    }
}

/// The template id of the `n`th template of a structure at `offset`.
pub(crate) fn tid_of(offset: u8, n: u8) -> u8 {
    (offset + n) % 64
}

/// `L1T3` as Chromium sends it: one spatial layer, three temporal.
fn l1t3() -> S {
    let t = |tid: u8, dtis: [u8; 3], fdiffs: Vec<u16>| T {
        sid: 0,
        tid,
        dtis: dtis.to_vec(),
        fdiffs,
        chains: vec![0],
    };
    S {
        offset: 0,
        dts: 3,
        templates: vec![
            t(0, [2, 2, 2], vec![]),
            t(0, [3, 3, 3], vec![4]),
            t(1, [0, 2, 2], vec![2]),
            t(2, [0, 0, 1], vec![1]),
            t(2, [0, 0, 1], vec![1]),
        ],
        chains: 1,
        protected_by: vec![0, 0, 0],
        resolutions: None,
    }
}

fn parse_with(bytes: &[u8], latest: &DdStructure) -> Result<DependencyDescriptor, DdError> {
    let mut scratch = DdStructure::default();
    DependencyDescriptor::parse(bytes, latest, &mut scratch)
}

#[test]
fn a_keyframe_structure_is_read_whole() {
    let sizes = [(320, 180), (640, 360), (1280, 720)];
    let s = l3t3_key(0, Some(&sizes));
    let bytes = write(
        true,
        false,
        0,
        1000,
        &Extra {
            structure: Some(&s),
            ..Default::default()
        },
    );
    let mut t = DdTracker::default();
    let d = t.on_packet(&bytes).expect("valid");
    assert!(d.start_of_frame && !d.end_of_frame && d.structure_attached);
    assert_eq!((d.frame_number, d.spatial_id, d.temporal_id), (1000, 0, 0));
    assert_eq!(
        d.active_decode_targets,
        Some(0x1FF),
        "a structure: all active"
    );
    assert_eq!(d.dtis.get(8), Dti::Switch, "S0's key is needed by S2T2");
    assert_eq!(d.fdiffs.as_slice(), &[] as &[u16]);
    let st = t.structure();
    assert_eq!(
        (
            st.decode_targets,
            st.template_count,
            st.spatial_layers,
            st.chains
        ),
        (9, 12, 3, 3)
    );
    assert_eq!(
        st.resolutions.map(|r| r[..3].to_vec()),
        Some(sizes.to_vec())
    );
    assert_eq!(&st.protected_by[..9], &[0, 0, 0, 1, 1, 1, 2, 2, 2]);
    let layers: Vec<(u8, u8)> = st.target_layers[..9].to_vec();
    assert_eq!(
        layers,
        [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 1),
            (1, 2),
            (2, 0),
            (2, 1),
            (2, 2)
        ]
    );
    assert_eq!(st.templates[5].chain_diffs[..3], [12, 12, 12]);
    assert_eq!(st.templates[6].fdiffs.as_slice(), &[6]);
    assert_eq!(st.targets_up_to(0, 2), 0b000_000_111);
    assert_eq!(st.targets_up_to(1, 0), 0b000_001_001);
    assert_eq!(st.targets_up_to(2, 2), 0x1FF);
    assert_eq!(st.all_targets(), 0x1FF);
}

#[test]
fn packets_after_the_keyframe_take_their_layers_from_the_structure() {
    // Offset 60: template ids wrap past 63 back to 0.
    let s = l3t3_key(60, None);
    let mut t = DdTracker::default();
    let key = Extra {
        structure: Some(&s),
        ..Default::default()
    };
    t.on_packet(&write(true, false, 60, 7, &key))
        .expect("valid");
    struct Row {
        name: &'static str,
        bytes: Vec<u8>,
        want: (bool, bool, u8, u8, Option<u32>),
    }
    let rows = [
        Row {
            name: "S1 key frame (template 4), mandatory fields only",
            bytes: write(true, true, tid_of(60, 4), 8, &Extra::default()),
            want: (true, true, 1, 0, None),
        },
        Row {
            name: "S2 T2 (template 11, id 7 after the wrap)",
            bytes: write(false, true, tid_of(60, 11), 20, &Extra::default()),
            want: (false, true, 2, 2, None),
        },
        Row {
            name: "S0 T1 with an active decode targets bitmask",
            bytes: write(
                true,
                false,
                tid_of(60, 2),
                21,
                &Extra {
                    active: Some((0b000_011_011, 9)),
                    ..Default::default()
                },
            ),
            want: (true, false, 0, 1, Some(0b000_011_011)),
        },
    ];
    for r in rows {
        let d = t
            .on_packet(&r.bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", r.name));
        assert_eq!(
            (
                d.start_of_frame,
                d.end_of_frame,
                d.spatial_id,
                d.temporal_id,
                d.active_decode_targets
            ),
            r.want,
            "{}",
            r.name
        );
    }
    assert_eq!(t.structure().template_id_offset, 60);
}

#[test]
fn custom_dtis_and_frame_diffs_replace_the_templates() {
    let s = l1t3();
    let mut t = DdTracker::default();
    let key = Extra {
        structure: Some(&s),
        ..Default::default()
    };
    let d = t.on_packet(&write(true, true, 0, 1, &key)).expect("valid");
    assert_eq!(t.structure().spatial_layers, 1, "L1T3: one spatial layer");
    assert_eq!(d.active_decode_targets, Some(0b111));
    let diffs = [1u16, 17, 300];
    let dtis = [3u8, 1, 0];
    let d = t
        .on_packet(&write(
            true,
            true,
            2,
            2,
            &Extra {
                custom_fdiffs: Some(&diffs),
                custom_dtis: Some((&dtis, 3)),
                ..Default::default()
            },
        ))
        .expect("valid");
    assert_eq!(d.fdiffs.as_slice(), &diffs);
    assert_eq!(
        (d.dtis.get(0), d.dtis.get(1), d.dtis.get(2)),
        (Dti::Required, Dti::Discardable, Dti::NotPresent)
    );
    assert_eq!(
        (d.spatial_id, d.temporal_id),
        (0, 1),
        "layers stay the template's"
    );
}

#[test]
fn no_structure_or_a_template_it_lacks_is_an_error() {
    let none = DdStructure::default();
    assert_eq!(
        parse_with(&write(true, true, 0, 1, &Extra::default()), &none),
        Err(DdError::UnknownTemplate),
        "before any keyframe's structure"
    );
    let mut t = DdTracker::default();
    let s = l1t3();
    t.on_packet(&write(
        true,
        true,
        0,
        1,
        &Extra {
            structure: Some(&s),
            ..Default::default()
        },
    ))
    .expect("valid");
    assert_eq!(
        t.on_packet(&write(true, true, 5, 2, &Extra::default())),
        Err(DdError::UnknownTemplate),
        "5 templates: id 5 is none of them"
    );
}

#[test]
fn an_older_structure_arriving_late_does_not_replace_the_latest() {
    let (old, new) = (l3t3_key(0, None), l3t3_key(12, None));
    let mut t = DdTracker::default();
    let with = |s| Extra {
        structure: Some(s),
        ..Default::default()
    };
    t.on_packet(&write(true, false, 12, 500, &with(&new)))
        .expect("valid");
    let late = t
        .on_packet(&write(true, false, 0, 400, &with(&old)))
        .expect("valid");
    assert!(late.structure_attached, "read against its own structure");
    assert_eq!(t.structure().template_id_offset, 12, "the newer one stays");
    // A resend from the history is read, and changes nothing.
    t.peek(&write(true, false, 0, 600, &with(&old)))
        .expect("valid");
    assert_eq!(t.structure().template_id_offset, 12);
    t.on_packet(&write(true, false, 0, 600, &with(&old)))
        .expect("valid");
    assert_eq!(t.structure().template_id_offset, 0, "a newer keyframe's");
}

#[test]
fn truncated_descriptors_fail_without_panicking() {
    let s = l3t3_key(3, Some(&[(320, 180), (640, 360), (1280, 720)]));
    let shapes = [
        write(
            true,
            false,
            3,
            9,
            &Extra {
                structure: Some(&s),
                ..Default::default()
            },
        ),
        write(
            false,
            true,
            5,
            10,
            &Extra {
                active: Some((0b111, 9)),
                custom_fdiffs: Some(&[1, 2000]),
                ..Default::default()
            },
        ),
    ];
    for full in &shapes {
        let mut t = DdTracker::default();
        t.on_packet(&shapes[0]).expect("the structure parses");
        assert!(t.peek(full).is_ok());
        for len in 0..full.len() {
            // Any result but a panic; the mandatory fields alone need 3.
            let r = t.peek(&full[..len]);
            if len < 3 {
                assert_eq!(r, Err(DdError::Truncated), "len {len}");
            }
        }
    }
}

#[test]
fn garbage_never_panics() {
    // A fixed-seed generator: the same 20,000 inputs every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = DdTracker::default();
    let mut ok = 0;
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if t.on_packet(&bytes).is_ok() {
            ok += 1;
        }
    }
    // Random structures do parse now and then; mostly they do not.
    assert!(ok < 20_000);
}

#[test]
fn structure_bounds_are_errors() {
    // Five spatial layers: one more than the format allows.
    let mut s = l1t3();
    s.templates = (0..5)
        .map(|sid| T {
            sid,
            tid: 0,
            dtis: vec![3, 3, 3],
            fdiffs: vec![],
            chains: vec![0],
        })
        .collect();
    let bytes = write(
        true,
        true,
        0,
        1,
        &Extra {
            structure: Some(&s),
            ..Default::default()
        },
    );
    assert_eq!(
        DdTracker::default().on_packet(&bytes),
        Err(DdError::OutOfBounds)
    );
    // Nine frame diffs on one template.
    let mut s = l1t3();
    s.templates[1].fdiffs = vec![1; DD_MAX_FDIFFS + 1];
    let bytes = write(
        true,
        true,
        0,
        1,
        &Extra {
            structure: Some(&s),
            ..Default::default()
        },
    );
    assert_eq!(
        DdTracker::default().on_packet(&bytes),
        Err(DdError::OutOfBounds)
    );
}

#[test]
fn a_legs_active_decode_targets_are_written_and_nothing_else_moves() {
    let s = l3t3_key(5, Some(&[(320, 180), (640, 360), (1280, 720)]));
    let mut t = DdTracker::default();
    let key = write(
        true,
        false,
        5,
        40,
        &Extra {
            structure: Some(&s),
            ..Default::default()
        },
    );
    t.on_packet(&key).expect("valid");
    let rw = t.targets().for_leg(1, 3);
    assert_eq!(rw.active, 0b000_111_111, "S0 and S1, every temporal layer");
    assert_eq!(t.targets().for_leg(0, 1).active, 0b000_000_011);
    let shapes = [
        ("the keyframe's, with its structure", key.clone()),
        (
            "mandatory fields only",
            write(false, true, tid_of(5, 6), 41, &Extra::default()),
        ),
        (
            "the publisher's own mask and custom frame diffs",
            write(
                true,
                true,
                tid_of(5, 2),
                42,
                &Extra {
                    active: Some((0x1FF, 9)),
                    custom_fdiffs: Some(&[3, 700]),
                    custom_dtis: Some((&[2, 1, 0, 0, 0, 0, 0, 0, 0], 9)),
                    ..Default::default()
                },
            ),
        ),
    ];
    for (name, ext) in shapes {
        assert!(rw.changes(&ext), "{name}");
        let mut out = [0u8; DD_MAX_LEN];
        let n = rw.apply(&ext, &mut out).expect(name);
        let before = t.peek(&ext).expect(name);
        let after = t.peek(&out[..n]).expect(name);
        assert_eq!(after.active_decode_targets, Some(rw.active), "{name}");
        assert_eq!(
            DependencyDescriptor {
                active_decode_targets: None,
                bits: 0,
                ..after
            },
            DependencyDescriptor {
                active_decode_targets: None,
                bits: 0,
                ..before
            },
            "{name}: every other field as it came"
        );
        assert!(!rw.changes(&out[..n]) || after.structure_attached, "{name}");
        // The receiver keeps the structure of a rewritten keyframe.
        if after.structure_attached {
            let mut r = DdTracker::default();
            r.on_packet(&out[..n]).expect(name);
            assert_eq!(r.structure(), t.structure(), "{name}");
        }
    }
    // Malformed input is an error, never a panic.
    let mut out = [0u8; DD_MAX_LEN];
    for len in 0..key.len() {
        let _ = rw.apply(&key[..len], &mut out);
    }
    assert_eq!(rw.apply(&key[..2], &mut out), Err(DdError::Truncated));
}

#[test]
fn the_publishers_active_decode_targets_are_kept_and_limit_a_legs() {
    let s = l3t3_key(0, None);
    let mut t = DdTracker::default();
    // A keyframe whose publisher sends S0 only so far: structure and mask
    // in one descriptor.
    let key = Extra {
        structure: Some(&s),
        active: Some((0b000_000_111, 9)),
        ..Default::default()
    };
    let d = t
        .on_packet(&write(true, true, 0, 100, &key))
        .expect("valid");
    assert_eq!(d.active_decode_targets, Some(0b111));
    assert_eq!(t.targets().active, 0b111);
    assert_eq!(
        t.targets().for_leg(2, 3).active,
        0b111,
        "a leg at S2 decodes what is sent"
    );
    let f = crate::forwarder::SvcFrame::from_av1(&d, &t, true);
    assert_eq!(f.announced, 1, "one spatial layer active");
    // The publisher adds its upper layers; a mask from before the
    // structure's keyframe changes nothing.
    t.on_packet(&write(
        true,
        true,
        1,
        101,
        &Extra {
            active: Some((0x1FF, 9)),
            ..Default::default()
        },
    ))
    .expect("valid");
    assert_eq!(t.targets().active, 0x1FF);
    t.on_packet(&write(
        true,
        true,
        1,
        90,
        &Extra {
            active: Some((0b1, 9)),
            ..Default::default()
        },
    ))
    .expect("valid");
    assert_eq!(t.targets().active, 0x1FF, "older than the structure");
    // Switch points: T0 frames for T1 and T2, T1 frames for T2, T2 none.
    let switch = |template: u8, t: &mut DdTracker| {
        let d = t
            .on_packet(&write(true, true, template, 102, &Extra::default()))
            .expect("valid");
        crate::forwarder::SvcFrame::from_av1(&d, t, false).switch_up_to
    };
    assert_eq!(
        (switch(1, &mut t), switch(2, &mut t), switch(3, &mut t)),
        (2, 2, 0)
    );
}
