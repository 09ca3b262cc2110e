//! VP9 descriptor tests: a table of shapes as Chromium and the RFC's
//! examples send them, then truncated and garbage input.

use super::*;

/// A layer frame's packet as a k-SVC publisher sends it (non-flexible
/// mode, 15-bit picture id, layer indices, TL0PICIDX), with two bytes of
/// frame data. `ss`: the SS with these sizes and no picture group. (One
/// argument per descriptor field, in wire order: rows read like packets.)
#[allow(clippy::too_many_arguments)]
pub(crate) fn svc_packet(
    pid: u16,
    sid: u8,
    tid: u8,
    switching_up: bool,
    begin: bool,
    end: bool,
    inter_picture: bool,
    ss: Option<&[(u16, u16)]>,
) -> Vec<u8> {
    let mut b0 = 0xA0; // I, L
    if inter_picture {
        b0 |= 0x40;
    }
    if begin {
        b0 |= 0x08;
    }
    if end {
        b0 |= 0x04;
    }
    if ss.is_some() {
        b0 |= 0x02;
    }
    let l = tid << 5 | u8::from(switching_up) << 4 | sid << 1 | u8::from(sid > 0 && !inter_picture);
    let mut p = vec![b0, 0x80 | (pid >> 8) as u8, pid as u8, l, 7];
    if let Some(sizes) = ss {
        p.push(((sizes.len() as u8 - 1) << 5) | 0x10);
        for (w, h) in sizes {
            p.extend(w.to_be_bytes());
            p.extend(h.to_be_bytes());
        }
    }
    p.extend([0x82, 0x49]);
    p
}

#[test]
fn parses_every_shape() {
    struct Row {
        name: &'static str,
        bytes: Vec<u8>,
        want: Vp9Descriptor,
    }
    let long = |value| Some(PictureId { value, long: true });
    let layers = |tid, switching_up, sid, inter_layer| {
        Some(Vp9Layers {
            tid,
            switching_up,
            sid,
            inter_layer,
        })
    };
    let rows = [
        Row {
            name: "bare: B and E only",
            bytes: vec![0x0C, 0x82],
            want: Vp9Descriptor {
                begin: true,
                end: true,
                len: 1,
                ..Default::default()
            },
        },
        Row {
            name: "7-bit picture id, P set",
            bytes: vec![0xC8, 0x05, 0x00],
            want: Vp9Descriptor {
                picture_id: Some(PictureId {
                    value: 5,
                    long: false,
                }),
                inter_picture: true,
                begin: true,
                len: 2,
                ..Default::default()
            },
        },
        Row {
            name: "k-SVC keyframe base layer with SS sizes",
            bytes: svc_packet(
                0x1234,
                0,
                0,
                false,
                true,
                false,
                false,
                Some(&[(320, 180), (640, 360), (1280, 720)]),
            ),
            want: Vp9Descriptor {
                picture_id: long(0x1234),
                begin: true,
                layers: layers(0, false, 0, false),
                tl0_pic_idx: Some(7),
                ss: Some(Vp9Ss {
                    spatial_layers: 3,
                    sizes: Some([
                        (320, 180),
                        (640, 360),
                        (1280, 720),
                        (0, 0),
                        (0, 0),
                        (0, 0),
                        (0, 0),
                        (0, 0),
                    ]),
                    group_len: 0,
                }),
                len: 5 + 1 + 12,
                ..Default::default()
            },
        },
        Row {
            name: "upper layer of a keyframe: D set, P clear",
            bytes: svc_packet(0x7FFF, 2, 0, false, false, true, false, None),
            want: Vp9Descriptor {
                picture_id: long(0x7FFF),
                end: true,
                layers: layers(0, false, 2, true),
                tl0_pic_idx: Some(7),
                len: 5,
                ..Default::default()
            },
        },
        Row {
            name: "delta of TID 2 with U",
            bytes: svc_packet(3, 1, 2, true, true, true, true, None),
            want: Vp9Descriptor {
                picture_id: long(3),
                inter_picture: true,
                begin: true,
                end: true,
                layers: layers(2, true, 1, false),
                tl0_pic_idx: Some(7),
                len: 5,
                ..Default::default()
            },
        },
        Row {
            name: "flexible mode: two P_DIFFs, no TL0PICIDX",
            // I P L F B, pid 9, TID 1 SID 0, P_DIFF 1 (N), P_DIFF 3.
            bytes: vec![0xF8, 0x09, 0x20, 0x03, 0x06, 0xAA],
            want: Vp9Descriptor {
                picture_id: Some(PictureId {
                    value: 9,
                    long: false,
                }),
                inter_picture: true,
                flexible: true,
                begin: true,
                layers: layers(1, false, 0, false),
                p_diff: [1, 3, 0],
                p_diff_len: 2,
                len: 5,
                ..Default::default()
            },
        },
        Row {
            name: "SS with a picture group and no sizes",
            // V only; N_S = 1 (two layers), G; N_G = 2: one picture with
            // one P_DIFF, one with none.
            bytes: vec![0x02, 0x28, 0x02, 0x04, 0x01, 0x00, 0xEE],
            want: Vp9Descriptor {
                ss: Some(Vp9Ss {
                    spatial_layers: 2,
                    sizes: None,
                    group_len: 2,
                }),
                len: 6,
                ..Default::default()
            },
        },
        Row {
            name: "Z bit",
            bytes: vec![0x0D],
            want: Vp9Descriptor {
                begin: true,
                end: true,
                not_inter_layer_ref: true,
                len: 1,
                ..Default::default()
            },
        },
    ];
    for r in rows {
        assert_eq!(Vp9Descriptor::parse(&r.bytes), Ok(r.want), "{}", r.name);
    }
}

