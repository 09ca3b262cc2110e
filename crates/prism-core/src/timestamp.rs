//! RTP timestamp rewriting for one subscriber leg of one track.
//!
//! While one source feeds the leg, timestamps pass through with a constant
//! offset, so the receiver's jitter buffer sees the publisher's own clock. When
//! the source changes (new SSRC), the offset is chosen so the first new
//! timestamp continues the old ones by the wall-clock time that passed, at the
//! track's clock rate: the receiver sees one stream, not a jump.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TsRewriter {
    clock_rate: u32,
    offset: u32,
    started: bool,
    /// Last output timestamp and when it was sent, to continue after a restart.
    last: Option<(u32, Instant)>,
}

impl TsRewriter {
    pub fn new(clock_rate: u32) -> Self {
        TsRewriter {
            clock_rate: clock_rate.max(1),
            offset: 0,
            started: false,
            last: None,
        }
    }

    /// Subscriber timestamp = publisher timestamp - offset, once started.
    pub fn offset(&self) -> Option<u32> {
        self.started.then_some(self.offset)
    }

    /// The source changed: the next timestamp is rebased.
    pub fn restart(&mut self) {
        self.started = false;
    }

    pub fn rewrite(&mut self, now: Instant, ts: u32) -> u32 {
        if !self.started {
            self.started = true;
            self.offset = match self.last {
                // First source ever: keep the publisher's timestamps.
                None => 0,
                Some((last_ts, at)) => {
                    let elapsed = now.saturating_duration_since(at);
                    let ticks = (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000)
                        .clamp(1, u32::MAX as u64 / 2) as u32;
                    let want = last_ts.wrapping_add(ticks);
                    ts.wrapping_sub(want)
                }
            };
        }
        let out = ts.wrapping_sub(self.offset);
        // Remember the newest timestamp (RFC 3550 ordering) for a future restart.
        match self.last {
            Some((last_ts, _)) if out.wrapping_sub(last_ts) >= 0x8000_0000 => {}
            _ => self.last = Some((out, now)),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn passes_through_first_source() {
        let t0 = Instant::now();
        let mut r = TsRewriter::new(90_000);
        assert_eq!(r.rewrite(t0, 1000), 1000);
        assert_eq!(r.rewrite(t0, 4000), 4000);
        assert_eq!(r.rewrite(t0, u32::MAX), u32::MAX);
        assert_eq!(r.rewrite(t0, 5), 5);
    }

    #[test]
    fn restart_continues_by_elapsed_time() {
        let t0 = Instant::now();
        let mut r = TsRewriter::new(90_000);
        assert_eq!(r.rewrite(t0, 1000), 1000);
        r.restart();
        // 100 ms later at 90 kHz is 9000 ticks.
        let out = r.rewrite(t0 + Duration::from_millis(100), 777_777);
        assert_eq!(out, 10_000);
        assert_eq!(
            r.rewrite(t0 + Duration::from_millis(133), 777_777 + 3000),
            13_000
        );
    }

    #[test]
    fn restart_at_same_instant_still_advances() {
        let t0 = Instant::now();
        let mut r = TsRewriter::new(48_000);
        r.rewrite(t0, u32::MAX);
        r.restart();
        assert_eq!(r.rewrite(t0, 42), 0, "one tick past u32::MAX wraps to 0");
    }

    #[test]
    fn late_packet_does_not_move_the_restart_base() {
        let t0 = Instant::now();
        let mut r = TsRewriter::new(90_000);
        r.rewrite(t0, 9000);
        r.rewrite(t0, 6000); // reordered, older
        r.restart();
        assert_eq!(r.rewrite(t0 + Duration::from_millis(10), 1), 9900);
    }
}
