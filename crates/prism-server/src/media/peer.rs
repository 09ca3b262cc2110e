//! One `rtc` peer connection on a shard's socket, and what Prism knows about it.

use std::net::SocketAddr;

use super::remote::Remote;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prism_core::{ParticipantId, SpatialLayer, TrackId};
use prism_signal::Leg;
use rand::distr::{Alphanumeric, SampleString};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

/// A track the client publishes on its publish leg.
#[derive(Debug)]
pub struct PubTrack {
    pub track: TrackId,
    pub mid: String,
    pub receiver: RTCRtpReceiverId,
    /// SSRCs seen for this track (learned from the engine's track events or
    /// the first packet), each with the simulcast layer it carries (layer 0
    /// without simulcast).
    pub ssrcs: Vec<(u32, SpatialLayer)>,
    /// Simulcast: its encodings' rids, lowest layer first (empty: one
    /// stream).
    pub rids: Vec<String>,
    /// Dynacast: the layers (a bit each) last said to be wanted, and since
    /// when each layer has been unwanted.
    pub wanted_sent: Option<u8>,
    pub unwanted_since: [Option<Instant>; prism_core::MAX_SPATIAL_LAYERS],
    /// Codecs negotiated on this m-section, publisher payload types.
    pub codecs: Vec<RTCRtpCodecParameters>,
    /// Header extensions negotiated on this m-section: (uri, publisher id).
    pub extensions: Vec<(String, u16)>,
}

impl PubTrack {
    pub fn has_ssrc(&self, ssrc: u32) -> bool {
        self.ssrcs.iter().any(|(s, _)| *s == ssrc)
    }

    /// The layer a rid names (layer 0 for none or an unknown one).
    pub fn layer_of(&self, rid: Option<&str>) -> SpatialLayer {
        rid.and_then(|r| self.rids.iter().position(|x| x == r))
            .and_then(|i| SpatialLayer::new(i as u8))
            .unwrap_or(SpatialLayer::LOW)
    }

    /// Records that `ssrc` carries `layer` (a layer whose encoder restarted
    /// gets a new SSRC; the newest is the layer's).
    pub fn learn(&mut self, ssrc: u32, layer: SpatialLayer) {
        self.ssrcs.retain(|(s, _)| *s != ssrc);
        self.ssrcs.push((ssrc, layer));
    }

    /// The newest SSRC of `layer`.
    pub fn ssrc_of(&self, layer: SpatialLayer) -> Option<u32> {
        self.ssrcs
            .iter()
            .rev()
            .find(|(_, l)| *l == layer)
            .map(|(s, _)| *s)
    }
}

/// One sender on a subscribe leg: carries one track of another participant.
#[derive(Debug)]
pub struct SenderSlot {
    pub track: TrackId,
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    pub codec: RTCRtpCodec,
    /// This sender's m-section id, stamped into every packet (`sdes:mid`).
    pub mid: Option<Bytes>,
    /// The subscriber's extension id for `sdes:mid`.
    pub mid_ext_id: Option<u8>,
    /// What the subscriber negotiated for this sender (after its answer).
    pub params: Option<prism_core::SinkParams>,
    /// RTX, when the subscriber negotiated it: retransmissions go there.
    pub rtx: Option<RtxInfo>,
    /// Sequence numbers of the RTX stream.
    pub rtx_seq: u16,
}

/// A WHIP/WHEP peer's negotiation state, for PATCH.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The client's offer as last applied (an ICE restart re-applies it with
    /// new credentials).
    pub offer: String,
    /// ICE restarts so far: part of the session's ETag.
    pub generation: u32,
}

/// A sender's negotiated RTX stream (RFC 4588).
#[derive(Debug, Clone)]
pub struct RtxInfo {
    pub ssrc: u32,
    /// (media payload type, RTX payload type) pairs, from the `apt=` fmtp.
    pub payload_types: Vec<(u8, u8)>,
}

