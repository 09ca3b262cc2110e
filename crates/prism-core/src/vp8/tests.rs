//! VP8 descriptor tests: parsing table, then the munger on switch up, switch
//! down, wraparounds, temporal drops and reordering.

use super::*;

/// Builds a descriptor (and two bytes of VP8 payload) with the given fields.
fn build(
    pid: Option<(u16, bool)>,
    tl0: Option<u8>,
    tid: Option<(u8, bool)>,
    key: Option<u8>,
) -> Vec<u8> {
    let mut x = 0u8;
    let mut rest = Vec::new();
    if let Some((v, long)) = pid {
        x |= 0x80;
        if long {
            rest.push(0x80 | (v >> 8) as u8);
            rest.push(v as u8);
        } else {
            rest.push(v as u8 & 0x7F);
        }
    }
    if let Some(t) = tl0 {
        x |= 0x40;
        rest.push(t);
    }
    if tid.is_some() || key.is_some() {
        let mut b = 0u8;
        if let Some((t, y)) = tid {
            x |= 0x20;
            b |= t << 6 | if y { 0x20 } else { 0 };
        }
        if let Some(k) = key {
            x |= 0x10;
            b |= k & 0x1F;
        }
        rest.push(b);
    }
    let mut p = vec![if x != 0 { 0x90 } else { 0x10 }];
    if x != 0 {
        p.push(x);
    }
    p.extend(rest);
    p.extend([0x9d, 0x01]);
    p
}

#[test]
fn parses_every_shape() {
    struct Row {
        name: &'static str,
        bytes: Vec<u8>,
        pid: Option<PictureId>,
        tl0: Option<u8>,
        tid: Option<u8>,
        key: Option<u8>,
        len: usize,
    }
    let long = |value| Some(PictureId { value, long: true });
    let short = |value| Some(PictureId { value, long: false });
    let rows = [
        Row {
            name: "no extension",
            bytes: build(None, None, None, None),
            pid: None,
            tl0: None,
            tid: None,
            key: None,
            len: 1,
        },
        Row {
            name: "7-bit id",
            bytes: build(Some((100, false)), None, None, None),
            pid: short(100),
            tl0: None,
            tid: None,
            key: None,
            len: 3,
        },
        Row {
            name: "15-bit id",
            bytes: build(Some((0x7ABC, true)), None, None, None),
            pid: long(0x7ABC),
            tl0: None,
            tid: None,
            key: None,
            len: 4,
        },
        Row {
            name: "browser simulcast",
            bytes: build(Some((300, true)), Some(9), Some((2, true)), None),
            pid: long(300),
            tl0: Some(9),
            tid: Some(2),
            key: None,
            len: 6,
        },
        Row {
            name: "K only",
            bytes: build(Some((5, false)), None, None, Some(17)),
            pid: short(5),
            tl0: None,
            tid: None,
            key: Some(17),
            len: 4,
        },
        Row {
            name: "everything",
            bytes: build(Some((1, true)), Some(255), Some((1, false)), Some(31)),
            pid: long(1),
            tl0: Some(255),
            tid: Some(1),
            key: Some(31),
            len: 6,
        },
    ];
    for r in rows {
        let d = Vp8Descriptor::parse(&r.bytes).unwrap_or_else(|e| panic!("{}: {e}", r.name));
        assert_eq!(
            (d.picture_id, d.tl0_pic_idx, d.tid, d.key_idx, d.len),
            (r.pid, r.tl0, r.tid, r.key, r.len),
            "{}",
            r.name
        );
        assert!(d.frame_start(), "{}", r.name);
        // Every prefix shorter than the descriptor is refused, never a panic.
        for cut in 0..r.len {
            assert_eq!(
                Vp8Descriptor::parse(&r.bytes[..cut]),
                Err(Vp8Error::Truncated),
                "{} cut at {cut}",
                r.name
            );
        }
    }
    let d = Vp8Descriptor::parse(&build(None, None, Some((3, true)), None)).unwrap();
    assert!(d.layer_sync);
    assert_eq!(d.temporal(), 3);
}

