//! The synthetic payload: a fixed header and a filler derived from it.
//!
//! Layout (big endian): an optional codec prefix of up to [`MAX_PREFIX`]
//! bytes (for video, the codec's payload descriptor saying key or delta
//! frame, see [`video_prefix`]; a simulcast layer's VP8 keyframe also carries
//! a real VP8 keyframe header with the layer's picture size, see
//! [`vp8_key_prefix`]), then
//!
//! | bytes | field |
//! |---|---|
//! | 4 | `b"PRSM"` |
//! | 4 | sender id (u32) |
//! | 1 | kind (0 audio, 1 video) |
//! | 4 | sequence (u32), counted per sender, track and simulcast layer |
//! | 8 | send time, µs since the UNIX epoch (u64) |
//! | 1 | simulcast layer index (0 = lowest), 255 = not simulcast |
//! | 2 | the layer's picture width, 0 = not simulcast |
//! | 2 | the layer's picture height, 0 = not simulcast |
//!
//! then filler bytes `filler[i] = (seq * 31 + i * 7 + sender) mod 251` where
//! `i` counts from the start of the payload. Every packet of a simulcast
//! layer carries its layer and size, so a receiver can tell which layer the
//! server forwarded without parsing the codec.

use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 4] = b"PRSM";
const HEADER: usize = 4 + 4 + 1 + 4 + 8 + 1 + 2 + 2;
/// The longest codec prefix before the probe: a VP8 payload descriptor and
/// keyframe header ([`vp8_key_prefix`]).
pub const MAX_PREFIX: usize = 11;
const NO_LAYER: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probe {
    pub sender: u32,
    pub video: bool,
    pub seq: u32,
    pub sent_at_us: u64,
    /// The simulcast layer (0 = lowest) and its picture size (width,
    /// height); None for audio and single-stream video.
    pub layer: Option<LayerTag>,
}

/// Which simulcast layer a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerTag {
    pub index: u8,
    pub width: u16,
    pub height: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    TooShort,
    BadMagic,
    Corrupt { at: usize },
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn filler(p: &Probe, i: usize) -> u8 {
    ((p.seq as u64 * 31 + i as u64 * 7 + p.sender as u64) % 251) as u8
}

/// The filler from byte `start` on, one add and compare per byte (a
/// division per byte made checking a 1200-byte payload cost the load
/// generator more than the server spent forwarding it).
fn fillers(p: &Probe, start: usize) -> impl Iterator<Item = u8> {
    let mut v = filler(p, start);
    std::iter::from_fn(move || {
        let b = v;
        v = if v >= 244 { v - 244 } else { v + 7 };
        Some(b)
    })
}

impl Probe {
    /// Encodes into exactly `size` bytes (at least prefix + header).
    pub fn encode(&self, prefix: &[u8], size: usize) -> Vec<u8> {
        let size = size.max(HEADER + prefix.len());
        let mut b = Vec::with_capacity(size);
        b.extend_from_slice(prefix);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.sender.to_be_bytes());
        b.push(u8::from(self.video));
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.sent_at_us.to_be_bytes());
        let l = self.layer.unwrap_or(LayerTag {
            index: NO_LAYER,
            width: 0,
            height: 0,
        });
        b.push(l.index);
        b.extend_from_slice(&l.width.to_be_bytes());
        b.extend_from_slice(&l.height.to_be_bytes());
        let start = b.len();
        b.extend(fillers(self, start).take(size - start));
        b
    }

    /// Decodes (finding the header after a prefix of up to [`MAX_PREFIX`]
    /// bytes) and verifies every filler byte.
    pub fn decode(b: &[u8]) -> Result<Probe, ProbeError> {
        let prefix = find_magic(b).ok_or(if b.len() < HEADER {
            ProbeError::TooShort
        } else {
            ProbeError::BadMagic
        })?;
        if b.len() < HEADER + prefix {
            return Err(ProbeError::TooShort);
        }
        let h = &b[prefix..];
        let p = Probe {
            sender: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            video: h[8] == 1,
            seq: u32::from_be_bytes([h[9], h[10], h[11], h[12]]),
            sent_at_us: u64::from_be_bytes([
                h[13], h[14], h[15], h[16], h[17], h[18], h[19], h[20],
            ]),
            layer: (h[21] != NO_LAYER).then(|| LayerTag {
                index: h[21],
                width: u16::from_be_bytes([h[22], h[23]]),
                height: u16::from_be_bytes([h[24], h[25]]),
            }),
        };
        let start = HEADER + prefix;
        if let Some(off) = b[start..]
            .iter()
            .zip(fillers(&p, start))
            .position(|(a, f)| *a != f)
        {
            return Err(ProbeError::Corrupt { at: start + off });
        }
        Ok(p)
    }
}

/// Where the probe starts: after a codec prefix of at most [`MAX_PREFIX`]
/// bytes. (A VP8 keyframe header cannot hold `PRSM`: its size bytes' high
/// bits are at most 0x3F, below `R` and `M`.)
fn find_magic(b: &[u8]) -> Option<usize> {
    (0..=MAX_PREFIX).find(|&o| b.get(o..o + 4) == Some(&MAGIC[..]))
}