pub struct Peer {
    pub pc: RTCPeerConnection,
    /// Subscribe leg: shares its bandwidth estimate over its tracks' layers.
    pub allocator: prism_core::Allocator,
    /// The estimate's congestion count at the last allocation: when it
    /// moves, the leg is allocated again at once.
    pub congestions_seen: u64,
    /// Subscribe leg: what its NACKs may be answered with.
    pub retransmit_budget: prism_core::RetransmitBudget,
    pub room: usize,
    pub participant: ParticipantId,
    pub leg: Leg,
    pub ufrag: String,
    /// The server's ICE password for this peer, keyed for the shard's
    /// MESSAGE-INTEGRITY checks (`super::stun`).
    pub ice_pwd: super::stun::IcePassword,
    /// Remote UDP addresses routed to this peer.
    pub addrs: Vec<SocketAddr>,
    /// ICE-TCP connections bound to this peer: (client address, connection
    /// key), where the engine's TCP datagrams for that address go.
    pub tcp: Vec<(SocketAddr, usize)>,
    pub created_at: Instant,
    pub last_rx_at: Instant,
    pub connected: bool,
    /// The deadline currently registered in the shard's timer set.
    pub timer_at: Option<Instant>,
    /// Queued for draining this turn.
    pub dirty: bool,
    // Publish leg.
    pub pub_tracks: Vec<PubTrack>,
    // Subscribe leg.
    pub senders: Vec<Option<SenderSlot>>,
    pub offer_pending: bool,
    pub renegotiate: bool,
    /// Send-side bandwidth estimate of this connection (TWCC + GCC).
    pub estimate: prism_rtc::Estimate,
    /// Publish leg: the last REMB sent to the publisher, bits per second.
    pub last_remb: Option<u64>,
    /// Subscribe leg: the last REMB the subscriber sent (clients without
    /// transport-cc estimate on their side and report it this way).
    pub remb_in: Option<u64>,
    /// WHIP/WHEP peers: what PATCH needs.
    pub http: Option<HttpState>,
    /// ICE reached connected (a later failure is then a DTLS failure).
    pub ice_connected: bool,
    /// Datagrams held until the engine can take them (until ICE connects).
    pub setup: SetupHold,
    /// Engine statistics already counted (metrics add deltas).
    pub engine_seen: super::shard::EngineSeen,
    /// Subscribe leg: packets waiting to be written at a bounded rate
    /// (sender slot, packet): a keyframe-cache start, and whatever live
    /// packets for this leg arrived behind it (`Shard::flush_sends`).
    pub pacer: prism_core::BurstPacer<(usize, rtc::rtp::Packet)>,
    /// The pacer's deadline currently registered in the shard's
    /// `pace_timers`.
    pub pace_at: Option<Instant>,
}

/// The rate at which a keyframe-cache start leaves for one subscribe leg:
/// at most [`PACE_PACKETS`] packets per [`PACE_WINDOW`] (1,600 packets a
/// second, ≤ 15 Mbit/s in 1200-byte packets; the 512-packet bound in
/// 320 ms). Fast enough to outrun any live stream it is ahead of, slow
/// enough that a receiver reading its socket every few milliseconds never
/// has more than a few dozen datagrams of it waiting (see
/// `prism_core::pacer`).
pub const PACE_PACKETS: usize = 8;
/// See [`PACE_PACKETS`].
pub const PACE_WINDOW: Duration = Duration::from_millis(5);

/// Engine settings shared by every peer of a shard.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// The address put in candidates and given to the engine as the local address.
    pub advertised: Vec<SocketAddr>,
    /// The ICE-TCP passive candidates' addresses (empty: no ICE-TCP).
    pub advertised_tcp: Vec<SocketAddr>,
    pub ice_disconnected: Duration,
    pub ice_failed: Duration,
    /// Bounds of each subscribe leg's bandwidth estimate.
    pub estimate_bounds: prism_rtc::EstimateBounds,
}

/// What the shard does with a datagram for a peer whose ICE is not connected.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupAction {
    /// Hand these to the engine now, in order.
    Feed(Vec<(Remote, BytesMut)>),
    /// Held for later (a DTLS/SRTP datagram before ICE connected).
    Held,
    /// Dropped: the hold is full (count it).
    Overflow,
    /// Held, and the client's DTLS shows it uses the pair its last check
    /// came on: nominate it on the client's behalf. The shard signs a copy
    /// of this check with USE-CANDIDATE ([`super::stun::nominating_copy`]),
    /// gives it back through [`SetupHold::nominated`] and feeds it.
    HeldNominate(Remote, BytesMut),
}

