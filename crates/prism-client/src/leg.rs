//! One peer connection on its own loopback socket, and the SDP helpers the
//! client's negotiation uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::BytesMut;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_simulcast_extension_headers,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;

use crate::client::SDES_MID_URI;

/// How a leg's engine is set up: what it negotiates.
#[derive(Debug, Clone, Default)]
pub(crate) struct LegSetup {
    /// Offer only this video codec (MIME type, fmtp), without RTX: a
    /// simulcast sender's retransmissions must go on the layer's own SSRC
    /// (see `client::publish`). None: the engine's default codecs.
    pub(crate) only_video_codec: Option<(String, String)>,
    /// Do not negotiate transport-cc: with no TWCC feedback from this leg
    /// the server takes the leg's REMB as its estimate (a capped
    /// subscriber).
    pub(crate) no_twcc: bool,
}

/// One peer connection on its own socket.
pub(crate) struct LegConn {
    pub(crate) pc: RTCPeerConnection,
    pub(crate) socket: UdpSocket,
    local: SocketAddr,
    pub(crate) connected: bool,
}

/// A peer connection as the client sets it up, with one host candidate at
/// `local`.
pub(crate) fn build_pc(setup: &LegSetup, local: SocketAddr) -> anyhow::Result<RTCPeerConnection> {
    let se = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        // The engine paces connectivity checks 200 ms apart by default, so
        // nomination (and DTLS after it) waits a tick; browsers check far
        // faster. 20 ms keeps setup times comparable to theirs.
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(50))
        .build();
    let mut me = MediaEngine::default();
    match &setup.only_video_codec {
        None => me.register_default_codecs()?,
        Some((mime, fmtp)) => register_codecs_without_rtx(&mut me, mime, fmtp)?,
    }
    // Inbound RTCP (PLI, FIR, NACK, REMB) must reach poll_read.
    let registry = if setup.no_twcc {
        interceptors_without_twcc(&mut me)?
    } else {
        prism_rtc::interceptors(&mut me)?
    };
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(se)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(Instant::now())?;
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&host).to_json()?)?;
    Ok(pc)
}

/// Opus and one video codec, with the feedback browsers offer and no RTX.
fn register_codecs_without_rtx(me: &mut MediaEngine, mime: &str, fmtp: &str) -> anyhow::Result<()> {
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    let feedback = [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ];
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: feedback
                    .iter()
                    .map(|(typ, parameter)| RTCPFeedback {
                        typ: (*typ).to_owned(),
                        parameter: (*parameter).to_owned(),
                    })
                    .collect(),
            },
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )?;
    Ok(())
}

/// [`prism_rtc::interceptors`] without transport-cc: NACK, reports, the
/// simulcast extensions, `sdes:mid` for audio, RTCP to the application.
fn interceptors_without_twcc(me: &mut MediaEngine) -> anyhow::Result<Registry> {
    me.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: SDES_MID_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    let registry = configure_nack(Registry::new(), me);
    configure_simulcast_extension_headers(me)?;
    let registry = configure_rtcp_reports(registry);
    Ok(registry.with(
        Slot::from(prism_rtc::DELIVER_RTCP_SLOT),
        prism_rtc::DeliverRtcp::default(),
    ))
}

impl LegConn {
    pub(crate) async fn new(ip: IpAddr, setup: &LegSetup) -> anyhow::Result<LegConn> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = socket.local_addr()?;
        let pc = build_pc(setup, local)?;
        Ok(LegConn {
            pc,
            socket,
            local,
            connected: false,
        })
    }

    /// Creates and applies an offer; returns its SDP.
    pub(crate) fn offer(&mut self) -> anyhow::Result<String> {
        let offer = self.pc.create_offer(None)?;
        self.pc.set_local_description(Instant::now(), offer)?;
        Ok(self
            .pc
            .local_description()
            .ok_or_else(|| anyhow!("no local offer"))?
            .sdp)
    }

    /// Applies a remote offer and returns our answer.
    pub(crate) fn answer(&mut self, offer: String) -> anyhow::Result<String> {
        let now = Instant::now();
        self.pc
            .set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        Ok(self
            .pc
            .local_description()
            .ok_or_else(|| anyhow!("no local answer"))?
            .sdp)
    }

    pub(crate) fn read(&mut self, data: &[u8], from: SocketAddr) {
        let msg = TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = self.pc.handle_read(msg) {
            tracing::trace!("client handle_read: {e}");
        }
    }
}

impl LegConn {
    /// One recvonly audio and one recvonly video section: what a WHEP
    /// viewer offers.
    pub(crate) fn add_recvonly_audio_video(&mut self) -> anyhow::Result<()> {
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            self.pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )?;
        }
        Ok(())
    }
}

/// An SDP offer like a WHIP publisher's (`tracks` sendonly tracks, Opus then
/// VP8 alternating) or, with `viewer`, a WHEP viewer's (recvonly audio and
/// video). For conformance tests: nobody answers it.
pub async fn sample_offer(viewer: bool, tracks: usize) -> anyhow::Result<String> {
    let mut leg = LegConn::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &LegSetup::default()).await?;
    if viewer {
        leg.add_recvonly_audio_video()?;
    } else {
        for i in 0..tracks {
            let video = i % 2 == 1;
            let (kind, mime, clock_rate, channels) = if video {
                (RtpCodecKind::Video, MIME_TYPE_VP8, 90_000, 0)
            } else {
                (RtpCodecKind::Audio, MIME_TYPE_OPUS, 48_000, 2)
            };
            let track = MediaStreamTrack::new(
                "s".into(),
                format!("t{i}"),
                "sample".into(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(rand::random()),
                        ..Default::default()
                    },
                    codec: RTCRtpCodec {
                        mime_type: mime.into(),
                        clock_rate,
                        channels,
                        ..Default::default()
                    },
                    ..Default::default()
                }],
            );
            // Sendonly, as WHIP clients offer.
            leg.pc.add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )?;
        }
    }
    leg.offer()
}

/// Points every `a=candidate` line at `via` (address and port).
pub(crate) fn redirect_candidates(sdp: &str, via: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=candidate:") {
            let mut f: Vec<String> = line.split(' ').map(str::to_owned).collect();
            if f.len() > 5 {
                f[4] = via.ip().to_string();
                f[5] = via.port().to_string();
            }
            out.push_str(&f.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The payload type for a codec: same MIME type and fmtp, else same MIME type.
pub(crate) fn pick_payload_type(
    codecs: &[rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters],
    mime: &str,
    fmtp: &str,
) -> Option<u8> {
    let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(mime)
    };
    codecs
        .iter()
        .filter(same_mime)
        .find(|c| fmtp.is_empty() || c.rtp_codec.sdp_fmtp_line == fmtp)
        .or_else(|| codecs.iter().find(same_mime))
        .map(|c| c.payload_type)
}

/// (mid, is_video) of each audio/video m-section.
pub(crate) fn mids(sdp: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut video = None;
    for l in sdp.lines().map(str::trim_end) {
        if let Some(m) = l.strip_prefix("m=") {
            video = if m.starts_with("video") {
                Some(true)
            } else if m.starts_with("audio") {
                Some(false)
            } else {
                None
            };
        } else if let (Some(mid), Some(v)) = (l.strip_prefix("a=mid:"), video) {
            out.push((mid.to_owned(), v));
        }
    }
    out
}
