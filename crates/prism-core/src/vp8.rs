//! The VP8 payload descriptor (RFC 7741 §4.2): parsed without allocating,
//! and rewritten in place so one subscriber sees one continuous stream while
//! the server switches it between simulcast layers or drops temporal layers.
//!
//! ```text
//!   0 1 2 3 4 5 6 7
//!  +-+-+-+-+-+-+-+-+
//!  |X|R|N|S|R| PID |   S: start of a partition, PID: partition index
//!  +-+-+-+-+-+-+-+-+
//!  |I|L|T|K| RSV   |   (X) which optional fields follow
//!  +-+-+-+-+-+-+-+-+
//!  |M| PictureID   |   (I) 7 bits, or 15 with M set and a second byte
//!  +-+-+-+-+-+-+-+-+
//!  |   PictureID   |   (M)
//!  +-+-+-+-+-+-+-+-+
//!  |   TL0PICIDX   |   (L)
//!  +-+-+-+-+-+-+-+-+
//!  |TID|Y| KEYIDX  |   (T or K)
//!  +-+-+-+-+-+-+-+-+
//! ```
//!
//! Each simulcast layer is its own encoder with its own PictureID,
//! TL0PICIDX and KEYIDX. [`Vp8Munger`] keeps one subscriber's values
//! continuous: after a switch ([`Vp8Munger::restart`]) the new layer's
//! numbers continue from the last ones sent; a picture dropped on purpose
//! ([`Vp8Munger::drop_picture`], a temporal layer above the subscriber's cap)
//! leaves no gap in PictureID, while a picture lost upstream keeps its gap.
//! A 7-bit PictureID is written back as 7 bits (the output wraps at 128), a
//! 15-bit one as 15 bits: the packet keeps its length.

use thiserror::Error;

/// Why a payload has no usable VP8 descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Vp8Error {
    /// The payload is shorter than the descriptor its bits announce.
    #[error("VP8 payload descriptor truncated")]
    Truncated,
    /// A [`Vp8Rewrite`] was applied to a payload it was not made for.
    #[error("VP8 rewrite does not fit the payload")]
    Mismatch,
}

/// A VP8 PictureID with its width on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureId {
    /// 0..128 for a 7-bit id, 0..32768 for a 15-bit id.
    pub value: u16,
    /// Sent as 15 bits (M set).
    pub long: bool,
}

impl PictureId {
    /// Values wrap at this modulus.
    pub fn modulus(self) -> u16 {
        if self.long {
            1 << 15
        } else {
            1 << 7
        }
    }
}

/// The fields of a VP8 payload descriptor, and where they lie in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// N: no other frame references this one.
    pub non_reference: bool,
    /// S: the packet starts a partition.
    pub start_of_partition: bool,
    /// PID: which partition.
    pub partition_id: u8,
    pub picture_id: Option<PictureId>,
    pub tl0_pic_idx: Option<u8>,
    /// TID: the temporal layer (present when T is set).
    pub tid: Option<u8>,
    /// Y: the frame depends only on temporal layer 0 (a switching point up).
    pub layer_sync: bool,
    /// KEYIDX (present when K is set), 5 bits.
    pub key_idx: Option<u8>,
    /// Descriptor length in bytes; the VP8 payload starts here.
    pub len: usize,
    /// Offsets of the PictureID, TL0PICIDX and TID/Y/KEYIDX bytes (0 = absent:
    /// byte 0 is always the first header byte).
    pid_at: u8,
    tl0_at: u8,
    tk_at: u8,
}

impl Vp8Descriptor {
    /// Parses the descriptor at the start of an RTP payload.
    pub fn parse(p: &[u8]) -> Result<Self, Vp8Error> {
        let b0 = *p.first().ok_or(Vp8Error::Truncated)?;
        let mut d = Vp8Descriptor {
            non_reference: b0 & 0x20 != 0,
            start_of_partition: b0 & 0x10 != 0,
            partition_id: b0 & 0x07,
            ..Default::default()
        };
        let mut i = 1usize;
        if b0 & 0x80 != 0 {
            let x = *p.get(i).ok_or(Vp8Error::Truncated)?;
            i += 1;
            if x & 0x80 != 0 {
                let m = *p.get(i).ok_or(Vp8Error::Truncated)?;
                d.pid_at = i as u8;
                if m & 0x80 != 0 {
                    let lo = *p.get(i + 1).ok_or(Vp8Error::Truncated)?;
                    d.picture_id = Some(PictureId {
                        value: (u16::from(m & 0x7F) << 8) | u16::from(lo),
                        long: true,
                    });
                    i += 2;
                } else {
                    d.picture_id = Some(PictureId {
                        value: u16::from(m),
                        long: false,
                    });
                    i += 1;
                }
            }
            if x & 0x40 != 0 {
                d.tl0_pic_idx = Some(*p.get(i).ok_or(Vp8Error::Truncated)?);
                d.tl0_at = i as u8;
                i += 1;
            }
            if x & 0x30 != 0 {
                let tk = *p.get(i).ok_or(Vp8Error::Truncated)?;
                d.tk_at = i as u8;
                if x & 0x20 != 0 {
                    d.tid = Some(tk >> 6);
                    d.layer_sync = tk & 0x20 != 0;
                }
                if x & 0x10 != 0 {
                    d.key_idx = Some(tk & 0x1F);
                }
                i += 1;
            }
        }
        d.len = i;
        Ok(d)
    }