/// Connection setup without the engine's retransmission waits. The engine
/// (rtc 0.21.1, ICE-lite) loses two kinds of early datagram, and each loss
/// costs a client timer:
///
/// - DTLS/SRTP before it has selected a candidate pair: dropped. A browser
///   sends its ClientHello as soon as one check succeeded, before it
///   nominates, then retransmits after 50–100 ms.
/// - A USE-CANDIDATE request before its own triggered check of that pair
///   succeeded: neither answered nor remembered. aioice nominates right after
///   its first check and retransmits after its STUN RTO, 500 ms.
///
/// - A browser that sent its ClientHello waits for its next check (about
///   50 ms for Chromium) to nominate; the engine selects a pair only on a
///   nomination, so the handshake waits too.
///
/// So DTLS/SRTP is held (in order, at most [`EARLY_DATAGRAMS`]) until ICE
/// connects; the latest nomination is handed again right after the success
/// response that makes its pair valid; and the first DTLS handshake record
/// from the address of the client's last authentic check nominates that
/// pair at once (as mediasoup forces the selected tuple on data from a
/// valid one). Sans-I/O: the shard feeds what this returns.
#[derive(Debug, Default)]
pub struct SetupHold {
    early: Vec<(Remote, BytesMut)>,
    nomination: Option<(Remote, BytesMut)>,
    /// The client's last authentic check (without USE-CANDIDATE).
    last_check: Option<(Remote, BytesMut)>,
}

/// The DTLS record content type of a handshake (ClientHello, …).
const DTLS_HANDSHAKE: u8 = 22;

impl SetupHold {
    /// A datagram arrived before ICE connected; `kind` is what the shard's
    /// demultiplexer (which authenticated it, if STUN) found it to be.
    pub fn on_datagram(
        &mut self,
        from: Remote,
        kind: super::stun::Kind,
        data: BytesMut,
    ) -> SetupAction {
        use super::stun::Kind;
        match kind {
            Kind::NotStun if self.early.len() < EARLY_DATAGRAMS => {
                let handshake = data.first() == Some(&DTLS_HANDSHAKE);
                self.early.push((from, data));
                match self.last_check.as_ref() {
                    Some((addr, check))
                        if handshake && *addr == from && self.nomination.is_none() =>
                    {
                        SetupAction::HeldNominate(*addr, check.clone())
                    }
                    _ => SetupAction::Held,
                }
            }
            Kind::NotStun => SetupAction::Overflow,
            Kind::BindingRequest { nominates: true } => {
                self.nomination = Some((from, data.clone()));
                SetupAction::Feed(vec![(from, data)])
            }
            Kind::BindingSuccess => {
                // The engine's check of this pair succeeds with this
                // response: a nomination it ignored before now selects it.
                let mut feed = vec![(from, data)];
                if let Some((addr, req)) = self.nomination.as_ref().filter(|(a, _)| *a == from) {
                    feed.push((*addr, req.clone()));
                }
                SetupAction::Feed(feed)
            }
            Kind::BindingRequest { nominates: false } => {
                self.last_check = Some((from, data.clone()));
                SetupAction::Feed(vec![(from, data)])
            }
        }
    }

    /// The nomination the shard made for [`SetupAction::HeldNominate`]: it
    /// is handed again after a success response like the client's own.
    pub fn nominated(&mut self, from: Remote, request: BytesMut) {
        self.nomination = Some((from, request));
    }

    /// ICE connected: what was held, in arrival order, for the engine now.
    pub fn on_ice_connected(&mut self) -> Vec<(Remote, BytesMut)> {
        self.nomination = None;
        self.last_check = None;
        std::mem::take(&mut self.early)
    }
}

/// DTLS/SRTP datagrams a peer holds while ICE is not yet connected: a DTLS
/// flight is one to a few datagrams and a client retransmits it only every
/// 50 ms or more, so this covers several flights. Beyond it, datagrams are
/// dropped and counted (`prism_dropped_datagrams_total{reason="before_ice"}`).
pub const EARLY_DATAGRAMS: usize = 16;

