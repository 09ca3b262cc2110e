//! The VP9 RTP payload descriptor (RFC 9628, formerly
//! draft-ietf-payload-vp9), parsed without allocating.
//!
//! ```text
//!   0 1 2 3 4 5 6 7
//!  +-+-+-+-+-+-+-+-+
//!  |I|P|L|F|B|E|V|Z|   I: picture id, P: inter-picture predicted, L: layer
//!  +-+-+-+-+-+-+-+-+      indices, F: flexible mode, B/E: start/end of a
//!  |M| PICTURE ID  |      layer frame, V: scalability structure follows,
//!  +-+-+-+-+-+-+-+-+      Z: not a reference for the next spatial layer
//!  |  PICTURE ID   |   (M: 15-bit picture id)
//!  +-+-+-+-+-+-+-+-+
//!  |TID|U| SID |D  |   (L) D: depends on the spatial layer below
//!  +-+-+-+-+-+-+-+-+
//!  |   TL0PICIDX   |   (L, non-flexible mode only)
//!  +-+-+-+-+-+-+-+-+
//!  |  P_DIFF   |N  |   (F and P) up to 3, N: another follows
//!  +-+-+-+-+-+-+-+-+
//!  |  SS ...       |   (V) scalability structure
//!  +-+-+-+-+-+-+-+-+
//! ```
//!
//! The scalability structure (SS) starts with `|N_S|Y|G|-|-|-|`: N_S + 1
//! spatial layers, then (Y) a 16-bit width and height per layer, then (G) a
//! picture group: N_G, and per picture `|TID|U|R|-|-|` with R P_DIFF bytes.
//! The resolutions are what the allocator needs; the picture group is only
//! walked over.
//!
//! In a spatially scalable stream (k-SVC, `L3T3_KEY`), every picture is sent
//! as one layer frame per spatial layer, lowest first, all in one SSRC with
//! the same timestamp and picture id; the marker bit ends the picture.

use thiserror::Error;

pub use crate::vp8::PictureId;

/// The most spatial layers a scalability structure can announce (N_S is
/// three bits).
pub const VP9_MAX_SPATIAL: usize = 8;
/// How many P_DIFF references a layer frame can list.
const MAX_P_DIFF: usize = 3;

/// Why a payload has no usable VP9 descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Vp9Error {
    /// The payload is shorter than the descriptor its bits announce.
    #[error("VP9 payload descriptor truncated")]
    Truncated,
    /// Flexible mode announces a fourth reference (N set on the third
    /// P_DIFF), which the format does not allow.
    #[error("VP9 payload descriptor lists more than 3 references")]
    TooManyReferences,
}

/// The layer indices of a layer frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Layers {
    /// TID: the temporal layer.
    pub tid: u8,
    /// U: a switching-up point: from this frame on, frames of this temporal
    /// layer reference no earlier frame of the same or a higher one.
    pub switching_up: bool,
    /// SID: the spatial layer (0 is the lowest resolution).
    pub sid: u8,
    /// D: the frame references the spatial layer below (inter-layer
    /// prediction).
    pub inter_layer: bool,
}

/// The scalability structure (SS) as far as forwarding needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Ss {
    /// How many spatial layers the stream has (N_S + 1).
    pub spatial_layers: u8,
    /// Per spatial layer, lowest first: (width, height), if Y was set.
    pub sizes: Option<[(u16, u16); VP9_MAX_SPATIAL]>,
    /// Pictures in the picture group (N_G), 0 when G was clear.
    pub group_len: u8,
}

/// The fields of a VP9 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Descriptor {
    pub picture_id: Option<PictureId>,
    /// P: the frame references an earlier picture (clear on keyframes,
    /// and on the upper layer frames of a keyframe picture).
    pub inter_picture: bool,
    /// F: flexible mode (references as P_DIFF; no TL0PICIDX).
    pub flexible: bool,
    /// B: the packet starts a layer frame.
    pub begin: bool,
    /// E: the packet ends a layer frame.
    pub end: bool,
    /// Z: the frame is not a reference for the next spatial layer.
    pub not_inter_layer_ref: bool,
    pub layers: Option<Vp9Layers>,
    /// TL0PICIDX (non-flexible mode with layer indices).
    pub tl0_pic_idx: Option<u8>,
    /// P_DIFF values (flexible mode, inter-picture predicted), `p_diff_len`
    /// of them.
    pub p_diff: [u8; MAX_P_DIFF],
    pub p_diff_len: u8,
    /// The scalability structure, when V was set.
    pub ss: Option<Vp9Ss>,
    /// Descriptor length in bytes; the VP9 frame data starts here.
    pub len: usize,
}

