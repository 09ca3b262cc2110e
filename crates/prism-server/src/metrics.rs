//! Prometheus metrics.
//!
//! The packet path only increments plain integers in its shard
//! ([`ShardStats`], owned by the shard task). Once a second each shard
//! publishes a copy ([`ShardStats::publish`]); a scrape of `/metrics` sums
//! the shards' copies through [`ShardCollector`]. So a scrape sees values up
//! to a second old, and no metric-registry call ever happens per packet.
//!
//! Control-path counters (signaling messages, WHIP/WHEP requests) are
//! ordinary `prometheus` counters updated where the request is handled.
//! Every name has the `prism_` prefix, base units, and no room, participant
//! or track label. `docs/metrics.md` describes each.

use std::sync::{Arc, Mutex};

use prism_core::labels::Counts;
use prism_core::{DropCounts, RefusalCounts};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::media::engine_log::EngineError;
use crate::media::sdp::SimulcastForm;
use crate::media::stun::DatagramDrop;

/// A histogram with fixed upper bounds, kept in plain integers.
#[derive(Debug, Clone)]
pub struct Hist {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Hist {
    pub fn new(bounds: &'static [f64]) -> Self {
        Hist {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds `n` observations of `v`.
    #[inline]
    pub fn observe_n(&mut self, v: f64, n: u64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += n;
        self.sum += v * n as f64;
        self.count += n;
    }

    pub fn observe(&mut self, v: f64) {
        self.observe_n(v, 1);
    }

    fn add(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum += o.sum;
        self.count += o.count;
    }

    fn to_proto(&self) -> proto::Histogram {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(*b);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        h.set_bucket(buckets);
        h.set_sample_count(self.count);
        h.set_sample_sum(self.sum);
        h
    }
}

/// Forwarding latency buckets: 10 µs … 50 ms.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05,
];
/// Jitter and RTT buckets: 1 ms … 2 s.
pub const NETWORK_BOUNDS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];
/// Join duration buckets: 10 ms … 30 s.
pub const JOIN_BOUNDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One shard's numbers. Gauges are set at each publish; counters only grow.
#[derive(Debug, Clone)]
pub struct ShardStats {
    // Gauges.
    pub rooms: u64,
    /// By how they connect: socket, whip, whep.
    pub participants: [u64; 3],
    /// Published tracks: audio, video.
    pub tracks: [u64; 2],
    /// Subscriptions (attached subscriber legs): audio, video.
    pub subscriptions: [u64; 2],
    pub peers: u64,
    // Counters.
    pub rtp_in_packets: u64,
    pub rtp_in_bytes: u64,
    pub rtp_out_packets: u64,
    pub rtp_out_bytes: u64,
    pub drops: DropCounts,
    /// Datagrams the shard dropped before any engine saw them, by
    /// [`DatagramDrop::index`].
    pub datagram_drops: Counts<DatagramDrop>,
    /// Engine warnings kept out of the log, by [`EngineError::index`].
    pub engine_errors: Counts<EngineError>,
    /// Publish-offer m-sections whose simulcast was cut to one encoding, by
    /// how the offer announced it.
    pub simulcast_narrowed: Counts<SimulcastForm>,
    pub nacks_in: u64,
    pub nacks_out: u64,
    pub retransmits: u64,
    pub retransmits_rtx: u64,
    pub nack_misses: u64,
    pub plis_in: u64,
    pub firs_in: u64,
    pub plis_out: u64,
    pub firs_out: u64,
    pub keyframe_requests_out: u64,
    pub keyframe_cache_starts: u64,
    /// Subscriber starts that could not use the keyframe cache, by reason.
    pub keyframe_cache_refusals: RefusalCounts,
    pub packets_lost: u64,
    pub rembs_sent: u64,
    pub ice_failures: u64,
    pub dtls_failures: u64,
    /// Pairs the server nominated on a client's first DTLS handshake record
    /// (connection setup without the client's nomination wait).
    pub forced_nominations: u64,
    /// ICE-TCP connections (`media/ice_tcp.rs`).
    pub ice_tcp: crate::media::ice_tcp::TcpStats,
    pub participants_joined: u64,
    /// WHEP viewers whose broadcast ended (no publisher within
    /// `broadcast_grace`).
    pub broadcasts_ended: u64,
    /// Publishers removed because their publish leg went silent past
    /// `publish_timeout`.
    pub dead_publishers: u64,
    /// RTCP BYE packets sent to subscribers (a stream of theirs ended).
    pub byes_sent: u64,
    /// Simulcast tracks paused for a subscriber because their lowest layer
    /// did not fit its bandwidth.
    pub tracks_paused: u64,
    /// Subscribe legs allocated again at once because congestion lowered
    /// their estimate (between the once-a-second allocations).
    pub congestion_reallocations: u64,
    /// Packets of simulcast layers a subscriber leg did not take.
    pub layer_skips: u64,
    /// Subscriber legs' layer switches: up and down to their target, up and
    /// down to another layer (the target's was not being sent).
    pub layer_switches: [u64; 4],
    /// Gauges of the last allocation, summed over subscribe legs: their
    /// estimates, and the bitrate the allocator gave out.
    pub estimated_bps: u64,
    pub allocated_bps: u64,
    pub forwarding_latency: Hist,
    pub jitter: Hist,
    pub rtt: Hist,
    pub join_duration: Hist,
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            rooms: 0,
            participants: [0; 3],
            tracks: [0; 2],
            subscriptions: [0; 2],
            peers: 0,
            rtp_in_packets: 0,
            rtp_in_bytes: 0,
            rtp_out_packets: 0,
            rtp_out_bytes: 0,
            drops: DropCounts::default(),
            datagram_drops: Counts::default(),
            engine_errors: Counts::default(),
            simulcast_narrowed: Counts::default(),
            nacks_in: 0,
            nacks_out: 0,
            retransmits: 0,
            retransmits_rtx: 0,
            nack_misses: 0,
            plis_in: 0,
            firs_in: 0,
            plis_out: 0,
            firs_out: 0,
            keyframe_requests_out: 0,
            keyframe_cache_starts: 0,
            keyframe_cache_refusals: RefusalCounts::default(),
            packets_lost: 0,
            rembs_sent: 0,
            ice_failures: 0,
            dtls_failures: 0,
            forced_nominations: 0,
            ice_tcp: Default::default(),
            participants_joined: 0,
            broadcasts_ended: 0,
            dead_publishers: 0,
            byes_sent: 0,
            tracks_paused: 0,
            congestion_reallocations: 0,
            layer_skips: 0,
            layer_switches: [0; 4],
            estimated_bps: 0,
            allocated_bps: 0,
            forwarding_latency: Hist::new(LATENCY_BOUNDS),
            jitter: Hist::new(NETWORK_BOUNDS),
            rtt: Hist::new(NETWORK_BOUNDS),
            join_duration: Hist::new(JOIN_BOUNDS),
        }
    }
}