/// No consent check for this long: ICE reports Disconnected (three missed
/// RFC 7675 checks).
const CONSENT_DISCONNECTED: Duration = Duration::from_secs(15);
/// RFC 7675: consent expires 30 s after the last check.
const CONSENT_EXPIRED: Duration = Duration::from_secs(30);

impl PeerSettings {
    /// The shard's settings. The engine's lite ICE agent counts only STUN
    /// consent checks, which browsers send every 2.5–6 s and later under
    /// load, so it follows RFC 7675 (consent lost after 30 s) rather than
    /// `peer_timeout`: the shard's own silence check, which counts every
    /// datagram (RTP, RTCP, STUN), is what removes a silent peer after
    /// `peer_timeout`. With ICE failing at `peer_timeout` (5 s in the browser
    /// tests) a busy Chromium's late consent check dropped live participants.
    pub fn new(advertised: Vec<SocketAddr>, peer_timeout: Duration) -> Self {
        PeerSettings {
            advertised,
            advertised_tcp: Vec::new(),
            ice_disconnected: peer_timeout.max(CONSENT_DISCONNECTED),
            ice_failed: peer_timeout.max(CONSENT_EXPIRED),
            estimate_bounds: prism_rtc::EstimateBounds {
                initial: 1_000_000.0,
                min: 50_000.0,
                max: super::shard::SUBSCRIBER_MAX_ESTIMATE,
            },
        }
    }
}