/// A bounds-checked reader over the descriptor bytes.
struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, Vp9Error> {
        let b = *self.p.get(self.at).ok_or(Vp9Error::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Vp9Error> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
}

impl Vp9Descriptor {
    /// Parses the descriptor at the start of an RTP payload.
    pub fn parse(p: &[u8]) -> Result<Self, Vp9Error> {
        let mut r = Reader { p, at: 0 };
        let b0 = r.u8()?;
        let mut d = Vp9Descriptor {
            inter_picture: b0 & 0x40 != 0,
            flexible: b0 & 0x10 != 0,
            begin: b0 & 0x08 != 0,
            end: b0 & 0x04 != 0,
            not_inter_layer_ref: b0 & 0x01 != 0,
            ..Default::default()
        };
        if b0 & 0x80 != 0 {
            let m = r.u8()?;
            d.picture_id = Some(if m & 0x80 != 0 {
                PictureId {
                    value: u16::from(m & 0x7F) << 8 | u16::from(r.u8()?),
                    long: true,
                }
            } else {
                PictureId {
                    value: u16::from(m),
                    long: false,
                }
            });
        }
        if b0 & 0x20 != 0 {
            let l = r.u8()?;
            d.layers = Some(Vp9Layers {
                tid: l >> 5,
                switching_up: l & 0x10 != 0,
                sid: (l >> 1) & 0x07,
                inter_layer: l & 0x01 != 0,
            });
            if !d.flexible {
                d.tl0_pic_idx = Some(r.u8()?);
            }
        }
        if d.flexible && d.inter_picture {
            loop {
                let b = r.u8()?;
                let slot = d
                    .p_diff
                    .get_mut(usize::from(d.p_diff_len))
                    .ok_or(Vp9Error::TooManyReferences)?;
                *slot = b >> 1;
                d.p_diff_len += 1;
                if b & 0x01 == 0 {
                    break;
                }
            }
        }
        if b0 & 0x02 != 0 {
            d.ss = Some(parse_ss(&mut r)?);
        }
        d.len = r.at;
        Ok(d)
    }

    /// The spatial layer, 0 without layer indices.
    pub fn sid(&self) -> u8 {
        self.layers.map_or(0, |l| l.sid)
    }

    /// The temporal layer, 0 without layer indices.
    pub fn tid(&self) -> u8 {
        self.layers.map_or(0, |l| l.tid)
    }

    /// A switching-up point (U), false without layer indices.
    pub fn switching_up(&self) -> bool {
        self.layers.is_some_and(|l| l.switching_up)
    }

    /// The packet starts a keyframe picture: the first packet of the
    /// lowest spatial layer's frame, predicted from no earlier picture.
    pub fn keyframe_start(&self) -> bool {
        self.begin && !self.inter_picture && self.sid() == 0
    }

    /// The spatial layers this packet shows the stream has: the SS's count
    /// when present, else at least one above the packet's own SID.
    pub fn spatial_layers_seen(&self) -> u8 {
        let own = self.sid() + 1;
        self.ss.map_or(own, |ss| ss.spatial_layers.max(own))
    }
}

fn parse_ss(r: &mut Reader<'_>) -> Result<Vp9Ss, Vp9Error> {
    let b = r.u8()?;
    let n_s = (b >> 5) + 1;
    let mut ss = Vp9Ss {
        spatial_layers: n_s,
        ..Default::default()
    };
    if b & 0x10 != 0 {
        let mut sizes = [(0u16, 0u16); VP9_MAX_SPATIAL];
        for s in sizes.iter_mut().take(usize::from(n_s)) {
            *s = (r.u16()?, r.u16()?);
        }
        ss.sizes = Some(sizes);
    }
    if b & 0x08 != 0 {
        ss.group_len = r.u8()?;
        for _ in 0..ss.group_len {
            let g = r.u8()?;
            // R: how many P_DIFF bytes this picture lists.
            for _ in 0..((g >> 2) & 0x03) {
                r.u8()?;
            }
        }
    }
    Ok(ss)
}

#[cfg(test)]
pub(crate) mod tests;
