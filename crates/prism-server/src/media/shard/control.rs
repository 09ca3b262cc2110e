//! The control side of a shard: commands from sessions (join, signaling
//! messages, WHIP/WHEP, drain, shutdown), room events turned into signaling
//! messages, and removals. The negotiations are in `negotiate.rs`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use prism_core::{
    LeaveCause, MediaKind, ParticipantId, Room, RoomConfig, RoomError, RoomEvent, Source, TrackId,
};
use prism_signal::{
    self as sig, ClientEnvelope, ClientMessage, ErrorCode, Leg, ServerEnvelope, ServerMessage,
    SignalError,
};
use rtc::peer_connection::transport::RTCIceCandidateInit;

use super::super::{Outbound, SessionTx, ShardCommand};
use super::{Member, MemberKind, RoomState, Shard, Wish};
use crate::media::HttpFailure;

impl Shard {
    /// The room and participant limits for a newcomer to `room`. A join that
    /// replaces its own identity (a refresh) does not add a participant.
    /// Err: the limit's metric label and the sentence for the client.
    pub(super) fn admit(
        &self,
        room: &str,
        identity: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        let refused = match self.rooms_by_name.get(room) {
            None if self.directory.open_rooms() >= self.cfg.max_rooms => Some((
                "rooms",
                format!(
                    "this server has its maximum of {} rooms open; try again later",
                    self.cfg.max_rooms
                ),
            )),
            None => None,
            Some(&rk) => {
                let r = &self.rooms[rk];
                let replacing = identity.is_some_and(|i| r.core.find_identity(i).is_some());
                (!replacing && r.members.len() >= self.cfg.max_participants_per_room).then(|| {
                    (
                        "participants_per_room",
                        format!(
                            "room `{room}` is full ({} participants)",
                            self.cfg.max_participants_per_room
                        ),
                    )
                })
            }
        };
        match refused {
            Some((limit, msg)) => {
                self.directory.limit_hits.with_label_values(&[limit]).inc();
                Err((limit, msg))
            }
            None => Ok(()),
        }
    }

    // ------------------------------------------------------------------
    // Commands from sessions
    // ------------------------------------------------------------------

    pub(super) fn on_command(&mut self, cmd: ShardCommand) {
        // The directory places a room on this shard before the request that
        // opens it arrives. A request that ends without opening it (refused
        // by a limit, a bad offer, WHEP on a room with no broadcast) must
        // not leave the placement behind, or room names would pile up.
        let placed = match &cmd {
            ShardCommand::Join { room, .. }
            | ShardCommand::HttpPublish { room, .. }
            | ShardCommand::HttpView { room, .. } => Some(room.clone()),
            _ => None,
        };
        self.handle_command(cmd);
        if let Some(room) = placed {
            if !self.rooms_by_name.contains_key(&room) {
                self.directory.release(&room, self.index);
            }
        }
    }

