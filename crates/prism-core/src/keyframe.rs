//! Codec-aware keyframe detection on RTP payloads, without decoding.
//!
//! [`is_keyframe_start`] answers: does this packet begin a frame that a
//! decoder can start from? A new subscriber's video starts at such a packet,
//! and the keyframe cache starts recording at one.

/// Video codecs Prism can inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Anything else (H265, unknown): never gated on keyframes.
    Other,
}

impl VideoCodec {
    /// From an SDP MIME type such as `video/VP8` (case-insensitive).
    pub fn from_mime(mime: &str) -> VideoCodec {
        let sub = mime.rsplit('/').next().unwrap_or("");
        if sub.eq_ignore_ascii_case("vp8") {
            VideoCodec::Vp8
        } else if sub.eq_ignore_ascii_case("vp9") {
            VideoCodec::Vp9
        } else if sub.eq_ignore_ascii_case("h264") {
            VideoCodec::H264
        } else if sub.eq_ignore_ascii_case("av1") {
            VideoCodec::Av1
        } else {
            VideoCodec::Other
        }
    }

    /// Whether keyframes of this codec can be recognised.
    pub fn detects_keyframes(self) -> bool {
        self != VideoCodec::Other
    }
}

/// True if this payload is the first packet of a keyframe.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload),
        VideoCodec::H264 => h264(payload),
        VideoCodec::Av1 => av1(payload),
        VideoCodec::Other => false,
    }
}

/// RFC 7741: payload descriptor, then (at the start of partition 0) the VP8
/// payload header whose lowest bit is 0 for a key frame.
fn vp8(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start || pid != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        // X: extension byte I L T K.
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // I: picture id, 7 or 15 bits (M bit).
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    matches!(p.get(i), Some(h) if h & 0x01 == 0)
}

/// VP9 RTP payload descriptor: B (start of frame) set, P (inter-picture
/// predicted) clear, and spatial layer 0 when layer indices are present.
fn vp9(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let i_bit = b0 & 0x80 != 0;
    let p_bit = b0 & 0x40 != 0;
    let l_bit = b0 & 0x20 != 0;
    let b_bit = b0 & 0x08 != 0;
    if !b_bit || p_bit {
        return false;
    }
    if !l_bit {
        return true;
    }
    let mut i = 1;
    if i_bit {
        let Some(&pic) = p.get(i) else { return false };
        i += if pic & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer index: TID(3) U(1) SID(3) D(1).
    matches!(p.get(i), Some(l) if (l >> 1) & 0x07 == 0)
}

/// RFC 6184: an IDR slice (5) or a sequence parameter set (7) in a single NAL
/// unit, a STAP-A (24), or the first fragment of an FU-A (28).
fn h264(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let is_key = |t: u8| t == 5 || t == 7;
    match b0 & 0x1F {
        t @ 1..=23 => is_key(t),
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                let Some(&nal) = p.get(i + 2) else {
                    return false;
                };
                if size == 0 {
                    return false;
                }
                if is_key(nal & 0x1F) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => matches!(p.get(1), Some(fu) if fu & 0x80 != 0 && is_key(fu & 0x1F)),
        _ => false,
    }
}

/// AV1 RTP aggregation header: N (bit 3) marks the first packet of a coded
/// video sequence, which starts with a keyframe.
fn av1(p: &[u8]) -> bool {
    matches!(p.first(), Some(h) if h & 0x08 != 0 && h & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use VideoCodec::*;

    #[test]
    fn table() {
        let rows: &[(&str, VideoCodec, &[u8], bool)] = &[
            (
                "vp8 key, minimal descriptor",
                Vp8,
                &[0x10, 0x00, 0x9d, 0x01, 0x2a],
                true,
            ),
            ("vp8 delta", Vp8, &[0x10, 0x01], false),
            ("vp8 not start of partition", Vp8, &[0x00, 0x00], false),
            ("vp8 start of partition 1", Vp8, &[0x11, 0x00], false),
            (
                "vp8 key with 15-bit picture id",
                Vp8,
                &[0x90, 0x80, 0x81, 0x23, 0x00],
                true,
            ),
            (
                "vp8 delta with 7-bit picture id",
                Vp8,
                &[0x90, 0x80, 0x05, 0x01],
                false,
            ),
            (
                "vp8 key with I L T",
                Vp8,
                &[0x90, 0xE0, 0x05, 0x07, 0x20, 0x00],
                true,
            ),
            ("vp8 truncated after X", Vp8, &[0x90], false),
            (
                "vp8 truncated before header",
                Vp8,
                &[0x90, 0x80, 0x85],
                false,
            ),
            (
                "vp8 synthetic probe payload",
                Vp8,
                &[0x10, b'P', b'R'],
                true,
            ),
            ("vp9 key: B, not P", Vp9, &[0x08], true),
            ("vp9 inter frame", Vp9, &[0x48], false),
            ("vp9 not start of frame", Vp9, &[0x00], false),
            (
                "vp9 key with picture id and SID 0",
                Vp9,
                &[0xA8, 0x85, 0x01, 0x00],
                true,
            ),
            ("vp9 key on SID 1", Vp9, &[0xA8, 0x05, 0x02], false),
            ("vp9 truncated", Vp9, &[0xA8], false),
            ("h264 IDR", H264, &[0x65, 0x88], true),
            ("h264 SPS", H264, &[0x67, 0x42], true),
            ("h264 non-IDR slice", H264, &[0x41, 0x9a], false),
            (
                "h264 STAP-A SPS PPS IDR",
                H264,
                &[0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce],
                true,
            ),
            (
                "h264 STAP-A without key",
                H264,
                &[0x18, 0x00, 0x02, 0x41, 0x9a, 0x00, 0x01, 0x06],
                false,
            ),
            (
                "h264 STAP-A zero size",
                H264,
                &[0x18, 0x00, 0x00, 0x67],
                false,
            ),
            ("h264 FU-A start IDR", H264, &[0x7c, 0x85, 0x00], true),
            ("h264 FU-A middle IDR", H264, &[0x7c, 0x05, 0x00], false),
            ("h264 FU-A start non-IDR", H264, &[0x7c, 0x81], false),
            ("h264 truncated FU-A", H264, &[0x7c], false),
            ("av1 new sequence", Av1, &[0x18, 0x0a], true),
            ("av1 continuation", Av1, &[0x10, 0x00], false),
            ("av1 Z with N is not a start", Av1, &[0x88], false),
            ("empty", Vp8, &[], false),
            ("empty h264", H264, &[], false),
            ("other codec", Other, &[0x10, 0x00], false),
        ];
        for (name, codec, payload, want) in rows {
            assert_eq!(is_keyframe_start(*codec, payload), *want, "{name}");
        }
    }

    #[test]
    fn mime_types() {
        assert_eq!(VideoCodec::from_mime("video/VP8"), Vp8);
        assert_eq!(VideoCodec::from_mime("video/vp9"), Vp9);
        assert_eq!(VideoCodec::from_mime("video/H264"), H264);
        assert_eq!(VideoCodec::from_mime("video/AV1"), Av1);
        assert_eq!(VideoCodec::from_mime("video/H265"), Other);
        assert_eq!(VideoCodec::from_mime("audio/opus"), Other);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 12345;
        for len in 0..64 {
            for _ in 0..50 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                for c in [Vp8, Vp9, H264, Av1, Other] {
                    let _ = is_keyframe_start(c, &buf);
                }
            }
        }
    }
}
