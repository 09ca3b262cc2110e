//! One peer connection on its own loopback socket, and the SDP helpers the
//! client's negotiation uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;

/// One peer connection on its own socket.
pub(crate) struct LegConn {
    pub(crate) pc: RTCPeerConnection,
    pub(crate) socket: UdpSocket,
    local: SocketAddr,
    pub(crate) connected: bool,
}

impl LegConn {
    pub(crate) async fn new(ip: IpAddr) -> anyhow::Result<LegConn> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = socket.local_addr()?;
        let se = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            // The engine paces connectivity checks 200 ms apart by default, so
            // nomination (and DTLS after it) waits a tick; browsers check far
            // faster. 20 ms keeps setup times comparable to theirs.
            .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(50))
            .build();
        let mut me = MediaEngine::default();
        me.register_default_codecs()?;
        // Inbound RTCP (PLI, FIR, NACK, REMB) must reach poll_read.
        let registry = prism_rtc::interceptors(&mut me)?;
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

/// An SDP offer like a WHIP publisher's (`tracks` sendonly tracks, Opus then
/// VP8 alternating) or, with `viewer`, a WHEP viewer's (recvonly audio and
/// video). For conformance tests: nobody answers it.
pub async fn sample_offer(viewer: bool, tracks: usize) -> anyhow::Result<String> {
    let mut leg = LegConn::new(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    if viewer {
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            leg.pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )?;
        }
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