/// One packet through the munger: its descriptor is parsed, rewritten in
/// place and parsed again; returns (picture id, tl0, keyidx) as sent.
fn send(m: &mut Vp8Munger, pid: (u16, bool), tl0: u8, key: Option<u8>) -> (u16, u8, Option<u8>) {
    let mut p = build(Some(pid), Some(tl0), Some((0, false)), key);
    let before = p.len();
    let d = Vp8Descriptor::parse(&p).unwrap();
    m.forward(&d).apply(&mut p).unwrap();
    assert_eq!(p.len(), before);
    let out = Vp8Descriptor::parse(&p).unwrap();
    assert_eq!(out.picture_id.unwrap().long, pid.1, "the width is kept");
    assert_eq!(out.tid, Some(0), "TID is kept");
    (
        out.picture_id.unwrap().value,
        out.tl0_pic_idx.unwrap(),
        out.key_idx,
    )
}

#[test]
fn switches_continue_the_numbers() {
    // (layer's picture id, layer's tl0, restart before it) → expected output.
    struct Row {
        pid: u16,
        tl0: u8,
        restart: bool,
        out: (u16, u8),
    }
    let rows = [
        // Layer 0 passes through.
        Row {
            pid: 1000,
            tl0: 40,
            restart: false,
            out: (1000, 40),
        },
        Row {
            pid: 1001,
            tl0: 41,
            restart: false,
            out: (1001, 41),
        },
        // Switch up to layer 2 whose numbers are elsewhere.
        Row {
            pid: 20_000,
            tl0: 200,
            restart: true,
            out: (1002, 42),
        },
        Row {
            pid: 20_001,
            tl0: 201,
            restart: false,
            out: (1003, 43),
        },
        // Switch down to layer 1: again continuous.
        Row {
            pid: 7,
            tl0: 3,
            restart: true,
            out: (1004, 44),
        },
        Row {
            pid: 8,
            tl0: 4,
            restart: false,
            out: (1005, 45),
        },
    ];
    let mut m = Vp8Munger::new();
    for (i, r) in rows.iter().enumerate() {
        if r.restart {
            m.restart();
        }
        let (pid, tl0, _) = send(&mut m, (r.pid, true), r.tl0, None);
        assert_eq!((pid, tl0), r.out, "row {i}");
    }
}

#[test]
fn wraparounds() {
    // 15-bit picture id and TL0PICIDX wrap in the input, then after a switch
    // in the output.
    let mut m = Vp8Munger::new();
    assert_eq!(
        send(&mut m, (0x7FFF, true), 255, Some(31)),
        (0x7FFF, 255, Some(31))
    );
    assert_eq!(
        send(&mut m, (0, true), 0, Some(0)),
        (0, 0, Some(0)),
        "input wrap passes through"
    );
    m.restart();
    // Switch to a layer near its own wrap, while the output is at 0.
    assert_eq!(send(&mut m, (0x7FFE, true), 254, Some(30)), (1, 1, Some(1)));
    assert_eq!(send(&mut m, (0x7FFF, true), 255, Some(30)), (2, 2, Some(1)));
    assert_eq!(send(&mut m, (0, true), 0, Some(31)), (3, 3, Some(2)));

    // A 7-bit stream: the output wraps at 128, not 32768.
    let mut m = Vp8Munger::new();
    assert_eq!(send(&mut m, (126, false), 7, None).0, 126);
    m.restart();
    assert_eq!(send(&mut m, (50, false), 7, None).0, 127);
    assert_eq!(send(&mut m, (51, false), 7, None).0, 0, "wraps at 7 bits");
    assert_eq!(send(&mut m, (52, false), 7, None).0, 1);
    m.restart();
    assert_eq!(send(&mut m, (127, false), 7, None).0, 2);
    assert_eq!(
        send(&mut m, (0, false), 8, None).0,
        3,
        "input wrap at 7 bits"
    );
}

