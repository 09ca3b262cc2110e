//! The bandwidth estimate of a subscribe leg: what the server may send one
//! subscriber, from its transport-cc feedback.
//!
//! The engine's GCC (`rtc::interceptor::Gcc`) alone serves an SFU badly.
//! An SFU's legs are application-limited (they carry what the publishers
//! send, not what the link could take), so GCC's target drifts far above
//! the link (its loss half grows 27 % a second on a clean path), and when
//! the link then narrows (a viewer's Wi-Fi degrades: issue 13's 300 kbit/s
//! throttle) it comes down multiplicatively from that height: 8–12 s to
//! reach the link, while the viewer's picture drowns in loss. Its delay half
//! then climbs back at 8 % a second (or 60 kbit/s a second near its last
//! decrease), so a link that recovered stays unused for half a minute.
//!
//! [`LinkEstimate`] is what the leg publishes instead, on top of the same
//! feedback:
//!
//! - **Down to what got through, at once.** Congestion — ≥ 20 % of the
//!   packets of the last 300 ms lost, a queueing delay of 150 ms or more
//!   (one-way delay above its lowest of the last 10–20 s) on three feedbacks
//!   in a row, or GCC's delay-based half decreasing three times within a
//!   second (a queue that keeps growing) — the delay signals only while the
//!   window's arrivals spread 10 % wider than its departures (the link
//!   falls behind; a receiver whose busy CPU stamps packets late bunches
//!   them instead) — sets the
//!   estimate to 85 % of the rate the subscriber acknowledged in those
//!   300 ms while it was losing: the rate its link carries, whatever the
//!   estimate was before.
//!   Never upwards; within one episode (300 ms) only by 10 % or more; then
//!   not again for 1.5 s, the time the allocator's lower layers take to
//!   arrive and the link's queue to drain (lowering to the acknowledged
//!   rate meanwhile would follow the sender's own reduction down to the
//!   floor).
//! - **Up, after a hold.** While not congested and no congestion for the
//!   hold (2 s, doubled by each congestion within 6 s of the last one's
//!   hold, up to 8 s; back to 2 s after 20 s without), the estimate grows 50 % a second
//!   up to the bounds' maximum. From a 300 kbit/s link to a 2.5 Mbit/s layer
//!   takes about 6 s after the hold; the allocator's own hold steps layers
//!   on top.
//!
//! An application-limited leg therefore has a high estimate (harmless: what
//! is sent is what the publishers send), and a narrowed link is found within
//! one feedback window instead of seconds. Loss alone below 20 % (a lossy
//! but wide link) does not lower it: NACK/RTX repair that.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

/// The window over which loss and the acknowledged rate are measured: a
/// few feedback intervals (Chromium sends transport-cc feedback every
/// 50–100 ms), short enough that a congestion's rate is the link's, not
/// the rate before it narrowed.
const WINDOW: Duration = Duration::from_millis(300);
/// After a congestion, how long before another may lower the estimate.
const REACTION: Duration = Duration::from_millis(1500);
/// The loss (share of the window's packets) that counts as congestion.
const CONGESTION_LOSS: f64 = 0.2;
/// What the first batch is taken to cover.
const FIRST_SPAN: Duration = Duration::from_millis(100);
/// At least this many packets in the window before loss means anything.
const MIN_PACKETS: u32 = 10;
/// The share of the acknowledged rate the estimate drops to.
const DROP_TO: f64 = 0.85;
/// GCC delay-based decreases within [`DELAY_SPAN`] that count as congestion.
const DELAY_DECREASES: usize = 3;
const DELAY_SPAN: Duration = Duration::from_secs(1);
/// Queueing delay (one-way delay above its baseline) that counts as
/// congestion when [`QUEUED_BATCHES`] feedbacks in a row show it: a
/// bottleneck whose buffer fills before it drops (a shaper's 400 ms queue)
/// is found while it fills, a second or more before its loss shows.
const QUEUE_CONGESTION: Duration = Duration::from_millis(150);
const QUEUED_BATCHES: u32 = 3;
/// How much wider than their departures the window's arrivals must spread
/// for a delay signal to count (the link falls behind the sender).
const SPREAD: f64 = 1.1;
/// The baseline of the one-way delay is the lowest over one to two of
/// these.
const BASE_BUCKET: Duration = Duration::from_secs(10);
/// Growth per second once the hold is over.
const GROWTH: f64 = 1.5;
const HOLD_MIN: Duration = Duration::from_secs(2);
const HOLD_MAX: Duration = Duration::from_secs(8);
/// A congestion this soon after the last one's hold ended (the probe that
/// followed it failed) doubles the hold.
const BACKOFF_WITHIN: Duration = Duration::from_secs(6);
/// After this long without congestion the hold is back to [`HOLD_MIN`].
const BACKOFF_RESET: Duration = Duration::from_secs(20);