impl ShardStats {
    fn add(&mut self, o: &ShardStats) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        sum!(
            rooms,
            peers,
            rtp_in_packets,
            rtp_in_bytes,
            rtp_out_packets,
            rtp_out_bytes,
            nacks_in,
            nacks_out,
            retransmits,
            retransmits_rtx,
            nack_misses,
            plis_in,
            firs_in,
            plis_out,
            firs_out,
            keyframe_requests_out,
            keyframe_cache_starts,
            packets_lost,
            rembs_sent,
            ice_failures,
            dtls_failures,
            forced_nominations,
            participants_joined,
            broadcasts_ended,
            dead_publishers,
            byes_sent,
            tracks_paused,
            congestion_reallocations,
            layer_skips,
            estimated_bps,
            allocated_bps
        );
        for (a, b) in self.participants.iter_mut().zip(o.participants) {
            *a += b;
        }
        for (a, b) in self.layer_switches.iter_mut().zip(o.layer_switches) {
            *a += b;
        }
        for (a, b) in self.tracks.iter_mut().zip(o.tracks) {
            *a += b;
        }
        for (a, b) in self.subscriptions.iter_mut().zip(o.subscriptions) {
            *a += b;
        }
        self.ice_tcp.add(&o.ice_tcp);
        self.drops.add(&o.drops);
        self.keyframe_cache_refusals.add(&o.keyframe_cache_refusals);
        self.datagram_drops.add(&o.datagram_drops);
        self.engine_errors.add(&o.engine_errors);
        self.simulcast_narrowed.add(&o.simulcast_narrowed);
        self.forwarding_latency.add(&o.forwarding_latency);
        self.jitter.add(&o.jitter);
        self.rtt.add(&o.rtt);
        self.join_duration.add(&o.join_duration);
    }

    /// Copies these numbers where the exporter reads them.
    pub fn publish(&self, to: &Mutex<ShardStats>) {
        // A poisoned lock only means an exporter panicked mid-read: the data
        // is plain numbers, still fine to overwrite.
        let mut g = to.lock().unwrap_or_else(|e| e.into_inner());
        g.clone_from(self);
    }
}

