//! The Dependency Descriptor RTP header extension (AV1 RTP payload
//! specification, appendix A; URI [`DEPENDENCY_DESCRIPTOR_URI`]), parsed
//! without allocating.
//!
//! AV1 carries its layer information outside the payload: every packet's
//! descriptor names its frame's *template*, and the template (in the
//! *template dependency structure* the publisher attaches to the first
//! packet of each keyframe) gives the frame's spatial and temporal id, its
//! decode target indications (DTIs), the frames it references (frame
//! diffs) and its chains. So a packet can only be placed in a layer with
//! the most recent structure at hand: a track keeps it
//! ([`DdStructure`], fixed-size arrays) and [`DependencyDescriptor::parse`]
//! reads each packet against it.
//!
//! ```text
//! mandatory (3 bytes): |S|E| template id (6) | frame number (16) |
//! extended (sz > 3):   |structure?|active DTs?|custom DTIs?|custom fdiffs?|custom chains?|
//!                      [template dependency structure] [active decode targets: DtCnt bits]
//! frame dependency definition: [custom DTIs] [custom fdiffs] [custom chains]
//! ```
//!
//! Bits are read most significant first; the structure codes the template
//! layers as a walk (`next_layer_idc`: same layer, next temporal, next
//! spatial, end), then each template's DTIs (2 bits per decode target),
//! frame diffs (4 bits each, a flag before each), the chains (a
//! non-symmetric count, each decode target's protecting chain, 4 bits per
//! template and chain) and, when flagged, each spatial layer's render
//! resolution.

use thiserror::Error;

/// `https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension`.
pub const DEPENDENCY_DESCRIPTOR_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// Templates a structure can hold (template ids are 6 bits).
pub const DD_MAX_TEMPLATES: usize = 64;
/// Decode targets a structure can declare (`dt_cnt_minus_one` is 5 bits).
pub const DD_MAX_DECODE_TARGETS: usize = 32;
/// Spatial layers a structure can describe (the spec's limit).
pub const DD_MAX_SPATIAL: usize = 4;
/// Frame diffs kept per template or frame: more are a malformed descriptor
/// here (encoders reference a handful of frames).
pub const DD_MAX_FDIFFS: usize = 8;
/// The longest descriptor an RTP header extension element holds (RFC 8285
/// two-byte form).
pub const DD_MAX_LEN: usize = 255;
/// Temporal caps a leg can have ([`crate::layer::TemporalLayer`]: 0–3,
/// 3 meaning every temporal layer).
const CAPS: usize = 4;

/// Why a header extension is no usable dependency descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DdError {
    /// Shorter than its fields announce.
    #[error("dependency descriptor truncated")]
    Truncated,
    /// The packet's template is not in the structure (none received yet,
    /// or the publisher moved on to a structure this packet predates).
    #[error("dependency descriptor names a template the structure lacks")]
    UnknownTemplate,
    /// The structure walks past the limits above (more spatial layers or
    /// templates than the format allows, too many frame diffs).
    #[error("dependency descriptor structure out of bounds")]
    OutOfBounds,
}

/// A decode target indication: what one frame is to one decode target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Dti {
    /// Not part of the decode target.
    #[default]
    NotPresent = 0,
    /// Part of it, referenced by no later frame of it.
    Discardable = 1,
    /// A switch point: from here the decode target needs nothing earlier.
    Switch = 2,
    /// Part of it and needed by later frames.
    Required = 3,
}

impl Dti {
    fn from_bits(b: u64) -> Self {
        match b & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }
}

/// Per-decode-target indications, 2 bits each (up to 32 targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dtis(u64);

impl Dtis {
    /// The indication for decode target `dt`.
    pub fn get(&self, dt: usize) -> Dti {
        match dt < DD_MAX_DECODE_TARGETS {
            true => Dti::from_bits(self.0 >> (2 * dt)),
            false => Dti::NotPresent,
        }
    }

    fn set(&mut self, dt: usize, v: u64) {
        if dt < DD_MAX_DECODE_TARGETS {
            self.0 = (self.0 & !(3 << (2 * dt))) | ((v & 3) << (2 * dt));
        }
    }
}

/// Frame diffs (how many frames back each reference lies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fdiffs {
    pub diffs: [u16; DD_MAX_FDIFFS],
    pub len: u8,
}

