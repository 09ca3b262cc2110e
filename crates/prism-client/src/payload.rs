//! The synthetic payload: a fixed header and a filler derived from it.
//!
//! Layout (big endian): an optional codec prefix of up to 3 bytes (for video,
//! the codec's payload descriptor saying key or delta frame, see
//! [`video_prefix`]), then `b"PRSM"`, sender id (u32), kind (u8: 0 audio,
//! 1 video), sequence (u32), send time in µs since the UNIX epoch (u64), then
//! filler bytes `filler[i] = (seq * 31 + i * 7 + sender) mod 251` where `i`
//! counts from the start of the payload.

use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 4] = b"PRSM";
const HEADER: usize = 4 + 4 + 1 + 4 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub sender: u32,
    pub video: bool,
    pub seq: u32,
    pub sent_at_us: u64,
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
        let start = b.len();
        b.extend(fillers(self, start).take(size - start));
        b
    }

    /// Decodes (finding the header after a prefix of up to 3 bytes) and
    /// verifies every filler byte.
    pub fn decode(b: &[u8]) -> Result<Probe, ProbeError> {
        let prefix = (0..=3)
            .find(|&o| b.get(o..o + 4) == Some(&MAGIC[..]))
            .ok_or(if b.len() < HEADER {
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

/// Whether a payload made by [`Probe::encode`] with a [`video_prefix`] is a
/// keyframe (its prefix is one codec's keyframe descriptor).
pub fn is_key_payload(b: &[u8]) -> bool {
    let Some(offset) = (0..=3).find(|&o| b.get(o..o + 4) == Some(&MAGIC[..])) else {
        return false;
    };
    let prefix = &b[..offset];
    !prefix.is_empty()
        && ["video/VP8", "video/VP9", "video/H264", "video/AV1"]
            .iter()
            .any(|m| video_prefix(m, true) == prefix)
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
        for prefix in [&[][..], &[0x10, 0x00][..], &[0x65][..]] {
            let p = Probe {
                sender: 3,
                video: true,
                seq: 77,
                sent_at_us: 123456,
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
    fn incremental_filler_matches_the_formula() {
        let p = Probe {
            sender: 250,
            video: true,
            seq: 4_000_000_000,
            sent_at_us: 1,
        };
        for start in [0usize, 21, 23, 400] {
            let fast: Vec<u8> = fillers(&p, start).take(600).collect();
            let slow: Vec<u8> = (start..start + 600).map(|i| filler(&p, i)).collect();
            assert_eq!(fast, slow, "from {start}");
        }
    }
}