impl Peer {
    pub fn new(
        now: Instant,
        settings: &PeerSettings,
        room: usize,
        participant: ParticipantId,
        leg: Leg,
    ) -> Result<(Peer, Vec<String>), rtc::shared::error::Error> {
        let ufrag = Alphanumeric.sample_string(&mut rand::rng(), 16);
        let pwd = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let ice_pwd = super::stun::IcePassword::new(pwd.clone())
            .map_err(|e| rtc::shared::error::Error::Other(format!("ICE password: {e}")))?;
        let setting_engine = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), pwd)
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            // The client starts DTLS: it knows our address from the first
            // moment, while we learn its address only from its first check.
            .with_answering_dtls_role(RTCDtlsRole::Server)
            // ICE-lite counts only STUN; the client's consent checks come every
            // few seconds, so the engine must not flap before the peer timeout.
            .with_ice_timeouts(
                Some(settings.ice_disconnected),
                Some(settings.ice_failed),
                None,
            )
            .build();
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs()?;
        // Inbound RTCP (PLI, FIR, NACK, REMB) must reach poll_read.
        let (registry, estimate) = prism_rtc::server_interceptors(
            &mut media_engine,
            settings.estimate_bounds,
            leg == Leg::Subscribe,
        )?;
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)?;
        // One host candidate per advertised address on the shard's UDP
        // port, then the ICE-TCP passive ones (RFC 6544): the engine must
        // know each to answer the checks that arrive on it.
        use rtc::ice::tcp_type::TcpType;
        let udp = settings
            .advertised
            .iter()
            .map(|a| ("udp", a, TcpType::Unspecified));
        let tcp = settings
            .advertised_tcp
            .iter()
            .map(|a| ("tcp", a, TcpType::Passive));
        let mut candidates = Vec::new();
        for (i, (network, addr, tcp_type)) in udp.chain(tcp).enumerate() {
            let host = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: network.to_owned(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    component: 1,
                    foundation: format!("{}", i + 1),
                    ..Default::default()
                },
                tcp_type,
            }
            .new_candidate_host()?;
            let init = RTCIceCandidate::from(&host).to_json()?;
            candidates.push(init.candidate.clone());
            pc.add_local_candidate(init)?;
        }
        Ok((
            Peer {
                pc,
                room,
                participant,
                leg,
                ufrag,
                ice_pwd,
                addrs: Vec::new(),
                tcp: Vec::new(),
                created_at: now,
                last_rx_at: now,
                connected: false,
                timer_at: None,
                dirty: false,
                pub_tracks: Vec::new(),
                senders: Vec::new(),
                offer_pending: false,
                renegotiate: false,
                estimate,
                last_remb: None,
                remb_in: None,
                http: None,
                ice_connected: false,
                setup: SetupHold::default(),
                engine_seen: Default::default(),
                pacer: prism_core::BurstPacer::new(PACE_PACKETS, PACE_WINDOW),
                pace_at: None,
                allocator: prism_core::Allocator::new(prism_core::AllocatorConfig::default()),
                congestions_seen: 0,
                retransmit_budget: prism_core::RetransmitBudget::default(),
            },
            candidates,
        ))
    }

    /// This subscribe leg's available bandwidth, bits per second: the
    /// send-side (TWCC) estimate, else the subscriber's own REMB, else 0.
    /// Applies a client's offer and returns our answer, for the publish leg
    /// and WHEP alike. `offered` is the number of m-sections with a mid in
    /// the offer ([`super::sdp::media_sections`]): an answer that leaves
    /// any out (the engine does so for sections it cannot parse) would be
    /// invalid at the client, so it is refused here with a message for the
    /// sender.
    pub fn answer(
        &mut self,
        now: Instant,
        offer: rtc::peer_connection::sdp::RTCSessionDescription,
        offered: usize,
    ) -> Result<String, String> {
        self.pc
            .set_remote_description(now, offer)
            .map_err(|e| format!("offer: {e}"))?;
        let answer = self
            .pc
            .create_answer(None)
            .map_err(|e| format!("answer: {e}"))?;
        self.pc
            .set_local_description(now, answer)
            .map_err(|e| format!("answer: {e}"))?;
        let sdp = self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or("no local description")?;
        let answered = super::sdp::media_sections(&sdp).len();
        if answered != offered {
            return Err(format!(
                "only {answered} of the offer's {offered} media sections could be answered; \
                 check each m-section's mid, codecs and attributes"
            ));
        }
        Ok(sdp)
    }

    pub fn available_bitrate(&self) -> u64 {
        match self.estimate.bits_per_second() {
            0 => self.remb_in.unwrap_or(0),
            bps => bps,
        }
    }

    /// The published track an SSRC belongs to, and its layer: a scan of a
    /// few entries (tracks × layers), no map.
    #[inline]
    pub fn track_for_ssrc(&self, ssrc: u32) -> Option<(&PubTrack, SpatialLayer)> {
        self.pub_tracks.iter().find_map(|t| {
            t.ssrcs
                .iter()
                .find(|(s, _)| *s == ssrc)
                .map(|(_, l)| (t, *l))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::stun::Kind;
    use super::*;

    const NOT_STUN: Kind = Kind::NotStun;
    const CHECK: Kind = Kind::BindingRequest { nominates: false };
    const NOMINATION: Kind = Kind::BindingRequest { nominates: true };
    const SUCCESS: Kind = Kind::BindingSuccess;

    /// A STUN message of this type; `use_candidate` appends USE-CANDIDATE.
    fn stun(ty: u16, use_candidate: bool) -> BytesMut {
        let mut m = BytesMut::new();
        m.extend_from_slice(&ty.to_be_bytes());
        m.extend_from_slice(&(if use_candidate { 4u16 } else { 0 }).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        m.extend_from_slice(&[9; 12]);
        if use_candidate {
            m.extend_from_slice(&[0x00, 0x25, 0x00, 0x00]);
        }
        m
    }

    fn client_hello(n: u8) -> BytesMut {
        BytesMut::from(&[22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, n, 0, 40, 1][..])
    }

    fn addr(port: u16) -> Remote {
        Remote::Udp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Regression: the first ClientHello, sent by a browser as soon as one
    /// check succeeded and before it nominates, reached the engine before
    /// it had a selected pair and was dropped; the handshake then waited for
    /// the browser's DTLS retransmission.
    #[test]
    fn dtls_before_ice_connected_is_replayed_in_order() {
        let mut hold = SetupHold::default();
        let a = addr(5000);
        assert_eq!(
            hold.on_datagram(a, NOT_STUN, client_hello(1)),
            SetupAction::Held
        );
        assert_eq!(
            hold.on_datagram(a, NOT_STUN, client_hello(2)),
            SetupAction::Held
        );
        // STUN still goes straight through.
        assert_eq!(
            hold.on_datagram(a, CHECK, stun(0x0001, false)),
            SetupAction::Feed(vec![(a, stun(0x0001, false))])
        );
        assert_eq!(
            hold.on_ice_connected(),
            vec![(a, client_hello(1)), (a, client_hello(2))]
        );
        assert!(hold.on_ice_connected().is_empty(), "handed over once");
    }

    /// Regression: aioice nominates right after its first check, before the
    /// engine's own check of the pair succeeded; the engine ignored the
    /// nomination and ICE waited for aioice's 500 ms STUN retransmission.
    #[test]
    fn early_nomination_is_handed_again_after_the_pair_is_valid() {
        let mut hold = SetupHold::default();
        let (a, b) = (addr(5000), addr(5001));
        let nomination = stun(0x0001, true);
        assert_eq!(
            hold.on_datagram(a, NOMINATION, nomination.clone()),
            SetupAction::Feed(vec![(a, nomination.clone())])
        );
        // A success response from another address does not validate a's pair.
        let ok = stun(0x0101, false);
        assert_eq!(
            hold.on_datagram(b, SUCCESS, ok.clone()),
            SetupAction::Feed(vec![(b, ok.clone())])
        );
        // The response to the engine's check of a's pair: then the nomination.
        assert_eq!(
            hold.on_datagram(a, SUCCESS, ok.clone()),
            SetupAction::Feed(vec![(a, ok.clone()), (a, nomination)])
        );
        assert!(hold.on_ice_connected().is_empty());
        // After ICE connected the nomination is forgotten.
        assert_eq!(
            hold.on_datagram(a, SUCCESS, ok.clone()),
            SetupAction::Feed(vec![(a, ok)])
        );
    }

    /// Chromium sends its ClientHello after its first check succeeded and
    /// nominates only with its next check, ~50 ms later: the first DTLS
    /// handshake record from the address of the last authentic check asks
    /// the shard to nominate that pair at once, once.
    #[test]
    fn dtls_on_a_checked_pair_asks_for_a_nomination_once() {
        let mut hold = SetupHold::default();
        let (a, b) = (addr(5000), addr(5001));
        // DTLS before any check: only held.
        assert_eq!(
            hold.on_datagram(a, NOT_STUN, client_hello(0)),
            SetupAction::Held
        );
        let check = stun(0x0001, false);
        hold.on_datagram(a, CHECK, check.clone());
        // DTLS from another address than the check's: only held.
        assert_eq!(
            hold.on_datagram(b, NOT_STUN, client_hello(1)),
            SetupAction::Held
        );
        // SRTP (not a handshake record) does not nominate.
        let srtp = BytesMut::from(&[0x80u8, 96, 0, 1][..]);
        assert_eq!(hold.on_datagram(a, NOT_STUN, srtp), SetupAction::Held);
        assert_eq!(
            hold.on_datagram(a, NOT_STUN, client_hello(2)),
            SetupAction::HeldNominate(a, check.clone())
        );
        let ours = stun(0x0001, true);
        hold.nominated(a, ours.clone());
        // Once: the next flight only waits.
        assert_eq!(
            hold.on_datagram(a, NOT_STUN, client_hello(3)),
            SetupAction::Held
        );
        // The nomination is handed again after the pair's success response.
        assert_eq!(
            hold.on_datagram(a, SUCCESS, stun(0x0101, false)),
            SetupAction::Feed(vec![(a, stun(0x0101, false)), (a, ours)])
        );
        assert_eq!(hold.on_ice_connected().len(), 5);
    }

    #[test]
    fn the_hold_is_bounded() {
        let mut hold = SetupHold::default();
        let a = addr(5000);
        for i in 0..EARLY_DATAGRAMS {
            assert_eq!(
                hold.on_datagram(a, NOT_STUN, client_hello(i as u8)),
                SetupAction::Held
            );
        }
        assert_eq!(
            hold.on_datagram(a, NOT_STUN, client_hello(99)),
            SetupAction::Overflow
        );
        assert_eq!(hold.on_ice_connected().len(), EARLY_DATAGRAMS);
    }
}
