//! One room: who is in it, what they publish, who receives what.
//!
//! # Order of calls
//!
//! A driver (the server's shard task) owns each `Room` and calls it from one
//! thread:
//!
//! - **Inputs** change state: [`Room::join`], [`Room::leave`], [`Room::publish`],
//!   [`Room::unpublish`], [`Room::set_muted`], [`Room::subscribe`],
//!   [`Room::unsubscribe`], and, once a subscriber leg is negotiated,
//!   [`Room::attach`] / [`Room::detach`].
//! - **Packets**: [`Room::forward`] for each RTP packet of a published track;
//!   it calls back once per attached subscriber with a [`Forward`] decision.
//! - **Outputs**: after any input, drain [`Room::poll_event`] and tell the
//!   participants; on [`RoomEvent::SubscriptionsChanged`], compare
//!   [`Room::wanted_tracks`] with what that subscriber leg carries and
//!   renegotiate.
//! - **Keyframes**: drain [`Room::poll_keyframe_request`] after any input and
//!   send a PLI to that track's publisher. Requests (from subscribers' PLI/FIR
//!   via [`Room::request_keyframe`], or from new subscribers waiting for one)
//!   are merged per track: at most one per `keyframe_throttle`, and one asked
//!   inside the window is sent when it ends.
//! - **Time**: [`Room::poll_timeout`] says when to call
//!   [`Room::handle_timeout`] next (a deferred keyframe request, or the empty
//!   room's close); [`Room::is_expired`] answers whether the room should close.
//!
//! Nothing here reads a clock: every call that needs the time takes `now`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::forwarder::{DropCounts, Forwarder, SinkParams};
use crate::gop::RefusalCounts;
use crate::keyframe::VideoCodec;
use crate::layer::SpatialLayer;

mod media;
mod svc;

/// A participant's id within its room. On the wire: `PA_<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantId(pub u32);

/// A published track's id within its room. On the wire: `TR_<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackId(pub u32);

/// The driver's handle for one subscriber leg's sender of one track: opaque here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SinkId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA_{}", self.0)
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TR_{}", self.0)
    }
}

impl ParticipantId {
    pub fn parse(s: &str) -> Option<Self> {
        s.strip_prefix("PA_")?.parse().ok().map(ParticipantId)
    }
}

impl TrackId {
    pub fn parse(s: &str) -> Option<Self> {
        s.strip_prefix("TR_")?.parse().ok().map(TrackId)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveCause {
    Left,
    Disconnected,
    Timeout,
    Replaced,
    ServerShutdown,
}

/// Errors of room operations. Each maps to one signaling error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The participant id names nobody in this room.
    #[error("no participant {0} in this room")]
    UnknownParticipant(ParticipantId),
    /// The track id names no track in this room.
    #[error("no track {0} in this room")]
    UnknownTrack(TrackId),
    /// The track exists but belongs to someone else.
    #[error("track {0} is not yours")]
    NotOwner(TrackId),
}

#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// How long an empty room stays open before it closes.
    pub empty_timeout: Duration,
    /// At most one keyframe request per track upstream within this window.
    pub keyframe_throttle: Duration,
    /// Retransmission history per video stream: packets and age.
    pub video_history: (usize, Duration),
    /// Retransmission history per audio stream: packets and age.
    pub audio_history: (usize, Duration),
    /// A NACK for a packet retransmitted less than this ago is ignored.
    pub nack_min_interval: Duration,
    /// Keyframe cache: the most packets of a GOP (keyframe to live edge) a
    /// new subscriber may start from. Its age bound is the video history's
    /// age, whose packets the cache is (see [`crate::gop`]).
    pub keyframe_cache_packets: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            empty_timeout: Duration::from_secs(20),
            keyframe_throttle: Duration::from_millis(500),
            // No smaller than the servers people trust: mediasoup keeps up
            // to 2500 packets for 2 s (video) / 1 s (audio), LiveKit 500/200.
            video_history: (1024, Duration::from_secs(2)),
            audio_history: (1024, Duration::from_secs(1)),
            nack_min_interval: Duration::from_millis(30),
            // 2 s of video up to ~2.5 Mbit/s in 1200-byte packets: the
            // burst one new subscriber gets, at most ~600 KB.
            keyframe_cache_packets: 512,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Participant {
    pub id: ParticipantId,
    pub identity: String,
    pub name: String,
    pub joined_at: Instant,
    /// A viewer (e.g. WHEP) that receives but is not shown to the others: no
    /// participant events, not listed, never publishes.
    pub hidden: bool,
    /// Tracks this participant asked not to receive. Everything else is wanted.
    unsubscribed: BTreeSet<TrackId>,
}

/// What the publisher negotiated for a track.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    pub kind: MediaKind,
    pub source: Source,
    /// The publish leg's m-section.
    pub mid: String,
    /// Codec MIME type, e.g. `video/VP8`.
    pub codec: String,
    pub clock_rate: u32,
}

