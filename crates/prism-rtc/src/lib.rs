//! Glue around the `rtc` 0.21.1 engine that both the server and the Rust
//! client need.
//!
//! The engine's interceptor chain consumes inbound RTCP: without an
//! interceptor that marks packets [`Attribute::DeliverToApplication`], no
//! PLI, FIR, NACK or REMB ever reaches `poll_read`. [`DeliverRtcp`] marks
//! every inbound RTCP packet (the chain still acts on it too), and
//! [`interceptors`] builds the registry Prism uses with it in place.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, NackGeneratorBuilder, Packet,
    ReceiverReportBuilder, Registry, Slot, StreamInfo, TaggedPacket, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
    register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

mod estimate;
mod rtx_twcc;
pub use estimate::{Estimate, EstimateBounds, Feedback, LinkEstimate};

/// Where [`DeliverRtcp`] sits in the chain (the engine orders by slot).
pub const DELIVER_RTCP_SLOT: usize = 14_000;

/// Marks every inbound RTCP packet for delivery to the application.
#[derive(Default)]
pub struct DeliverRtcp {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DeliverRtcp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtcp(_)) {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for DeliverRtcp {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// For clients: the engine's default interceptors (NACK generator and
/// responder, reports, TWCC receiver, simulcast header extensions) plus
/// [`DeliverRtcp`], registering what they negotiate in `media_engine`.
pub fn interceptors(media_engine: &mut MediaEngine) -> Result<Registry, Error> {
    register_mid_for_audio(media_engine)?;
    let registry = register_default_interceptors(Registry::new(), media_engine)?;
    Ok(registry.with(Slot::from(DELIVER_RTCP_SLOT), DeliverRtcp::default()))
}

/// For the server: like [`interceptors`] but
/// - without the engine's sender-report generator (Prism sends its own,
///   derived from the publishers' reports);
/// - without the engine's NACK responder, which keeps a copy of every packet
///   per sender: Prism answers subscribers' NACKs itself from one shared
///   history per published stream (`prism_core::PacketHistory`). The NACK
///   generator stays: it NACKs loss on publish legs upstream;
/// - with send-side congestion control (`transport-cc`): outgoing packets get
///   transport-wide sequence numbers and the remote's TWCC feedback drives a
///   GCC-fed estimator ([`LinkEstimate`]) whose target is published in
///   the returned [`Estimate`].
///   The engine's pacer is not installed: forwarding stays immediate.
///
/// Each leg gets only the interceptors its direction uses (the SDP
/// capabilities are the same for both): the chain moves every packet through
/// a queue in each interceptor, so a pass-through one is not free. A publish
/// leg receives media: NACK generator, TWCC and receiver reports. A
/// subscribe leg sends it: TWCC sequence numbers and congestion control.
pub fn server_interceptors(
    media_engine: &mut MediaEngine,
    bounds: EstimateBounds,
    sends_media: bool,
) -> Result<(Registry, Estimate), Error> {
    register_mid_for_audio(media_engine)?;
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(media_engine)?;
    // abs-send-time on video: receivers that estimate bandwidth themselves
    // and report it in REMB (aiortc and other non-browser stacks; no
    // transport-cc) need it. The server stamps its own send time.
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: ABS_SEND_TIME_URI.to_owned(),
        },
        RtpCodecKind::Video,
        None,
    )?;
    // AV1 SVC: the dependency descriptor names each packet's layers (the
    // publisher sends it only when negotiated), and subscribers need it to
    // reassemble and decode AV1 frames the server forwards.
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: DEPENDENCY_DESCRIPTOR_URI.to_owned(),
        },
        RtpCodecKind::Video,
        None,
    )?;
    // Receive side: record what arrives and send TWCC feedback to publishers
    // (their own estimators adapt); also registers transport-cc for the SDP.
    let receive = configure_twcc_receiver_only(
        Registry::new().with(Slot::NackGenerator, NackGeneratorBuilder::new().build()),
        media_engine,
    )?;
    let estimate = Estimate::default();
    let registry = if sends_media {
        let gcc = estimate::SubscriberEstimator::new(bounds, estimate.clone());
        // RTX retransmissions are tagged and counted like media
        // (`rtx_twcc`): they take the same link.
        Registry::new()
            .with(
                Slot::TwccSender,
                rtx_twcc::AlsoRtx(TwccSenderBuilder::new().build()),
            )
            .with(
                Slot::CongestionControl,
                rtx_twcc::AlsoRtx(CongestionControlBuilder::new(gcc).build()),
            )
    } else {
        // Receiver reports to publishers, yes; sender reports are Prism's
        // own: derived from the publisher's reports so receivers keep audio
        // and video in sync (the engine would map RTP time to the moment
        // packets reached the server instead).
        receive.with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
    };
    let registry = registry.with(Slot::from(DELIVER_RTCP_SLOT), DeliverRtcp::default());
    Ok((registry, estimate))
}

/// The AV1 RTP specification's dependency descriptor extension.
pub const DEPENDENCY_DESCRIPTOR_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// `http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time`.
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// The engine registers `sdes:mid` for video only; audio needs it too so the
/// server can stamp every subscriber packet with its m-section.
fn register_mid_for_audio(media_engine: &mut MediaEngine) -> Result<(), Error> {
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: "urn:ietf:params:rtp-hdrext:sdes:mid".to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )
}