/// Whether a payload made by [`Probe::encode`] with a [`video_prefix`] (or a
/// [`vp8_key_prefix`]) is a keyframe (its prefix is one codec's keyframe
/// descriptor).
pub fn is_key_payload(b: &[u8]) -> bool {
    let Some(offset) = find_magic(b) else {
        return false;
    };
    let prefix = &b[..offset];
    !prefix.is_empty()
        && (vp8_key_size(prefix).is_some()
            || ["video/VP8", "video/VP9", "video/H264", "video/AV1"]
                .iter()
                .any(|m| video_prefix(m, true) == prefix))
}

/// A VP8 keyframe's first packet as an encoder writes it: the payload
/// descriptor (S=1, partition 0), then the VP8 frame header (RFC 6386
/// §9.1): a 3-byte frame tag (key frame, version 0, shown, first partition
/// size 0), the start code `9d 01 2a`, and the 14-bit width and height
/// (little endian, no scaling). A server can learn a layer's resolution
/// from it as from a real encoder's.
pub fn vp8_key_prefix(width: u16, height: u16) -> [u8; MAX_PREFIX] {
    let (w, h) = (
        (width & 0x3FFF).to_le_bytes(),
        (height & 0x3FFF).to_le_bytes(),
    );
    [
        0x10, 0x10, 0x00, 0x00, 0x9D, 0x01, 0x2A, w[0], w[1], h[0], h[1],
    ]
}

/// The picture size in a VP8 keyframe's first packet (payload descriptor
/// without extensions, then the frame header), or None if it is not one.
pub fn vp8_key_size(p: &[u8]) -> Option<(u16, u16)> {
    let (&desc, rest) = p.split_first()?;
    // S set, partition 0, no extension byte: the descriptor our sender writes.
    if desc != 0x10 || rest.len() < 10 || rest[0] & 0x01 != 0 || rest[3..6] != [0x9D, 0x01, 0x2A] {
        return None;
    }
    let dim = |lo: u8, hi: u8| u16::from_le_bytes([lo, hi]) & 0x3FFF;
    Some((dim(rest[6], rest[7]), dim(rest[8], rest[9])))
}

/// The payload descriptor a real encoder would put first, so the server's
/// keyframe detection sees key and delta frames (one packet per frame).
pub fn video_prefix(mime: &str, key: bool) -> &'static [u8] {
    let sub = mime.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
    match (sub.as_str(), key) {
        // Descriptor S=1 PID=0, then the VP8 header's P bit (0 = key frame).
        ("vp8", true) => &[0x10, 0x00],
        ("vp8", false) => &[0x10, 0x01],
        // B and E (one packet per frame); P set on inter frames.
        ("vp9", true) => &[0x0C],
        ("vp9", false) => &[0x4C],
        // IDR slice vs non-IDR slice NAL header.
        ("h264", true) => &[0x65],
        ("h264", false) => &[0x41],
        // Aggregation header: N marks a new coded video sequence.
        ("av1", true) => &[0x18],
        ("av1", false) => &[0x10],
        _ => &[],
    }
}

/// The descriptor of a frame's second and later packets: VP8's S bit clear
/// (not a partition start); other codecs send one packet per frame, so this
/// is their plain descriptor.
pub fn video_continuation_prefix(mime: &str, key: bool) -> &'static [u8] {
    if mime.eq_ignore_ascii_case("video/VP8") {
        &[0x00, 0x00]
    } else {
        video_prefix(mime, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let key = vp8_key_prefix(1280, 720);
        let layer = Some(LayerTag {
            index: 2,
            width: 1280,
            height: 720,
        });
        for (prefix, layer) in [
            (&[][..], None),
            (&[0x10, 0x00][..], None),
            (&[0x65][..], None),
            (&[0x10, 0x01][..], layer),
            (&key[..], layer),
        ] {
            let p = Probe {
                sender: 3,
                video: true,
                seq: 77,
                sent_at_us: 123456,
                layer,
            };
            let mut b = p.encode(prefix, 300);
            assert_eq!(b.len(), 300);
            assert_eq!(Probe::decode(&b), Ok(p));
            b[200] ^= 1;
            assert_eq!(Probe::decode(&b), Err(ProbeError::Corrupt { at: 200 }));
        }
        assert_eq!(Probe::decode(b"PRS"), Err(ProbeError::TooShort));
    }

    #[test]
    fn vp8_keyframe_header_carries_the_size() {
        for (w, h) in [(320, 180), (640, 360), (1280, 720), (16383, 1)] {
            let probe = Probe {
                video: true,
                ..Default::default()
            };
            let b = probe.encode(&vp8_key_prefix(w, h), 100);
            assert_eq!(vp8_key_size(&b), Some((w, h)));
            assert!(is_key_payload(&b));
        }
        // The frame tag's lowest bit is the VP8 key/inter flag (0 = key).
        let key = vp8_key_prefix(640, 360);
        assert_eq!(key[1] & 0x01, 0);
        assert_eq!(vp8_key_size(&[0x10, 0x01]), None);
        let delta = Probe::default().encode(&[0x10, 0x01], 100);
        assert!(!is_key_payload(&delta));
        assert_eq!(vp8_key_size(&delta), None);
    }

    #[test]
    fn incremental_filler_matches_the_formula() {
        let p = Probe {
            sender: 250,
            video: true,
            seq: 4_000_000_000,
            sent_at_us: 1,
            layer: None,
        };
        for start in [0usize, 21, 23, 400] {
            let fast: Vec<u8> = fillers(&p, start).take(600).collect();
            let slow: Vec<u8> = (start..start + 600).map(|i| filler(&p, i)).collect();
            assert_eq!(fast, slow, "from {start}");
        }
    }
}