/// Plain counters for one track, read by the metrics exporter.
#[derive(Debug, Clone, Default)]
pub struct TrackCounters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

#[derive(Debug)]
pub struct Track {
    pub id: TrackId,
    pub owner: ParticipantId,
    pub spec: TrackSpec,
    pub muted: bool,
    pub counters: TrackCounters,
    /// The video codec, for keyframe detection (`Other` for audio).
    pub codec: VideoCodec,
    downstream: Vec<Downstream>,
    /// Its layers (one without simulcast), lowest first.
    streams: Vec<media::LayerStream>,
    /// Spatial layers inside its one stream (VP9 k-SVC, AV1 with the
    /// dependency descriptor), as its packets show them.
    svc: svc::SvcLayers,
    /// The publisher's latest sender report per stream (a simulcast layer
    /// each): (NTP time, RTP time, SSRC, when it arrived).
    sender_reports: [Option<(u64, u32, u32, Instant)>; crate::layer::MAX_SPATIAL_LAYERS],
}

/// The fields of a sender report for one subscriber leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReportValues {
    pub ssrc: u32,
    /// NTP timestamp, 32.32 fixed point (the publisher's clock).
    pub ntp_time: u64,
    /// The subscriber leg's RTP timestamp for that instant.
    pub rtp_time: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// `d` as 32.32 fixed-point NTP seconds.
fn ntp_duration(d: Duration) -> u64 {
    (d.as_secs() << 32) + ((d.subsec_nanos() as u64) << 32) / 1_000_000_000
}

impl Track {
    /// Subscribers currently attached to this track.
    pub fn subscriber_count(&self) -> usize {
        self.downstream.len()
    }

    /// The participants attached to this track.
    pub fn subscribers(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.downstream.iter().map(|d| d.subscriber)
    }
}

#[derive(Debug)]
struct Downstream {
    subscriber: ParticipantId,
    sink: SinkId,
    fwd: Forwarder,
}

/// A hidden subscriber's (a WHEP viewer's) forwarder whose track was
/// unpublished, kept so that a track published later in the room can carry
/// on on the same sender ([`Room::adopt`]): the forwarder sees a new source,
/// so the leg's sequence numbers continue, its timestamps are rebased and it
/// waits for the new source's keyframe. Dropped when the subscriber leaves.
#[derive(Debug)]
struct Orphan {
    subscriber: ParticipantId,
    sink: SinkId,
    kind: MediaKind,
    clock_rate: u32,
    fwd: Forwarder,
}

/// What changed, for the driver to tell participants and renegotiate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    ParticipantJoined(ParticipantId),
    ParticipantLeft {
        id: ParticipantId,
        cause: LeaveCause,
    },
    TrackPublished(TrackId),
    TrackUnpublished {
        track: TrackId,
        owner: ParticipantId,
    },
    TrackMuted {
        track: TrackId,
        owner: ParticipantId,
        muted: bool,
    },
    /// The set of tracks this participant should receive changed.
    SubscriptionsChanged(ParticipantId),
}

