//! A participant's two negotiations: the publish leg (the client offers,
//! the shard answers; each sending m-section becomes a track) and the
//! subscribe leg (the shard offers whenever the tracks a participant should
//! receive change, one offer in flight at a time; senders are attached to
//! the room's forwarders once the answer settles what was negotiated).

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use prism_core::{
    ExtensionMap, MediaKind, ParticipantId, PtMap, SinkParams, Source, TrackId, TrackSpec,
};
use prism_signal::{self as sig, ErrorCode, Leg, ServerEnvelope, ServerMessage, SignalError};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpTransceiverDirection, RTCRtpTransceiverId};

use super::super::peer::{PubTrack, SenderSlot};
use super::super::{sdp, simulcast};
use super::control::{room_error, source_from_wire};
use super::{pack_sink, MemberKind, Shard};
use crate::media::peer::RtxInfo;

impl Shard {
    /// The publish offer the engine is given: simulcast cut to one encoding
    /// ([`sdp::narrow_simulcast`]) until Prism forwards layers. Logged once
    /// per negotiation and counted per m-section; an offer narrowed before
    /// (a WHIP session's, applied again on an ICE restart) is unchanged and
    /// not counted again.
    pub(super) fn narrow_offer<'a>(
        &mut self,
        pid: ParticipantId,
        offer_sdp: &'a str,
    ) -> Cow<'a, str> {
        // The AV1 dependency descriptor only where AV1 is the codec
        // (`sdp_dd`): elsewhere Chromium would move VP8's temporal layers
        // out of the payload descriptor Prism reads them from.
        let offer_sdp: Cow<'a, str> =
            match super::super::sdp_dd::keep_dependency_descriptor_for_av1(offer_sdp) {
                Some(s) => Cow::Owned(s),
                None => Cow::Borrowed(offer_sdp),
            };
        let Some(n) = sdp::narrow_simulcast(&offer_sdp, self.cfg.simulcast) else {
            return offer_sdp;
        };
        if !n.sections.is_empty() {
            for s in &n.sections {
                self.stats.simulcast_narrowed.inc(s.form);
            }
            let what: Vec<String> = n.sections.iter().map(ToString::to_string).collect();
            tracing::info!(
                participant = %pid,
                sections = %what.join("; "),
                "simulcast offer narrowed to one encoding"
            );
        }
        Cow::Owned(n.sdp)
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
        let offer_sdp = self.narrow_offer(pid, offer_sdp);
        let offer_sdp = offer_sdp.as_ref();
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
            // Simulcast: the encodings the engine accepted (`a=rid`), which
            // become the track's layers, lowest first.
            let offered_rids: Vec<String> = receiver
                .track()
                .codings()
                .iter()
                .map(|c| c.rtp_coding_parameters.rid.clone())
                .filter(|r| !r.is_empty())
                .collect();
            let declared = decls
                .iter()
                .find(|d| d.mid == s.mid)
                .map_or(&[][..], |d| &d.layers[..]);
            let layers = if offered_rids.len() > 1 && kind == MediaKind::Video {
                simulcast::order_layers(&offered_rids, declared, prism_core::MAX_SPATIAL_LAYERS)
            } else {
                Vec::new()
            };
            let track = self.rooms[rk].core.publish(pid, spec).map_err(room_error)?;
            // AV1 SVC: each packet's layers are in the dependency descriptor.
            let dd_id = params
                .header_extensions
                .iter()
                .find(|h| h.uri == prism_core::DEPENDENCY_DESCRIPTOR_URI)
                .and_then(|h| u8::try_from(h.id).ok());
            self.rooms[rk]
                .core
                .set_dependency_descriptor_id(track, dd_id);
            if !layers.is_empty() {
                let sizes: Vec<(u32, u32)> = layers.iter().map(|l| (l.width, l.height)).collect();
                self.rooms[rk].core.set_layers(track, &sizes);
                tracing::info!(participant = %pid, track = %track,
                    rids = ?layers.iter().map(|l| l.rid.as_str()).collect::<Vec<_>>(),
                    "simulcast: layers lowest first");
            }
            let peer = &mut self.peers[key];
            peer.pub_tracks.push(PubTrack {
                track,
                mid: s.mid.clone(),
                receiver: rid,
                ssrcs: Vec::new(),
                rids: layers.into_iter().map(|l| l.rid).collect(),
                wanted_sent: None,
                unwanted_since: [None; prism_core::MAX_SPATIAL_LAYERS],
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

    /// Makes the participant's subscribe leg carry exactly the tracks it wants,
    /// renegotiating if that changed. One offer is in flight at a time; a
    /// change during it is picked up when the answer arrives.
    pub(super) fn reconcile(&mut self, now: Instant, rk: usize, pid: ParticipantId) {
        if let Err(e) = self.try_reconcile(now, rk, pid) {
            tracing::warn!(participant = %pid, "subscribe leg negotiation failed: {e}");
            self.send_to(rk, pid, e.to_message());
        }
    }

    pub(super) fn try_reconcile(
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
            self.send_bye(now, key, slot, "track ended");
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

    /// A WHIP publisher's track was published: WHEP viewers whose track went
    /// away (their publisher left, timed out or restarted) carry on with it, on the same
    /// sender, if it is of the same kind, clock rate and codec (a viewer's
    /// answer accepted only the first publisher's codec). Their forwarders
    /// continue the sequence numbers, rebase the timestamps and wait for the
    /// new source's keyframe, which is requested at once. A viewer whose
    /// codec does not fit keeps waiting (logged once per track).
    pub(super) fn rebind_orphans(&mut self, now: Instant, rk: usize, track: TrackId) {
        let Some(owner) = self.rooms[rk].core.track(track).map(|t| t.owner) else {
            return;
        };
        // A broadcast's publisher is a WHIP one; a conference participant
        // publishing in the room does not take over WHEP viewers.
        if self.rooms[rk].members.get(&owner).map(|m| m.kind) != Some(MemberKind::Whip) {
            return;
        }
        let Some(codec) = self.publisher_codec(rk, owner, track) else {
            return;
        };
        let viewers: Vec<(ParticipantId, usize)> = self.rooms[rk]
            .members
            .iter()
            .filter(|(_, m)| m.kind == MemberKind::Whep)
            .filter_map(|(p, m)| m.subscribe.map(|k| (*p, k)))
            .collect();
        let mut adopted_any = false;
        for (pid, key) in viewers {
            let sinks: Vec<prism_core::SinkId> = self.rooms[rk]
                .core
                .orphans(pid)
                .map(|(sink, _, _)| sink)
                .collect();
            let mut adopted = false;
            for sink in sinks {
                let (k, slot) = super::unpack_sink(sink);
                let fits = k == key
                    && self.peers.get(key).is_some_and(|p| {
                        matches!(p.senders.get(slot), Some(Some(s))
                            if s.codec.mime_type.eq_ignore_ascii_case(&codec.mime_type))
                    });
                if !fits {
                    continue;
                }
                if !self.rooms[rk].core.adopt(track, pid, sink) {
                    continue;
                }
                if let Some(Some(s)) = self.peers[key].senders.get_mut(slot) {
                    s.track = track;
                }
                adopted = true;
            }
            if adopted {
                tracing::info!(participant = %pid, track = %track, "WHEP viewer continues on the room's new track");
                self.settle_senders(now, rk, pid, key);
                adopted_any = true;
            } else if self.rooms[rk].core.orphans(pid).next().is_some() {
                tracing::info!(participant = %pid, track = %track, codec = %codec.mime_type,
                    "a WHEP viewer's sender does not fit the new track (kind, clock rate or codec); it keeps waiting");
            }
        }
        if adopted_any {
            self.request_keyframe(now, rk, track);
        }
    }

    pub(super) fn publisher_codec(
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

    pub(super) fn subscribe_answer(
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
}
