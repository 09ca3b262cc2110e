//! Glue around the `rtc` 0.21.1 engine that both the server and the Rust
//! client need.
//!
//! The engine's interceptor chain consumes inbound RTCP: without an
//! interceptor that marks packets [`Attribute::DeliverToApplication`], no
//! PLI, FIR, NACK or REMB ever reaches `poll_read`. [`DeliverRtcp`] marks
//! every inbound RTCP packet (the chain still acts on it too), and
//! [`interceptors`] builds the registry Prism uses with it in place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, Interceptor,
    NackGeneratorBuilder, Packet, PacketReport, ReceiverReportBuilder, Registry, Slot, StreamInfo,
    TaggedPacket, TwccSenderBuilder,
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

/// The latest send-side bandwidth estimate of one peer connection, in bits
/// per second (0 until the first TWCC feedback). Written by the engine's
/// congestion controller, read by the shard.
#[derive(Debug, Clone, Default)]
pub struct Estimate(Arc<AtomicU64>);

impl Estimate {
    pub fn bits_per_second(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The engine's GCC estimator, publishing each new target into an
/// [`Estimate`], corrected by what the link delivered ([`Throughput`]).
struct WatchedGcc {
    gcc: Gcc,
    delivered: Throughput,
    ceiling: Ceiling,
    out: Estimate,
}

impl BandwidthEstimator for WatchedGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        self.delivered.on_reports(now, reports);
        let gcc = self.gcc.target_bitrate() as u64;
        let estimate = match self.delivered.rates(now) {
            Some((sent, acked)) => {
                let e = effective_estimate(gcc, sent, acked);
                self.ceiling.apply(now, e, congested(sent, acked), acked)
            }
            None => gcc,
        };
        self.out.0.store(estimate, Ordering::Relaxed);
    }
    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }
    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// How far back [`Throughput`] looks.
pub const THROUGHPUT_WINDOW: Duration = Duration::from_secs(1);

/// What a leg sent and what its receiver reported as arrived, over the last
/// `window` of transport-wide feedback.
#[derive(Debug, Clone)]
pub struct Throughput {
    window: Duration,
    /// (feedback time, bytes reported, bytes that arrived).
    batches: std::collections::VecDeque<(Instant, u64, u64)>,
}

impl Throughput {
    pub fn new(window: Duration) -> Self {
        Throughput {
            window,
            batches: std::collections::VecDeque::new(),
        }
    }

    /// One feedback's packet reports.
    pub fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let sent: u64 = reports.iter().map(|r| r.size as u64).sum();
        let arrived: u64 = reports
            .iter()
            .filter(|r| r.arrived)
            .map(|r| r.size as u64)
            .sum();
        self.batches.push_back((now, sent, arrived));
        while self
            .batches
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) > self.window)
        {
            self.batches.pop_front();
        }
    }

    /// (sent, arrived) bits per second over the window; `None` until a
    /// quarter of the window has feedback.
    pub fn rates(&self, now: Instant) -> Option<(u64, u64)> {
        let first = self.batches.front()?.0;
        let span = now.saturating_duration_since(first);
        if span < self.window / 4 {
            return None;
        }
        // The oldest batch covers the time before it: leave it out.
        let (sent, arrived) = self
            .batches
            .iter()
            .skip(1)
            .fold((0, 0), |(s, a), (_, bs, ba)| (s + bs, a + ba));
        let ms = span.as_millis().max(1) as u64;
        Some((sent * 8 * 1000 / ms, arrived * 8 * 1000 / ms))
    }
}

/// A leg's estimate for the allocator, from GCC's target and what the link
/// delivered (bits/s). GCC alone reacted to a 300 kbit/s bottleneck only
/// after 3–4 s, then fell to its floor while the loss lasted, and grew
/// without bound on a leg that sent little:
/// - losing more than 10%: the link carries what arrived (neither GCC's
///   slower, larger figure nor its collapse while the loss lasts);
/// - otherwise it carried what arrived without trouble: at least that and
///   a tenth more (the allocator keeps 5% headroom, so the layers in use
///   still fit), more when GCC says so.
pub fn effective_estimate(gcc: u64, sent: u64, arrived: u64) -> u64 {
    if sent == 0 {
        return gcc;
    }
    if congested(sent, arrived) {
        arrived
    } else {
        gcc.max(arrived + arrived / 10)
    }
}

/// More than a tenth of what was sent did not arrive.
pub fn congested(sent: u64, arrived: u64) -> bool {
    sent > 0 && arrived * 10 < sent * 9
}

/// How long a congestion caps the estimate at first, and at most.
pub const CEILING_FIRST: Duration = Duration::from_secs(4);
pub const CEILING_MAX: Duration = Duration::from_secs(64);

/// Remembers a congestion: GCC's estimate grows without bound on a leg that
/// sends less than it could (about 8% a second), so right after a
/// bottleneck was found the allocator would move the leg back up into it
/// within seconds, and again, and again. For a while after a congestion the
/// estimate is capped at what the link delivered then; the cap lifts after
/// [`CEILING_FIRST`], and each congestion soon after a lift doubles the
/// wait (up to [`CEILING_MAX`]): a link that stays narrow is probed rarely,
/// one that widened is used again within seconds.
#[derive(Debug, Clone, Default)]
pub struct Ceiling {
    /// The cap, when it lifts, and how long it was set for.
    cap: Option<(u64, Instant, Duration)>,
    /// When the last cap lifted, and how long it had been set for.
    lifted: Option<(Instant, Duration)>,
}

