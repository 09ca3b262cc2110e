//! What a shard sends on its own schedule: sender reports to subscribers
//! (derived from the publishers'), REMB to publishers, and the merged,
//! throttled keyframe requests (PLI) upstream.

use std::time::Instant;

use prism_core::{MediaKind, SinkId, TrackId};
use prism_signal::Leg;
use rtc::rtcp::goodbye::Goodbye;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::sender_report::SenderReport;

use super::{unpack_sink, Shard};
use crate::config::PublishBitrate;

impl Shard {
    /// RTCP BYE (RFC 3550 §6.6) for one subscriber sender's stream: it ends
    /// now. Sent when a conference subscriber's track goes away (before its
    /// sender is removed) and when a WHEP viewer's broadcast ends; not when
    /// a broadcast's publisher merely restarts, since the viewer's streams
    /// carry on with the next publisher on the same SSRCs.
    pub(super) fn send_bye(&mut self, now: Instant, key: usize, slot: usize, reason: &'static str) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let Some(Some(s)) = peer.senders.get(slot) else {
            return;
        };
        let bye = Goodbye {
            sources: vec![s.ssrc],
            reason: bytes::Bytes::from_static(reason.as_bytes()),
        };
        let sender_id = s.sender;
        if let Some(mut sender) = peer.pc.rtp_sender(sender_id) {
            match sender.write_rtcp(now, vec![Box::new(bye)]) {
                Ok(()) => self.stats.byes_sent += 1,
                Err(e) => tracing::debug!("BYE write: {e}"),
            }
        }
        self.mark(key);
    }

    /// Sends every subscriber leg a sender report per stream, derived from the
    /// publisher's latest report (once a second, from housekeeping).
    pub(super) fn send_sender_reports(&mut self, now: Instant) {
        let mut out: Vec<(SinkId, prism_core::SenderReportValues)> = Vec::new();
        for (_, r) in &self.rooms {
            for t in r.core.tracks() {
                r.core
                    .sender_reports(now, t.id, |sink, sr| out.push((sink, sr)));
            }
        }
        for (sink, sr) in out {
            let (peer_key, slot) = unpack_sink(sink);
            let Some(peer) = self.peers.get_mut(peer_key) else {
                continue;
            };
            let Some(Some(s)) = peer.senders.get(slot) else {
                continue;
            };
            let report = SenderReport {
                ssrc: sr.ssrc,
                ntp_time: sr.ntp_time,
                rtp_time: sr.rtp_time,
                packet_count: sr.packet_count,
                octet_count: sr.octet_count,
                ..Default::default()
            };
            let sender_id = s.sender;
            if let Some(mut sender) = peer.pc.rtp_sender(sender_id) {
                if let Err(e) = sender.write_rtcp(now, vec![Box::new(report)]) {
                    tracing::debug!("SR write: {e}");
                }
            }
            self.mark(peer_key);
        }
    }

    /// Tells each publisher what its subscribers can take: one REMB per publish
    /// leg (sent from the once-a-second housekeeping, so at a bounded rate).
    /// Per video track, the weakest subscribe leg's estimate (without
    /// simulcast, the publisher's one stream must reach everyone; a
    /// simulcast track gets the cap: the allocator gives each subscriber
    /// the layer that fits it), at least
    /// `PublishBitrate::MIN`, at most `max_publish_bitrate`; with no estimate
    /// yet, the cap.
    pub(super) fn send_rembs(&mut self, now: Instant) {
        let cap = self.cfg.max_publish_bitrate.bps();
        let publish_peers: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, p)| p.leg == Leg::Publish && p.connected)
            .map(|(k, _)| k)
            .collect();
        for key in publish_peers {
            let p = &self.peers[key];
            let Some(r) = self.rooms.get(p.room) else {
                continue;
            };
            let mut total = 0u64;
            let mut ssrcs = Vec::new();
            for pt in &p.pub_tracks {
                let Some(t) = r.core.track(pt.track) else {
                    continue;
                };
                if t.spec.kind != MediaKind::Video || pt.ssrcs.is_empty() {
                    continue;
                }
                // Simulcast: each subscriber takes the layer that fits it;
                // the publisher may send everything up to the cap.
                if r.core.layer_count(pt.track) > 1 {
                    total += cap;
                    ssrcs.extend(pt.ssrcs.iter().map(|(s, _)| *s));
                    continue;
                }
                let weakest = t
                    .subscribers()
                    .filter_map(|sub| r.members.get(&sub).and_then(|m| m.subscribe))
                    .filter_map(|k| self.peers.get(k))
                    .map(|sp| sp.available_bitrate())
                    .filter(|bps| *bps > 0)
                    .min();
                // PublishBitrate guarantees MIN <= cap: clamp cannot panic.
                total += weakest.unwrap_or(cap).clamp(PublishBitrate::MIN.bps(), cap);
                ssrcs.extend(pt.ssrcs.iter().map(|(s, _)| *s));
            }
            if ssrcs.is_empty() {
                continue;
            }
            let Some(rid) = p.pub_tracks.first().map(|t| t.receiver) else {
                continue;
            };
            let remb = ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 0,
                bitrate: total as f32,
                ssrcs,
            };
            let peer = &mut self.peers[key];
            self.stats.rembs_sent += 1;
            tracing::debug!(participant = %peer.participant, bps = total, "REMB to publisher");
            if let Some(mut receiver) = peer.pc.rtp_receiver(rid) {
                if let Err(e) = receiver.write_rtcp(now, vec![Box::new(remb)]) {
                    tracing::debug!("REMB write: {e}");
                }
            }
            self.mark(key);
        }
    }

    /// Someone needs a keyframe of `track`: the room merges and throttles.
    pub(super) fn request_keyframe(&mut self, now: Instant, room: usize, track: TrackId) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.core.request_keyframe(now, track);
        }
        self.flush_keyframe_requests(now, room);
    }

    /// Sends a PLI upstream for every keyframe request the room let through,
    /// and re-arms the room's timer.
    pub(super) fn flush_keyframe_requests(&mut self, now: Instant, room: usize) {
        loop {
            let Some(r) = self.rooms.get_mut(room) else {
                return;
            };
            let Some((track, layer)) = r.core.poll_keyframe_request() else {
                break;
            };
            let Some(owner) = r.core.track(track).map(|t| t.owner) else {
                continue;
            };
            let Some(pub_key) = r.members.get(&owner).and_then(|m| m.publish) else {
                continue;
            };
            let Some(peer) = self.peers.get_mut(pub_key) else {
                continue;
            };
            let Some(pt) = peer.pub_tracks.iter().find(|p| p.track == track) else {
                continue;
            };
            // The layer's SSRC (a keyframe of another layer would not help).
            let Some(media_ssrc) = pt.ssrc_of(layer) else {
                tracing::debug!(track = %track, layer = layer.index(), "keyframe wanted, but no SSRC is known yet");
                continue;
            };
            tracing::debug!(track = %track, media_ssrc, layer = layer.index(), "PLI upstream");
            let rid = pt.receiver;
            if let Some(mut receiver) = peer.pc.rtp_receiver(rid) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if let Err(e) = receiver.write_rtcp(now, vec![Box::new(pli)]) {
                    tracing::debug!("PLI write: {e}");
                }
                self.stats.plis_out += 1;
            }
            self.mark(pub_key);
        }
        self.arm_room_timer(room);
    }
}