impl Fdiffs {
    fn push(&mut self, d: u16) -> Result<(), DdError> {
        let slot = self
            .diffs
            .get_mut(usize::from(self.len))
            .ok_or(DdError::OutOfBounds)?;
        *slot = d;
        self.len += 1;
        Ok(())
    }

    /// The diffs, nearest first as coded.
    pub fn as_slice(&self) -> &[u16] {
        &self.diffs[..usize::from(self.len).min(DD_MAX_FDIFFS)]
    }
}

/// One frame dependency template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DdTemplate {
    pub spatial_id: u8,
    pub temporal_id: u8,
    pub dtis: Dtis,
    pub fdiffs: Fdiffs,
    /// Per chain, the frame diff to the previous frame of that chain.
    pub chain_diffs: [u8; DD_MAX_DECODE_TARGETS],
}

/// The template dependency structure, as the latest keyframe attached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdStructure {
    /// The template id of template 0 (ids wrap at 64).
    pub template_id_offset: u8,
    /// Decode targets (DtCnt), 0 before any structure arrived.
    pub decode_targets: u8,
    pub template_count: u8,
    pub templates: [DdTemplate; DD_MAX_TEMPLATES],
    /// Chains (0: none).
    pub chains: u8,
    /// Per decode target, the chain protecting it.
    pub protected_by: [u8; DD_MAX_DECODE_TARGETS],
    /// Spatial layers (the highest template spatial id + 1).
    pub spatial_layers: u8,
    /// Per spatial layer, (width, height), when the structure had them.
    pub resolutions: Option<[(u32, u32); DD_MAX_SPATIAL]>,
    /// Per decode target, its (spatial, temporal) layer: the highest ids
    /// among the templates it is present in.
    pub target_layers: [(u8, u8); DD_MAX_DECODE_TARGETS],
    /// `[spatial][temporal cap]`: the decode targets a subscriber taking
    /// those layers can decode (worked out once per structure).
    pub masks: [[u32; CAPS]; DD_MAX_SPATIAL],
}

impl Default for DdStructure {
    fn default() -> Self {
        DdStructure {
            template_id_offset: 0,
            decode_targets: 0,
            template_count: 0,
            templates: [DdTemplate::default(); DD_MAX_TEMPLATES],
            chains: 0,
            protected_by: [0; DD_MAX_DECODE_TARGETS],
            spatial_layers: 0,
            resolutions: None,
            target_layers: [(0, 0); DD_MAX_DECODE_TARGETS],
            masks: [[0; CAPS]; DD_MAX_SPATIAL],
        }
    }
}

impl DdStructure {
    /// A structure has arrived (a keyframe's).
    pub fn is_known(&self) -> bool {
        self.template_count > 0
    }

    /// The template a packet's template id names.
    pub fn template(&self, template_id: u8) -> Option<&DdTemplate> {
        let index = (usize::from(template_id) + DD_MAX_TEMPLATES
            - usize::from(self.template_id_offset))
            % DD_MAX_TEMPLATES;
        match index < usize::from(self.template_count) {
            true => self.templates.get(index),
            false => None,
        }
    }

