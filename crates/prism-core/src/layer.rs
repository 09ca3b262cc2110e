//! Simulcast and temporal layers, and which of them one subscriber leg takes.
//!
//! A simulcast track arrives as up to [`MAX_SPATIAL_LAYERS`] streams, each its
//! own SSRC and encoder; the server maps a packet's SSRC to its
//! [`SpatialLayer`]. A subscriber leg forwards one of them (its *current*
//! layer) and is told which one it should forward (its [`Target`], from the
//! allocator). [`LayerSelector`] is that leg's state:
//!
//! - a change of target takes effect at a keyframe of the new layer; until
//!   then the current layer keeps flowing, so the picture never freezes;
//! - a layer that sent nothing for `layer_timeout`, that sent nothing for
//!   [`DEFAULT_LAYER_OVERTAKEN`] while another layer kept sending, or that
//!   the server declared gone ([`LayerSelector::set_layer_gone`]), is not
//!   available: the
//!   leg aims at the best available layer (the highest at or below the
//!   target, else the lowest above it) and switches at its keyframe;
//! - [`Target::Paused`] stops the leg at once; resuming waits for a keyframe;
//! - while the leg waits for a keyframe of the layer it aims at,
//!   [`LayerSelector::wants_keyframe`] names that layer, and
//!   [`LayerSelector::poll_keyframe_request`] says when to ask for it
//!   (throttled).
//!
//! The selector decides per packet with a few comparisons and no
//! allocation; the [`Forwarder`](crate::Forwarder) applies its steps
//! (restarting the leg's numbering at a switch).

use std::time::{Duration, Instant};

/// How many simulcast (spatial) layers a track can have.
pub const MAX_SPATIAL_LAYERS: usize = 3;

/// A simulcast layer of a track: 0 is the lowest resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SpatialLayer(u8);

impl SpatialLayer {
    pub const LOW: SpatialLayer = SpatialLayer(0);
    pub const MID: SpatialLayer = SpatialLayer(1);
    pub const HIGH: SpatialLayer = SpatialLayer(2);
    /// Every layer, lowest first.
    pub const ALL: [SpatialLayer; MAX_SPATIAL_LAYERS] = [Self::LOW, Self::MID, Self::HIGH];

    /// `None` past [`MAX_SPATIAL_LAYERS`].
    pub fn new(index: u8) -> Option<SpatialLayer> {
        (usize::from(index) < MAX_SPATIAL_LAYERS).then_some(SpatialLayer(index))
    }

    /// 0-based, below [`MAX_SPATIAL_LAYERS`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for SpatialLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A temporal layer (VP8 TID): 0 is the base frame rate; each layer above
/// adds frames between those below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemporalLayer(u8);

impl TemporalLayer {
    pub const BASE: TemporalLayer = TemporalLayer(0);
    /// The highest a VP8 descriptor can carry (TID is two bits): as a cap,
    /// "every frame".
    pub const MAX: TemporalLayer = TemporalLayer(3);

    /// `None` above [`TemporalLayer::MAX`].
    pub fn new(tid: u8) -> Option<TemporalLayer> {
        (tid <= Self::MAX.0).then_some(TemporalLayer(tid))
    }

    pub fn value(self) -> u8 {
        self.0
    }
}

/// The highest layers a leg should forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerTarget {
    pub spatial: SpatialLayer,
    /// Frames of a higher temporal layer are skipped (VP8 with TID only).
    pub temporal: TemporalLayer,
}

impl LayerTarget {
    /// This spatial layer with every temporal layer.
    pub fn spatial(spatial: SpatialLayer) -> LayerTarget {
        LayerTarget {
            spatial,
            temporal: TemporalLayer::MAX,
        }
    }
}

/// What a leg should forward: some layer, or nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The subscriber gets nothing of this track (the allocator found no room
    /// for its lowest layer, or the subscriber hid it).
    Paused,
    Layer(LayerTarget),
}

impl Default for Target {
    /// The lowest layer at full frame rate: what a track without simulcast
    /// always is.
    fn default() -> Self {
        Target::Layer(LayerTarget::spatial(SpatialLayer::LOW))
    }
}

/// How long a layer may be silent before it counts as gone.
pub const DEFAULT_LAYER_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a layer may be silent while another layer of the same track
/// keeps sending before it counts as gone. Simulcast encoders take the same
/// captured frames, so a layer that misses this many milliseconds of frames
/// the others send was switched off by the publisher (Chromium drops its top
/// layers when its CPU or its uplink estimate cannot carry them); waiting
/// the full [`DEFAULT_LAYER_TIMEOUT`] would freeze the legs on it.
pub const DEFAULT_LAYER_OVERTAKEN: Duration = Duration::from_millis(400);

