//! [`LinkEstimate`] on simulated time: a sender that sends what it has
//! (application-limited) or what the estimate allows, over a link of a
//! given capacity, with feedback every 100 ms.

use super::*;

const BOUNDS: EstimateBounds = EstimateBounds {
    initial: 1_000_000.0,
    min: 50_000.0,
    max: 20_000_000.0,
};
const TICK: Duration = Duration::from_millis(100);
const PACKET: u64 = 1200;
/// A simulcast camera's layers, bits per second.
const LAYERS: [f64; 3] = [150_000.0, 600_000.0, 2_600_000.0];

struct Sim {
    t0: Instant,
    now: Instant,
    est: LinkEstimate,
    /// What the sender would send, bits per second.
    offered: f64,
    /// Whether it sends only the highest of [`LAYERS`] that 95 % of the
    /// estimate covers (the lowest when none does), as the allocator picks.
    follows: bool,
    /// The link, bits per second.
    capacity: f64,
    /// Random loss on top, a share of packets (deterministic: every n-th).
    random_loss: f64,
    delay_target: f64,
    /// The one-way delay the feedback shows, milliseconds.
    one_way_ms: f64,
    /// How much wider than their departures a feedback's arrivals spread.
    spread: f64,
    /// (seconds since start, estimate) at each feedback.
    trace: Vec<(f64, f64)>,
}

impl Sim {
    fn new(offered: f64, follows: bool) -> Sim {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            est: LinkEstimate::new(BOUNDS),
            offered,
            follows,
            capacity: 100_000_000.0,
            random_loss: 0.0,
            delay_target: 1_000_000.0,
            one_way_ms: 5_000.0,
            spread: 1.0,
            trace: Vec::new(),
        }
    }

    /// Runs for `seconds` of feedback.
    fn run(&mut self, seconds: f64) {
        let ticks = (seconds / TICK.as_secs_f64()).round() as u32;
        for _ in 0..ticks {
            self.now += TICK;
            let rate = if self.follows {
                let budget = self.est.target() * 0.95;
                LAYERS
                    .iter()
                    .rev()
                    .find(|l| **l <= budget)
                    .map_or(LAYERS[0], |l| *l)
                    .min(self.offered)
            } else {
                self.offered
            };
            let sent = (rate * TICK.as_secs_f64() / 8.0 / PACKET as f64).round() as u32;
            let fits = (self.capacity * TICK.as_secs_f64() / 8.0 / PACKET as f64) as u32;
            let through = sent.min(fits);
            let randomly_lost = (f64::from(through) * self.random_loss).round() as u32;
            let arrived = through - randomly_lost;
            self.est.on_feedback(
                self.now,
                Feedback {
                    arrived_bytes: u64::from(arrived) * PACKET,
                    arrived,
                    lost: sent - arrived,
                    gcc_delay_target: self.delay_target,
                    one_way_ms: Some(self.one_way_ms),
                    // Sent evenly over the tick; arriving over `spread`
                    // times that (a queue growing: > 1; a receiver that
                    // stalled and stamps late: < 1).
                    departure_span: TICK,
                    arrival_span: TICK.mul_f64(self.spread),
                },
            );
            self.trace.push((self.secs(), self.est.target()));
        }
    }

    fn secs(&self) -> f64 {
        self.now.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// Seconds from `from` until the estimate first satisfied `f`.
    fn time_until(&self, from: f64, f: impl Fn(f64) -> bool) -> Option<f64> {
        self.trace
            .iter()
            .find(|(t, e)| *t > from && f(*e))
            .map(|(t, _)| t - from)
    }
}

#[test]
fn an_application_limited_leg_grows_and_never_drops() {
    let mut s = Sim::new(2_600_000.0, false);
    s.run(20.0);
    assert_eq!(s.est.congestions(), 0);
    assert!(s.trace.windows(2).all(|w| w[1].1 >= w[0].1), "never drops");
    assert_eq!(s.est.target(), BOUNDS.max, "grows to the maximum");
    assert!((s.est.acknowledged() - 2_600_000.0).abs() < 100_000.0);
}

