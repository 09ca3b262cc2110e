//! Per-subscriber bandwidth allocation: which layer of each track one
//! subscriber gets, from its bandwidth estimate.
//!
//! The driver calls [`Allocator::allocate`] about once a second per
//! subscriber (and when the estimate, a wish or a track changes) with the
//! estimate and the subscriber's tracks; each returned
//! [`TrackAllocation::target`] goes to that track's
//! [`Forwarder::set_target`](crate::Forwarder::set_target), and each
//! [`Transition`] to the subscriber (its tile shows "paused for bandwidth").
//!
//! The order: audio first, always (its bitrate is taken even past the
//! budget); then screen shares; then the other video, each group by
//! [`AllocTrack::priority`], highest first. Each track gets the highest
//! layer within its [`Wish`] that fits what is left of the budget
//! ([`AllocatorConfig::headroom`] of the estimate); a video track whose
//! lowest layer does not fit is paused.
//!
//! Hysteresis, so a leg does not flap between layers: a track goes down at
//! once when its layer no longer fits, and goes up one layer at a time, only
//! after the budget has covered the higher layer for
//! [`AllocatorConfig::upgrade_hold`] (a resume from a bandwidth pause counts
//! as an upgrade). A track on its lowest layer is paused only once that has
//! not fitted for [`AllocatorConfig::pause_hold`].
//!
//! Temporal layers: where the lowest layer does not fit but its base
//! temporal layer does ([`LayerInfo::base`], VP8 TID 0), the track gets the
//! lowest layer at that reduced frame rate ([`TemporalLayer::BASE`])
//! instead of a pause; back to the full frame rate counts as an upgrade.
//!
//! Dynacast (the layers nobody takes, switched off at the publisher) is
//! read from the legs' forwarders, not from allocations: a leg keeps its
//! current layer until the next one's keyframe (`Room::each_leg_layers`).

use std::time::{Duration, Instant};

use crate::layer::{LayerTarget, SpatialLayer, Target, TemporalLayer, MAX_SPATIAL_LAYERS};
use crate::room::{MediaKind, Source, TrackId};

/// A bitrate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bitrate(pub u64);

impl Bitrate {
    pub fn bps(self) -> u64 {
        self.0
    }
}

/// One layer of a track as the publisher sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Its measured bitrate; for a layer switched off by dynacast, the last
    /// measured one (else nobody could ever be given it again).
    pub bitrate: Bitrate,
    pub width: u32,
    pub height: u32,
    /// The bitrate of its base temporal layer alone (VP8 TID 0: a quarter
    /// of the frames of an L1T3 stream, Chromium's simulcast default) when
    /// the layer has temporal layers: what the lowest layer costs at a
    /// reduced frame rate, the step before a pause.
    pub base: Option<Bitrate>,
}

/// What the subscriber asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wish {
    /// Nothing (a hidden tile): the track is paused, not for bandwidth.
    Nothing,
    /// At most this layer.
    MaxLayer(SpatialLayer),
    /// The largest layer that fits this size (the tile's pixels); the lowest
    /// layer if none does.
    MaxSize { width: u32, height: u32 },
}

/// One of the subscriber's tracks, as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocTrack {
    pub id: TrackId,
    pub kind: MediaKind,
    pub source: Source,
    /// Higher first within its group (screen shares, other video).
    pub priority: u8,
    pub wish: Wish,
    /// Per layer, lowest first; `None` where the publisher sends no such
    /// layer. A track without simulcast (and audio) has layer 0 only.
    pub layers: [Option<LayerInfo>; MAX_SPATIAL_LAYERS],
}

/// A track's paused-for-bandwidth state changed: tell the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Its lowest layer no longer fits the budget.
    Paused,
    /// It fits again (after the upgrade hold).
    Resumed,
}

/// The allocator's answer for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackAllocation {
    pub track: TrackId,
    pub target: Target,
    /// Paused because the budget has no room for its lowest layer (not
    /// because of its wish).
    pub paused_for_bandwidth: bool,
    /// Set on the call where `paused_for_bandwidth` changed.
    pub transition: Option<Transition>,
    /// The bitrate this allocation takes from the budget.
    pub bitrate: Bitrate,
}

/// Tuning of [`Allocator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorConfig {
    /// The share of the estimate given out, in per mille: the rest is
    /// headroom for estimate error and retransmissions.
    pub headroom_permille: u32,
    /// How long the budget must cover a higher layer before a track moves
    /// up to it.
    pub upgrade_hold: Duration,
    /// How long a track's lowest layer may not fit before the track is
    /// paused (it keeps that layer meanwhile): an estimate that dips for a
    /// moment, as one does while a link's queue drains after a congestion,
    /// should not blank a tile.
    pub pause_hold: Duration,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            headroom_permille: 950,
            upgrade_hold: Duration::from_millis(1500),
            pause_hold: Duration::from_millis(2000),
        }
    }
}