impl Ceiling {
    /// The estimate to publish for `estimate`, given whether the leg is
    /// `congested` and what `arrived` (bits/s).
    pub fn apply(&mut self, now: Instant, estimate: u64, congested: bool, arrived: u64) -> u64 {
        if let Some((cap, until, wait)) = self.cap {
            if now >= until {
                self.cap = None;
                self.lifted = Some((until, wait));
            } else if congested {
                // Still congested: the link carries the most that arrived
                // in this episode (what arrives while a queue drains after
                // the leg moved down is less, and is not the link's size).
                let cap = cap.max(arrived);
                self.cap = Some((cap, until, wait));
                return cap;
            } else {
                return estimate.min(cap.max(arrived + arrived / 10));
            }
        }
        if !congested {
            return estimate;
        }
        let wait = match self.lifted {
            // Congested again soon after the last lift: wait longer.
            Some((at, last)) if now.saturating_duration_since(at) < last * 2 => {
                (last * 2).min(CEILING_MAX)
            }
            _ => CEILING_FIRST,
        };
        self.cap = Some((arrived, now + wait, wait));
        arrived
    }

    /// Capped now.
    pub fn active(&self, now: Instant) -> bool {
        self.cap.is_some_and(|(_, until, _)| now < until)
    }
}

/// Bounds of the send-side estimate on subscribe legs, bits per second.
#[derive(Debug, Clone, Copy)]
pub struct EstimateBounds {
    pub initial: f64,
    pub min: f64,
    pub max: f64,
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
///   GCC estimator whose target is published in the returned [`Estimate`].
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
    // Receive side: record what arrives and send TWCC feedback to publishers
    // (their own estimators adapt); also registers transport-cc for the SDP.
    let receive = configure_twcc_receiver_only(
        Registry::new().with(Slot::NackGenerator, NackGeneratorBuilder::new().build()),
        media_engine,
    )?;
    let estimate = Estimate::default();
    let registry = if sends_media {
        let gcc = WatchedGcc {
            gcc: Gcc::new(bounds.initial, bounds.min, bounds.max),
            delivered: Throughput::new(THROUGHPUT_WINDOW),
            ceiling: Ceiling::default(),
            out: estimate.clone(),
        };
        Registry::new()
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(gcc).build(),
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

#[cfg(test)]
mod throughput_tests {
    use super::*;

    fn report(size: usize, arrived: bool, at: Instant) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id: 0,
            rtp_sequence_number: 0,
            is_twcc: true,
            twcc_sequence_number: 0,
            size,
            arrived,
            departure: at,
            arrival: None,
            ecn: Default::default(),
        }
    }

    #[test]
    fn rates_over_the_window() {
        let t0 = Instant::now();
        let mut t = Throughput::new(Duration::from_secs(1));
        assert_eq!(t.rates(t0), None);
        // 100 ms feedback: 10 packets of 1250 bytes, half lost.
        for i in 0..=10u32 {
            let at = t0 + Duration::from_millis(100 * i as u64);
            let r: Vec<_> = (0..10).map(|k| report(1250, k % 2 == 0, at)).collect();
            t.on_reports(at, &r);
        }
        let (sent, arrived) = t.rates(t0 + Duration::from_millis(1000)).unwrap();
        // 12 500 bytes per 100 ms = 1 Mbit/s sent, half of it arrived.
        assert!((900_000..=1_100_000).contains(&sent), "{sent}");
        assert!((450_000..=550_000).contains(&arrived), "{arrived}");
    }

    #[test]
    fn a_congestion_caps_the_estimate_for_a_while_and_longer_when_it_recurs() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let first = CEILING_FIRST.as_millis() as u64;
        let mut c = Ceiling::default();
        assert_eq!(c.apply(at(0), 2_000_000, false, 500_000), 2_000_000);
        // The link narrows to 300 kbit/s.
        assert_eq!(c.apply(at(1000), 300_000, true, 300_000), 300_000);
        // While the queue drains less arrives; the cap is the most that did.
        assert_eq!(c.apply(at(1500), 300_000, true, 60_000), 300_000);
        // Loss-free on the low layer, GCC grows: capped.
        assert_eq!(c.apply(at(2000), 900_000, false, 200_000), 300_000);
        assert!(c.active(at(1000 + first - 1)));
        // Lifted after CEILING_FIRST.
        assert_eq!(c.apply(at(1000 + first), 900_000, false, 200_000), 900_000);
        // Congested again soon after: twice the wait.
        let again = 1000 + first + 1000;
        assert_eq!(c.apply(at(again), 600_000, true, 310_000), 310_000);
        assert!(c.active(at(again + 2 * first - 1)));
        assert!(!c.active(at(again + 2 * first)));
        // A congestion long after the last lift starts over.
        assert_eq!(c.apply(at(200_000), 900_000, true, 400_000), 400_000);
        assert!(!c.active(at(200_000 + first)));
    }

    #[test]
    fn the_estimate_follows_what_the_link_delivers() {
        // Throttled: 1.5 Mbit/s sent, 300 kbit/s arrives; GCC still high.
        assert_eq!(effective_estimate(3_000_000, 1_500_000, 300_000), 300_000);
        // GCC's loss-based collapse does not count while the link delivers.
        assert_eq!(effective_estimate(53_000, 1_500_000, 280_000), 280_000);
        // GCC collapsed after the loss, the link carries 190 kbit/s cleanly.
        assert_eq!(effective_estimate(53_000, 190_000, 190_000), 209_000);
        // Healthy: GCC decides.
        assert_eq!(effective_estimate(2_000_000, 600_000, 600_000), 2_000_000);
        assert_eq!(effective_estimate(2_000_000, 0, 0), 2_000_000);
    }
}