    fn handle_command(&mut self, cmd: ShardCommand) {
        let now = Instant::now();
        match cmd {
            ShardCommand::Join {
                room,
                identity,
                name,
                grants,
                id,
                session,
                reply,
            } => {
                if let Err((_, msg)) = self.admit(&room, Some(&identity)) {
                    let _ = reply.send(Err(SignalError::new(ErrorCode::LimitExceeded, msg)));
                    return;
                }
                // The room may have closed here and moved to another shard
                // between the directory lookup and this command.
                if !self.rooms_by_name.contains_key(&room)
                    && !self.directory.claim(&room, self.index)
                {
                    let _ = reply.send(Err(SignalError::new(
                        ErrorCode::Internal,
                        "the room moved to another media shard; join again",
                    )));
                    return;
                }
                let (_, pid) = self.join(
                    now,
                    &room,
                    &identity,
                    &name,
                    MemberKind::Socket,
                    grants,
                    Some((session, id)),
                    None,
                );
                let _ = reply.send(Ok(pid));
            }
            ShardCommand::Signal {
                room,
                participant,
                env,
            } => {
                let Some(&rk) = self.rooms_by_name.get(&room) else {
                    return;
                };
                let id = env.id.clone();
                if let Err(e) = self.on_signal(now, rk, participant, env) {
                    self.send_to(rk, participant, e.with_id(id).to_message());
                }
            }
            ShardCommand::HttpPublish {
                room,
                name,
                session_id,
                offer,
                reply,
            } => {
                if let Err((_, msg)) = self.admit(&room, None) {
                    let _ = reply.send(Err(HttpFailure::new(503, "Limit reached", msg)));
                    return;
                }
                if !self.rooms_by_name.contains_key(&room)
                    && !self.directory.claim(&room, self.index)
                {
                    let _ = reply.send(Err(HttpFailure::new(
                        503,
                        "Room moved",
                        "retry the request",
                    )));
                    return;
                }
                let _ = reply.send(self.http_publish(now, &room, &name, session_id, &offer));
            }
            ShardCommand::HttpView {
                room,
                source,
                want,
                session_id,
                offer,
                reply,
            } => {
                if self.rooms_by_name.contains_key(&room) {
                    if let Err((_, msg)) = self.admit(&room, None) {
                        let _ = reply.send(Err(HttpFailure::new(503, "Limit reached", msg)));
                        return;
                    }
                }
                let _ = reply.send(self.http_view(
                    now,
                    &room,
                    source.as_deref(),
                    want,
                    session_id,
                    &offer,
                ));
            }
            ShardCommand::HttpPatch {
                room,
                participant,
                fragment,
                if_match,
                reply,
            } => {
                let _ = reply.send(self.http_patch(
                    now,
                    &room,
                    participant,
                    &fragment,
                    if_match.as_deref(),
                ));
            }
            ShardCommand::HttpDelete {
                room,
                participant,
                reply,
            } => {
                let _ = reply.send(self.http_delete(now, &room, participant));
            }
            ShardCommand::Drain { deadline_secs } => {
                let msg =
                    ServerEnvelope::new(ServerMessage::Draining(sig::Draining { deadline_secs }));
                let keys: Vec<usize> = self.rooms.iter().map(|(k, _)| k).collect();
                for rk in keys {
                    let pids: Vec<ParticipantId> = self.rooms[rk].members.keys().copied().collect();
                    for pid in pids {
                        self.send_to(rk, pid, msg.clone());
                    }
                }
            }
            ShardCommand::Shutdown { reply } => {
                let keys: Vec<usize> = self.rooms.iter().map(|(k, _)| k).collect();
                for rk in keys {
                    let pids: Vec<ParticipantId> = self.rooms[rk].members.keys().copied().collect();
                    for pid in pids {
                        self.remove_participant(now, rk, pid, LeaveCause::ServerShutdown);
                    }
                }
                let _ = reply.send(());
            }
            ShardCommand::Disconnected { room, participant } => {
                if let Some(&rk) = self.rooms_by_name.get(&room) {
                    self.remove_participant(now, rk, participant, LeaveCause::Disconnected);
                }
            }
        }
    }