/// The latest estimate of one subscribe leg, shared between the engine's
/// congestion controller (writer) and the shard (reader).
#[derive(Debug, Clone, Default)]
pub struct Estimate(Arc<EstimateCell>);

#[derive(Debug, Default)]
struct EstimateCell {
    bps: AtomicU64,
    congestions: AtomicU64,
}

impl Estimate {
    /// Bits per second; 0 until the first transport-cc feedback.
    pub fn bits_per_second(&self) -> u64 {
        self.0.bps.load(Ordering::Relaxed)
    }

    /// How many times congestion lowered the estimate: a change tells the
    /// shard to allocate this leg again now rather than at its next tick.
    pub fn congestions(&self) -> u64 {
        self.0.congestions.load(Ordering::Relaxed)
    }
}

/// Bounds of the send-side estimate on subscribe legs, bits per second.
#[derive(Debug, Clone, Copy)]
pub struct EstimateBounds {
    pub initial: f64,
    pub min: f64,
    pub max: f64,
}

/// One transport-cc feedback batch as [`LinkEstimate`] takes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Feedback {
    /// Bytes and packets acknowledged as arrived.
    pub arrived_bytes: u64,
    pub arrived: u32,
    /// Packets reported lost.
    pub lost: u32,
    /// GCC's delay-based target after the batch.
    pub gcc_delay_target: f64,
    /// The arrived packets' mean one-way delay, milliseconds, on an
    /// arbitrary but fixed origin (receiver clock minus sender clock):
    /// only its changes mean something.
    pub one_way_ms: Option<f64>,
    /// Over the arrived packets: from the first to the last departure
    /// (sender clock) and from the first to the last arrival (receiver
    /// clock). A queue that grows spreads arrivals wider than departures;
    /// a receiver that stalled (a busy CPU stamping late) bunches them.
    pub departure_span: Duration,
    pub arrival_span: Duration,
}

/// One transport-cc feedback batch, summed.
#[derive(Debug, Clone, Copy)]
struct Batch {
    at: Instant,
    /// Since the batch before (what its bytes were sent over).
    span: Duration,
    bytes: u64,
    lost: u32,
    total: u32,
    departure_span: Duration,
    arrival_span: Duration,
}

/// The estimate's state (see the module doc). Pure: fed the feedback
/// batches and the instants they came at.
#[derive(Debug, Clone)]
pub struct LinkEstimate {
    bounds: EstimateBounds,
    target: f64,
    batches: VecDeque<Batch>,
    last_at: Option<Instant>,
    last_congestion: Option<Instant>,
    hold: Duration,
    /// GCC's delay-based target at the last batch, and when it decreased.
    delay_target: Option<f64>,
    delay_decreases: VecDeque<Instant>,
    /// The lowest one-way delay of the current and the previous
    /// [`BASE_BUCKET`], and when the current one began: the empty-queue
    /// baseline, following slow clock drift.
    base_delay: [Option<f64>; 2],
    base_at: Option<Instant>,
    /// Consecutive batches whose queueing delay passed [`QUEUE_CONGESTION`].
    queued_batches: u32,
    congestions: u64,
}

impl LinkEstimate {
    pub fn new(bounds: EstimateBounds) -> Self {
        LinkEstimate {
            bounds,
            target: bounds.initial.clamp(bounds.min, bounds.max),
            batches: VecDeque::with_capacity(32),
            last_at: None,
            last_congestion: None,
            hold: HOLD_MIN,
            delay_target: None,
            delay_decreases: VecDeque::with_capacity(8),
            base_delay: [None; 2],
            base_at: None,
            queued_batches: 0,
            congestions: 0,
        }
    }

    /// Bits per second.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// How many times congestion lowered the estimate.
    pub fn congestions(&self) -> u64 {
        self.congestions
    }

    /// The rate the subscriber acknowledged over the window, bits per
    /// second.
    pub fn acknowledged(&self) -> f64 {
        let (bytes, span) = self
            .batches
            .iter()
            .fold((0u64, Duration::ZERO), |(b, s), x| {
                (b + x.bytes, s + x.span)
            });
        if span.is_zero() {
            return 0.0;
        }
        bytes as f64 * 8.0 / span.as_secs_f64()
    }