#[test]
fn a_narrowed_link_is_found_within_a_window_and_the_recovery_within_seconds() {
    // (capacity after the change, the estimate's bounds once found,
    // seconds allowed to find it)
    let rows: [(f64, f64, f64); 3] = [
        (300_000.0, 300_000.0, 0.6),
        (1_000_000.0, 1_000_000.0, 0.6),
        (100_000.0, 100_000.0, 0.6),
    ];
    for (capacity, link, within) in rows {
        let mut s = Sim::new(2_600_000.0, true);
        s.run(10.0);
        assert!(
            s.est.target() > 2_600_000.0,
            "app-limited: above what is sent"
        );
        s.capacity = capacity;
        let at = s.secs();
        s.run(6.0);
        let found = s
            .time_until(at, |e| e <= link)
            .unwrap_or_else(|| panic!("{capacity}: never found the link: {:?}", s.trace));
        assert!(found <= within, "{capacity}: found after {found} s");
        // It stays under the link (no more than the one backoff probe) and
        // above a third of it: no collapse to the floor.
        let after: Vec<f64> = s
            .trace
            .iter()
            .filter(|(t, _)| *t > at + found)
            .map(|(_, e)| *e)
            .collect();
        assert!(
            after.iter().all(|e| *e >= link * 0.3),
            "{capacity}: collapsed: {after:?}"
        );
        // The link is wide again: a 2.5 Mbit/s layer fits within 12 s.
        s.capacity = 100_000_000.0;
        let freed = s.secs();
        s.run(20.0);
        let back = s.time_until(freed, |e| e >= 2_600_000.0);
        assert!(
            back.is_some_and(|b| b <= 13.0),
            "{capacity}: back up after {back:?} s"
        );
    }
}

#[test]
fn random_loss_on_a_wide_link_is_not_congestion() {
    let mut s = Sim::new(2_600_000.0, true);
    s.random_loss = 0.1;
    s.run(20.0);
    assert_eq!(s.est.congestions(), 0);
    assert!(s.est.target() >= 2_600_000.0);
}

#[test]
fn a_growing_queue_seen_by_gcc_is_congestion() {
    let mut s = Sim::new(2_600_000.0, true);
    s.run(5.0);
    let before = s.est.target();
    // GCC's delay half decreases on three feedbacks in a row while the
    // arrivals spread (a queue growing): overuse.
    s.spread = 1.3;
    for _ in 0..2 {
        s.delay_target *= 0.85;
        s.run(0.1);
        assert_eq!(s.est.congestions(), 0, "one decrease is noise");
    }
    s.delay_target *= 0.85;
    s.run(0.1);
    assert_eq!(s.est.congestions(), 1);
    assert!(s.est.target() < before);
    assert!((s.est.target() - 2_600_000.0 * DROP_TO).abs() < 150_000.0);
}

#[test]
fn repeated_congestion_backs_off_the_hold() {
    // A 300 kbit/s link and a sender that always has 2.6 Mbit/s ready: each
    // probe above the link ends in congestion, and the holds between probes
    // double.
    let mut s = Sim::new(2_600_000.0, true);
    s.run(5.0);
    s.capacity = 300_000.0;
    s.run(30.0);
    let c = s.est.congestions();
    assert!(
        (3..=12).contains(&c),
        "{c} congestions in 30 s: {:?}",
        s.trace
    );
    assert_eq!(s.est.hold, HOLD_MAX, "{:?}", s.trace);
    // Long enough clean: the hold resets.
    s.capacity = 100_000_000.0;
    s.run(25.0);
    assert_eq!(s.est.hold, HOLD_MIN);
}

#[test]
fn a_filling_queue_is_congestion_before_any_loss() {
    let mut s = Sim::new(2_600_000.0, true);
    s.run(5.0);
    // Late feedback for a moment (a receiver's stall) is not congestion.
    s.one_way_ms += 300.0;
    s.run(0.2);
    s.one_way_ms -= 300.0;
    s.run(1.0);
    assert_eq!(s.est.congestions(), 0, "a single spike");
    // A shaper's queue filling: +60 ms per feedback, no loss yet, the
    // arrivals spreading wider than the departures.
    let before = s.est.target();
    s.spread = 1.6;
    for i in 1..=5 {
        s.one_way_ms += 60.0;
        s.run(0.1);
        // 150 ms or more on three feedbacks in a row: at 180, 240, 300 ms.
        assert_eq!(
            s.est.congestions(),
            u64::from(i == 5),
            "{} ms queued",
            i * 60
        );
    }
    assert!(s.est.target() < before);
    // The baseline follows a slow drift of the clocks: 20 s later, the
    // same delay is the new empty queue.
    s.run(25.0);
    let c = s.est.congestions();
    s.run(5.0);
    assert_eq!(
        s.est.congestions(),
        c,
        "a constant delay is no queue forever"
    );
}

#[test]
fn a_stalled_receiver_is_not_congestion() {
    // A receiver whose CPU is busy stamps its arrivals late — the delay
    // grows as a queue's would — but bunched: nothing falls behind.
    let mut s = Sim::new(2_600_000.0, true);
    s.run(5.0);
    s.spread = 0.4;
    for _ in 0..6 {
        s.one_way_ms += 80.0;
        s.run(0.1);
        s.delay_target *= 0.85;
    }
    assert_eq!(s.est.congestions(), 0);
    assert!(s.est.target() >= 2_600_000.0);
}