/// Sums the shards' published stats at scrape time.
pub struct ShardCollector {
    shards: Vec<Arc<Mutex<ShardStats>>>,
    descs: Vec<Desc>,
}

fn family(name: &str, help: &str, t: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(t);
    *f.mut_metric() = metrics;
    f
}

fn labels(pairs: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = proto::LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn counter(v: u64, l: &[(&str, &str)]) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(v as f64);
    let mut m = proto::Metric::default();
    m.set_counter(c);
    m.set_label(labels(l));
    m
}

fn gauge(v: u64, l: &[(&str, &str)]) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(v as f64);
    let mut m = proto::Metric::default();
    m.set_gauge(g);
    m.set_label(labels(l));
    m
}

fn histogram(h: &Hist) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_histogram(h.to_proto());
    m
}

impl ShardCollector {
    pub fn new(shards: Vec<Arc<Mutex<ShardStats>>>) -> Self {
        ShardCollector {
            shards,
            descs: Vec::new(),
        }
    }

    fn total(&self) -> ShardStats {
        let mut t = ShardStats::default();
        for s in &self.shards {
            t.add(&s.lock().unwrap_or_else(|e| e.into_inner()));
        }
        t
    }
}

impl Collector for ShardCollector {
    fn desc(&self) -> Vec<&Desc> {
        // Unchecked collector: the families are built at collect time.
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use MetricType::{COUNTER, GAUGE, HISTOGRAM};
        let t = self.total();
        let kinds = ["audio", "video"];
        let mut out = vec![
            family("prism_rooms", "Open rooms.", GAUGE, vec![gauge(t.rooms, &[])]),
            family(
                "prism_participants",
                "Participants in rooms, by how they connect (WHEP viewers are hidden from rooms but counted here).",
                GAUGE,
                ["websocket", "whip", "whep"]
                    .iter()
                    .zip(t.participants)
                    .map(|(k, v)| gauge(v, &[("transport", k)]))
                    .collect(),
            ),
            family(
                "prism_published_tracks",
                "Published tracks, by kind.",
                GAUGE,
                kinds.iter().zip(t.tracks).map(|(k, v)| gauge(v, &[("kind", k)])).collect(),
            ),
            family(
                "prism_subscriptions",
                "Subscriber legs attached to a published track, by kind.",
                GAUGE,
                kinds.iter().zip(t.subscriptions).map(|(k, v)| gauge(v, &[("kind", k)])).collect(),
            ),
            family("prism_peer_connections", "Peer connections (publish and subscribe legs).", GAUGE, vec![gauge(t.peers, &[])]),
            family(
                "prism_rtp_packets_total",
                "RTP packets received from publishers (in) and sent to subscribers (out), retransmissions included.",
                COUNTER,
                vec![counter(t.rtp_in_packets, &[("direction", "in")]), counter(t.rtp_out_packets, &[("direction", "out")])],
            ),
            family(
                "prism_rtp_bytes_total",
                "RTP payload bytes received and sent.",
                COUNTER,
                vec![counter(t.rtp_in_bytes, &[("direction", "in")]), counter(t.rtp_out_bytes, &[("direction", "out")])],
            ),
            family(
                "prism_dropped_packets_total",
                "Packets dropped, by reason: not forwarded to one subscriber, or dropped before any subscriber saw them.",
                COUNTER,
                t.drops.iter().map(|(r, n)| counter(n, &[("reason", r.as_str())])).collect(),
            ),
            family(
                "prism_dropped_datagrams_total",
                "Datagrams (UDP, or frames on ICE-TCP connections) dropped by a media shard before any peer connection saw them, by reason (forged or stray STUN, unknown source address, empty).",
                COUNTER,
                t.datagram_drops.iter().map(|(r, n)| counter(n, &[("reason", r.as_str())])).collect(),
            ),
            family(
                "prism_engine_errors_total",
                "Datagrams (and writes) the WebRTC engine refused, by the part that refused them; the engine's warning for each is kept out of the log.",
                COUNTER,
                t.engine_errors.iter().map(|(r, n)| counter(n, &[("reason", r.as_str())])).collect(),
            ),
            family(
                "prism_simulcast_narrowed_total",
                "Publish-offer m-sections whose simulcast Prism cut to one encoding (layers are not forwarded yet), by how the offer announced it.",
                COUNTER,
                t.simulcast_narrowed.iter().map(|(f, n)| counter(n, &[("form", f.as_str())])).collect(),
            ),
            family(
                "prism_nacks_total",
                "Sequence numbers NACKed by subscribers (in) and by Prism to publishers (out).",
                COUNTER,
                vec![counter(t.nacks_in, &[("direction", "in")]), counter(t.nacks_out, &[("direction", "out")])],
            ),
            family(
                "prism_retransmitted_packets_total",
                "Packets retransmitted to subscribers from the shared history, by encapsulation.",
                COUNTER,
                vec![
                    counter(t.retransmits_rtx, &[("mode", "rtx")]),
                    counter(t.retransmits.saturating_sub(t.retransmits_rtx), &[("mode", "media")]),
                ],
            ),
            family("prism_nack_misses_total", "NACKed packets not answered (never sent to that subscriber, or past the history).", COUNTER, vec![counter(t.nack_misses, &[])]),
            family(
                "prism_keyframe_requests_total",
                "Keyframe requests: PLI/FIR from subscribers (in) and to publishers (out).",
                COUNTER,
                vec![
                    counter(t.plis_in, &[("direction", "in"), ("type", "pli")]),
                    counter(t.firs_in, &[("direction", "in"), ("type", "fir")]),
                    counter(t.plis_out, &[("direction", "out"), ("type", "pli")]),
                    counter(t.firs_out, &[("direction", "out"), ("type", "fir")]),
                ],
            ),
            family("prism_keyframe_cache_starts_total", "Subscribers started from the keyframe cache: a cached keyframe and every packet since, to the live edge.", COUNTER, vec![counter(t.keyframe_cache_starts, &[])]),
            family(
                "prism_keyframe_cache_refusals_total",
                "Subscriber starts that could not use the keyframe cache, by reason (no_keyframe, stale, over_bound, incomplete); each waits for a fresh keyframe.",
                COUNTER,
                t.keyframe_cache_refusals.iter().map(|(r, n)| counter(n, &[("reason", r.as_str())])).collect(),
            ),
            family("prism_packets_lost_total", "Packets lost between publishers and Prism (before retransmission), as the receive statistics count them.", COUNTER, vec![counter(t.packets_lost, &[])]),
            family("prism_remb_sent_total", "REMB bandwidth messages sent to publishers.", COUNTER, vec![counter(t.rembs_sent, &[])]),
            family("prism_ice_failures_total", "Peer connections that failed before ICE connected.", COUNTER, vec![counter(t.ice_failures, &[])]),
            family("prism_ice_tcp_connections", "ICE-TCP connections open (RFC 6544 passive candidates).", GAUGE, vec![gauge(t.ice_tcp.open, &[])]),
            family("prism_ice_tcp_connections_total", "ICE-TCP connections by what became of them when accepted: accepted, or refused at the shard's limit.", COUNTER, vec![counter(t.ice_tcp.accepted, &[("result", "accepted")]), counter(t.ice_tcp.refused, &[("result", "refused")])]),
            family("prism_ice_tcp_unbound_closed_total", "ICE-TCP connections closed because no authentic binding request arrived on them within 10 s.", COUNTER, vec![counter(t.ice_tcp.unbound_closed, &[])]),
            family("prism_ice_tcp_send_drops_total", "Datagrams not sent on an ICE-TCP connection because its send queue was full (a slow or stalled client) or it had closed.", COUNTER, vec![counter(t.ice_tcp.send_drops, &[])]),
            family("prism_ice_forced_nominations_total", "ICE pairs Prism nominated on a client's first DTLS handshake record, before the client's own nomination arrived.", COUNTER, vec![counter(t.forced_nominations, &[])]),
            family("prism_dtls_failures_total", "Peer connections whose ICE connected but that failed before DTLS completed.", COUNTER, vec![counter(t.dtls_failures, &[])]),
            family("prism_participants_joined_total", "Participants that joined (any transport).", COUNTER, vec![counter(t.participants_joined, &[])]),
            family("prism_broadcasts_ended_total", "WHEP viewer sessions closed because their broadcast had no publisher for broadcast_grace.", COUNTER, vec![counter(t.broadcasts_ended, &[])]),
            family("prism_layer_switches_total", "Simulcast and SVC layer switches of subscriber legs, by direction, and by reason: to the leg's target layer (target), or to another because the target's layer was not being sent (fallback).", COUNTER, vec![
                counter(t.layer_switches[0], &[("direction", "up"), ("reason", "target")]),
                counter(t.layer_switches[1], &[("direction", "down"), ("reason", "target")]),
                counter(t.layer_switches[2], &[("direction", "up"), ("reason", "fallback")]),
                counter(t.layer_switches[3], &[("direction", "down"), ("reason", "fallback")]),
            ]),
            family("prism_layer_skipped_packets_total", "Packets of simulcast layers a subscriber leg does not take (the normal cost of simulcast, not drops).", COUNTER, vec![counter(t.layer_skips, &[])]),
            family("prism_tracks_paused_total", "Simulcast tracks paused for a subscriber because their lowest layer did not fit its bandwidth estimate (the subscriber is sent track_paused).", COUNTER, vec![counter(t.tracks_paused, &[])]),
            family("prism_congestion_reallocations_total", "Subscribe legs allocated again at once because congestion (loss or a growing queue in their transport-cc feedback) lowered their bandwidth estimate.", COUNTER, vec![counter(t.congestion_reallocations, &[])]),
            family("prism_allocator_estimate_bps", "Subscribe legs' bandwidth estimates at the last allocation, summed (bits/s).", GAUGE, vec![gauge(t.estimated_bps, &[])]),
            family("prism_allocator_allocated_bps", "Bitrate the allocator gave out at the last allocation, summed over subscribe legs (bits/s).", GAUGE, vec![gauge(t.allocated_bps, &[])]),
            family("prism_rtcp_byes_sent_total", "RTCP BYE packets sent to subscribers: one of their streams ended (track gone, or broadcast ended).", COUNTER, vec![counter(t.byes_sent, &[])]),
            family("prism_dead_publishers_total", "Publishers removed because their publish leg received nothing for publish_timeout.", COUNTER, vec![counter(t.dead_publishers, &[])]),
            family("prism_forwarding_latency_seconds", "From a datagram's arrival batch to its forwarded copies' hand-off to the engine.", HISTOGRAM, vec![histogram(&t.forwarding_latency)]),
            family("prism_jitter_seconds", "Interarrival jitter of publishers' streams, sampled once a second per stream.", HISTOGRAM, vec![histogram(&t.jitter)]),
            family("prism_rtt_seconds", "Round-trip time to subscribers (from their receiver reports), sampled once a second per stream.", HISTOGRAM, vec![histogram(&t.rtt)]),
            family("prism_join_duration_seconds", "From a participant's join to its first connected media leg.", HISTOGRAM, vec![histogram(&t.join_duration)]),
        ];
        out.retain(|f| !f.get_metric().is_empty());
        out
    }
}