    /// The rate acknowledged over the window's batches that lost
    /// [`CONGESTION_LOSS`] or more (the whole window when none did): what
    /// the link carried while it was full, not the clean rate before.
    fn congested_rate(&self) -> f64 {
        let lossy =
            |b: &&Batch| b.lost > 0 && f64::from(b.lost) >= f64::from(b.total) * CONGESTION_LOSS;
        if !self.batches.iter().any(|b| lossy(&b)) {
            return self.acknowledged();
        }
        let (bytes, span) = self
            .batches
            .iter()
            .filter(lossy)
            .fold((0u64, Duration::ZERO), |(b, s), x| {
                (b + x.bytes, s + x.span)
            });
        if span.is_zero() {
            return 0.0;
        }
        bytes as f64 * 8.0 / span.as_secs_f64()
    }

    /// How far `one_way_ms` is above the empty-queue baseline (the lowest
    /// seen over the last one to two [`BASE_BUCKET`]s), after taking it
    /// into the baseline; `None` for the first sample.
    fn queue_delay(&mut self, now: Instant, one_way_ms: f64) -> Option<f64> {
        let start = *self.base_at.get_or_insert(now);
        if now.saturating_duration_since(start) >= BASE_BUCKET {
            self.base_delay = [None, self.base_delay[0].or(self.base_delay[1])];
            self.base_at = Some(now);
        }
        let base = self.base_delay.iter().flatten().copied().reduce(f64::min);
        let cur = &mut self.base_delay[0];
        *cur = Some(cur.map_or(one_way_ms, |c| c.min(one_way_ms)));
        base.map(|b| (one_way_ms - b).max(0.0))
    }

    /// The window's arrivals spread over [`SPREAD`] times their departures
    /// or more (and over at least 20 ms of departures).
    fn falling_behind(&self) -> bool {
        let (dep, arr) = self
            .batches
            .iter()
            .fold((Duration::ZERO, Duration::ZERO), |(d, a), b| {
                (d + b.departure_span, a + b.arrival_span)
            });
        dep >= Duration::from_millis(20) && arr.as_secs_f64() >= dep.as_secs_f64() * SPREAD
    }

    /// Share of the window's packets reported lost; `None` below
    /// [`MIN_PACKETS`].
    pub fn loss(&self) -> Option<f64> {
        let (lost, total) = self
            .batches
            .iter()
            .fold((0u32, 0u32), |(l, t), b| (l + b.lost, t + b.total));
        (total >= MIN_PACKETS).then(|| f64::from(lost) / f64::from(total))
    }

    /// One transport-cc feedback batch.
    pub fn on_feedback(&mut self, now: Instant, f: Feedback) {
        let Feedback {
            arrived_bytes,
            arrived,
            lost,
            gcc_delay_target,
            one_way_ms,
            departure_span,
            arrival_span,
        } = f;
        let span = self
            .last_at
            .map_or(FIRST_SPAN, |at| now.saturating_duration_since(at))
            .min(WINDOW);
        self.batches.push_back(Batch {
            at: now,
            span,
            bytes: arrived_bytes,
            lost,
            total: arrived + lost,
            departure_span,
            arrival_span,
        });
        while self
            .batches
            .front()
            .is_some_and(|b| now.saturating_duration_since(b.at) + b.span > WINDOW)
            && self.batches.len() > 1
        {
            self.batches.pop_front();
        }
        if self
            .delay_target
            .is_some_and(|before| gcc_delay_target < before * 0.99)
        {
            self.delay_decreases.push_back(now);
        }
        self.delay_target = Some(gcc_delay_target);
        while self
            .delay_decreases
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= DELAY_SPAN)
        {
            self.delay_decreases.pop_front();
        }