impl AllocatorConfig {
    /// The budget for an estimate.
    pub fn headroom(&self, estimate: Bitrate) -> Bitrate {
        Bitrate(estimate.0.saturating_mul(u64::from(self.headroom_permille)) / 1000)
    }
}

/// What the allocator remembers of a track between calls.
#[derive(Debug, Clone, Copy)]
struct TrackState {
    track: TrackId,
    /// The spatial layer given last time (`None`: paused).
    layer: Option<SpatialLayer>,
    paused_for_bandwidth: bool,
    /// Since when the budget has covered a layer above `layer`.
    better_since: Option<Instant>,
    /// Since when the budget has not covered even the lowest layer.
    short_since: Option<Instant>,
    /// The lowest layer at its base temporal layer only (a reduced frame
    /// rate): the budget covers that but not the whole layer.
    reduced: bool,
}

/// One subscriber's allocation state (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    cfg: AllocatorConfig,
    state: Vec<TrackState>,
    order: Vec<usize>,
    out: Vec<TrackAllocation>,
}

impl Allocator {
    pub fn new(cfg: AllocatorConfig) -> Self {
        Allocator {
            cfg,
            ..Default::default()
        }
    }

    /// Allocates `estimate` over `tracks`; the answer is in the order of
    /// `tracks`. Tracks absent since the last call are forgotten. Reuses its
    /// buffers: no allocation once they have grown to the track count.
    pub fn allocate(
        &mut self,
        now: Instant,
        estimate: Bitrate,
        tracks: &[AllocTrack],
    ) -> &[TrackAllocation] {
        self.state
            .retain(|s| tracks.iter().any(|t| t.id == s.track));
        self.order.clear();
        self.order.extend(0..tracks.len());
        // Stable: equal tracks keep the caller's order.
        self.order
            .sort_by_key(|&i| (group(&tracks[i]), u8::MAX - tracks[i].priority));
        self.out.clear();
        self.out.extend(tracks.iter().map(|t| TrackAllocation {
            track: t.id,
            target: Target::Paused,
            paused_for_bandwidth: false,
            transition: None,
            bitrate: Bitrate(0),
        }));
        let mut left = self.cfg.headroom(estimate).0;
        for &i in &self.order {
            let t = &tracks[i];
            let idx = match self.state.iter().position(|s| s.track == t.id) {
                Some(idx) => idx,
                None => {
                    self.state.push(TrackState {
                        track: t.id,
                        layer: None,
                        paused_for_bandwidth: false,
                        better_since: None,
                        short_since: None,
                        reduced: false,
                    });
                    self.state.len() - 1
                }
            };
            let st = &mut self.state[idx];
            let fresh = st.layer.is_none() && !st.paused_for_bandwidth;
            let a = &mut self.out[i];
            if t.kind == MediaKind::Audio {
                // Audio is cheap and what a call cannot do without: always
                // on, even past the budget.
                let rate = t.layers[0].map_or(0, |l| l.bitrate.0);
                left = left.saturating_sub(rate);
                st.layer = Some(SpatialLayer::LOW);
                a.target = Target::default();
                a.bitrate = Bitrate(rate);
                continue;
            }
            let Some(cap) = wished_layer(t) else {
                // Hidden by the subscriber: nothing, and not a bandwidth
                // pause to report.
                if st.paused_for_bandwidth {
                    a.transition = Some(Transition::Resumed);
                }
                *st = TrackState {
                    layer: None,
                    paused_for_bandwidth: false,
                    better_since: None,
                    short_since: None,
                    reduced: false,
                    ..*st
                };
                continue;
            };
            // The best this budget could carry now.
            let fits = SpatialLayer::ALL[..=cap.index()]
                .iter()
                .rev()
                .find(|l| t.layers[l.index()].is_some_and(|i| i.bitrate.0 <= left))
                .copied();
            // The lowest layer at its base temporal layer: the step before
            // a pause when the whole layer does not fit but its base does.
            let lowest = lowest_layer(t);
            let base_fits = lowest
                .and_then(|l| t.layers[l.index()])
                .and_then(|i| i.base)
                .is_some_and(|b| b.0 <= left);
            let (chosen, reduced) = if fits.is_none() && base_fits && (st.layer.is_some() || fresh)
            {
                st.better_since = None;
                st.short_since = None;
                (lowest, true)
            } else if st.reduced && fits.is_some() && st.layer.is_some() {
                // Back to the full frame rate is an upgrade: after the hold.
                let since = *st.better_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.cfg.upgrade_hold {
                    st.better_since = None;
                    (lowest, false)
                } else {
                    (lowest, true)
                }
            } else {
                let chosen = match (st.layer, fits) {
                    // A new track (or one un-hidden) starts at what fits.
                    (None, _) if fresh => fits,
                    // The layer given is no longer sent: whatever fits, at once.
                    (Some(cur), f) if t.layers[cur.index()].is_none() => f,
                    // Nothing fits, not even the lowest layer: the track goes
                    // down to that, and is paused once this has lasted the
                    // pause hold.
                    (Some(_), None) => {
                        st.better_since = None;
                        let since = *st.short_since.get_or_insert(now);
                        lowest_layer(t)
                            .filter(|_| now.saturating_duration_since(since) < self.cfg.pause_hold)
                    }
                    // Down at once: the layer given no longer fits (or is no
                    // longer wished or sent).
                    (Some(cur), f) if f.is_none_or(|f| f < cur) => {
                        st.better_since = None;
                        f
                    }
                    // Up, one layer at a time, once the budget has covered a
                    // higher layer for the whole hold.
                    (cur, Some(f)) if cur.is_none_or(|c| f > c) => {
                        let since = *st.better_since.get_or_insert(now);
                        if now.saturating_duration_since(since) >= self.cfg.upgrade_hold {
                            st.better_since = None;
                            next_layer_up(t, cur, f)
                        } else {
                            cur
                        }
                    }
                    // Steady.
                    (cur, _) => {
                        st.better_since = None;
                        cur
                    }
                };
                // Through the pause hold (nothing fits, not even a base),
                // the base rather than the whole layer: the least load on a
                // link that is already too narrow.
                let has_base = lowest
                    .and_then(|l| t.layers[l.index()])
                    .is_some_and(|i| i.base.is_some());
                (chosen, fits.is_none() && has_base)
            };
            if fits.is_some() {
                st.short_since = None;
            }
            let paused = chosen.is_none();
            a.transition = match (st.paused_for_bandwidth, paused) {
                (false, true) => Some(Transition::Paused),
                (true, false) => Some(Transition::Resumed),
                _ => None,
            };
            st.layer = chosen;
            st.reduced = reduced && chosen.is_some();
            st.paused_for_bandwidth = paused;
            a.paused_for_bandwidth = paused;
            if let Some(l) = chosen {
                // `chosen` is a layer the track sends: `fits` and the steps
                // up and down only pick such layers.
                let info = t.layers[l.index()];
                let rate = match (st.reduced, info) {
                    (true, Some(i)) => i.base.unwrap_or(i.bitrate).0,
                    (_, i) => i.map_or(0, |i| i.bitrate.0),
                };
                left = left.saturating_sub(rate);
                a.target = Target::Layer(LayerTarget {
                    spatial: l,
                    temporal: if st.reduced {
                        TemporalLayer::BASE
                    } else {
                        TemporalLayer::MAX
                    },
                });
                a.bitrate = Bitrate(rate);
            }
        }
        &self.out
    }
}