/// What to do with one packet, as far as layers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A packet of the stream this leg is forwarding.
    Flow,
    /// The first packet of the layer the leg aims at that it can start from
    /// (a keyframe, or any packet when keyframes are not recognised): switch
    /// to it if the packet is sent ([`LayerSelector::commit`]).
    Switch,
    /// A packet of the layer the leg aims at, while nothing flows: the leg
    /// waits for its keyframe.
    Wait,
    /// A layer this leg does not take.
    Skip,
    /// The leg is paused and this packet is of the layer it had.
    Paused,
}

/// One subscriber leg's layer state (see the module doc).
#[derive(Debug, Clone)]
pub struct LayerSelector {
    target: Target,
    /// The temporal cap in force: the target's, taken over at a frame start
    /// so a frame is never cut in half.
    temporal: TemporalLayer,
    /// The layer being forwarded; `None` before the first switch, while
    /// paused, and after the source of the current layer restarted.
    current: Option<SpatialLayer>,
    /// The layer the leg had when it was paused: its packets are counted as
    /// paused drops, the others are skips.
    paused_from: Option<SpatialLayer>,
    last_seen: [Option<Instant>; MAX_SPATIAL_LAYERS],
    /// Since when each layer has sent without a gap of
    /// [`DEFAULT_LAYER_OVERTAKEN`] or more.
    active_since: [Option<Instant>; MAX_SPATIAL_LAYERS],
    gone: [bool; MAX_SPATIAL_LAYERS],
    layer_timeout: Duration,
    /// Switches wait for a keyframe (video whose keyframes are recognised).
    gated: bool,
    last_keyframe_request: Option<Instant>,
    /// The track is spatially scalable in one stream (VP9 k-SVC): the
    /// current layer is the highest one forwarded, lower ones flow with it,
    /// and only a switch up needs a keyframe (see `layer/svc.rs`).
    svc: bool,
    /// The timestamp of the newest picture seen, and when its first packet
    /// came (SVC: changes of layer are taken at a picture's start).
    picture_ts: Option<u32>,
    picture_at: Option<Instant>,
}

impl LayerSelector {
    /// `gated`: switch only at keyframes. Without it (audio, codecs whose
    /// keyframes Prism cannot see) a switch happens at the next packet.
    pub fn new(gated: bool) -> Self {
        LayerSelector {
            target: Target::default(),
            temporal: TemporalLayer::MAX,
            current: None,
            paused_from: None,
            last_seen: [None; MAX_SPATIAL_LAYERS],
            active_since: [None; MAX_SPATIAL_LAYERS],
            gone: [false; MAX_SPATIAL_LAYERS],
            layer_timeout: DEFAULT_LAYER_TIMEOUT,
            gated,
            last_keyframe_request: None,
            svc: false,
            picture_ts: None,
            picture_at: None,
        }
    }