/// Room-wide plain counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomCounters {
    pub packets_forwarded: u64,
    pub drops: DropCounts,
    /// Packets a subscriber's forwarder skipped because they are of a
    /// simulcast layer (or a temporal layer) it does not take: the normal
    /// state of a simulcast track, not a drop, so not in `drops`.
    pub layer_skips: u64,
    /// Simulcast layer switches of subscriber legs, to a higher layer and
    /// to a lower one.
    pub layer_switches_up: u64,
    pub layer_switches_down: u64,
    /// Of those (up, down), the ones to a layer other than the leg's
    /// target: its target's layer was not being sent (the publisher
    /// switched it off, or it went silent).
    pub layer_switches_fallback: [u64; 2],
    /// Keyframe requests asked for (merged or not) and sent upstream.
    pub keyframe_requests_in: u64,
    pub keyframe_requests_out: u64,
    /// Subscribers started from the keyframe cache, and packets sent that way.
    pub cache_starts: u64,
    pub cache_packets: u64,
    /// Subscriber starts that could not use the keyframe cache, by reason
    /// (each then waits for a fresh keyframe).
    pub cache_refusals: RefusalCounts,
    /// Sequence numbers subscribers NACKed.
    pub nacks_in: u64,
    /// Packets retransmitted from the history.
    pub retransmits: u64,
    /// NACKed sequence numbers this subscriber was never sent (or too long ago).
    pub nack_misses: u64,
    /// NACKed packets the history no longer holds (age or count).
    pub nack_expired: u64,
    /// NACKs for a packet retransmitted moments ago, ignored.
    pub nack_duplicates: u64,
}

impl RoomCounters {
    /// Adds another room's counters (a closed room's, to keep totals monotonic).
    pub fn absorb(&mut self, o: &RoomCounters) {
        self.packets_forwarded += o.packets_forwarded;
        self.drops.add(&o.drops);
        self.layer_skips += o.layer_skips;
        self.layer_switches_up += o.layer_switches_up;
        self.layer_switches_down += o.layer_switches_down;
        for (a, b) in self
            .layer_switches_fallback
            .iter_mut()
            .zip(o.layer_switches_fallback)
        {
            *a += b;
        }
        self.keyframe_requests_in += o.keyframe_requests_in;
        self.keyframe_requests_out += o.keyframe_requests_out;
        self.cache_starts += o.cache_starts;
        self.cache_packets += o.cache_packets;
        self.cache_refusals.add(&o.cache_refusals);
        self.nacks_in += o.nacks_in;
        self.retransmits += o.retransmits;
        self.nack_misses += o.nack_misses;
        self.nack_expired += o.nack_expired;
        self.nack_duplicates += o.nack_duplicates;
    }
}

#[derive(Debug)]
pub struct Room {
    name: String,
    cfg: RoomConfig,
    next_id: u32,
    participants: BTreeMap<ParticipantId, Participant>,
    tracks: BTreeMap<TrackId, Track>,
    events: VecDeque<RoomEvent>,
    empty_since: Option<Instant>,
    /// Track layers whose publisher should be sent a keyframe request now.
    kf_requests: VecDeque<(TrackId, SpatialLayer)>,
    /// When [`Room::measure`] last ran.
    measured_at: Instant,
    /// Earliest deferred keyframe request.
    kf_due: Option<Instant>,
    /// When the room opened: the time base of the forwarders' sent maps.
    epoch: Instant,
    /// Forwarders of hidden subscribers whose track went away.
    orphans: Vec<Orphan>,
    pub counters: RoomCounters,
}

impl Room {
    pub fn new(name: impl Into<String>, cfg: RoomConfig, now: Instant) -> Self {
        Room {
            name: name.into(),
            cfg,
            next_id: 1,
            participants: BTreeMap::new(),
            tracks: BTreeMap::new(),
            events: VecDeque::new(),
            empty_since: Some(now),
            kf_requests: VecDeque::new(),
            measured_at: now,
            kf_due: None,
            epoch: now,
            orphans: Vec::new(),
            counters: RoomCounters::default(),
        }
    }

