//! RTCP from a leg, read without I/O: which keyframe requests, NACKs, REMB
//! estimates and sender reports it carries, mapped to Prism's tracks. The
//! shard applies the result (`on_rtcp`); the fuzz harness (`crate::fuzz`)
//! drives the same code with arbitrary RTCP.

use prism_core::TrackId;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use crate::media::peer::{PubTrack, SenderSlot};

/// What a subscriber's RTCP batch asks of the room.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SubscriberFeedback {
    /// PLIs and FIR entries seen (for metrics), whatever they named.
    pub plis: u64,
    pub firs: u64,
    /// Tracks a keyframe is wanted for: sorted, once each.
    pub keyframes: Vec<TrackId>,
    /// NACKed sequence numbers (the subscriber's own) per track.
    pub nacks: Vec<(TrackId, Vec<u16>)>,
    /// The last REMB estimate in the batch, bits per second.
    pub remb: Option<u64>,
}

/// Reads every packet of a subscriber's RTCP batch: the engine labels a
/// batch by its first packet only, so each is inspected. A packet naming an
/// SSRC that is none of this leg's senders is ignored.
pub fn read_subscriber_rtcp(
    senders: &[Option<SenderSlot>],
    packets: &[Box<dyn rtc::rtcp::Packet>],
) -> SubscriberFeedback {
    let track_of = |ssrc: u32| {
        senders
            .iter()
            .flatten()
            .find(|s| s.ssrc == ssrc)
            .map(|s| s.track)
    };
    let mut f = SubscriberFeedback::default();
    for p in packets {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            f.plis += 1;
            f.keyframes.extend(track_of(pli.media_ssrc));
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            f.firs += 1;
            f.keyframes
                .extend(fir.fir.iter().filter_map(|e| track_of(e.ssrc)));
        } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            // A float from the wire: NaN and negatives become 0, huge
            // values saturate.
            f.remb = Some(remb.bitrate.max(0.0) as u64);
        } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            if let Some(t) = track_of(nack.media_ssrc) {
                let seqs = nack.nacks.iter().flat_map(|n| n.packet_list()).collect();
                f.nacks.push((t, seqs));
            }
        }
    }
    f.keyframes.sort_unstable();
    f.keyframes.dedup();
    f
}

/// A publisher's sender reports, for the streams it publishes: (track, SSRC,
/// NTP time, RTP time). Reports for unknown SSRCs are ignored.
pub fn read_publisher_reports(
    tracks: &[PubTrack],
    packets: &[Box<dyn rtc::rtcp::Packet>],
) -> Vec<(TrackId, u32, u64, u32)> {
    packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
        .filter_map(|sr| {
            tracks
                .iter()
                .find(|t| t.has_ssrc(sr.ssrc))
                .map(|t| (t.track, sr.ssrc, sr.ntp_time, sr.rtp_time))
        })
        .collect()
}
