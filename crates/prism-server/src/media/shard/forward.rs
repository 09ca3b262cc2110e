//! The packet path: RTP from a publish leg through the room's forwarders
//! to each subscriber's sender within the same turn ([`Shard::on_rtp`],
//! [`rewrite`], [`egress::prepare`], [`Shard::write_to_sender`]), a late
//! subscriber's cached GOP through its leg's pacer, and RTCP from both
//! legs ([`Shard::on_rtcp`]: keyframe requests, NACK retransmissions, REMB,
//! sender reports). Every packet not delivered is a counted `DropReason`.

use std::time::Instant;

use prism_core::{DropCounts, DropReason, Forward, ParticipantId, SinkId, TrackId};
use prism_signal::Leg;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::rtp;
use rtc::sansio::Protocol;

use super::{egress, feedback, pack_sink, rearm, unpack_sink, SendKind, Shard};

impl Shard {
    pub(super) fn on_rtp(
        &mut self,
        now: Instant,
        key: usize,
        engine_track: &str,
        packet: rtp::Packet,
    ) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let (track, layer) = match peer.track_for_ssrc(ssrc) {
            Some((t, layer)) => (t.track, layer),
            None => {
                // First packet of a stream the engine did not announce yet:
                // find its m-section through the receiver's track id, and
                // its layer through the rid the engine bound it to, once.
                let found = peer.pub_tracks.iter().position(|t| {
                    peer.pc
                        .rtp_receiver(t.receiver)
                        .is_some_and(|r| r.track().track_id() == engine_track)
                });
                match found {
                    Some(i) => {
                        let rid = peer
                            .pc
                            .rtp_receiver(peer.pub_tracks[i].receiver)
                            .and_then(|r| r.track().rid(ssrc).cloned());
                        let t = &mut peer.pub_tracks[i];
                        let layer = t.layer_of(rid.as_deref());
                        t.learn(ssrc, layer);
                        (t.track, layer)
                    }
                    None => {
                        self.drops.inc(DropReason::UnknownSsrc);
                        return;
                    }
                }
            }
        };
        let room_key = peer.room;
        self.stats.rtp_in_packets += 1;
        self.stats.rtp_in_bytes += packet.payload.len() as u64;
        let Some(room) = self.rooms.get_mut(room_key) else {
            // The peer outlived its room for this turn (it closes next).
            self.drops.inc(DropReason::RoomClosed);
            return;
        };
        let sends = &mut self.sends;
        let drops = &mut self.drops;
        room.core
            .forward_packet(now, track, layer, &packet, |sink, params, decision| {
                if let Forward::Send(sp) = decision {
                    queue_rewritten(sends, drops, sink, &packet, sp, &params.extensions);
                }
            });
        // The packet itself moves into the track's shared retransmission history.
        room.core.store_layer(now, track, layer, packet);
        self.flush_sends(now, SendKind::Live);
        // New subscribers waiting for a keyframe may have asked for one.
        self.flush_keyframe_requests(now, room_key);
    }

    /// Writes every queued (sink, packet) to its subscriber's sender (see
    /// [`Shard::write_to_sender`]). A keyframe-cache start goes into its
    /// leg's pacer instead, and so does any live packet for a leg whose
    /// pacer still holds one: the leg then gets everything in order, the
    /// cached GOP first, at the pacer's rate. Retransmissions answer NACKs
    /// for packets already sent and never wait.
    pub(super) fn flush_sends(&mut self, now: Instant, kind: SendKind) {
        let mut sends = std::mem::take(&mut self.sends);
        if kind == SendKind::Live && !sends.is_empty() {
            // One clock read per batch: every packet of it waited this long
            // since its datagram was read.
            let latency = Instant::now().saturating_duration_since(self.turn_at);
            self.stats
                .forwarding_latency
                .observe_n(latency.as_secs_f64(), sends.len() as u64);
        }
        // The batch leaves now: one abs-send-time value for all of it.
        let mut send_time = egress::SendTime::new(now.saturating_duration_since(self.epoch));
        let mut paced: Vec<usize> = Vec::new();
        for (sink, pkt) in sends.drain(..) {
            let (peer_key, slot) = unpack_sink(sink);
            let retransmission = kind == SendKind::Retransmission;
            if !retransmission {
                if let Some(sub) = self.peers.get_mut(peer_key) {
                    if kind == SendKind::CacheStart || !sub.pacer.is_empty() {
                        sub.pacer.push(now, (slot, pkt));
                        if !paced.contains(&peer_key) {
                            paced.push(peer_key);
                        }
                        continue;
                    }
                }
            }
            self.write_to_sender(now, peer_key, slot, pkt, retransmission, &mut send_time);
        }
        self.sends = sends;
        for key in paced {
            self.pace(now, key);
        }
    }

    /// Writes what a subscribe leg's pacer lets leave now and registers its
    /// next deadline.
    pub(super) fn pace(&mut self, now: Instant, key: usize) {
        let mut send_time = egress::SendTime::new(now.saturating_duration_since(self.epoch));
        loop {
            let Some(p) = self.peers.get_mut(key) else {
                return;
            };
            let Some((slot, pkt)) = p.pacer.poll(now) else {
                break;
            };
            // The sender may have gone while its packets waited, and its
            // slot been given to another track: never send on that one.
            let same = matches!(p.senders.get(slot), Some(Some(s)) if s.ssrc == pkt.header.ssrc);
            if !same {
                self.drops.inc(DropReason::SenderGone);
                continue;
            }
            self.write_to_sender(now, key, slot, pkt, false, &mut send_time);
        }
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        rearm(
            &mut self.pace_timers,
            &mut p.pace_at,
            p.pacer.poll_timeout(),
            key,
        );
    }

    /// Writes one packet to its subscriber's sender, made ready by
    /// [`egress::prepare`] (mid and abs-send-time stamped; a retransmission
    /// as RTX where negotiated). Whatever cannot be sent is counted under a
    /// [`DropReason`].
    pub(super) fn write_to_sender(
        &mut self,
        now: Instant,
        peer_key: usize,
        slot: usize,
        pkt: rtp::Packet,
        retransmission: bool,
        send_time: &mut egress::SendTime,
    ) {
        let Some(sub) = self.peers.get_mut(peer_key) else {
            self.drops.inc(DropReason::SenderGone);
            return;
        };
        let Some(Some(s)) = sub.senders.get_mut(slot) else {
            self.drops.inc(DropReason::SenderGone);
            return;
        };
        let out = match egress::prepare(pkt, s, retransmission, send_time) {
            Ok(out) => out,
            Err(reason) => {
                self.drops.inc(reason);
                return;
            }
        };
        let result = match out {
            egress::Outgoing::Rtx(pkt) => {
                self.stats.retransmits_rtx += 1;
                self.stats.rtp_out_packets += 1;
                self.stats.rtp_out_bytes += pkt.payload.len() as u64;
                // write_rtp takes only the sender's primary SSRC; the
                // connection's own write path routes by SSRC and knows the
                // RTX stream from negotiation.
                sub.pc.handle_write(TaggedRTCMessage {
                    now,
                    message: RTCMessage::RtpPacket(String::new(), pkt),
                })
            }
            egress::Outgoing::Media(pkt) => match sub.pc.rtp_sender(s.sender) {
                Some(mut sender) => {
                    self.stats.rtp_out_packets += 1;
                    self.stats.rtp_out_bytes += pkt.payload.len() as u64;
                    sender.write_rtp(now, pkt)
                }
                None => {
                    self.drops.inc(DropReason::SenderGone);
                    return;
                }
            },
        };
        if let Err(e) = result {
            // Counted; the reason is visible at trace level only (one line
            // per packet otherwise).
            self.drops.inc(DropReason::SendFailed);
            tracing::trace!("write_rtp: {e}");
        }
        self.mark(peer_key);
    }

    pub(super) fn on_rtcp(
        &mut self,
        now: Instant,
        key: usize,
        packets: &[Box<dyn rtc::rtcp::Packet>],
    ) {
        let Some(peer) = self.peers.get(key) else {
            return;
        };
        if peer.leg == Leg::Publish {
            // The publisher's sender reports: keep each stream's NTP ↔ RTP
            // mapping to derive the subscribers' reports.
            let room = peer.room;
            let reports = feedback::read_publisher_reports(&peer.pub_tracks, packets);
            if let Some(r) = self.rooms.get_mut(room) {
                for (track, ssrc, ntp, rtp) in reports {
                    r.core.on_sender_report(now, track, ssrc, ntp, rtp);
                }
            }
            return;
        }
        let (room, pid) = (peer.room, peer.participant);
        let f = feedback::read_subscriber_rtcp(&peer.senders, packets);
        self.stats.plis_in += f.plis;
        self.stats.firs_in += f.firs;
        if let (Some(bps), Some(p)) = (f.remb, self.peers.get_mut(key)) {
            p.remb_in = Some(bps);
        }
        // A subscriber's lost picture: a keyframe of the layer it receives.
        for t in f.keyframes {
            if let Some(r) = self.rooms.get_mut(room) {
                r.core.request_keyframe_for(now, t, pid);
            }
            self.flush_keyframe_requests(now, room);
        }
        for (track, seqs) in f.nacks {
            let Some(r) = self.rooms.get_mut(room) else {
                return;
            };
            let Some(p) = self.peers.get_mut(key) else {
                return;
            };
            // Over the leg's budget, a retransmission would take the place
            // of a new packet on a full link (prism_core::budget).
            let estimate = match p.available_bitrate() {
                0 => super::SUBSCRIBER_MAX_ESTIMATE as u64,
                bps => bps,
            };
            let (sends, drops, budget) =
                (&mut self.sends, &mut self.drops, &mut p.retransmit_budget);
            r.core
                .nack(now, track, pid, seqs, |sink, params, sp, original| {
                    let allowed = budget.take(now, estimate, original.payload.len());
                    if allowed {
                        queue_rewritten(sends, drops, sink, original, sp, &params.extensions);
                    }
                    allowed
                });
            self.flush_sends(now, SendKind::Retransmission);
        }
    }

    /// A subscribe leg just connected: its negotiated senders start receiving
    /// (video from the next keyframe, which the forwarders ask for).
    pub(super) fn attach_connected_senders(&mut self, key: usize) {
        let Some(p) = self.peers.get(key) else {
            return;
        };
        let (room, pid) = (p.room, p.participant);
        let ready: Vec<(TrackId, usize, prism_core::SinkParams)> = p
            .senders
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .and_then(|s| s.params.clone().map(|pr| (s.track, i, pr)))
            })
            .collect();
        let now = Instant::now();
        for (track, slot, params) in ready {
            self.attach_sink(now, room, track, pid, key, slot, params);
        }
    }

    /// Gives a subscriber's sender its negotiated parameters. A video sender
    /// that waits for a keyframe starts at once from the track's keyframe
    /// cache when the whole GOP since the latest keyframe is there (keyframe
    /// to live edge, nothing missing, within its bounds); otherwise a fresh
    /// keyframe is requested now and the sender starts with that.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_sink(
        &mut self,
        now: Instant,
        room: usize,
        track: TrackId,
        pid: ParticipantId,
        key: usize,
        slot: usize,
        params: prism_core::SinkParams,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.core
            .attach(track, pid, pack_sink(key, slot), Some(params))
            .is_err()
        {
            return;
        }
        let (sends, drops) = (&mut self.sends, &mut self.drops);
        r.core
            .start_from_cache(now, track, pid, |sink, params, sp, original| {
                queue_rewritten(sends, drops, sink, original, sp, &params.extensions);
            });
        // The GOP leaves paced, live packets of this leg behind it.
        self.flush_sends(now, SendKind::CacheStart);
        self.flush_keyframe_requests(now, room);
    }
}

