//! The synthetic payload: a fixed header and a filler derived from it.
//!
//! Layout (big endian): `b"PRSM"`, sender id (u32), kind (u8: 0 audio, 1 video),
//! sequence (u32), send time in µs since the UNIX epoch (u64), then filler
//! bytes `filler[i] = (seq * 31 + i * 7 + sender) mod 251`. Video payloads are
//! preceded by a one-byte VP8 payload descriptor (start of partition).

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

impl Probe {
    /// Encodes into exactly `size` bytes (at least the header).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let prefix = usize::from(self.video);
        let size = size.max(HEADER + prefix);
        let mut b = Vec::with_capacity(size);
        if self.video {
            b.push(0x10); // VP8 descriptor: S=1, partition 0
        }
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.sender.to_be_bytes());
        b.push(u8::from(self.video));
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.sent_at_us.to_be_bytes());
        let start = b.len();
        for i in start..size {
            b.push(filler(self, i));
        }
        b
    }

    /// Decodes and verifies every filler byte.
    pub fn decode(b: &[u8], video: bool) -> Result<Probe, ProbeError> {
        let prefix = usize::from(video);
        if b.len() < HEADER + prefix {
            return Err(ProbeError::TooShort);
        }
        let h = &b[prefix..];
        if &h[0..4] != MAGIC {
            return Err(ProbeError::BadMagic);
        }
        let p = Probe {
            sender: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            video: h[8] == 1,
            seq: u32::from_be_bytes([h[9], h[10], h[11], h[12]]),
            sent_at_us: u64::from_be_bytes([
                h[13], h[14], h[15], h[16], h[17], h[18], h[19], h[20],
            ]),
        };
        for (i, &byte) in b.iter().enumerate().skip(HEADER + prefix) {
            if byte != filler(&p, i) {
                return Err(ProbeError::Corrupt { at: i });
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        for video in [false, true] {
            let p = Probe {
                sender: 3,
                video,
                seq: 77,
                sent_at_us: 123456,
            };
            let mut b = p.encode(300);
            assert_eq!(b.len(), 300);
            assert_eq!(Probe::decode(&b, video), Ok(p));
            b[200] ^= 1;
            assert_eq!(
                Probe::decode(&b, video),
                Err(ProbeError::Corrupt { at: 200 })
            );
        }
        assert_eq!(Probe::decode(b"PRS", false), Err(ProbeError::TooShort));
    }
}