/// Everything `/metrics` shows, and the control-path counters.
pub struct Metrics {
    pub registry: Registry,
    /// Signaling messages by type and result (`ok` or the error code).
    pub signaling: IntCounterVec,
    /// WHIP/WHEP requests by endpoint, method and status code.
    pub http: IntCounterVec,
    /// Refused tokens by reason (`missing`, `expired`, `wrong_room`, …).
    pub auth_failures: IntCounterVec,
    /// Requests refused by a configured limit, by limit name.
    pub limit_hits: IntCounterVec,
    pub draining: IntGauge,
    /// Open WebSocket signaling sessions (one task each).
    pub ws_sessions: IntGauge,
    /// WebSockets closed because they did not join within `ws_join_timeout`.
    pub ws_join_timeouts: prometheus::IntCounter,
    /// HTTP connections closed because they sent nothing within
    /// `http_first_byte_timeout`.
    pub http_idle_closes: prometheus::IntCounter,
    /// Live WHIP/WHEP session URLs; set at scrape time.
    pub http_sessions: IntGauge,
    /// Room → shard placements; equals `prism_rooms` unless a placement
    /// leaked. Set at scrape time.
    pub room_directory: IntGauge,
    /// Tasks alive on the server's async runtime; set at scrape time.
    pub tasks: IntGauge,
}

