//! A fixed-size latency histogram: no allocation per sample, mergeable across
//! clients, quantiles to within one bucket.
//!
//! Buckets are 10 µs wide up to 10 ms, then 1 ms wide up to 1 s; above that
//! everything lands in the last bucket (and `max` keeps the true value).

const FINE_US: u64 = 10;
const FINE_BUCKETS: usize = 1000; // 0..10 ms
const COARSE_US: u64 = 1000;
const COARSE_BUCKETS: usize = 990; // 10 ms..1 s
const BUCKETS: usize = FINE_BUCKETS + COARSE_BUCKETS + 1;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u32; BUCKETS]>,
    pub total: u64,
    pub max: u64,
    sum: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max: 0,
            sum: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Histogram {{ n: {}, p50: {}, p99: {}, max: {} }}",
            self.total,
            self.quantile(0.5),
            self.quantile(0.99),
            self.max
        )
    }
}

fn bucket(us: u64) -> usize {
    let fine_end = FINE_US * FINE_BUCKETS as u64;
    if us < fine_end {
        (us / FINE_US) as usize
    } else {
        (FINE_BUCKETS + ((us - fine_end) / COARSE_US) as usize).min(BUCKETS - 1)
    }
}

/// The upper edge of bucket `i`, µs.
fn upper(i: usize) -> u64 {
    if i < FINE_BUCKETS {
        (i as u64 + 1) * FINE_US
    } else {
        FINE_US * FINE_BUCKETS as u64 + (i - FINE_BUCKETS + 1) as u64 * COARSE_US
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket(us)] += 1;
        self.total += 1;
        self.sum += us;
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn clear(&mut self) {
        *self = Histogram::default();
    }

    /// The value below which a fraction `q` of the samples fall: the upper
    /// edge of the bucket holding it (never above `max`). 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                // The last bucket is open-ended: its samples are up to max.
                return if i == BUCKETS - 1 {
                    self.max
                } else {
                    upper(i).min(self.max)
                };
            }
        }
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(us * 10); // 10 µs .. 10 ms
        }
        assert_eq!(h.total, 1000);
        let p50 = h.quantile(0.5);
        assert!((5000..=5010).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((9900..=10_000).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 10_000);
    }

    #[test]
    fn coarse_range_and_overflow() {
        let mut h = Histogram::default();
        h.record(25_500); // 25.5 ms: the 1 ms bucket ending at 26 ms
        assert_eq!(h.quantile(0.5), 25_500); // capped at max
        h.record(5_000_000); // 5 s: last bucket
        assert_eq!(h.max, 5_000_000);
        assert_eq!(h.quantile(1.0), 5_000_000);
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.total, 4);
        assert_eq!(m.quantile(0.25), 26_000.min(m.max));
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Histogram::default().quantile(0.99), 0);
    }
}