#[test]
fn helpers_read_the_layer_fields() {
    let kf = Vp9Descriptor::parse(&svc_packet(
        1,
        0,
        0,
        false,
        true,
        false,
        false,
        Some(&[(320, 180), (640, 360)]),
    ))
    .unwrap();
    assert!(kf.keyframe_start());
    assert_eq!(kf.spatial_layers_seen(), 2);
    let upper = Vp9Descriptor::parse(&svc_packet(1, 1, 0, false, true, true, false, None)).unwrap();
    assert!(!upper.keyframe_start(), "a keyframe starts at SID 0");
    assert_eq!((upper.sid(), upper.spatial_layers_seen()), (1, 2));
    let delta = Vp9Descriptor::parse(&svc_packet(2, 0, 2, true, true, true, true, None)).unwrap();
    assert!(!delta.keyframe_start());
    assert_eq!((delta.tid(), delta.switching_up()), (2, true));
    let bare = Vp9Descriptor::parse(&[0x08]).unwrap();
    assert_eq!(
        (bare.sid(), bare.tid(), bare.keyframe_start()),
        (0, 0, true)
    );
}

#[test]
fn truncated_input_is_an_error_at_every_length() {
    let full = svc_packet(
        0x1234,
        0,
        0,
        false,
        true,
        false,
        false,
        Some(&[(320, 180), (640, 360), (1280, 720)]),
    );
    let d = Vp9Descriptor::parse(&full).unwrap();
    for n in 0..d.len {
        assert_eq!(
            Vp9Descriptor::parse(&full[..n]),
            Err(Vp9Error::Truncated),
            "cut at {n}"
        );
    }
    assert!(Vp9Descriptor::parse(&full[..d.len]).is_ok());
    let flex = [0xF8, 0x09, 0x20, 0x03, 0x06];
    for n in 0..flex.len() {
        assert!(Vp9Descriptor::parse(&flex[..n]).is_err(), "flex cut at {n}");
    }
}

#[test]
fn four_references_are_refused() {
    // Flexible, P: P_DIFFs all with N set.
    let p = [0x58, 0x03, 0x03, 0x03, 0x03, 0x00];
    assert_eq!(Vp9Descriptor::parse(&p), Err(Vp9Error::TooManyReferences));
}

#[test]
fn garbage_never_panics_and_stays_in_bounds() {
    // A small deterministic generator (xorshift): every byte pattern of
    // every length up to 40, many times.
    let mut x: u32 = 0x9E37_79B9;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut buf = [0u8; 40];
    for _ in 0..20_000 {
        let n = (next() % 41) as usize;
        for b in buf.iter_mut().take(n) {
            *b = next() as u8;
        }
        if let Ok(d) = Vp9Descriptor::parse(&buf[..n]) {
            assert!(d.len <= n);
            assert!(usize::from(d.p_diff_len) <= 3);
            assert!(d.spatial_layers_seen() >= 1 && d.spatial_layers_seen() <= 8);
        }
    }
}
