//! WHIP and WHEP sessions inside a shard (RFC 9725 and its WHEP sibling).
//!
//! A WHIP publisher is a room participant without a WebSocket: its offer is
//! the publish leg's offer. A WHEP viewer is a hidden participant: its
//! recvonly offer is answered with senders for the room's tracks, added
//! before the offer is applied so the engine pairs them with the offered
//! m-sections, each restricted to its publisher's codec. Neither is ever
//! renegotiated; PATCH carries trickled candidates or an ICE restart.

use std::time::Instant;

use prism_core::{LeaveCause, MediaKind, ParticipantId, TrackId};
use prism_signal::{Leg, TrackKind};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::RTCRtpTransceiverId;

use super::super::peer::HttpState;
use super::super::{sdp, viewer, HttpAnswer, HttpFailure, PatchOutcome};
use super::{MemberKind, Shard};

impl Shard {
    /// WHIP: a publisher's offer creates a participant and its publish leg.
    pub(super) fn http_publish(
        &mut self,
        now: Instant,
        room: &str,
        name: &str,
        session_id: String,
        offer: &str,
    ) -> Result<HttpAnswer, HttpFailure> {
        let sections = sdp::media_sections(offer);
        if !sections.iter().any(|s| s.sending) {
            return Err(HttpFailure::new(
                400,
                "No media",
                "the offer sends no audio or video (WHIP offers are sendonly)",
            ));
        }
        let identity = format!("whip-{session_id}");
        let (rk, pid) = self.join(
            now,
            room,
            &identity,
            name,
            MemberKind::Whip,
            crate::auth::Grants {
                publish: true,
                ..Default::default()
            },
            None,
            Some(session_id),
        );
        // Narrowed here so that the session keeps the offer the engine was
        // given: an ICE restart applies it again (publish_offer finds
        // nothing more to narrow).
        let offer = self.narrow_offer(pid, offer).into_owned();
        match self.publish_offer(now, rk, pid, &offer, &[]) {
            Ok(answer) => {
                let key = self.rooms[rk].members[&pid]
                    .publish
                    .expect("publish_offer created it");
                self.peers[key].http = Some(HttpState {
                    offer,
                    generation: 0,
                });
                self.process_room_events(now, rk);
                Ok(HttpAnswer {
                    participant: pid,
                    sdp: answer.sdp,
                    etag: self.etag(key),
                    status: None,
                })
            }
            Err(e) => {
                self.remove_participant(now, rk, pid, LeaveCause::Left);
                Err(e.into())
            }
        }
    }

    /// WHEP: a viewer's recvonly offer is answered with the room's tracks (or
    /// one participant's): per offered audio/video m-section, the next track
    /// of that kind.
    pub(super) fn http_view(
        &mut self,
        now: Instant,
        room: &str,
        source: Option<&str>,
        want: super::super::ViewWant,
        session_id: String,
        offer: &str,
    ) -> Result<HttpAnswer, HttpFailure> {
        let sections = sdp::media_sections(offer);
        if !sections.iter().any(|s| s.receiving) {
            return Err(HttpFailure::new(
                400,
                "No media",
                "the offer receives no audio or video (WHEP offers are recvonly)",
            ));
        }
        let Some(&rk) = self.rooms_by_name.get(room) else {
            return Err(no_broadcast(room));
        };
        let source = match source {
            None => None,
            Some(s) => Some(ParticipantId::parse(s).ok_or_else(|| {
                HttpFailure::new(404, "Not found", format!("`{s}` is not a participant id"))
            })?),
        };
        // The tracks on offer: visible publishers' (or the chosen one's).
        let mut available: Vec<(TrackId, ParticipantId, MediaKind)> = self.rooms[rk]
            .core
            .tracks()
            .filter(|t| source.is_none_or(|s| t.owner == s))
            .map(|t| (t.id, t.owner, t.spec.kind))
            .collect();
        if available.is_empty() {
            return Err(no_broadcast(room));
        }
        let identity = format!("whep-{session_id}");
        let (rk, pid) = self.join(
            now,
            room,
            &identity,
            "",
            MemberKind::Whep,
            crate::auth::Grants {
                subscribe: true,
                ..Default::default()
            },
            None,
            Some(session_id),
        );
        if let Some(m) = self.rooms[rk].members.get_mut(&pid) {
            m.default_wish = super::Wish {
                quality: want.quality.unwrap_or(prism_signal::Quality::High),
                max_width: want.max_width,
                max_height: want.max_height,
                enabled: true,
            };
        }
        match self.answer_viewer(now, rk, pid, offer, &sections, &mut available) {
            Ok(answer) => Ok(answer),
            Err(e) => {
                self.remove_participant(now, rk, pid, LeaveCause::Left);
                Err(e)
            }
        }
    }

