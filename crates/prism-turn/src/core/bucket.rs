//! A token bucket in bits: an allocation's bandwidth limit over both
//! directions.

use std::time::Instant;

/// Refills at `rate_bps` up to one second's worth (at least 64 KiB, so a
/// low limit still passes whole packets); a packet passes if its bits are
/// in the bucket.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate_bps: u64,
    capacity_bits: u64,
    tokens_bits: u64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_bps: u64, now: Instant) -> TokenBucket {
        let capacity_bits = rate_bps.max(64 * 1024 * 8);
        TokenBucket {
            rate_bps,
            capacity_bits,
            tokens_bits: capacity_bits,
            refilled_at: now,
        }
    }

    /// Takes `bytes` if they fit; `false` means drop the packet.
    pub fn take(&mut self, now: Instant, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let refill = (u128::from(self.rate_bps) * elapsed.as_nanos() / 1_000_000_000) as u64;
        if refill > 0 {
            self.tokens_bits = self
                .tokens_bits
                .saturating_add(refill)
                .min(self.capacity_bits);
            self.refilled_at = now;
        }
        let bits = (bytes as u64).saturating_mul(8);
        if bits <= self.tokens_bits {
            self.tokens_bits -= bits;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_table() {
        let t0 = Instant::now();
        // 1 Mbit/s: capacity 1_000_000 bits = 125_000 bytes.
        let mut b = TokenBucket::new(1_000_000, t0);
        let ms = |n| t0 + Duration::from_millis(n);
        let rows: &[(u64, usize, bool)] = &[
            (0, 100_000, true), // from the full bucket
            (0, 25_000, true),  // exactly empties it
            (0, 1, false),      // nothing left
            (8, 1_000, true),   // 8 ms at 1 Mbit/s = 8000 bits = 1000 bytes
            (8, 1, false),
            (5000, 125_000, true), // refill stops at capacity...
            (5000, 1, false),      // ...not 5 s worth
        ];
        for (i, (at, bytes, pass)) in rows.iter().enumerate() {
            assert_eq!(b.take(ms(*at), *bytes), *pass, "row {i}");
        }
        // Sustained: over 10 s at 1 Mbit/s with 1000-byte packets every
        // millisecond (8 Mbit/s offered), about 1/8 passes after the burst.
        let mut b = TokenBucket::new(1_000_000, t0);
        let passed = (0..10_000).filter(|i| b.take(ms(*i), 1000)).count();
        let expect = (125_000 + 1_250_000) / 1000;
        assert!(
            (passed as i64 - expect as i64).abs() <= 2,
            "{passed} vs {expect}"
        );
        // A low limit still passes a full packet from the floor capacity.
        let mut b = TokenBucket::new(8_000, t0);
        assert!(b.take(t0, 1500));
    }
}