    /// The decode targets a subscriber taking spatial layers up to
    /// `spatial` and temporal layers up to `temporal` can decode, as an
    /// active-decode-targets bitmask.
    pub fn targets_up_to(&self, spatial: u8, temporal: u8) -> u32 {
        let mut mask = 0u32;
        for (i, &(s, t)) in self
            .target_layers
            .iter()
            .enumerate()
            .take(usize::from(self.decode_targets))
        {
            if s <= spatial && t <= temporal {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// Every decode target of the structure, as a bitmask.
    pub fn all_targets(&self) -> u32 {
        match self.decode_targets {
            0 => 0,
            n if usize::from(n) >= 32 => u32::MAX,
            n => (1u32 << n) - 1,
        }
    }
}

/// One packet's dependency descriptor, read against a structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DependencyDescriptor {
    /// The packet starts its frame.
    pub start_of_frame: bool,
    /// The packet ends its frame.
    pub end_of_frame: bool,
    pub template_id: u8,
    pub frame_number: u16,
    /// The packet carries a template dependency structure (the first
    /// packet of a keyframe), which it was read against.
    pub structure_attached: bool,
    /// The active decode targets it announces (all of a structure's when
    /// it attaches one without a bitmask).
    pub active_decode_targets: Option<u32>,
    /// The frame's layers, from its template.
    pub spatial_id: u8,
    pub temporal_id: u8,
    /// The frame's DTIs: its template's, or its own (custom).
    pub dtis: Dtis,
    pub fdiffs: Fdiffs,
    /// The descriptor's length in bits (without the zero padding).
    pub bits: usize,
}

/// A bounds-checked reader of bits, most significant first.
struct Bits<'a> {
    p: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: u32) -> Result<u64, DdError> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = *self.p.get(self.at / 8).ok_or(DdError::Truncated)?;
            let bit = (byte >> (7 - (self.at % 8))) & 1;
            v = (v << 1) | u64::from(bit);
            self.at += 1;
        }
        Ok(v)
    }

    fn flag(&mut self) -> Result<bool, DdError> {
        Ok(self.read(1)? == 1)
    }

    /// A non-symmetric unsigned value below `n` (the spec's `ns(n)`).
    fn ns(&mut self, n: u32) -> Result<u32, DdError> {
        let w = 32 - n.leading_zeros();
        let m = (1u32 << w) - n;
        let v = self.read(w.saturating_sub(1))? as u32;
        if v < m {
            return Ok(v);
        }
        let extra = self.read(1)? as u32;
        Ok((v << 1) - m + extra)
    }
}

impl DependencyDescriptor {
    /// Reads a descriptor against the track's latest structure. A
    /// descriptor that attaches a structure is read against that one,
    /// which is parsed into `attached` (the caller keeps it as the latest
    /// when the whole descriptor parsed: see [`DdTracker`]).
    pub fn parse(
        ext: &[u8],
        latest: &DdStructure,
        attached: &mut DdStructure,
    ) -> Result<Self, DdError> {
        let mut r = Bits { p: ext, at: 0 };
        let mut d = DependencyDescriptor {
            start_of_frame: r.flag()?,
            end_of_frame: r.flag()?,
            template_id: r.read(6)? as u8,
            frame_number: r.read(16)? as u16,
            ..Default::default()
        };
        let (mut custom_dtis, mut custom_fdiffs, mut custom_chains) = (false, false, false);
        let mut active_flag = false;
        if ext.len() > 3 {
            d.structure_attached = r.flag()?;
            active_flag = r.flag()?;
            custom_dtis = r.flag()?;
            custom_fdiffs = r.flag()?;
            custom_chains = r.flag()?;
            if d.structure_attached {
                parse_structure(&mut r, attached)?;
                d.active_decode_targets = Some(attached.all_targets());
            }
        }
        let s = match d.structure_attached {
            true => &*attached,
            false => latest,
        };
        if active_flag {
            d.active_decode_targets = Some(r.read(u32::from(s.decode_targets))? as u32);
        }
        let t = s.template(d.template_id).ok_or(DdError::UnknownTemplate)?;
        d.spatial_id = t.spatial_id;
        d.temporal_id = t.temporal_id;
        d.dtis = t.dtis;
        d.fdiffs = t.fdiffs;
        if custom_dtis {
            for dt in 0..usize::from(s.decode_targets) {
                d.dtis.set(dt, r.read(2)?);
            }
        }
        if custom_fdiffs {
            d.fdiffs = Fdiffs::default();
            loop {
                let size = r.read(2)? as u32;
                if size == 0 {
                    break;
                }
                let diff = r.read(4 * size)? + 1;
                d.fdiffs
                    .push(u16::try_from(diff).map_err(|_| DdError::OutOfBounds)?)?;
            }
        }
        if custom_chains {
            // 8 bits per chain; the frame's chain diffs are not needed to
            // forward it, only walked over.
            r.read(8 * u32::from(s.chains))?;
        }
        d.bits = r.at;
        Ok(d)
    }
}