    fn answer_viewer(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        offer: &str,
        sections: &[sdp::MediaSection],
        available: &mut Vec<(TrackId, ParticipantId, MediaKind)>,
    ) -> Result<HttpAnswer, HttpFailure> {
        let desc = RTCSessionDescription::offer(offer.to_owned())
            .map_err(|e| HttpFailure::new(400, "Invalid SDP", format!("offer: {e}")))?;
        let key = self.new_peer(now, rk, pid, Leg::Subscribe)?;
        if let Some(m) = self.rooms[rk].members.get_mut(&pid) {
            m.subscribe = Some(key);
        }
        // Senders first, so applying the offer pairs them with its sections.
        let mut added = 0;
        for s in sections.iter().filter(|s| s.receiving) {
            let want = match s.kind {
                Some(TrackKind::Audio) => MediaKind::Audio,
                _ => MediaKind::Video,
            };
            let Some(i) = available.iter().position(|(_, _, k)| *k == want) else {
                continue;
            };
            let (track, owner, _) = available.remove(i);
            if self.add_sender(rk, key, pid, track, owner, true)?.is_some() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(HttpFailure::new(
                404,
                "No matching broadcast",
                "the room publishes no track of the kinds the offer receives",
            ));
        }
        let answer_sdp = self.peers[key]
            .answer(now, desc, sections.len())
            .map_err(|e| HttpFailure::new(400, "Invalid SDP", e))?;
        // Each sender's m-section, for MID stamping.
        let peer = &mut self.peers[key];
        for slot in peer.senders.iter_mut().flatten() {
            let tid: RTCRtpTransceiverId = slot.sender.into();
            if let Some(t) = peer.pc.rtp_transceiver(tid) {
                slot.mid = t.mid().clone().map(bytes::Bytes::from);
            }
        }
        peer.http = Some(HttpState {
            offer: offer.to_owned(),
            generation: 0,
        });
        self.settle_senders(now, rk, pid, key);
        self.mark(key);
        // Its tracks are live: it starts active (viewer counts follow within
        // a second).
        let viewers = self.rooms[rk]
            .members
            .values()
            .filter(|m| m.kind == MemberKind::Whep)
            .count() as u32;
        let (tx, rx) = viewer::channel(viewer::Status {
            phase: viewer::Phase::Active,
            viewers,
        });
        if let Some(m) = self.rooms[rk].members.get_mut(&pid) {
            m.status = Some(tx);
        }
        Ok(HttpAnswer {
            participant: pid,
            sdp: sdp::with_candidates(&answer_sdp, &self.candidate_lines()),
            etag: self.etag(key),
            status: Some(rx),
        })
    }

    /// The ETag of a WHIP/WHEP peer's ICE session: changes with each restart.
    fn etag(&self, key: usize) -> String {
        let p = &self.peers[key];
        let generation = p.http.as_ref().map_or(0, |h| h.generation);
        format!("\"{}-{generation}\"", p.ufrag)
    }

    /// PATCH: trickled candidates (204) or, when the fragment carries new ICE
    /// credentials, an ICE restart (200 with the server's new ones). RFC 9725
    /// §4.4: a restart needs `If-Match` (`*` or the current ETag: 428 when
    /// missing, 412 when stale); a failed restart leaves the session as it was.
    pub(super) fn http_patch(
        &mut self,
        now: Instant,
        room: &str,
        pid: ParticipantId,
        fragment: &str,
        if_match: Option<&str>,
    ) -> Result<PatchOutcome, HttpFailure> {
        let gone = || HttpFailure::new(404, "Not found", "no such session");
        let rk = *self.rooms_by_name.get(room).ok_or_else(gone)?;
        let m = self.rooms[rk].members.get(&pid).ok_or_else(gone)?;
        let key = match m.kind {
            MemberKind::Whip => m.publish,
            MemberKind::Whep => m.subscribe,
            MemberKind::Socket => None,
        }
        .ok_or_else(gone)?;
        let etag = self.etag(key);
        let matches = |v: &str| v.trim() == "*" || v.trim() == etag;
        let frag = sdp::parse_fragment(fragment);
        let offer = self.peers[key]
            .http
            .as_ref()
            .map(|h| h.offer.clone())
            .ok_or_else(gone)?;
        let restart = match (&frag.ufrag, &frag.pwd) {
            (Some(u), Some(p)) => {
                sdp::ice_credentials(&offer).is_none_or(|(ou, op)| &ou != u || &op != p)
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(HttpFailure::new(
                    400,
                    "Invalid fragment",
                    "an ICE restart needs both a=ice-ufrag and a=ice-pwd",
                ))
            }
            (None, None) => false,
        };
        if restart {
            match if_match {
                None => {
                    return Err(HttpFailure::new(
                        428,
                        "Precondition required",
                        "an ICE restart needs If-Match: \"*\" (or the session's ETag)",
                    ))
                }
                Some(v) if !matches(v) => {
                    return Err(HttpFailure::new(
                        412,
                        "Precondition failed",
                        format!("If-Match {v} does not match the ICE session {etag}"),
                    ))
                }
                Some(_) => {}
            }
            let (ufrag, pwd) = (frag.ufrag.unwrap_or_default(), frag.pwd.unwrap_or_default());
            return self.restart_ice(now, key, &offer, &ufrag, &pwd);
        }
        if let Some(v) = if_match {
            if !matches(v) {
                return Err(HttpFailure::new(
                    412,
                    "Precondition failed",
                    format!("If-Match {v} does not match the ICE session {etag}"),
                ));
            }
        }
        for (mid, candidate) in frag.candidates {
            let init = RTCIceCandidateInit {
                candidate,
                sdp_mid: mid,
                ..Default::default()
            };
            self.peers[key].pc.add_remote_candidate(init).map_err(|e| {
                HttpFailure::new(400, "Invalid candidate", format!("candidate refused: {e}"))
            })?;
        }
        self.mark(key);
        Ok(PatchOutcome::Trickled)
    }