    /// Adds a participant (creating the room). A WebSocket participant gets
    /// `joined` first; WHIP/WHEP participants have no socket, and a WHEP
    /// viewer is hidden from the room.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join(
        &mut self,
        now: Instant,
        room: &str,
        identity: &str,
        name: &str,
        kind: MemberKind,
        grants: crate::auth::Grants,
        session: Option<(SessionTx, Option<prism_signal::MsgId>)>,
        http_session: Option<String>,
    ) -> (usize, ParticipantId) {
        let (session, join_id) = match session {
            Some((s, id)) => (Some(s), id),
            None => (None, None),
        };
        let rk = match self.rooms_by_name.get(room) {
            Some(&k) => k,
            None => {
                let cfg = RoomConfig {
                    empty_timeout: self.cfg.room_empty_timeout,
                    keyframe_throttle: self.cfg.keyframe_throttle,
                    video_history: (self.cfg.video_history_packets, self.cfg.video_history_age),
                    audio_history: (self.cfg.audio_history_packets, self.cfg.audio_history_age),
                    nack_min_interval: self.cfg.nack_min_interval,
                    // The keyframe cache's packet bound; its age bound is
                    // `video_history_age` (the cache is the history).
                    ..RoomConfig::default()
                };
                let k = self.rooms.insert(RoomState {
                    core: Room::new(room, cfg, now),
                    members: HashMap::new(),
                    timer_at: None,
                });
                self.rooms_by_name.insert(room.to_owned(), k);
                self.room_count.fetch_add(1, Ordering::Relaxed);
                tracing::info!(shard = self.index, room, "room opened");
                k
            }
        };
        let r = &mut self.rooms[rk];
        let (pid, replaced) = match kind {
            MemberKind::Whep => (r.core.join_hidden(now, identity), None),
            _ => r.core.join(now, identity, name),
        };
        if let Some(old) = replaced {
            if let Some(m) = r.members.remove(&old) {
                self.forget_http_session(&m);
                let _ = m.tell(Outbound::Msg(ServerEnvelope::new(ServerMessage::Left(
                    sig::Left {
                        reason: sig::LeaveReason::Replaced,
                    },
                ))));
                let _ = m.tell(Outbound::Close);
                for key in [m.publish, m.subscribe].into_iter().flatten() {
                    self.close_peer(key);
                }
            }
            tracing::info!(room, participant = %old, "replaced by a new connection");
        }
        let r = &mut self.rooms[rk];
        let participants = r
            .core
            .participants()
            .filter(|p| p.id != pid)
            .map(|p| participant_info(&r.core, p.id))
            .collect();
        let joined = ServerMessage::Joined(sig::Joined {
            room: room.to_owned(),
            participant_id: pid.to_string(),
            identity: identity.to_owned(),
            participants,
        });
        if let Some(s) = &session {
            let _ = s.try_send(Outbound::Msg(ServerEnvelope::reply(join_id, joined)));
        }
        // The others hear of the join (and of a replaced predecessor's
        // departure) before the newcomer is a member: `joined` told it
        // everything, and its predecessor is nothing to it.
        self.process_room_events(now, rk);
        let r = &mut self.rooms[rk];
        r.members.insert(
            pid,
            Member {
                kind,
                session,
                http_session,
                publish: None,
                subscribe: None,
                grants,
                joined_at: now,
                media_connected: false,
                status: None,
                inactive_since: None,
                wishes: HashMap::new(),
                default_wish: Wish::default(),
            },
        );
        self.stats.participants_joined += 1;
        tracing::info!(room, participant = %pid, identity, kind = ?kind, "joined");
        // Its subscribe-leg offer, if the room has tracks for it (the
        // SubscriptionsChanged event above found no member yet).
        self.reconcile(now, rk, pid);
        (rk, pid)
    }

    /// A WHIP/WHEP participant is gone: its session URL stops working.
    fn forget_http_session(&self, m: &Member) {
        if let Some(id) = &m.http_session {
            self.directory.http_sessions.remove(id);
        }
    }

    fn on_signal(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        env: ClientEnvelope,
    ) -> Result<(), SignalError> {
        let Some(grants) = self.rooms[rk].members.get(&pid).map(|m| m.grants) else {
            // A message that raced the participant's removal.
            return Ok(());
        };
        let id = env.id;
        match env.msg {
            ClientMessage::Offer(o) => {
                if o.leg != Leg::Publish {
                    return Err(SignalError::new(
                        ErrorCode::WrongLeg,
                        "the server makes the offers on the subscribe leg; send an answer",
                    ));
                }
                if !grants.publish {
                    return Err(SignalError::new(
                        ErrorCode::Forbidden,
                        "your access token does not grant publish",
                    ));
                }
                let answer = self.publish_offer(now, rk, pid, &o.sdp, &o.tracks)?;
                self.send_to(
                    rk,
                    pid,
                    ServerEnvelope::reply(id, ServerMessage::Answer(answer)),
                );
                self.process_room_events(now, rk);
            }
            ClientMessage::Answer(a) => {
                if a.leg != Leg::Subscribe {
                    return Err(SignalError::new(
                        ErrorCode::WrongLeg,
                        "the server answers on the publish leg; send an offer",
                    ));
                }
                self.subscribe_answer(now, rk, pid, &a.sdp)?;
            }
            ClientMessage::Candidate(c) => self.remote_candidate(rk, pid, c)?,
            ClientMessage::Subscribe(_) if !grants.subscribe => {
                return Err(SignalError::new(
                    ErrorCode::Forbidden,
                    "your access token does not grant subscribe",
                ));
            }
            ClientMessage::Subscribe(t) => self.set_subscribed(now, rk, pid, &t.track_ids, true)?,
            ClientMessage::Unsubscribe(t) => {
                self.set_subscribed(now, rk, pid, &t.track_ids, false)?
            }
            ClientMessage::Mute(t) => self.set_muted(now, rk, pid, &t.track_id, true)?,
            ClientMessage::Unmute(t) => self.set_muted(now, rk, pid, &t.track_id, false)?,
            ClientMessage::TrackSettings(t) => self.set_track_settings(rk, pid, t)?,
            ClientMessage::Leave(_) => {
                // The cause is decided before anything goes to the socket: a
                // client that closes it right after `leave` makes the send
                // fail, and send_to would then remove it as disconnected.
                if let Some(m) = self.rooms[rk].members.get(&pid) {
                    let left = ServerMessage::Left(sig::Left {
                        reason: sig::LeaveReason::Left,
                    });
                    let _ = m.tell(Outbound::Msg(ServerEnvelope::reply(id, left)));
                    let _ = m.tell(Outbound::Close);
                }
                self.remove_participant(now, rk, pid, LeaveCause::Left);
            }
            ClientMessage::Join(_) | ClientMessage::Ping(_) => {
                // Handled by the session task.
            }
        }
        Ok(())
    }

    fn set_subscribed(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        track_ids: &[String],
        on: bool,
    ) -> Result<(), SignalError> {
        let ids = track_ids
            .iter()
            .map(|t| parse_track(t))
            .collect::<Result<Vec<_>, _>>()?;
        let core = &mut self.rooms[rk].core;
        let res = if on {
            core.subscribe(pid, &ids)
        } else {
            core.unsubscribe(pid, &ids)
        };
        res.map_err(room_error)?;
        self.process_room_events(now, rk);
        Ok(())
    }

    /// A subscriber's wish for one of its tracks, kept for the allocator
    /// (merged into the previous one: absent fields keep their value).
    fn set_track_settings(
        &mut self,
        rk: usize,
        pid: ParticipantId,
        t: sig::TrackSettings,
    ) -> Result<(), SignalError> {
        let tid = parse_track(&t.track_id)?;
        if self.rooms[rk].core.track(tid).is_none() {
            return Err(room_error(prism_core::RoomError::UnknownTrack(tid)));
        }
        let Some(m) = self.rooms[rk].members.get_mut(&pid) else {
            return Ok(());
        };
        let w = m.wishes.entry(tid).or_default();
        if let Some(q) = t.quality {
            w.quality = q;
        }
        if let Some(v) = t.max_width {
            w.max_width = v;
        }
        if let Some(v) = t.max_height {
            w.max_height = v;
        }
        if let Some(v) = t.enabled {
            w.enabled = v;
        }
        Ok(())
    }

    fn set_muted(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        track: &str,
        muted: bool,
    ) -> Result<(), SignalError> {
        let tid = parse_track(track)?;
        self.rooms[rk]
            .core
            .set_muted(pid, tid, muted)
            .map_err(room_error)?;
        self.process_room_events(now, rk);
        Ok(())
    }

    fn remote_candidate(
        &mut self,
        rk: usize,
        pid: ParticipantId,
        c: sig::Candidate,
    ) -> Result<(), SignalError> {
        let m = &self.rooms[rk].members[&pid];
        let key = match c.leg {
            Leg::Publish => m.publish,
            Leg::Subscribe => m.subscribe,
        };
        let Some(key) = key else {
            return Err(SignalError::new(
                ErrorCode::InvalidCandidate,
                format!("the {} leg has no session yet", c.leg.as_str()),
            ));
        };
        let Some(cand) = c.candidate.filter(|c| !c.candidate.is_empty()) else {
            // End of candidates: ICE-lite needs nothing more.
            return Ok(());
        };
        let init = RTCIceCandidateInit {
            candidate: cand.candidate,
            sdp_mid: cand.sdp_mid,
            sdp_mline_index: cand.sdp_mline_index,
            username_fragment: cand.username_fragment,
            ..Default::default()
        };
        let peer = &mut self.peers[key];
        peer.pc.add_remote_candidate(init).map_err(|e| {
            SignalError::new(
                ErrorCode::InvalidCandidate,
                format!("candidate refused: {e}"),
            )
        })?;
        self.mark(key);
        Ok(())
    }

    // ------------------------------------------------------------------
    // Subscribe leg: the server offers
    // ------------------------------------------------------------------

    // ------------------------------------------------------------------
    // Room events → participants
    // ------------------------------------------------------------------

    pub(super) fn process_room_events(&mut self, now: Instant, rk: usize) {
        let mut reconcile: Vec<ParticipantId> = Vec::new();
        let mut published: Vec<TrackId> = Vec::new();
        while let Some(ev) = self.rooms.get_mut(rk).and_then(|r| r.core.poll_event()) {
            let r = &self.rooms[rk];
            match ev {
                RoomEvent::ParticipantJoined(id) => {
                    let info = participant_info(&r.core, id);
                    self.broadcast(
                        rk,
                        Some(id),
                        ServerMessage::ParticipantJoined(sig::ParticipantJoined {
                            participant: info,
                        }),
                    );
                }
                RoomEvent::ParticipantLeft { id, cause } => {
                    self.broadcast(
                        rk,
                        Some(id),
                        ServerMessage::ParticipantLeft(sig::ParticipantLeft {
                            participant_id: id.to_string(),
                            reason: leave_reason(cause),
                        }),
                    );
                }
                RoomEvent::TrackPublished(t) => {
                    if let Some(track) = r.core.track(t) {
                        let owner = track.owner;
                        let info = track_info(track);
                        self.broadcast(
                            rk,
                            Some(owner),
                            ServerMessage::TrackPublished(sig::TrackPublished { track: info }),
                        );
                    }
                    published.push(t);
                }
                RoomEvent::TrackUnpublished { track, owner } => {
                    self.broadcast(
                        rk,
                        Some(owner),
                        ServerMessage::TrackUnpublished(sig::TrackUnpublished {
                            track_id: track.to_string(),
                            participant_id: owner.to_string(),
                        }),
                    );
                }
                RoomEvent::TrackMuted {
                    track,
                    owner,
                    muted,
                } => {
                    let body = sig::TrackMuteState {
                        track_id: track.to_string(),
                        participant_id: owner.to_string(),
                    };
                    let msg = if muted {
                        ServerMessage::TrackMuted(body)
                    } else {
                        ServerMessage::TrackUnmuted(body)
                    };
                    self.broadcast(rk, None, msg);
                }
                RoomEvent::SubscriptionsChanged(p) => {
                    if !reconcile.contains(&p) {
                        reconcile.push(p);
                    }
                }
            }
        }
        for p in reconcile {
            self.reconcile(now, rk, p);
        }
        for t in published {
            self.rebind_orphans(now, rk, t);
        }
        self.update_viewer_phases(now, rk);
    }

    fn broadcast(&mut self, rk: usize, except: Option<ParticipantId>, msg: ServerMessage) {
        let env = ServerEnvelope::new(msg);
        let mut slow = Vec::new();
        for (pid, m) in &self.rooms[rk].members {
            if Some(*pid) == except {
                continue;
            }
            if m.tell(Outbound::Msg(env.clone())).is_err() {
                slow.push(*pid);
            }
        }
        for pid in slow {
            self.drop_slow_session(rk, pid);
        }
    }

    pub(super) fn send_to(&mut self, rk: usize, pid: ParticipantId, env: ServerEnvelope) {
        let Some(m) = self.rooms.get(rk).and_then(|r| r.members.get(&pid)) else {
            return;
        };
        if m.tell(Outbound::Msg(env)).is_err() {
            self.drop_slow_session(rk, pid);
        }
    }

    /// A session whose inbox is full (it stopped reading) or gone is removed
    /// rather than let it hold the room back.
    fn drop_slow_session(&mut self, rk: usize, pid: ParticipantId) {
        tracing::warn!(participant = %pid, "signaling session not reading; disconnecting it");
        if let Some(m) = self.rooms[rk].members.get(&pid) {
            let _ = m.tell(Outbound::Close);
        }
        // Deferred: removing now would re-enter broadcast while iterating.
        let now = Instant::now();
        self.remove_participant(now, rk, pid, LeaveCause::Disconnected);
    }

    pub(super) fn remove_participant(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        cause: LeaveCause,
    ) {
        let Some(r) = self.rooms.get_mut(rk) else {
            return;
        };
        let Some(m) = r.members.remove(&pid) else {
            return;
        };
        if let Some(id) = &m.http_session {
            self.directory.http_sessions.remove(id);
        }
        // Removed by the server, not by its own socket: say why, then close.
        if matches!(cause, LeaveCause::Timeout | LeaveCause::ServerShutdown) {
            let _ = m.tell(Outbound::Msg(ServerEnvelope::new(ServerMessage::Left(
                sig::Left {
                    reason: leave_reason(cause),
                },
            ))));
            let _ = m.tell(Outbound::Close);
        }
        r.core.leave(now, pid, cause);
        for key in [m.publish, m.subscribe].into_iter().flatten() {
            self.close_peer(key);
        }
        tracing::info!(room = self.rooms[rk].core.name(), participant = %pid, cause = ?cause, "left");
        self.process_room_events(now, rk);
    }
}