/// Audio, then screen shares, then the rest.
fn group(t: &AllocTrack) -> u8 {
    match (t.kind, t.source) {
        (MediaKind::Audio, _) => 0,
        (_, Source::Screen) => 1,
        _ => 2,
    }
}

/// The highest layer the track sends within its wish; `None` for a hidden
/// tile or a track that sends nothing.
fn wished_layer(t: &AllocTrack) -> Option<SpatialLayer> {
    let sent = |l: &&SpatialLayer| t.layers[l.index()].is_some();
    match t.wish {
        Wish::Nothing => None,
        Wish::MaxLayer(max) => SpatialLayer::ALL[..=max.index()]
            .iter()
            .rev()
            .find(sent)
            .copied(),
        Wish::MaxSize { width, height } => SpatialLayer::ALL
            .iter()
            .rev()
            .find(|l| t.layers[l.index()].is_some_and(|i| i.width <= width && i.height <= height))
            .or_else(|| SpatialLayer::ALL.iter().find(sent))
            .copied(),
    }
}

/// The lowest layer the track sends.
fn lowest_layer(t: &AllocTrack) -> Option<SpatialLayer> {
    SpatialLayer::ALL
        .iter()
        .find(|l| t.layers[l.index()].is_some())
        .copied()
}

/// The next layer the track sends above `from` (the lowest from a pause),
/// no higher than `to`.
fn next_layer_up(
    t: &AllocTrack,
    from: Option<SpatialLayer>,
    to: SpatialLayer,
) -> Option<SpatialLayer> {
    let start = from.map_or(0, |l| l.index() + 1);
    SpatialLayer::ALL[start..=to.index()]
        .iter()
        .find(|l| t.layers[l.index()].is_some())
        .copied()
        .or(from)
}

#[cfg(test)]
mod tests;