    /// The packet starts a frame (the first packet of partition 0).
    pub fn frame_start(&self) -> bool {
        self.start_of_partition && self.partition_id == 0
    }

    /// The temporal layer, 0 when the descriptor does not say.
    pub fn temporal(&self) -> u8 {
        self.tid.unwrap_or(0)
    }
}

/// New values for one packet's descriptor, to write with
/// [`Vp8Rewrite::apply`]. Fields absent from the packet stay absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Rewrite {
    pub picture_id: Option<PictureId>,
    pub tl0_pic_idx: Option<u8>,
    pub key_idx: Option<u8>,
    pid_at: u8,
    tl0_at: u8,
    tk_at: u8,
    len: u8,
}

impl Vp8Rewrite {
    /// Whether [`Vp8Rewrite::apply`] would change `payload`: false for a
    /// leg whose numbering never moved (its first source, no temporal
    /// drops), which can then send the publisher's payload as it is,
    /// without a copy.
    pub fn changes(&self, payload: &[u8]) -> bool {
        let len = usize::from(self.len);
        let mut head = [0u8; 8];
        if len > head.len() || payload.len() < len {
            return true;
        }
        head[..len].copy_from_slice(&payload[..len]);
        self.apply(&mut head[..len]).is_err() || head[..len] != payload[..len]
    }

    /// Writes the new values into the payload the descriptor was parsed
    /// from (or a copy of it), in place: the length does not change.
    pub fn apply(&self, payload: &mut [u8]) -> Result<(), Vp8Error> {
        if payload.len() < usize::from(self.len) {
            return Err(Vp8Error::Mismatch);
        }
        if let Some(pid) = self.picture_id {
            let at = usize::from(self.pid_at);
            // The M bit of the packet must match the width we write.
            if at == 0 || (payload[at] & 0x80 != 0) != pid.long {
                return Err(Vp8Error::Mismatch);
            }
            if pid.long {
                payload[at] = 0x80 | ((pid.value >> 8) as u8 & 0x7F);
                payload[at + 1] = pid.value as u8;
            } else {
                payload[at] = pid.value as u8 & 0x7F;
            }
        }
        if let Some(v) = self.tl0_pic_idx {
            match usize::from(self.tl0_at) {
                0 => return Err(Vp8Error::Mismatch),
                at => payload[at] = v,
            }
        }
        if let Some(k) = self.key_idx {
            match usize::from(self.tk_at) {
                0 => return Err(Vp8Error::Mismatch),
                // TID and Y stay as they are.
                at => payload[at] = (payload[at] & 0xE0) | (k & 0x1F),
            }
        }
        Ok(())
    }
}

/// How many dropped pictures are remembered to number late packets.
const DROP_HISTORY: usize = 32;
const PID_MOD: u16 = 1 << 15;

/// `a` is newer than `b` modulo `m` (a power of two).
#[inline]
fn newer(a: u16, b: u16, m: u16) -> bool {
    let d = a.wrapping_sub(b) & (m - 1);
    d != 0 && d < m / 2
}

/// One subscriber's VP8 descriptor continuity (see the module doc). Fixed
/// size, no allocation.
#[derive(Debug, Clone)]
pub struct Vp8Munger {
    /// The current source has sent a picture id.
    started: bool,
    /// Output picture id = input - offset, modulo 2^15 (written modulo the
    /// packet's own width: 2^7 divides 2^15, so a 7-bit stream stays
    /// continuous too).
    pid_offset: u16,
    highest_in: u16,
    /// The picture id of the newest picture sent (or dropped: its number is
    /// then taken out, see `drop_picture`).
    last_out: Option<u16>,
    tl0_offset: u8,
    tl0_last: Option<u8>,
    tl0_started: bool,
    key_offset: u8,
    key_last: Option<u8>,
    key_started: bool,
    /// Input picture ids dropped on purpose since the last restart (a ring).
    drops: [u16; DROP_HISTORY],
    drops_len: usize,
    drops_head: usize,
}