pub(super) fn parse_track(s: &str) -> Result<TrackId, SignalError> {
    TrackId::parse(s).ok_or_else(|| {
        SignalError::new(ErrorCode::UnknownTrack, format!("`{s}` is not a track id"))
    })
}

pub(super) fn room_error(e: RoomError) -> SignalError {
    let code = match e {
        RoomError::UnknownTrack(_) | RoomError::NotOwner(_) => ErrorCode::UnknownTrack,
        _ => ErrorCode::Internal,
    };
    SignalError::new(code, e.to_string())
}

pub(super) fn source_from_wire(s: sig::TrackSource) -> Source {
    match s {
        sig::TrackSource::Camera => Source::Camera,
        sig::TrackSource::Microphone => Source::Microphone,
        sig::TrackSource::Screen => Source::Screen,
        sig::TrackSource::ScreenAudio => Source::ScreenAudio,
    }
}

pub(super) fn source_to_wire(s: Source) -> sig::TrackSource {
    match s {
        Source::Camera => sig::TrackSource::Camera,
        Source::Microphone => sig::TrackSource::Microphone,
        Source::Screen => sig::TrackSource::Screen,
        Source::ScreenAudio => sig::TrackSource::ScreenAudio,
    }
}

pub(super) fn leave_reason(c: LeaveCause) -> sig::LeaveReason {
    match c {
        LeaveCause::Left => sig::LeaveReason::Left,
        LeaveCause::Disconnected => sig::LeaveReason::Disconnected,
        LeaveCause::Timeout => sig::LeaveReason::Timeout,
        LeaveCause::Replaced => sig::LeaveReason::Replaced,
        LeaveCause::ServerShutdown => sig::LeaveReason::ServerShutdown,
    }
}