    /// Applies the session's offer again with the client's new credentials
    /// and answers with the server's. On any error the session is unchanged.
    fn restart_ice(
        &mut self,
        now: Instant,
        key: usize,
        offer: &str,
        ufrag: &str,
        pwd: &str,
    ) -> Result<PatchOutcome, HttpFailure> {
        let mut new_offer = sdp::with_ice_credentials(offer, ufrag, pwd);
        if self.peers[key].leg == Leg::Publish {
            // A publish offer is always applied narrowed. The stored one was
            // narrowed at POST, so this finds nothing to do and counts nothing.
            let pid = self.peers[key].participant;
            new_offer = self.narrow_offer(pid, &new_offer).into_owned();
        }
        let desc = RTCSessionDescription::offer(new_offer.clone())
            .map_err(|e| HttpFailure::new(400, "Invalid fragment", format!("restart: {e}")))?;
        let pc = &mut self.peers[key].pc;
        pc.set_remote_description(now, desc)
            .map_err(|e| HttpFailure::new(400, "ICE restart failed", format!("{e}")))?;
        let answer = pc
            .create_answer(None)
            .map_err(|e| HttpFailure::new(500, "ICE restart failed", format!("{e}")))?;
        pc.set_local_description(now, answer)
            .map_err(|e| HttpFailure::new(500, "ICE restart failed", format!("{e}")))?;
        let local = pc.local_description().map(|d| d.sdp).unwrap_or_default();
        let (local_ufrag, local_pwd) = sdp::ice_credentials(&local)
            .ok_or_else(|| HttpFailure::new(500, "ICE restart failed", "no local credentials"))?;
        // Binding requests now name the new local ufrag and are signed with
        // the new password; the shard checks them with it from now on.
        let ice_pwd = super::super::stun::IcePassword::new(local_pwd.clone())
            .map_err(|e| HttpFailure::new(500, "ICE restart failed", format!("{e}")))?;
        self.peers[key].ice_pwd = ice_pwd;
        let old_ufrag = std::mem::replace(&mut self.peers[key].ufrag, local_ufrag.clone());
        if old_ufrag != local_ufrag {
            self.by_ufrag.remove(&old_ufrag);
            self.by_ufrag.insert(local_ufrag.clone(), key);
        }
        if let Some(h) = self.peers[key].http.as_mut() {
            h.offer = new_offer;
            h.generation += 1;
        }
        self.mark(key);
        let mut fragment =
            format!("a=ice-lite\r\na=ice-ufrag:{local_ufrag}\r\na=ice-pwd:{local_pwd}\r\n");
        for c in self.candidate_lines() {
            fragment.push_str("a=");
            fragment.push_str(&c);
            fragment.push_str("\r\n");
        }
        fragment.push_str("a=end-of-candidates\r\n");
        tracing::info!(participant = %self.peers[key].participant, "ICE restarted");
        Ok(PatchOutcome::Restarted {
            fragment,
            etag: self.etag(key),
        })
    }

    /// DELETE: the participant leaves at once. False if there was none.
    pub(super) fn http_delete(&mut self, now: Instant, room: &str, pid: ParticipantId) -> bool {
        let Some(&rk) = self.rooms_by_name.get(room) else {
            return false;
        };
        if !self.rooms[rk].members.contains_key(&pid) {
            return false;
        }
        self.remove_participant(now, rk, pid, LeaveCause::Left);
        true
    }
}

fn no_broadcast(room: &str) -> HttpFailure {
    HttpFailure::new(
        404,
        "No broadcast",
        format!("room `{room}` has no published tracks to watch yet; retry when it does"),
    )
}
