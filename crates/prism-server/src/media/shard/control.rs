//! The control side of a shard: commands from sessions, the publish and
//! subscribe negotiations, and room events turned into signaling messages.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use prism_core::{
    ExtensionMap, LeaveCause, MediaKind, ParticipantId, PtMap, Room, RoomConfig, RoomError,
    RoomEvent, SinkParams, Source, TrackId, TrackSpec,
};
use prism_signal::{
    self as sig, ClientEnvelope, ClientMessage, ErrorCode, Leg, ServerEnvelope, ServerMessage,
    SignalError,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpTransceiverDirection, RTCRtpTransceiverId};

use super::super::peer::{PubTrack, SenderSlot};
use super::super::{sdp, Outbound, SessionTx, ShardCommand};
use super::{pack_sink, Member, MemberKind, RoomState, Shard};
use crate::media::peer::RtxInfo;
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
                let _ =
                    reply.send(self.http_view(now, &room, source.as_deref(), session_id, &offer));
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
            ClientMessage::Leave(_) => {
                self.send_to(
                    rk,
                    pid,
                    ServerEnvelope::reply(
                        id,
                        ServerMessage::Left(sig::Left {
                            reason: sig::LeaveReason::Left,
                        }),
                    ),
                );
                if let Some(m) = self.rooms[rk].members.get(&pid) {
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

    /// Applies a client's publish-leg offer and returns the answer.
    pub(super) fn publish_offer(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        offer_sdp: &str,
        decls: &[sig::TrackDecl],
    ) -> Result<sig::ServerAnswer, SignalError> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| SignalError::new(ErrorCode::InvalidSdp, format!("offer: {e}")))?;
        let sections = sdp::media_sections(offer_sdp);
        if sections.is_empty() {
            return Err(SignalError::new(
                ErrorCode::InvalidSdp,
                "the offer has no m-section with a mid",
            ));
        }
        let max = self.cfg.max_tracks_per_participant;
        if sections.len() > max {
            self.directory
                .limit_hits
                .with_label_values(&["tracks_per_participant"])
                .inc();
            return Err(SignalError::new(
                ErrorCode::LimitExceeded,
                format!("at most {max} tracks (m-sections) per participant"),
            ));
        }
        let existing = self.rooms[rk].members[&pid].publish;
        let (key, fresh) = match existing {
            Some(k) => (k, false),
            None => (self.new_peer(now, rk, pid, Leg::Publish)?, true),
        };
        let result = self.peers[key]
            .answer(now, offer, sections.len())
            .map_err(|e| SignalError::new(ErrorCode::InvalidSdp, e));
        let answer_sdp = match result {
            Ok(s) => s,
            Err(e) => {
                if fresh {
                    self.close_peer(key);
                }
                return Err(e);
            }
        };
        if fresh {
            if let Some(m) = self.rooms[rk].members.get_mut(&pid) {
                m.publish = Some(key);
            }
        }
        let answer_sdp = sdp::with_candidates(&answer_sdp, &self.candidate_lines());

        // Publish what the client now sends; unpublish what it stopped sending.
        let peer = &mut self.peers[key];
        let mut mids_by_transceiver: Vec<(RTCRtpTransceiverId, String)> = Vec::new();
        let ids: Vec<RTCRtpTransceiverId> = peer.pc.get_transceivers().collect();
        for tid in ids {
            if let Some(t) = peer.pc.rtp_transceiver(tid) {
                if let Some(mid) = t.mid().clone() {
                    mids_by_transceiver.push((tid, mid));
                }
            }
        }
        let mut tracks_reply = Vec::new();
        let mut still_sending = Vec::new();
        for s in sections.iter().filter(|s| s.sending) {
            still_sending.push(s.mid.clone());
            let peer = &mut self.peers[key];
            if let Some(t) = peer.pub_tracks.iter().find(|t| t.mid == s.mid) {
                tracks_reply.push(sig::MidTrack {
                    mid: s.mid.clone(),
                    track_id: t.track.to_string(),
                });
                continue;
            }
            let Some(&(tid, _)) = mids_by_transceiver.iter().find(|(_, m)| *m == s.mid) else {
                continue;
            };
            let rid = RTCRtpReceiverId::from(tid);
            let Some(mut receiver) = peer.pc.rtp_receiver(rid) else {
                continue;
            };
            let params = receiver.get_parameters().rtp_parameters.clone();
            let Some(primary) = params.codecs.first() else {
                continue; // nothing we can receive on this section
            };
            let kind = match s.kind {
                Some(sig::TrackKind::Audio) => MediaKind::Audio,
                _ => MediaKind::Video,
            };
            let source = decls
                .iter()
                .find(|d| d.mid == s.mid)
                .map(|d| source_from_wire(d.source))
                .unwrap_or(if kind == MediaKind::Audio {
                    Source::Microphone
                } else {
                    Source::Camera
                });
            let spec = TrackSpec {
                kind,
                source,
                mid: s.mid.clone(),
                codec: primary.rtp_codec.mime_type.clone(),
                clock_rate: primary.rtp_codec.clock_rate,
            };
            let track = self.rooms[rk].core.publish(pid, spec).map_err(room_error)?;
            let peer = &mut self.peers[key];
            peer.pub_tracks.push(PubTrack {
                track,
                mid: s.mid.clone(),
                receiver: rid,
                ssrcs: Vec::new(),
                codecs: params.codecs.clone(),
                extensions: params
                    .header_extensions
                    .iter()
                    .map(|h| (h.uri.clone(), h.id))
                    .collect(),
            });
            tracing::info!(participant = %pid, track = %track, mid = %s.mid, codec = %params.codecs[0].rtp_codec.mime_type, "published");
            tracks_reply.push(sig::MidTrack {
                mid: s.mid.clone(),
                track_id: track.to_string(),
            });
        }
        let peer = &mut self.peers[key];
        let gone: Vec<TrackId> = peer
            .pub_tracks
            .iter()
            .filter(|t| !still_sending.contains(&t.mid))
            .map(|t| t.track)
            .collect();
        peer.pub_tracks.retain(|t| still_sending.contains(&t.mid));
        for t in gone {
            let _ = self.rooms[rk].core.unpublish(t);
        }
        self.mark(key);
        Ok(sig::ServerAnswer {
            leg: Leg::Publish,
            sdp: answer_sdp,
            tracks: tracks_reply,
        })
    }

    // ------------------------------------------------------------------
    // Subscribe leg: the server offers
    // ------------------------------------------------------------------

    /// Makes the participant's subscribe leg carry exactly the tracks it wants,
    /// renegotiating if that changed. One offer is in flight at a time; a
    /// change during it is picked up when the answer arrives.
    fn reconcile(&mut self, now: Instant, rk: usize, pid: ParticipantId) {
        if let Err(e) = self.try_reconcile(now, rk, pid) {
            tracing::warn!(participant = %pid, "subscribe leg negotiation failed: {e}");
            self.send_to(rk, pid, e.to_message());
        }
    }

    fn try_reconcile(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
    ) -> Result<(), SignalError> {
        let Some(member) = self.rooms[rk].members.get(&pid) else {
            return Ok(());
        };
        // Only WebSocket participants can be offered a new subscribe leg:
        // WHIP publishers receive nothing, WHEP viewers keep their one offer.
        if member.kind != MemberKind::Socket || !member.grants.subscribe {
            return Ok(());
        }
        let wanted: Vec<(TrackId, ParticipantId)> = self.rooms[rk]
            .core
            .wanted_tracks(pid)
            .map(|t| (t.id, t.owner))
            .collect();
        let key = match member.subscribe {
            Some(k) => k,
            None => {
                if wanted.is_empty() {
                    return Ok(());
                }
                let k = self.new_peer(now, rk, pid, Leg::Subscribe)?;
                if let Some(m) = self.rooms[rk].members.get_mut(&pid) {
                    m.subscribe = Some(k);
                }
                k
            }
        };
        if self.peers[key].offer_pending {
            self.peers[key].renegotiate = true;
            return Ok(());
        }
        let mut changed = false;
        // Remove senders for tracks no longer wanted.
        for slot in 0..self.peers[key].senders.len() {
            let Some(s) = &self.peers[key].senders[slot] else {
                continue;
            };
            if wanted.iter().any(|(t, _)| *t == s.track) {
                continue;
            }
            let (track, sender) = (s.track, s.sender);
            let _ = self.peers[key].pc.remove_track(sender);
            self.peers[key].senders[slot] = None;
            self.rooms[rk].core.detach(track, pid);
            changed = true;
        }
        // Add senders for newly wanted tracks.
        for (track, owner) in wanted {
            if self.peers[key]
                .senders
                .iter()
                .flatten()
                .any(|s| s.track == track)
            {
                continue;
            }
            if self
                .add_sender(rk, key, pid, track, owner, false)?
                .is_some()
            {
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let peer = &mut self.peers[key];
        let offer = peer
            .pc
            .create_offer(None)
            .map_err(|e| SignalError::new(ErrorCode::Internal, format!("create_offer: {e}")))?;
        peer.pc
            .set_local_description(now, offer)
            .map_err(|e| SignalError::new(ErrorCode::Internal, format!("set offer: {e}")))?;
        let sdp_text = peer
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| SignalError::new(ErrorCode::Internal, "no local description"))?;
        let mut tracks = Vec::new();
        for slot in peer.senders.iter_mut().flatten() {
            let tid: RTCRtpTransceiverId = slot.sender.into();
            if let Some(t) = peer.pc.rtp_transceiver(tid) {
                if let Some(mid) = t.mid().clone() {
                    slot.mid = Some(Bytes::from(mid.clone()));
                    tracks.push(sig::MidTrack {
                        mid,
                        track_id: slot.track.to_string(),
                    });
                }
            }
        }
        peer.offer_pending = true;
        peer.renegotiate = false;
        let sdp_text = sdp::with_candidates(&sdp_text, &self.candidate_lines());
        self.mark(key);
        self.send_to(
            rk,
            pid,
            ServerEnvelope::new(ServerMessage::Offer(sig::ServerOffer {
                leg: Leg::Subscribe,
                sdp: sdp_text,
                tracks,
            })),
        );
        Ok(())
    }

    /// Adds a sender for `track` (published by `owner`) to the subscribe-type
    /// peer `key`, attached paused until its negotiation settles. `None`: the
    /// publisher's codec is not known (its publish leg is gone).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_sender(
        &mut self,
        rk: usize,
        key: usize,
        pid: ParticipantId,
        track: TrackId,
        owner: ParticipantId,
        pin_codec: bool,
    ) -> Result<Option<usize>, SignalError> {
        let Some(codec) = self.publisher_codec(rk, owner, track) else {
            return Ok(None);
        };
        let kind = if codec.mime_type.to_ascii_lowercase().starts_with("audio") {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let ssrc = rand::random::<u32>();
        // Video gets an RTX stream for retransmissions (used if the
        // subscriber negotiates RTX; the engine drops it otherwise).
        let rtx = (kind == RtpCodecKind::Video).then(|| RTCRtpRtxParameters {
            ssrc: rand::random::<u32>(),
        });
        let make_track = |codec: Option<&RTCRtpCodec>| {
            MediaStreamTrack::new(
                owner.to_string(),
                track.to_string(),
                track.to_string(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        rtx: rtx.clone(),
                        ..Default::default()
                    },
                    codec: codec.cloned().unwrap_or_default(),
                    ..Default::default()
                }],
            )
        };
        let sender = if pin_codec {
            // Answering (WHEP): the codec on the encoding becomes the
            // m-section's codec preferences, so the answer accepts only
            // the publisher's codec, not everything the viewer offered.
            self.peers[key]
                .pc
                .add_track(make_track(Some(&codec)))
                .map_err(|e| SignalError::new(ErrorCode::Internal, format!("add_track: {e}")))?
        } else {
            // Offering (subscribe leg): added with no codec on the
            // encoding, since a codec there becomes the m-section's codec
            // preferences, and the engine keeps only the codecs its first
            // negotiation settled, so a track of another codec added later
            // could never be negotiated. Every section offers all codecs;
            // the sink's payload-type map picks the publisher's.
            let sender = self.peers[key]
                .pc
                .add_track(make_track(None))
                .map_err(|e| SignalError::new(ErrorCode::Internal, format!("add_track: {e}")))?;
            // The server only sends on a subscribe leg: offer the section
            // `sendonly` (the engine's addTrack makes it `sendrecv`), so a
            // removed track's section goes `inactive`, as documented.
            let tid: RTCRtpTransceiverId = sender.into();
            if let Some(mut t) = self.peers[key].pc.rtp_transceiver(tid) {
                t.set_direction(RTCRtpTransceiverDirection::Sendonly);
            }
            // Then the encoding names the codec after all: the engine
            // binds a sender's stream to its interceptors (TWCC sequence
            // numbers, sender reports) only for an encoding whose codec it
            // can match. replace_track changes no codec preferences.
            if let Some(mut s) = self.peers[key].pc.rtp_sender(sender) {
                s.replace_track(make_track(Some(&codec))).map_err(|e| {
                    SignalError::new(ErrorCode::Internal, format!("replace_track: {e}"))
                })?;
            }
            sender
        };
        let peer = &mut self.peers[key];
        let slot = match peer.senders.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                peer.senders.push(None);
                peer.senders.len() - 1
            }
        };
        peer.senders[slot] = Some(SenderSlot {
            track,
            sender,
            ssrc,
            codec,
            mid: None,
            mid_ext_id: None,
            params: None,
            rtx: None,
            rtx_seq: rand::random(),
        });
        self.rooms[rk]
            .core
            .attach(track, pid, pack_sink(key, slot), None)
            .map_err(room_error)?;
        Ok(Some(slot))
    }

    fn publisher_codec(
        &self,
        rk: usize,
        owner: ParticipantId,
        track: TrackId,
    ) -> Option<rtc::rtp_transceiver::rtp_sender::RTCRtpCodec> {
        let key = self.rooms[rk].members.get(&owner)?.publish?;
        let pt = self
            .peers
            .get(key)?
            .pub_tracks
            .iter()
            .find(|t| t.track == track)?;
        pt.codecs.first().map(|c| c.rtp_codec.clone())
    }

    fn subscribe_answer(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        answer_sdp: &str,
    ) -> Result<(), SignalError> {
        let key = self.rooms[rk].members[&pid].subscribe;
        let Some(key) = key.filter(|k| self.peers.get(*k).is_some_and(|p| p.offer_pending)) else {
            return Err(SignalError::new(
                ErrorCode::NoOfferPending,
                "no subscribe-leg offer is waiting for an answer",
            ));
        };
        let answer = RTCSessionDescription::answer(answer_sdp.to_owned())
            .map_err(|e| SignalError::new(ErrorCode::InvalidSdp, format!("answer: {e}")))?;
        self.peers[key]
            .pc
            .set_remote_description(now, answer)
            .map_err(|e| SignalError::new(ErrorCode::InvalidSdp, format!("answer: {e}")))?;
        self.peers[key].offer_pending = false;
        // Now the negotiated payload types and extension ids are known: give
        // every sender's forwarder its parameters.
        self.settle_senders(now, rk, pid, key);
        self.mark(key);
        if self.peers[key].renegotiate {
            self.reconcile(now, rk, pid);
        }
        Ok(())
    }

    /// After a subscribe-leg negotiation (the client's answer, or our answer
    /// to a WHEP offer): read what each sender negotiated (payload types,
    /// extension ids, RTX) and give its forwarder the parameters; attach now
    /// if the leg is already connected, else when it connects.
    pub(super) fn settle_senders(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        key: usize,
    ) {
        let slots: Vec<(usize, TrackId)> = self.peers[key]
            .senders
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.track)))
            .collect();
        for (slot, track) in slots {
            let Some(owner) = self.rooms[rk].core.track(track).map(|t| t.owner) else {
                continue;
            };
            let Some(pub_key) = self.rooms[rk].members.get(&owner).and_then(|m| m.publish) else {
                continue;
            };
            let Some((pub_codecs, pub_exts)) = self.peers.get(pub_key).and_then(|p| {
                p.pub_tracks
                    .iter()
                    .find(|t| t.track == track)
                    .map(|t| (t.codecs.clone(), t.extensions.clone()))
            }) else {
                continue;
            };
            let peer = &mut self.peers[key];
            let Some(s) = peer.senders[slot].as_mut() else {
                continue;
            };
            let (sender_id, ssrc) = (s.sender, s.ssrc);
            let Some(mut sender) = peer.pc.rtp_sender(sender_id) else {
                continue;
            };
            let send_params = sender.get_parameters().clone();
            let params = send_params.rtp_parameters.clone();
            // RTX negotiated: the RTX SSRC survived negotiation, and each
            // media payload type has an `apt=` RTX codec.
            let rtx = send_params
                .encodings
                .first()
                .and_then(|e| e.rtp_coding_parameters.rtx.as_ref())
                .map(|r| RtxInfo {
                    ssrc: r.ssrc,
                    payload_types: params
                        .codecs
                        .iter()
                        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx"))
                        .filter_map(|c| {
                            let apt = c
                                .rtp_codec
                                .sdp_fmtp_line
                                .strip_prefix("apt=")?
                                .parse()
                                .ok()?;
                            Some((apt, c.payload_type))
                        })
                        .collect(),
                })
                .filter(|r| !r.payload_types.is_empty());
            // Each publisher codec (RTX aside: retransmissions are the
            // server's own) to the subscriber's payload type for it: same
            // mime and fmtp, else the same mime.
            let maps = pub_codecs
                .iter()
                .filter(|pc| !pc.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx"))
                .filter_map(|pc| {
                    let to = params
                        .codecs
                        .iter()
                        .find(|c| {
                            c.rtp_codec
                                .mime_type
                                .eq_ignore_ascii_case(&pc.rtp_codec.mime_type)
                                && c.rtp_codec.sdp_fmtp_line == pc.rtp_codec.sdp_fmtp_line
                        })
                        .or_else(|| {
                            params.codecs.iter().find(|c| {
                                c.rtp_codec
                                    .mime_type
                                    .eq_ignore_ascii_case(&pc.rtp_codec.mime_type)
                            })
                        })?;
                    Some(PtMap {
                        from: pc.payload_type,
                        to: to.payload_type,
                    })
                });
            let (payload_types, overflow) = prism_core::payload_type_table(maps);
            let n = payload_types.iter().flatten().count();
            if overflow > 0 {
                tracing::warn!(participant = %pid, track = %track, mapped = n, overflow,
                    "publisher negotiated more codecs than a subscriber can be mapped; packets of the others count as unknown_payload_type");
            }
            let extensions = ExtensionMap::build(
                pub_exts.iter().map(|(u, id)| (u.as_str(), *id)),
                params
                    .header_extensions
                    .iter()
                    .map(|h| (h.uri.as_str(), h.id)),
            );
            let sink = SinkParams {
                ssrc,
                payload_types,
                extensions,
            };
            if n == 0 {
                tracing::warn!(participant = %pid, track = %track, "subscriber negotiated none of the publisher's codecs");
            }
            if let Some(s) = peer.senders[slot].as_mut() {
                s.mid_ext_id = sink.extensions.mid_id;
                s.params = Some(sink.clone());
                s.rtx = rtx;
            }
            // Until DTLS is up nothing can be delivered: the forwarder stays
            // paused (and so still waits for its keyframe) until the leg
            // connects; see `attach_connected_senders`.
            if peer.connected {
                self.attach_sink(now, rk, track, pid, key, slot, sink);
            }
        }
    }

    // ------------------------------------------------------------------
    // Room events → participants
    // ------------------------------------------------------------------

    pub(super) fn process_room_events(&mut self, now: Instant, rk: usize) {
        let mut reconcile: Vec<ParticipantId> = Vec::new();
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

    fn send_to(&mut self, rk: usize, pid: ParticipantId, env: ServerEnvelope) {
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

fn parse_track(s: &str) -> Result<TrackId, SignalError> {
    TrackId::parse(s).ok_or_else(|| {
        SignalError::new(ErrorCode::UnknownTrack, format!("`{s}` is not a track id"))
    })
}

fn room_error(e: RoomError) -> SignalError {
    let code = match e {
        RoomError::UnknownTrack(_) | RoomError::NotOwner(_) => ErrorCode::UnknownTrack,
        _ => ErrorCode::Internal,
    };
    SignalError::new(code, e.to_string())
}

fn source_from_wire(s: sig::TrackSource) -> Source {
    match s {
        sig::TrackSource::Camera => Source::Camera,
        sig::TrackSource::Microphone => Source::Microphone,
        sig::TrackSource::Screen => Source::Screen,
        sig::TrackSource::ScreenAudio => Source::ScreenAudio,
    }
}

fn source_to_wire(s: Source) -> sig::TrackSource {
    match s {
        Source::Camera => sig::TrackSource::Camera,
        Source::Microphone => sig::TrackSource::Microphone,
        Source::Screen => sig::TrackSource::Screen,
        Source::ScreenAudio => sig::TrackSource::ScreenAudio,
    }
}

fn leave_reason(c: LeaveCause) -> sig::LeaveReason {
    match c {
        LeaveCause::Left => sig::LeaveReason::Left,
        LeaveCause::Disconnected => sig::LeaveReason::Disconnected,
        LeaveCause::Timeout => sig::LeaveReason::Timeout,
        LeaveCause::Replaced => sig::LeaveReason::Replaced,
        LeaveCause::ServerShutdown => sig::LeaveReason::ServerShutdown,
    }
}

fn track_info(t: &prism_core::Track) -> sig::TrackInfo {
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
    }
}

fn participant_info(room: &Room, id: ParticipantId) -> sig::ParticipantInfo {
    let p = room.participant(id);
    sig::ParticipantInfo {
        id: id.to_string(),
        identity: p.map(|p| p.identity.clone()).unwrap_or_default(),
        name: p.map(|p| p.name.clone()).unwrap_or_default(),
        tracks: room.tracks_of(id).map(track_info).collect(),
    }
}