    /// How long a layer may send nothing before the leg leaves it.
    pub fn set_layer_timeout(&mut self, timeout: Duration) {
        self.layer_timeout = timeout;
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// The layer being forwarded, if any.
    pub fn current(&self) -> Option<SpatialLayer> {
        self.current
    }

    /// Nothing flows and the leg waits for a keyframe to start from (not
    /// paused, keyframes recognised).
    pub fn waiting(&self) -> bool {
        self.gated && self.current.is_none() && self.target != Target::Paused
    }

    /// The temporal cap in force.
    pub fn temporal_cap(&self) -> TemporalLayer {
        self.temporal
    }

    /// Sets what the leg should forward. A new spatial layer is taken at its
    /// next keyframe; pausing stops the leg at once.
    pub fn set_target(&mut self, target: Target) {
        if target == Target::Paused && self.target != Target::Paused {
            self.paused_from = self.current.or(self.paused_from);
            self.current = None;
        }
        self.target = target;
    }

    /// The server learned that a layer stopped (the publisher dropped it, or
    /// it was switched off upstream): the leg leaves it without waiting for
    /// the timeout. A packet of the layer makes it available again.
    pub fn set_layer_gone(&mut self, layer: SpatialLayer) {
        self.gone[layer.index()] = true;
    }

    /// A layer sent something within the timeout, was not overtaken (no
    /// other layer kept sending [`DEFAULT_LAYER_OVERTAKEN`] past its last
    /// packet) and was not declared gone.
    pub fn available(&self, now: Instant, layer: SpatialLayer) -> bool {
        let Some(seen) = self.last_seen[layer.index()] else {
            return false;
        };
        // Another layer that was already sending when this one stopped
        // and went on for the whole delay (a layer that merely resumed
        // first after a silence of the whole stream overtakes nothing).
        let overtaken = self
            .last_seen
            .iter()
            .zip(&self.active_since)
            .any(|(other, since)| match (other, since) {
                (Some(other), Some(since)) => {
                    *since <= seen
                        && other.saturating_duration_since(seen) >= DEFAULT_LAYER_OVERTAKEN
                }
                _ => false,
            });
        !self.gone[layer.index()]
            && !overtaken
            && now.saturating_duration_since(seen) < self.layer_timeout
    }

    /// The layer the leg aims at: the target's if available, else the
    /// highest available below it, else the lowest available above it, else
    /// the target's (nothing seen yet). `None` when paused.
    pub fn aim(&self, now: Instant) -> Option<SpatialLayer> {
        let Target::Layer(t) = self.target else {
            return None;
        };
        let below = SpatialLayer::ALL[..=t.spatial.index()]
            .iter()
            .rev()
            .find(|l| self.available(now, **l));
        let above = SpatialLayer::ALL[t.spatial.index()..]
            .iter()
            .find(|l| self.available(now, **l));
        Some(*below.or(above).unwrap_or(&t.spatial))
    }

    /// The layer whose keyframe the leg waits for: the one it aims at, while
    /// that is not the one flowing. `None` when keyframes are not recognised.
    pub fn wants_keyframe(&self, now: Instant) -> Option<SpatialLayer> {
        let aim = self.aim(now)?;
        if self.svc {
            // Lower layers of one SVC stream depend on no higher one: a
            // switch down happens at the next picture, with no keyframe.
            return (self.gated && self.current.is_none_or(|c| aim > c)).then_some(aim);
        }
        (self.gated && self.current != Some(aim)).then_some(aim)
    }

    /// The track is spatially scalable in one stream (VP9 k-SVC).
    pub fn is_svc(&self) -> bool {
        self.svc
    }

    /// [`LayerSelector::wants_keyframe`], at most once per `min_interval`:
    /// the layer to send a keyframe request (PLI) for now.
    pub fn poll_keyframe_request(
        &mut self,
        now: Instant,
        min_interval: Duration,
    ) -> Option<SpatialLayer> {
        let layer = self.wants_keyframe(now)?;
        if self
            .last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < min_interval)
        {
            return None;
        }
        self.last_keyframe_request = Some(now);
        Some(layer)
    }

    /// When [`LayerSelector::poll_keyframe_request`] would next ask again,
    /// if a keyframe is wanted.
    pub fn next_keyframe_request_at(
        &self,
        now: Instant,
        min_interval: Duration,
    ) -> Option<Instant> {
        self.wants_keyframe(now)?;
        Some(
            self.last_keyframe_request
                .map_or(now, |at| at + min_interval),
        )
    }

    /// The source of the current layer restarted (a new SSRC): its old
    /// frames are no reference for its new ones, so the leg waits for a
    /// keyframe again (or restarts at once when ungated).
    pub(crate) fn lose_current(&mut self) {
        self.current = None;
    }

    /// Classifies one packet of `layer` (and notes that the layer is alive).
    pub(crate) fn step(&mut self, now: Instant, layer: SpatialLayer, keyframe: bool) -> Step {
        self.note_seen(now, layer);
        // The steady state, first and without working out the aim: a
        // paused leg has no current layer (see `set_target`).
        if self.current == Some(layer) {
            return Step::Flow;
        }
        let Some(aim) = self.aim(now) else {
            // Count the paused leg's own layer once, not every layer.
            return if self.paused_from == Some(layer) {
                Step::Paused
            } else {
                Step::Skip
            };
        };
        if layer != aim {
            // The current layer keeps flowing (above) until the aimed-at
            // layer's keyframe comes; other layers are not this leg's.
            return Step::Skip;
        }
        if keyframe || !self.gated {
            Step::Switch
        } else if self.current.is_none() {
            Step::Wait
        } else {
            Step::Skip
        }
    }

    /// A packet of `layer` arrived: it is alive (and active since now if it
    /// had been silent).
    pub(crate) fn note_seen(&mut self, now: Instant, layer: SpatialLayer) {
        let i = layer.index();
        if self.last_seen[i]
            .is_none_or(|at| now.saturating_duration_since(at) >= DEFAULT_LAYER_OVERTAKEN)
        {
            self.active_since[i] = Some(now);
        }
        self.last_seen[i] = Some(now);
        self.gone[i] = false;
    }

