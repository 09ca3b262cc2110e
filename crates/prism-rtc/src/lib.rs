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
    Attribute, Interceptor, NackGeneratorBuilder, Packet, Registry, Slot, StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
    register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

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

/// For the server: like [`interceptors`] but without the engine's NACK
/// responder, which keeps a copy of every packet per sender. Prism answers
/// subscribers' NACKs itself from one shared history per published stream
/// (`prism_core::PacketHistory`). The NACK generator stays: it NACKs loss on
/// publish legs upstream.
pub fn server_interceptors(media_engine: &mut MediaEngine) -> Result<Registry, Error> {
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
    let registry = Registry::new().with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    configure_simulcast_extension_headers(media_engine)?;
    let registry = configure_twcc_receiver_only(registry, media_engine)?;
    let registry = configure_rtcp_reports(registry);
    Ok(registry.with(Slot::from(DELIVER_RTCP_SLOT), DeliverRtcp::default()))
}

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