/// The `limit` label values of `prism_limit_hits_total`, exported at 0 from
/// the start (docs/metrics.md names each).
pub const LIMITS: &[&str] = &[
    "participants_per_room",
    "rooms",
    "tracks_per_participant",
    "signal_rate",
    "http_rate",
    "ws_per_address",
];

/// `prism_limit_hits_total{limit}`: made before the shards start (they count
/// into it too) and registered by [`Metrics::new`].
pub fn limit_counter() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "prism_limit_hits_total",
            "Requests refused because a configured limit was reached, by limit.",
        ),
        &["limit"],
    )
    .expect("valid metric options")
}

impl Metrics {
    pub fn new(shards: Vec<Arc<Mutex<ShardStats>>>, limit_hits: IntCounterVec) -> Arc<Metrics> {
        let registry = Registry::new();
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "prism_auth_failures_total",
                "Access tokens refused on join, WHIP or WHEP, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric options");
        let signaling = IntCounterVec::new(
            Opts::new(
                "prism_signaling_messages_total",
                "WebSocket signaling messages received, by type and result.",
            ),
            &["type", "result"],
        )
        .expect("valid metric options");
        let http = IntCounterVec::new(
            Opts::new(
                "prism_whip_whep_requests_total",
                "WHIP/WHEP HTTP requests, by endpoint, method and status code.",
            ),
            &["endpoint", "method", "code"],
        )
        .expect("valid metric options");
        let draining = IntGauge::new(
            "prism_draining",
            "1 while the server drains (refuses new work) before shutting down.",
        )
        .expect("valid metric options");
        let build = IntGauge::with_opts(
            Opts::new("prism_build_info", "Build information; always 1.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric options");
        build.set(1);
        let gauge =
            |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric options");
        // Known label values start at 0, so rate() works from the first hit
        // and dashboards show the series before anything goes wrong.
        for reason in crate::auth::AuthError::REASONS {
            auth_failures.with_label_values(&[reason]);
        }
        for ty in prism_signal::ClientMessage::TYPES {
            signaling.with_label_values(&[ty, "ok"]);
        }
        // The success answer of each WHIP/WHEP method (RFC 9725).
        for endpoint in ["whip", "whep"] {
            for (method, code) in [
                ("POST", "201"),
                ("PATCH", "204"),
                ("DELETE", "200"),
                ("OPTIONS", "204"),
            ] {
                http.with_label_values(&[endpoint, method, code]);
            }
        }
        for limit in LIMITS {
            limit_hits.with_label_values(&[limit]);
        }
        let ws_sessions = gauge(
            "prism_websocket_sessions",
            "Open WebSocket signaling connections.",
        );
        let ws_join_timeouts = prometheus::IntCounter::new(
            "prism_websocket_join_timeouts_total",
            "WebSockets closed because they did not join a room within ws_join_timeout.",
        )
        .expect("a valid metric name");
        let http_idle_closes = prometheus::IntCounter::new(
            "prism_http_idle_closes_total",
            "TCP connections to the HTTP port closed because they sent no byte within http_first_byte_timeout.",
        )
        .expect("a valid metric name");
        let http_sessions = gauge(
            "prism_whip_whep_sessions",
            "WHIP/WHEP sessions whose URL is live.",
        );
        let room_directory = gauge(
            "prism_room_directory_entries",
            "Rooms placed on a shard in the directory; more than prism_rooms for long means a leak.",
        );
        let tasks = gauge(
            "prism_runtime_tasks",
            "Tasks alive on the async runtime (sessions, HTTP connections, timers).",
        );
        for c in [
            Box::new(signaling.clone()) as Box<dyn Collector>,
            Box::new(http.clone()),
            Box::new(auth_failures.clone()),
            Box::new(limit_hits.clone()),
            Box::new(draining.clone()),
            Box::new(ws_sessions.clone()),
            Box::new(ws_join_timeouts.clone()),
            Box::new(http_idle_closes.clone()),
            Box::new(http_sessions.clone()),
            Box::new(room_directory.clone()),
            Box::new(tasks.clone()),
            Box::new(build),
            Box::new(ShardCollector::new(shards)),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        Arc::new(Metrics {
            registry,
            signaling,
            http,
            auth_failures,
            limit_hits,
            draining,
            ws_sessions,
            ws_join_timeouts,
            http_idle_closes,
            http_sessions,
            room_directory,
            tasks,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding plain families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Hist::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe_n(0.5, 2);
        h.observe(5.0);
        let p = h.to_proto();
        let b: Vec<u64> = p
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(b, vec![1, 3]);
        assert_eq!(p.get_sample_count(), 4);
        assert!((p.get_sample_sum() - 6.05).abs() < 1e-9);
    }

    #[test]
    fn shards_are_summed() {
        let a = Arc::new(Mutex::new(ShardStats {
            rooms: 2,
            rtp_in_packets: 10,
            ..Default::default()
        }));
        let b = Arc::new(Mutex::new(ShardStats {
            rooms: 1,
            rtp_in_packets: 5,
            ..Default::default()
        }));
        let m = Metrics::new(vec![a, b], limit_counter());
        let text = m.render();
        assert!(text.contains("prism_rooms 3"), "{text}");
        assert!(
            text.contains("prism_rtp_packets_total{direction=\"in\"} 15"),
            "{text}"
        );
        assert!(text.contains("prism_build_info{version="), "{text}");
    }
}