        tracing::trace!(
            arrived,
            lost,
            bytes = arrived_bytes,
            span_ms = span.as_millis() as u64,
            window_loss = self.loss().unwrap_or(0.0),
            one_way_ms = one_way_ms.unwrap_or(0.0),
            target = self.target as u64,
            "transport-cc feedback"
        );
        let queue_ms = one_way_ms.and_then(|d| self.queue_delay(now, d));
        if queue_ms.is_some_and(|q| q >= QUEUE_CONGESTION.as_secs_f64() * 1000.0) {
            self.queued_batches += 1;
        } else if queue_ms.is_some() {
            self.queued_batches = 0;
        }
        // Delay alone is congestion only where the link falls behind: its
        // arrivals spread wider than the departures. A receiver whose CPU
        // stalled stamps its packets late too, but bunched; acting on that
        // lowered the estimates of viewers on wide links under load.
        let falling_behind = self.falling_behind();
        let congested = self.loss().is_some_and(|l| l >= CONGESTION_LOSS)
            || (falling_behind
                && (self.delay_decreases.len() >= DELAY_DECREASES
                    || self.queued_batches >= QUEUED_BATCHES));
        let since_congestion = self
            .last_congestion
            .map(|at| now.saturating_duration_since(at));
        // The same episode: the window still holds its loss.
        let episode = since_congestion.is_some_and(|d| d < WINDOW);
        // The allocator's answer to a drop (a lower layer, from its next
        // keyframe) takes a round trip to the publisher and the link's
        // queue to drain: until then the loss goes on at the old rate while
        // the rate sent falls, and a drop to that rate would be a collapse.
        let reacting = since_congestion.is_some_and(|d| d >= WINDOW && d < REACTION);
        if congested {
            let lower = (self.congested_rate() * DROP_TO).max(self.bounds.min);
            // Within an episode, only while the latest feedback still
            // loses: once the sender has come down, the window's older
            // loss says nothing about the rate it sends now.
            let losing = self
                .batches
                .back()
                .is_some_and(|b| f64::from(b.lost) >= f64::from(b.total) * CONGESTION_LOSS);
            let drop = if episode {
                losing && lower < self.target * 0.9
            } else {
                !reacting && lower < self.target
            };
            if drop {
                if !episode {
                    self.hold = match since_congestion {
                        Some(d) if d < self.hold + BACKOFF_WITHIN => (self.hold * 2).min(HOLD_MAX),
                        _ => HOLD_MIN,
                    };
                }
                tracing::debug!(
                    loss = self.loss().unwrap_or(0.0),
                    acknowledged = self.acknowledged() as u64,
                    while_losing = self.congested_rate() as u64,
                    delay_decreases = self.delay_decreases.len(),
                    queued_batches = self.queued_batches,
                    batches = self.batches.len(),
                    from = self.target as u64,
                    to = lower as u64,
                    episode,
                    "congestion: estimate lowered"
                );
                self.target = lower;
                self.last_congestion = Some(now);
                self.congestions += 1;
                self.delay_decreases.clear();
                self.queued_batches = 0;
            }
        } else if since_congestion.is_none_or(|d| d >= self.hold) {
            let dt = self
                .last_at
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
                .min(Duration::from_secs(1));
            self.target = (self.target * GROWTH.powf(dt.as_secs_f64())).min(self.bounds.max);
        }
        if since_congestion.is_some_and(|d| d >= BACKOFF_RESET) {
            self.hold = HOLD_MIN;
        }
        self.last_at = Some(now);
    }
}

/// The engine's congestion controller on a subscribe leg: GCC for its
/// delay-based signal, [`LinkEstimate`] for the target, published into an
/// [`Estimate`].
pub(crate) struct SubscriberEstimator {
    gcc: Gcc,
    link: LinkEstimate,
    out: Estimate,
    /// The first packet's departure: the sender side of the one-way delay.
    origin: Option<Instant>,
}

impl SubscriberEstimator {
    pub(crate) fn new(bounds: EstimateBounds, out: Estimate) -> Self {
        SubscriberEstimator {
            gcc: Gcc::new(bounds.initial, bounds.min, bounds.max),
            link: LinkEstimate::new(bounds),
            out,
            origin: None,
        }
    }
}

impl BandwidthEstimator for SubscriberEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.gcc.on_reports(now, reports);
        let (mut bytes, mut arrived, mut lost) = (0u64, 0u32, 0u32);
        let (mut owd_sum, mut owd_n) = (0.0f64, 0u32);
        let mut departures: Option<(Instant, Instant)> = None;
        let mut arrivals: Option<(Duration, Duration)> = None;
        for r in reports {
            if r.arrived {
                bytes += r.size as u64;
                arrived += 1;
                departures = Some(departures.map_or((r.departure, r.departure), |(a, b)| {
                    (a.min(r.departure), b.max(r.departure))
                }));
                if let Some(arrival) = r.arrival {
                    arrivals = Some(arrivals.map_or((arrival, arrival), |(a, b)| {
                        (a.min(arrival), b.max(arrival))
                    }));
                    let origin = *self.origin.get_or_insert(r.departure);
                    let sent = r.departure.saturating_duration_since(origin);
                    owd_sum += (arrival.as_secs_f64() - sent.as_secs_f64()) * 1000.0;
                    owd_n += 1;
                }
            } else {
                lost += 1;
            }
        }
        self.link.on_feedback(
            now,
            Feedback {
                arrived_bytes: bytes,
                arrived,
                lost,
                gcc_delay_target: self.gcc.delay_based_bitrate(),
                one_way_ms: (owd_n > 0).then(|| owd_sum / f64::from(owd_n)),
                departure_span: departures.map_or(Duration::ZERO, |(a, b)| b - a),
                arrival_span: arrivals.map_or(Duration::ZERO, |(a, b)| b - a),
            },
        );
        self.out
            .0
            .bps
            .store(self.link.target() as u64, Ordering::Relaxed);
        self.out
            .0
            .congestions
            .store(self.link.congestions(), Ordering::Relaxed);
    }
    fn target_bitrate(&self) -> f64 {
        self.link.target()
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

#[cfg(test)]
mod tests;