/// Queues `original` rewritten for `sink`, or counts why it cannot be.
fn queue_rewritten(
    sends: &mut Vec<(SinkId, rtp::Packet)>,
    drops: &mut DropCounts,
    sink: SinkId,
    original: &rtp::Packet,
    sp: prism_core::SendParams,
    ext: &prism_core::ExtensionMap,
) {
    match rewrite(original, sp, ext) {
        Ok(p) => sends.push((sink, p)),
        Err(reason) => drops.inc(reason),
    }
}

/// The packet a subscriber gets: the publisher's payload with this leg's
/// SSRC, payload type, sequence number, timestamp and marker bit (an SVC
/// leg ends pictures at its own top layer), and the extensions it
/// negotiated under its own ids. Rebuilt through `set_extension` so the
/// header's padding bookkeeping stays right.
///
/// The header's extension profile is chosen up front from every id and
/// payload it will carry (the mapped ones and the ones the shard stamps
/// later: `mid`, `abs-send-time`): RFC 8285's one-byte form holds ids 1–14
/// and payloads of 1–16 bytes, anything else needs the two-byte form. Chosen
/// by the first extension instead, a later one would fail to fit. Err: an
/// extension still could not be written (counted as a drop).
pub fn rewrite(
    src: &rtp::Packet,
    sp: prism_core::SendParams,
    ext: &prism_core::ExtensionMap,
) -> Result<rtp::Packet, DropReason> {
    let mut header = rtp::header::Header {
        version: 2,
        marker: sp.marker,
        payload_type: sp.payload_type,
        sequence_number: sp.seq,
        timestamp: sp.timestamp,
        ssrc: sp.ssrc,
        csrc: src.header.csrc.clone(),
        ..Default::default()
    };
    // An AV1 SVC leg's dependency descriptor may grow by its active decode
    // targets (a flag byte and up to 32 bits).
    let is_dd = |id: u8| sp.dd.is_some() && ext.dependency_descriptor_id == Some(id);
    let mapped = || {
        src.header.extensions.iter().filter_map(|e| {
            let grow = if is_dd(e.id) { 5 } else { 0 };
            ext.map(e.id).map(|id| (id, e.payload.len() + grow))
        })
    };
    let stamped = [ext.mid_id, ext.abs_send_time_id];
    if mapped().next().is_some() || stamped.iter().any(Option::is_some) {
        let two_byte = mapped().any(|(id, len)| id > 14 || len == 0 || len > 16)
            || stamped.iter().flatten().any(|id| *id > 14);
        header.extension = true;
        header.extension_profile = if two_byte {
            rtp::header::EXTENSION_PROFILE_TWO_BYTE
        } else {
            rtp::header::EXTENSION_PROFILE_ONE_BYTE
        };
    }
    for e in &src.header.extensions {
        if let Some(id) = ext.map(e.id) {
            let payload = match sp.dd {
                // The leg's own active decode targets (its layers).
                Some(rw) if is_dd(e.id) && rw.changes(&e.payload) => {
                    let mut out = [0u8; prism_core::av1_dd::DD_MAX_LEN];
                    let n = rw
                        .apply(&e.payload, &mut out)
                        .map_err(|_| DropReason::ExtensionRewrite)?;
                    bytes::Bytes::copy_from_slice(&out[..n])
                }
                _ => e.payload.clone(),
            };
            header
                .set_extension(id, payload)
                .map_err(|_| DropReason::ExtensionRewrite)?;
        }
    }
    // The VP8 descriptor renumbered for this leg; a copy of the payload only
    // where that changes it.
    let payload = match sp.vp8 {
        Some(rw) if rw.changes(&src.payload) => {
            let mut copy = bytes::BytesMut::from(&src.payload[..]);
            rw.apply(&mut copy)
                .map_err(|_| DropReason::PayloadRewrite)?;
            copy.freeze()
        }
        _ => src.payload.clone(),
    };
    Ok(rtp::Packet { header, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prism_core::{DdRewrite, ExtensionMap, SendParams, DEPENDENCY_DESCRIPTOR_URI};

    fn av1_packet(dd: &'static [u8]) -> rtp::Packet {
        let mut header = rtp::header::Header {
            version: 2,
            payload_type: 45,
            sequence_number: 7,
            ssrc: 0x51,
            extension: true,
            extension_profile: rtp::header::EXTENSION_PROFILE_ONE_BYTE,
            ..Default::default()
        };
        header
            .set_extension(3, Bytes::from_static(dd))
            .expect("fits the one-byte form");
        rtp::Packet {
            header,
            payload: Bytes::from_static(&[0x10, 0xAA]),
        }
    }

    fn send_params(dd: Option<DdRewrite>) -> SendParams {
        SendParams {
            ssrc: 0xA,
            payload_type: 45,
            seq: 100,
            timestamp: 9000,
            marker: true,
            vp8: None,
            dd,
        }
    }

    #[test]
    fn an_av1_legs_descriptor_carries_its_active_decode_targets() {
        let ext = ExtensionMap::build(
            [(DEPENDENCY_DESCRIPTOR_URI, 3u16)],
            [(DEPENDENCY_DESCRIPTOR_URI, 5u16)],
        );
        let rw = DdRewrite {
            active: 0b111,
            decode_targets: 9,
        };
        // Mandatory fields only (start, end, template 2, frame 0x1234):
        // the flags (no structure, a mask) and the 9-bit mask are added.
        let mandatory: &[u8] = &[0xC2, 0x12, 0x34];
        let out = rewrite(&av1_packet(mandatory), send_params(Some(rw)), &ext).expect("rewritten");
        assert_eq!(
            out.header.get_extension(5).as_deref(),
            Some(&[0xC2, 0x12, 0x34, 0b0100_0000, 0b0001_1100][..])
        );
        assert_eq!(out.header.get_extension(3), None, "under the leg's id only");
        // Not an AV1 SVC leg: as it came.
        let out = rewrite(&av1_packet(mandatory), send_params(None), &ext).expect("forwarded");
        assert_eq!(out.header.get_extension(5).as_deref(), Some(mandatory));
        // 16 bytes (the most the one-byte form holds) grow past it: the
        // header takes the two-byte form up front.
        let long: &[u8] = &[0xC2, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let out = rewrite(&av1_packet(long), send_params(Some(rw)), &ext).expect("rewritten");
        assert_eq!(
            out.header.extension_profile,
            rtp::header::EXTENSION_PROFILE_TWO_BYTE
        );
        assert!(out.header.get_extension(5).is_some_and(|d| d.len() > 16));
    }
}