    // ----- getters -----

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn participant(&self, id: ParticipantId) -> Option<&Participant> {
        self.participants.get(&id)
    }

    /// The participants others can see (hidden viewers excluded).
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.values().filter(|p| !p.hidden)
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    pub fn find_identity(&self, identity: &str) -> Option<ParticipantId> {
        self.participants
            .values()
            .find(|p| p.identity == identity)
            .map(|p| p.id)
    }

    pub fn track(&self, id: TrackId) -> Option<&Track> {
        self.tracks.get(&id)
    }

    pub fn tracks(&self) -> impl Iterator<Item = &Track> {
        self.tracks.values()
    }

    pub fn tracks_of(&self, owner: ParticipantId) -> impl Iterator<Item = &Track> {
        self.tracks.values().filter(move |t| t.owner == owner)
    }

    /// The tracks this participant should receive now: every track of the
    /// others that it did not unsubscribe from.
    pub fn wanted_tracks(&self, id: ParticipantId) -> impl Iterator<Item = &Track> {
        let p = self.participants.get(&id);
        self.tracks
            .values()
            .filter(move |t| p.is_some_and(|p| t.owner != id && !p.unsubscribed.contains(&t.id)))
    }

    // ----- inputs -----

    fn next(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds a participant. If one with the same identity is in the room, it is
    /// removed first (cause [`LeaveCause::Replaced`]) and its id returned.
    pub fn join(
        &mut self,
        now: Instant,
        identity: &str,
        name: &str,
    ) -> (ParticipantId, Option<ParticipantId>) {
        self.add(now, identity, name, false)
    }

    /// Adds a hidden viewer: it can be attached to tracks like any subscriber,
    /// but no event announces it and [`Room::participants`] does not list it.
    pub fn join_hidden(&mut self, now: Instant, identity: &str) -> ParticipantId {
        self.add(now, identity, "", true).0
    }

    fn add(
        &mut self,
        now: Instant,
        identity: &str,
        name: &str,
        hidden: bool,
    ) -> (ParticipantId, Option<ParticipantId>) {
        let replaced = self.find_identity(identity);
        if let Some(old) = replaced {
            self.leave(now, old, LeaveCause::Replaced);
        }
        let id = ParticipantId(self.next());
        self.participants.insert(
            id,
            Participant {
                id,
                identity: identity.to_owned(),
                name: name.to_owned(),
                joined_at: now,
                hidden,
                unsubscribed: BTreeSet::new(),
            },
        );
        self.empty_since = None;
        if !hidden {
            self.events.push_back(RoomEvent::ParticipantJoined(id));
            if self.wanted_tracks(id).next().is_some() {
                self.events.push_back(RoomEvent::SubscriptionsChanged(id));
            }
        }
        (id, replaced)
    }

    /// Removes a participant, its tracks, and its subscriptions.
    pub fn leave(&mut self, now: Instant, id: ParticipantId, cause: LeaveCause) -> bool {
        if !self.participants.contains_key(&id) {
            return false;
        }
        let own: Vec<TrackId> = self.tracks_of(id).map(|t| t.id).collect();
        for t in own {
            // Cannot fail: the track was just listed.
            let _ = self.unpublish(t);
        }
        for t in self.tracks.values_mut() {
            t.downstream.retain(|d| d.subscriber != id);
        }
        self.orphans.retain(|o| o.subscriber != id);
        let hidden = self.participants.remove(&id).is_some_and(|p| p.hidden);
        if !hidden {
            self.events
                .push_back(RoomEvent::ParticipantLeft { id, cause });
        }
        if self.participants.is_empty() {
            self.empty_since = Some(now);
        }
        true
    }

    pub fn publish(&mut self, owner: ParticipantId, spec: TrackSpec) -> Result<TrackId, RoomError> {
        if !self.participants.contains_key(&owner) {
            return Err(RoomError::UnknownParticipant(owner));
        }
        let id = TrackId(self.next());
        let codec = match spec.kind {
            MediaKind::Video => VideoCodec::from_mime(&spec.codec),
            MediaKind::Audio => VideoCodec::Other,
        };
        let (packets, age) = match spec.kind {
            MediaKind::Video => self.cfg.video_history,
            MediaKind::Audio => self.cfg.audio_history,
        };
        self.tracks.insert(
            id,
            Track {
                id,
                owner,
                spec,
                muted: false,
                counters: TrackCounters::default(),
                codec,
                downstream: Vec::new(),
                streams: vec![media::LayerStream::new(
                    packets,
                    age,
                    self.cfg.keyframe_cache_packets,
                )],
                svc: svc::SvcLayers::default(),
                sender_reports: [None; crate::layer::MAX_SPATIAL_LAYERS],
            },
        );
        self.events.push_back(RoomEvent::TrackPublished(id));
        let subscribers: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.id != owner && !p.hidden && !p.unsubscribed.contains(&id))
            .map(|p| p.id)
            .collect();
        for p in subscribers {
            self.events.push_back(RoomEvent::SubscriptionsChanged(p));
        }
        Ok(id)
    }