    /// The packet that [`Step::Switch`] announced is being sent: `layer` is
    /// now the current layer.
    pub(crate) fn commit(&mut self, layer: SpatialLayer) {
        self.current = Some(layer);
        self.paused_from = None;
        self.last_keyframe_request = None;
        // A keyframe starts a frame: the target's temporal cap applies now.
        if let Target::Layer(t) = self.target {
            self.temporal = t.temporal;
        }
    }

    /// The temporal cap for a packet of the current layer; a new target cap
    /// is taken over at a frame start — a higher one only at a frame that
    /// references nothing above the base layer (`switch_point`: a VP8 TID 0
    /// frame, or one with the layer-sync bit), else the first frames of the
    /// higher layers would reference frames this leg never sent.
    pub(crate) fn temporal_cap_at(
        &mut self,
        frame_start: bool,
        switch_point: bool,
    ) -> TemporalLayer {
        if let (true, Target::Layer(t)) = (frame_start, self.target) {
            if t.temporal < self.temporal || switch_point {
                self.temporal = t.temporal;
            }
        }
        self.temporal
    }
}

pub(crate) mod svc;
pub(crate) use svc::SvcStep;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_newtypes_refuse_out_of_range() {
        assert_eq!(SpatialLayer::new(2), Some(SpatialLayer::HIGH));
        assert_eq!(SpatialLayer::new(3), None);
        assert_eq!(TemporalLayer::new(3), Some(TemporalLayer::MAX));
        assert_eq!(TemporalLayer::new(4), None);
        assert_eq!(SpatialLayer::MID.to_string(), "s1");
    }

    #[test]
    fn aims_at_the_best_available_layer() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // (target, layers alive, aim)
        let rows: [(SpatialLayer, &[u8], SpatialLayer); 6] = [
            (SpatialLayer::HIGH, &[], SpatialLayer::HIGH),
            (SpatialLayer::HIGH, &[0, 1, 2], SpatialLayer::HIGH),
            (SpatialLayer::HIGH, &[0, 1], SpatialLayer::MID),
            (SpatialLayer::MID, &[0, 2], SpatialLayer::LOW),
            (SpatialLayer::LOW, &[1, 2], SpatialLayer::MID),
            (SpatialLayer::LOW, &[0, 2], SpatialLayer::LOW),
        ];
        for (i, (target, alive, aim)) in rows.into_iter().enumerate() {
            let mut s = LayerSelector::new(true);
            s.set_target(Target::Layer(LayerTarget::spatial(target)));
            // Every layer once at 0 ms, the live ones again at 1000 ms.
            for l in SpatialLayer::ALL {
                s.step(at(0), l, false);
            }
            for l in alive {
                s.step(at(1000), SpatialLayer(*l), false);
            }
            assert_eq!(s.aim(at(2000)), Some(aim), "row {i}");
        }
    }

    #[test]
    fn a_layer_the_others_overtake_is_gone_before_the_timeout() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = LayerSelector::new(true);
        s.set_target(Target::Layer(LayerTarget::spatial(SpatialLayer::HIGH)));
        // Frames every 33 ms on all three layers until 330 ms; then the top
        // layer stops (the publisher switched it off) and the others go on.
        let mut ms = 0;
        while ms <= 330 {
            for l in SpatialLayer::ALL {
                s.step(at(ms), l, false);
            }
            ms += 33;
        }
        // (time the lower layers last sent, aim): a gap shorter than a
        // keyframe's pacing keeps the top layer; 400 ms of frames it did not
        // send is a layer switched off, long before the 1.5 s timeout.
        for (until, aim) in [(660, SpatialLayer::HIGH), (760, SpatialLayer::MID)] {
            while ms <= until {
                s.step(at(ms), SpatialLayer::LOW, false);
                s.step(at(ms), SpatialLayer::MID, false);
                ms += 33;
            }
            assert_eq!(
                s.aim(at(ms)),
                Some(aim),
                "lower layers sent until {until} ms"
            );
        }
        // The top layer comes back: available at its first packet.
        s.step(at(ms), SpatialLayer::HIGH, false);
        assert_eq!(s.aim(at(ms)), Some(SpatialLayer::HIGH));
        // Every layer silent (the publisher paused): none is overtaken, and
        // the aim stays until the timeout.
        assert_eq!(s.aim(at(ms + 1000)), Some(SpatialLayer::HIGH));
        // The stream resumes after 1 s, the lowest layer's packet first:
        // it overtakes nothing.
        s.step(at(ms + 1000), SpatialLayer::LOW, false);
        s.step(at(ms + 1300), SpatialLayer::LOW, false);
        assert_eq!(s.aim(at(ms + 1300)), Some(SpatialLayer::HIGH));
    }
}
