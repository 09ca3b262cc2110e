//! A subscriber leg's retransmission budget.
//!
//! Answering every NACK is right on a wide link with random loss and wrong
//! on a full one: there the loss *is* the link overflowing, every
//! retransmission takes the place of a new packet, the new packets are lost
//! in turn and NACKed in turn (issue 13's throttled viewer: a 300 kbit/s
//! link carried mostly retransmissions of a layer it had already left, and
//! the low layer's keyframe never got through). libwebrtc caps its own
//! retransmissions at the target bitrate; Prism caps each leg's at half of
//! the leg's bandwidth estimate — a token bucket of bytes, refilled at that
//! share of the estimate and holding at most half a second of it.

use std::time::{Duration, Instant};

/// The bucket (see the module doc).
#[derive(Debug, Clone)]
pub struct RetransmitBudget {
    /// Bytes that may go out now.
    tokens: f64,
    last: Option<Instant>,
    /// Refill, in per mille of the estimate.
    share_permille: u32,
    burst: Duration,
}

impl RetransmitBudget {
    /// Refilled at `share_permille` ‰ of the estimate; holding at most
    /// `burst` of that rate.
    pub fn new(share_permille: u32, burst: Duration) -> Self {
        RetransmitBudget {
            tokens: 0.0,
            last: None,
            share_permille,
            burst,
        }
    }

    /// Takes `bytes` if the budget has them at `estimate_bps` (refilling for
    /// the time since the last call first); false when the retransmission
    /// should not be sent.
    pub fn take(&mut self, now: Instant, estimate_bps: u64, bytes: usize) -> bool {
        let rate = estimate_bps as f64 / 8.0 * f64::from(self.share_permille) / 1000.0;
        let cap = rate * self.burst.as_secs_f64();
        let elapsed = self
            .last
            .map_or(self.burst, |at| now.saturating_duration_since(at));
        self.tokens = (self.tokens + rate * elapsed.as_secs_f64()).min(cap);
        self.last = Some(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

impl Default for RetransmitBudget {
    /// Half the estimate, up to half a second of it at once.
    fn default() -> Self {
        RetransmitBudget::new(500, Duration::from_millis(500))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_of_the_estimate_with_a_burst() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = RetransmitBudget::default();
        // 400 kbit/s: 50 % is 25 000 B/s, a burst of 12 500 B.
        let sent = (0..20).filter(|_| b.take(t0, 400_000, 1000)).count();
        assert_eq!(sent, 12, "the first burst");
        assert!(!b.take(ms(10), 400_000, 1000), "250 B refilled in 10 ms");
        assert!(b.take(ms(40), 400_000, 1000), "1000 B after 40 ms");
        // A full link's estimate: 128 kbit/s gives about 8 packets a second.
        let mut b = RetransmitBudget::default();
        let mut sent = 0;
        for i in 0..1000 {
            if b.take(ms(i), 128_000, 1000) {
                sent += 1;
            }
        }
        assert!((8..=13).contains(&sent), "{sent} in a second");
        // An idle leg does not save up past the burst.
        assert_eq!(
            (0..20)
                .filter(|_| b.take(ms(60_000), 400_000, 1000))
                .count(),
            12
        );
    }
}