    pub fn unpublish(&mut self, id: TrackId) -> Result<(), RoomError> {
        let mut t = self.tracks.remove(&id).ok_or(RoomError::UnknownTrack(id))?;
        // Hidden viewers keep their legs: their forwarders wait for the
        // room's next track of this kind.
        for d in t.downstream.drain(..) {
            if self
                .participants
                .get(&d.subscriber)
                .is_some_and(|p| p.hidden)
            {
                self.orphans.push(Orphan {
                    subscriber: d.subscriber,
                    sink: d.sink,
                    kind: t.spec.kind,
                    clock_rate: t.spec.clock_rate,
                    fwd: d.fwd,
                });
            }
        }
        self.events.push_back(RoomEvent::TrackUnpublished {
            track: id,
            owner: t.owner,
        });
        let others: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.id != t.owner && !p.hidden)
            .map(|p| p.id)
            .collect();
        for p in others {
            if let Some(part) = self.participants.get_mut(&p) {
                part.unsubscribed.remove(&id);
            }
            self.events.push_back(RoomEvent::SubscriptionsChanged(p));
        }
        Ok(())
    }

    /// Mutes or unmutes a track; only its owner may.
    pub fn set_muted(
        &mut self,
        who: ParticipantId,
        id: TrackId,
        muted: bool,
    ) -> Result<(), RoomError> {
        let t = self
            .tracks
            .get_mut(&id)
            .ok_or(RoomError::UnknownTrack(id))?;
        if t.owner != who {
            return Err(RoomError::NotOwner(id));
        }
        if t.muted != muted {
            t.muted = muted;
            for d in &mut t.downstream {
                d.fwd.set_muted(muted);
            }
            self.events.push_back(RoomEvent::TrackMuted {
                track: id,
                owner: t.owner,
                muted,
            });
        }
        Ok(())
    }

    /// Receive these tracks again (the default is to receive everything).
    pub fn subscribe(&mut self, who: ParticipantId, ids: &[TrackId]) -> Result<(), RoomError> {
        self.set_subscribed(who, ids, true)
    }

    /// Stop receiving these tracks.
    pub fn unsubscribe(&mut self, who: ParticipantId, ids: &[TrackId]) -> Result<(), RoomError> {
        self.set_subscribed(who, ids, false)
    }

    fn set_subscribed(
        &mut self,
        who: ParticipantId,
        ids: &[TrackId],
        on: bool,
    ) -> Result<(), RoomError> {
        if let Some(bad) = ids.iter().find(|t| !self.tracks.contains_key(t)) {
            return Err(RoomError::UnknownTrack(*bad));
        }
        let p = self
            .participants
            .get_mut(&who)
            .ok_or(RoomError::UnknownParticipant(who))?;
        let mut changed = false;
        for id in ids {
            changed |= if on {
                p.unsubscribed.remove(id)
            } else {
                p.unsubscribed.insert(*id)
            };
        }
        if !on {
            for id in ids {
                if let Some(t) = self.tracks.get_mut(id) {
                    t.downstream.retain(|d| d.subscriber != who);
                }
            }
        }
        if changed {
            self.events.push_back(RoomEvent::SubscriptionsChanged(who));
        }
        Ok(())
    }

    /// Connects a subscriber leg's sender to a track. `params` is `None` while
    /// the leg's negotiation is in flight (packets are then dropped as paused).
    /// Attaching again replaces the params and keeps the numbering state.
    pub fn attach(
        &mut self,
        track: TrackId,
        subscriber: ParticipantId,
        sink: SinkId,
        params: Option<SinkParams>,
    ) -> Result<(), RoomError> {
        let epoch = self.epoch;
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or(RoomError::UnknownTrack(track))?;
        if let Some(d) = t.downstream.iter_mut().find(|d| d.subscriber == subscriber) {
            d.sink = sink;
            d.fwd.set_params(params);
        } else {
            let mut fwd = Forwarder::new(t.spec.clock_rate, t.codec.detects_keyframes());
            fwd.enable_nack(epoch);
            fwd.set_params(params);
            fwd.set_muted(t.muted);
            t.downstream.push(Downstream {
                subscriber,
                sink,
                fwd,
            });
        }
        Ok(())
    }

    /// A hidden subscriber's senders whose track went away: (sink, kind,
    /// clock rate), for [`Room::adopt`].
    pub fn orphans(
        &self,
        subscriber: ParticipantId,
    ) -> impl Iterator<Item = (SinkId, MediaKind, u32)> + '_ {
        self.orphans
            .iter()
            .filter(move |o| o.subscriber == subscriber)
            .map(|o| (o.sink, o.kind, o.clock_rate))
    }

    /// Puts an orphaned forwarder (see [`Room::orphans`]) under `track`: the
    /// same sender now carries that track, paused until [`Room::attach`]
    /// gives it the parameters negotiated for the new source. The caller
    /// checks the kind and codec fit. Returns false when there is no such
    /// orphan, or the track is of another kind or clock rate.
    pub fn adopt(&mut self, track: TrackId, subscriber: ParticipantId, sink: SinkId) -> bool {
        let Some(t) = self.tracks.get_mut(&track) else {
            return false;
        };
        let Some(i) = self.orphans.iter().position(|o| {
            o.subscriber == subscriber
                && o.sink == sink
                && o.kind == t.spec.kind
                && o.clock_rate == t.spec.clock_rate
        }) else {
            return false;
        };
        let mut fwd = self.orphans.swap_remove(i).fwd;
        fwd.set_params(None);
        fwd.set_muted(t.muted);
        t.downstream.retain(|d| d.subscriber != subscriber);
        t.downstream.push(Downstream {
            subscriber,
            sink,
            fwd,
        });
        true
    }

    /// Disconnects a subscriber from a track.
    pub fn detach(&mut self, track: TrackId, subscriber: ParticipantId) {
        if let Some(t) = self.tracks.get_mut(&track) {
            t.downstream.retain(|d| d.subscriber != subscriber);
        }
    }

    // ----- outputs -----

    pub fn poll_event(&mut self) -> Option<RoomEvent> {
        self.events.pop_front()
    }

    /// When [`Room::handle_timeout`] should run next: a deferred keyframe
    /// request, or the close of an empty room.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let close = self.empty_since.map(|t| t + self.cfg.empty_timeout);
        match (close, self.kf_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The room is empty and has been for the configured time.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.empty_since
            .is_some_and(|t| now >= t + self.cfg.empty_timeout)
    }
}

#[cfg(test)]
mod tests;