#[test]
fn dropped_pictures_leave_no_gap_and_lost_ones_do() {
    let mut m = Vp8Munger::new();
    let desc = |pid: u16, tid: u8| {
        Vp8Descriptor::parse(&build(Some((pid, true)), Some(1), Some((tid, false)), None)).unwrap()
    };
    let fwd = |m: &mut Vp8Munger, pid| m.forward(&desc(pid, 0)).picture_id.unwrap().value;
    assert_eq!(fwd(&mut m, 10), 10);
    // Picture 11 is TID 2 above the cap: dropped, both its packets.
    m.drop_picture(&desc(11, 2));
    m.drop_picture(&desc(11, 2));
    assert_eq!(fwd(&mut m, 12), 11, "no gap for the dropped picture");
    // Picture 13 is lost upstream: its gap stays, so the decoder knows.
    assert_eq!(fwd(&mut m, 14), 13);
    m.drop_picture(&desc(15, 1));
    assert_eq!(fwd(&mut m, 16), 14);
    // Picture 13 arrives late (retransmitted): numbered as in order, before
    // the later drop.
    assert_eq!(fwd(&mut m, 13), 12);
    // A late packet of picture 12, and of 10 (before both drops).
    assert_eq!(fwd(&mut m, 12), 11);
    assert_eq!(fwd(&mut m, 10), 10);
    assert_eq!(fwd(&mut m, 17), 15, "in order again");
    // A drop across the 15-bit wrap.
    let mut m = Vp8Munger::new();
    assert_eq!(fwd(&mut m, 0x7FFF), 0x7FFF);
    m.drop_picture(&desc(0, 2));
    assert_eq!(fwd(&mut m, 1), 0);
}

#[test]
fn reordered_packets_around_a_switch() {
    let mut m = Vp8Munger::new();
    assert_eq!(send(&mut m, (500, true), 10, None), (500, 10, None));
    assert_eq!(send(&mut m, (502, true), 12, None), (502, 12, None));
    assert_eq!(
        send(&mut m, (501, true), 11, None),
        (501, 11, None),
        "late packet"
    );
    m.restart();
    // The new layer continues from the newest sent, not the late one.
    assert_eq!(send(&mut m, (9, true), 100, None), (503, 13, None));
    assert_eq!(send(&mut m, (11, true), 102, None), (505, 15, None));
    assert_eq!(send(&mut m, (10, true), 101, None), (504, 14, None));
    // A first-ever drop before anything was sent is a no-op.
    let mut fresh = Vp8Munger::new();
    fresh.drop_picture(
        &Vp8Descriptor::parse(&build(Some((3, true)), None, Some((2, false)), None)).unwrap(),
    );
    assert_eq!(send(&mut fresh, (4, true), 0, None).0, 4);
}

#[test]
fn a_rewrite_refuses_a_payload_it_was_not_made_for() {
    let long = build(Some((300, true)), Some(1), None, None);
    let short = build(Some((30, false)), Some(1), None, None);
    let mut m = Vp8Munger::new();
    let w = m.forward(&Vp8Descriptor::parse(&long).unwrap());
    let mut s = short.clone();
    assert_eq!(w.apply(&mut s), Err(Vp8Error::Mismatch), "width differs");
    assert_eq!(
        w.apply(&mut [0x90, 0x80]),
        Err(Vp8Error::Mismatch),
        "too short"
    );
}

#[test]
fn a_rewrite_that_changes_nothing_says_so() {
    // A leg's first source: its numbers go out as they came, no copy needed.
    let mut m = Vp8Munger::new();
    let p = build(Some((1000, true)), Some(7), Some((0, false)), Some(3));
    let d = Vp8Descriptor::parse(&p).unwrap();
    assert!(!m.forward(&d).changes(&p));
    // After a switch to a source numbered elsewhere: every packet changes.
    m.restart();
    let q = build(Some((20_000, true)), Some(200), Some((0, false)), Some(9));
    let d = Vp8Descriptor::parse(&q).unwrap();
    let rw = m.forward(&d);
    assert!(rw.changes(&q));
    let mut copy = q.clone();
    rw.apply(&mut copy).unwrap();
    assert_eq!(
        Vp8Descriptor::parse(&copy)
            .unwrap()
            .picture_id
            .unwrap()
            .value,
        1001
    );
    // A payload the rewrite was not made for counts as a change (apply
    // then refuses it).
    assert!(rw.changes(&[0x10, 0x9d]));
}