impl Default for Vp8Munger {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8Munger {
    pub fn new() -> Self {
        Vp8Munger {
            started: false,
            pid_offset: 0,
            highest_in: 0,
            last_out: None,
            tl0_offset: 0,
            tl0_last: None,
            tl0_started: false,
            key_offset: 0,
            key_last: None,
            key_started: false,
            drops: [0; DROP_HISTORY],
            drops_len: 0,
            drops_head: 0,
        }
    }

    /// The source changed (a layer switch, a new encoder): its next picture
    /// continues from the last values sent.
    pub fn restart(&mut self) {
        self.started = false;
        self.tl0_started = false;
        self.key_started = false;
        self.drops_len = 0;
        self.drops_head = 0;
    }

    /// The new values for a packet that will be forwarded.
    pub fn forward(&mut self, d: &Vp8Descriptor) -> Vp8Rewrite {
        let picture_id = d.picture_id.map(|pid| PictureId {
            value: self.picture(pid) & (pid.modulus() - 1),
            long: pid.long,
        });
        let tl0_pic_idx = d.tl0_pic_idx.map(|v| self.tl0(v));
        let key_idx = d.key_idx.map(|v| self.key(v));
        Vp8Rewrite {
            picture_id,
            tl0_pic_idx,
            key_idx,
            pid_at: d.pid_at,
            tl0_at: d.tl0_at,
            tk_at: d.tk_at,
            len: d.len as u8,
        }
    }

    /// A packet of the current source is dropped on purpose (its temporal
    /// layer is above the cap): its picture's number is taken out, so the
    /// subscriber sees no gap. Every packet of the picture may be passed.
    pub fn drop_picture(&mut self, d: &Vp8Descriptor) {
        let Some(pid) = d.picture_id else { return };
        if !self.started {
            // Nothing sent from this source yet: its first picture will
            // continue the numbering whatever its id.
            return;
        }
        let m = pid.modulus();
        if newer(pid.value, self.highest_in, m) {
            // Pictures between highest_in and this one that never came stay
            // gaps (upstream loss); only this picture's number is removed.
            self.highest_in = pid.value;
            self.pid_offset = self.pid_offset.wrapping_add(1) % PID_MOD;
            self.remember_drop(pid.value);
        }
    }

    fn picture(&mut self, pid: PictureId) -> u16 {
        let m = pid.modulus();
        if !self.started {
            self.started = true;
            let want = self.last_out.map_or(pid.value, |l| l.wrapping_add(1));
            self.pid_offset = pid.value.wrapping_sub(want) % PID_MOD;
            self.highest_in = pid.value;
            self.last_out = Some(want % PID_MOD);
            return want % PID_MOD;
        }
        if newer(pid.value, self.highest_in, m) || pid.value == self.highest_in {
            self.highest_in = pid.value;
            let out = pid.value.wrapping_sub(self.pid_offset) % PID_MOD;
            self.last_out = Some(out);
            return out;
        }
        // A late packet: only the pictures dropped after it shifted it.
        let later = self.drops_after(pid.value, m);
        pid.value.wrapping_sub(self.pid_offset.wrapping_sub(later)) % PID_MOD
    }

    fn tl0(&mut self, v: u8) -> u8 {
        if !self.tl0_started {
            self.tl0_started = true;
            let want = self.tl0_last.map_or(v, |l| l.wrapping_add(1));
            self.tl0_offset = v.wrapping_sub(want);
        }
        let out = v.wrapping_sub(self.tl0_offset);
        match self.tl0_last {
            Some(l) if !newer(u16::from(out), u16::from(l), 256) => {}
            _ => self.tl0_last = Some(out),
        }
        out
    }

    fn key(&mut self, v: u8) -> u8 {
        if !self.key_started {
            self.key_started = true;
            let want = self.key_last.map_or(v, |l| l.wrapping_add(1) & 0x1F);
            self.key_offset = v.wrapping_sub(want) & 0x1F;
        }
        let out = v.wrapping_sub(self.key_offset) & 0x1F;
        match self.key_last {
            Some(l) if !newer(u16::from(out), u16::from(l), 32) => {}
            _ => self.key_last = Some(out),
        }
        out
    }

    fn remember_drop(&mut self, pid: u16) {
        let idx = (self.drops_head + self.drops_len) % DROP_HISTORY;
        self.drops[idx] = pid;
        if self.drops_len < DROP_HISTORY {
            self.drops_len += 1;
        } else {
            self.drops_head = (self.drops_head + 1) % DROP_HISTORY;
        }
    }

    fn drops_after(&self, pid: u16, m: u16) -> u16 {
        (0..self.drops_len)
            .filter(|i| newer(self.drops[(self.drops_head + i) % DROP_HISTORY], pid, m))
            .count() as u16
    }
}

#[cfg(test)]
mod tests;