fn parse_structure(r: &mut Bits<'_>, s: &mut DdStructure) -> Result<(), DdError> {
    *s = DdStructure {
        template_id_offset: r.read(6)? as u8,
        decode_targets: r.read(5)? as u8 + 1,
        ..Default::default()
    };
    let dts = usize::from(s.decode_targets);
    // Template layers: a walk over (spatial, temporal) ids.
    let (mut spatial, mut temporal) = (0u8, 0u8);
    loop {
        let t = s
            .templates
            .get_mut(usize::from(s.template_count))
            .ok_or(DdError::OutOfBounds)?;
        t.spatial_id = spatial;
        t.temporal_id = temporal;
        s.template_count += 1;
        match r.read(2)? {
            0 => {}
            1 => temporal += 1,
            2 => {
                temporal = 0;
                spatial += 1;
                if usize::from(spatial) >= DD_MAX_SPATIAL {
                    return Err(DdError::OutOfBounds);
                }
            }
            _ => break,
        }
    }
    s.spatial_layers = spatial + 1;
    let count = usize::from(s.template_count);
    for t in &mut s.templates[..count] {
        for dt in 0..dts {
            t.dtis.set(dt, r.read(2)?);
        }
    }
    for t in &mut s.templates[..count] {
        while r.flag()? {
            t.fdiffs.push(r.read(4)? as u16 + 1)?;
        }
    }
    s.chains = r.ns(u32::from(s.decode_targets) + 1)? as u8;
    if s.chains > 0 {
        for dt in 0..dts {
            s.protected_by[dt] = r.ns(u32::from(s.chains))? as u8;
        }
        for t in &mut s.templates[..count] {
            for c in 0..usize::from(s.chains) {
                t.chain_diffs[c] = r.read(4)? as u8;
            }
        }
    }
    if r.flag()? {
        let mut res = [(0u32, 0u32); DD_MAX_SPATIAL];
        for x in res.iter_mut().take(usize::from(s.spatial_layers)) {
            *x = (r.read(16)? as u32 + 1, r.read(16)? as u32 + 1);
        }
        s.resolutions = Some(res);
    }
    for dt in 0..dts {
        let mut layer = (0u8, 0u8);
        for t in &s.templates[..count] {
            if t.dtis.get(dt) != Dti::NotPresent {
                layer = (layer.0.max(t.spatial_id), layer.1.max(t.temporal_id));
            }
        }
        s.target_layers[dt] = layer;
    }
    let mut masks = [[0; CAPS]; DD_MAX_SPATIAL];
    for (spatial, row) in masks.iter_mut().enumerate() {
        for (cap, m) in row.iter_mut().enumerate() {
            // The top cap is every temporal layer, however many there are.
            let temporal = match cap + 1 == CAPS {
                true => u8::MAX,
                false => cap as u8,
            };
            *m = s.targets_up_to(spatial as u8, temporal);
        }
    }
    s.masks = masks;
    Ok(())
}

/// A track's dependency-descriptor state: the latest structure, and room to
/// read an attached one without disturbing it. Boxed once per AV1 track.
#[derive(Debug, Clone, Default)]
pub struct DdTracker {
    latest: DdStructure,
    scratch: DdStructure,
    /// The frame number of the keyframe whose structure is `latest`.
    structure_frame: Option<u16>,
    /// The decode targets the publisher last announced active.
    active: u32,
}

/// What a leg of an AV1 SVC track needs to announce its own active decode
/// targets: the structure's targets per layer pair, the publisher's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdTargets {
    masks: [[u32; CAPS]; DD_MAX_SPATIAL],
    /// The publisher's active decode targets.
    pub active: u32,
    /// DtCnt of the structure.
    pub decode_targets: u8,
}

impl DdTargets {
    /// The rewrite for a leg forwarding spatial layers up to `spatial` and
    /// temporal layers up to `temporal` (3: all): the decode targets it
    /// can decode that the publisher has active.
    pub fn for_leg(&self, spatial: u8, temporal: u8) -> DdRewrite {
        let row = self.masks[usize::from(spatial).min(DD_MAX_SPATIAL - 1)];
        DdRewrite {
            active: row[usize::from(temporal).min(CAPS - 1)] & self.active,
            decode_targets: self.decode_targets,
        }
    }
}

/// A leg's active decode targets, to write into each dependency
/// descriptor it forwards (the publisher's says every layer is there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdRewrite {
    pub active: u32,
    /// DtCnt of the structure the mask is for (a descriptor without a
    /// structure does not say).
    pub decode_targets: u8,
}

impl DdRewrite {
    /// `ext` does not already announce exactly these targets.
    pub fn changes(&self, ext: &[u8]) -> bool {
        let mut r = Bits { p: ext, at: 0 };
        let unchanged = ext.len() > 3
            && r.read(24).is_ok()
            && r.read(2).ok() == Some(0b01)
            && r.read(3).is_ok()
            && r.read(u32::from(self.decode_targets)).ok() == Some(u64::from(self.active));
        !unchanged
    }