pub(super) fn track_info(t: &prism_core::Track) -> sig::TrackInfo {
    sig::TrackInfo {
        id: t.id.to_string(),
        participant_id: t.owner.to_string(),
        kind: match t.spec.kind {
            MediaKind::Audio => sig::TrackKind::Audio,
            MediaKind::Video => sig::TrackKind::Video,
        },
        source: source_to_wire(t.spec.source),
        muted: t.muted,
        codec: t.spec.codec.clone(),
        layers: layer_infos(t),
    }
}

/// A simulcast track's layers as subscribers see them (none without).
fn layer_infos(t: &prism_core::Track) -> Vec<sig::LayerInfo> {
    let sizes: Vec<(u32, u32)> = t.layer_sizes().collect();
    if sizes.len() < 2 {
        return Vec::new();
    }
    let names: &[sig::Quality] = match sizes.len() {
        2 => &[sig::Quality::Low, sig::Quality::High],
        _ => &[sig::Quality::Low, sig::Quality::Medium, sig::Quality::High],
    };
    sizes
        .iter()
        .zip(names)
        .map(|(&(width, height), &quality)| sig::LayerInfo {
            quality,
            width,
            height,
        })
        .collect()
}

pub(super) fn participant_info(room: &Room, id: ParticipantId) -> sig::ParticipantInfo {
    let p = room.participant(id);
    sig::ParticipantInfo {
        id: id.to_string(),
        identity: p.map(|p| p.identity.clone()).unwrap_or_default(),
        name: p.map(|p| p.name.clone()).unwrap_or_default(),
        tracks: room.tracks_of(id).map(track_info).collect(),
    }
}
