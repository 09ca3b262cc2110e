//! Pacing of a keyframe-cache start: the cached GOP goes to a new
//! subscriber at a bounded rate instead of in one burst.
//!
//! A GOP can be hundreds of packets (up to `keyframe_cache_packets`, 512,
//! ~600 KB). Written at once, it reaches the subscriber's socket faster
//! than a receiver drains it: Linux's default receive buffer (208 KB of
//! kernel memory, a few hundred datagrams whatever their size) overflows,
//! and so does any bottleneck queue on the way. The datagrams lost are in
//! the middle of the burst, or at the head of a second track's burst behind
//! the first; a subscriber that lost the keyframe's packets cannot even
//! NACK them (it never learns the sequence numbers before its first
//! packet). Measured in `conference::late_joiner_leave_kill_and_silent_client`:
//! 120–430 `RcvbufErrors` per run and a first video packet that was a delta
//! in most runs, with every datagram sent successfully by the server.
//!
//! [`BurstPacer`] is a queue with a window budget: at most `per_window`
//! items leave per `window`. Anything queued for the same leg while a burst
//! is still queued (live packets) goes behind it, so a subscriber receives
//! the GOP and then the live stream in sequence-number order.
//!
//! Order of calls (one pacer per subscriber leg, driven by the shard):
//! [`BurstPacer::push`] queues; [`BurstPacer::poll`] hands out what may
//! leave `now`; [`BurstPacer::poll_timeout`] says when to poll again.
//! No clock is read here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A FIFO whose items leave at most `per_window` per `window`.
#[derive(Debug)]
pub struct BurstPacer<T> {
    queue: VecDeque<T>,
    per_window: usize,
    window: Duration,
    /// The current window's start and the items sent in it.
    window_at: Option<Instant>,
    sent_in_window: usize,
}

impl<T> BurstPacer<T> {
    /// At most `per_window` items (at least 1) per `window`.
    pub fn new(per_window: usize, window: Duration) -> Self {
        BurstPacer {
            queue: VecDeque::new(),
            per_window: per_window.max(1),
            window,
            window_at: None,
            sent_in_window: 0,
        }
    }

    /// Nothing is queued: a packet for this leg may be sent directly.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues `item` behind everything queued, at `now`. Allocates only
    /// while the queue grows past its largest size so far.
    pub fn push(&mut self, now: Instant, item: T) {
        if self.window_at.is_none() {
            // The first item ever: its window starts now.
            self.window_at = Some(now);
        }
        self.queue.push_back(item);
    }

    /// The next item, if the budget lets it leave `now`.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        if self.queue.is_empty() {
            return None;
        }
        match self.window_at {
            Some(at) if now.saturating_duration_since(at) < self.window => {}
            // A new window: the budget is whole again. Started at `now`,
            // not where the last one ended, so a late poll never sends two
            // windows' worth at once.
            _ => {
                self.window_at = Some(now);
                self.sent_in_window = 0;
            }
        }
        if self.sent_in_window >= self.per_window {
            // This window's budget is spent: wait for the next.
            return None;
        }
        self.sent_in_window += 1;
        self.queue.pop_front()
    }

    /// When [`BurstPacer::poll`] will next hand out an item: None when
    /// nothing is queued; an instant not after the last `push` or `poll`
    /// when one may leave at once.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        // `push` set the window for a non-empty queue.
        let at = self.window_at?;
        if self.sent_in_window >= self.per_window {
            Some(at + self.window)
        } else {
            Some(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One row: at `at_ms`, push `push` items, then poll until None; expect
    /// the items handed out and the deadline after.
    struct Row {
        at_ms: u64,
        push: u32,
        out: &'static [u32],
        next_ms: Option<u64>,
    }

    #[test]
    fn table() {
        // 3 items per 5 ms window.
        let rows = [
            // Nothing queued: nothing out, no deadline.
            Row {
                at_ms: 0,
                push: 0,
                out: &[],
                next_ms: None,
            },
            // A burst of 8: the first window's 3 at once, then wait.
            Row {
                at_ms: 1,
                push: 8,
                out: &[0, 1, 2],
                next_ms: Some(6),
            },
            // Polled early: still nothing.
            Row {
                at_ms: 4,
                push: 0,
                out: &[],
                next_ms: Some(6),
            },
            // Next window: 3 more; live items pushed now go behind.
            Row {
                at_ms: 6,
                push: 2,
                out: &[3, 4, 5],
                next_ms: Some(11),
            },
            // Polled late (the window starts at the poll, no double budget).
            Row {
                at_ms: 30,
                push: 0,
                out: &[6, 7, 8],
                next_ms: Some(35),
            },
            // The last one, then empty.
            Row {
                at_ms: 35,
                push: 0,
                out: &[9],
                next_ms: None,
            },
            // Empty for a while: a new burst starts at once.
            Row {
                at_ms: 100,
                push: 4,
                out: &[10, 11, 12],
                next_ms: Some(105),
            },
            Row {
                at_ms: 105,
                push: 0,
                out: &[13],
                next_ms: None,
            },
        ];
        let t0 = Instant::now();
        let mut p = BurstPacer::new(3, 5 * MS);
        let mut next_item = 0u32;
        for (i, r) in rows.iter().enumerate() {
            let now = t0 + ms(r.at_ms);
            for _ in 0..r.push {
                p.push(now, next_item);
                next_item += 1;
            }
            let mut out = Vec::new();
            while let Some(x) = p.poll(now) {
                out.push(x);
            }
            assert_eq!(out, r.out, "row {i}: items out");
            assert_eq!(
                p.poll_timeout(),
                r.next_ms.map(|n| t0 + ms(n)),
                "row {i}: deadline"
            );
            if let Some(at) = p.poll_timeout() {
                assert!(at >= now || out.is_empty(), "row {i}: a due item was held");
            }
        }
    }

    #[test]
    fn zero_budget_still_moves() {
        let t0 = Instant::now();
        let mut p = BurstPacer::new(0, 5 * MS);
        p.push(t0, 1);
        p.push(t0, 2);
        assert_eq!(p.poll(t0), Some(1));
        assert_eq!(p.poll(t0), None);
        assert_eq!(p.poll(t0 + 5 * MS), Some(2));
        assert!(p.is_empty());
    }
}