    /// Writes `ext` into `out` with its active decode targets bitmask set
    /// to the leg's (added when it had none); every other field as it
    /// came. Returns the new length. Err: `ext` is malformed, or the result
    /// would not fit an extension element.
    pub fn apply(&self, ext: &[u8], out: &mut [u8; DD_MAX_LEN]) -> Result<usize, DdError> {
        let mut r = Bits { p: ext, at: 0 };
        let mut w = BitsOut { out, at: 0 };
        w.put(r.read(24)?, 24)?;
        let (mut structure, mut active, mut custom) = (false, false, 0);
        if ext.len() > 3 {
            structure = r.flag()?;
            active = r.flag()?;
            custom = r.read(3)?;
        }
        w.put(u64::from(structure), 1)?;
        w.put(1, 1)?;
        w.put(custom, 3)?;
        let mut dts = self.decode_targets;
        if structure {
            // Copied bit for bit; parsed only to find where it ends.
            let from = r.at;
            let mut scratch = DdStructure::default();
            parse_structure(&mut r, &mut scratch)?;
            dts = scratch.decode_targets;
            w.copy(ext, from, r.at)?;
        }
        if active {
            r.read(u32::from(dts))?;
        }
        let all = match dts {
            0 => 0,
            n if n >= 32 => u32::MAX,
            n => (1u32 << n) - 1,
        };
        w.put(u64::from(self.active & all), u32::from(dts))?;
        // The frame's own fields (custom DTIs, diffs, chains) and the
        // padding, as they came.
        w.copy(ext, r.at, ext.len() * 8)?;
        Ok(w.at.div_ceil(8))
    }
}

/// A bit writer into a fixed buffer, most significant first.
struct BitsOut<'a> {
    out: &'a mut [u8; DD_MAX_LEN],
    at: usize,
}

impl BitsOut<'_> {
    fn put(&mut self, v: u64, n: u32) -> Result<(), DdError> {
        for i in (0..n).rev() {
            let byte = self.out.get_mut(self.at / 8).ok_or(DdError::OutOfBounds)?;
            if self.at.is_multiple_of(8) {
                *byte = 0;
            }
            *byte |= (((v >> i) & 1) as u8) << (7 - (self.at % 8));
            self.at += 1;
        }
        Ok(())
    }

    /// Copies bits `from..to` of `src`.
    fn copy(&mut self, src: &[u8], from: usize, to: usize) -> Result<(), DdError> {
        let mut r = Bits { p: src, at: from };
        while r.at < to {
            let n = (to - r.at).min(32) as u32;
            let v = r.read(n)?;
            self.put(v, n)?;
        }
        Ok(())
    }
}

impl DdTracker {
    /// Reads one packet's descriptor; a structure it attaches becomes the
    /// latest (unless it is older than the latest: a reordered keyframe).
    pub fn on_packet(&mut self, ext: &[u8]) -> Result<DependencyDescriptor, DdError> {
        let d = DependencyDescriptor::parse(ext, &self.latest, &mut self.scratch)?;
        let newer = self
            .structure_frame
            .is_none_or(|f| d.frame_number.wrapping_sub(f) < 0x8000);
        if d.structure_attached && newer {
            std::mem::swap(&mut self.latest, &mut self.scratch);
            self.structure_frame = Some(d.frame_number);
        }
        // A mask older than the structure is not the publisher's now.
        if let (Some(m), true) = (d.active_decode_targets, newer) {
            self.active = m;
        }
        Ok(d)
    }

    /// Reads a descriptor without keeping what it attaches (a packet sent
    /// again from the history).
    pub fn peek(&mut self, ext: &[u8]) -> Result<DependencyDescriptor, DdError> {
        DependencyDescriptor::parse(ext, &self.latest, &mut self.scratch)
    }

    /// The latest structure (empty before the first keyframe's).
    pub fn structure(&self) -> &DdStructure {
        &self.latest
    }

    /// The latest structure's targets per layer, and the publisher's
    /// active ones.
    pub fn targets(&self) -> DdTargets {
        DdTargets {
            masks: self.latest.masks,
            active: self.active,
            decode_targets: self.latest.decode_targets,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
