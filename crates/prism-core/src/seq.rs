//! Sequence-number rewriting for one subscriber leg of one track.
//!
//! The subscriber must see a sequence with no gaps that the server made, and
//! the gaps that the network made. So:
//! - a packet the server drops on purpose (muted track, padding) shifts every
//!   later packet down by one, so the subscriber never NACKs it;
//! - a packet lost upstream keeps its hole, so the subscriber can NACK it;
//! - a packet that arrives late (reordered, or a retransmission) gets the number
//!   it would have had in order, counting only the drops made after it.
//! - when the source changes (a new SSRC behind the same leg), numbering carries
//!   on from the last number sent.

/// How many of the server's own drops are remembered to place late packets.
const DROP_HISTORY: usize = 64;
/// Packets older than this (in sequence distance behind the newest) are refused.
const MAX_REORDER: u16 = 2048;

/// What to do with one input sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// Send with this output sequence number.
    Send(u16),
    /// Too far behind the newest packet to place (or from before the start).
    TooOld,
}

#[derive(Debug, Clone)]
pub struct SeqRewriter {
    /// Output = input - offset (wrapping).
    offset: u16,
    /// Newest input sequence number seen since the last (re)start.
    highest_in: u16,
    /// First input sequence number since the last (re)start.
    start_in: u16,
    /// Last output number handed out for the newest packet.
    last_out: u16,
    started: bool,
    /// Input numbers the server dropped on purpose, newest last (a ring).
    drops: [u16; DROP_HISTORY],
    drops_len: usize,
    drops_head: usize,
}

impl Default for SeqRewriter {
    fn default() -> Self {
        Self::new(0)
    }
}

/// `a` is newer than `b` in RTP sequence space (RFC 3550 wraparound).
#[inline]
fn newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl SeqRewriter {
    /// `first_out` is the number the first forwarded packet will carry.
    pub fn new(first_out: u16) -> Self {
        SeqRewriter {
            offset: 0,
            highest_in: 0,
            start_in: 0,
            last_out: first_out.wrapping_sub(1),
            started: false,
            drops: [0; DROP_HISTORY],
            drops_len: 0,
            drops_head: 0,
        }
    }

    /// The source behind this leg changed: the next packet continues the output
    /// numbering from where it stopped, whatever its input number.
    pub fn restart(&mut self) {
        self.started = false;
        self.drops_len = 0;
        self.drops_head = 0;
    }

    /// The last output number given to the newest packet (`None` before the first).
    pub fn last_out(&self) -> Option<u16> {
        self.started.then_some(self.last_out)
    }

    fn start(&mut self, seq: u16) {
        self.started = true;
        self.start_in = seq;
        self.highest_in = seq.wrapping_sub(1);
        self.offset = seq.wrapping_sub(self.last_out.wrapping_add(1));
    }

    /// Number a packet that will be forwarded.
    pub fn forward(&mut self, seq: u16) -> SeqOutcome {
        if !self.started {
            self.start(seq);
        }
        if newer(seq, self.highest_in) || seq == self.highest_in.wrapping_add(1) {
            self.highest_in = seq;
            self.last_out = seq.wrapping_sub(self.offset);
            return SeqOutcome::Send(self.last_out);
        }
        // A late packet: is it still placeable?
        let behind = self.highest_in.wrapping_sub(seq);
        if behind >= MAX_REORDER || newer(self.start_in, seq) {
            return SeqOutcome::TooOld;
        }
        // Drops made after this packet shifted the offset; undo their share.
        let later_drops = self.drops_after(seq);
        SeqOutcome::Send(seq.wrapping_sub(self.offset.wrapping_sub(later_drops)))
    }

    /// The server drops this packet on purpose: later packets close the hole.
    pub fn drop_packet(&mut self, seq: u16) {
        if !self.started {
            // Nothing was sent yet: starting later closes any hole anyway.
            return;
        }
        if newer(seq, self.highest_in) {
            // Packets between highest_in and seq that never came stay holes
            // (upstream loss); only this one number is taken out.
            self.highest_in = seq;
            self.offset = self.offset.wrapping_add(1);
            self.remember_drop(seq);
        }
        // A late packet dropped on purpose: its number was already counted in
        // the sequence (as a hole); the subscriber may NACK it and get nothing,
        // which is the same as upstream loss.
    }

    fn remember_drop(&mut self, seq: u16) {
        let idx = (self.drops_head + self.drops_len) % DROP_HISTORY;
        self.drops[idx] = seq;
        if self.drops_len < DROP_HISTORY {
            self.drops_len += 1;
        } else {
            self.drops_head = (self.drops_head + 1) % DROP_HISTORY;
        }
    }

    fn drops_after(&self, seq: u16) -> u16 {
        let mut n = 0u16;
        for i in 0..self.drops_len {
            let d = self.drops[(self.drops_head + i) % DROP_HISTORY];
            if newer(d, seq) {
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// Forward input seq, expect output.
        F(u16, SeqOutcome),
        /// Drop input seq on purpose.
        D(u16),
        /// Source restart.
        R,
    }
    use Op::*;
    use SeqOutcome::*;

    fn run(first_out: u16, ops: &[Op]) {
        let mut s = SeqRewriter::new(first_out);
        for (i, op) in ops.iter().enumerate() {
            match *op {
                F(seq, want) => assert_eq!(s.forward(seq), want, "row {i}: {op:?}"),
                D(seq) => s.drop_packet(seq),
                R => s.restart(),
            }
        }
    }

    #[test]
    fn table() {
        let rows: &[(&str, u16, &[Op])] = &[
            (
                "in order",
                100,
                &[F(5, Send(100)), F(6, Send(101)), F(7, Send(102))],
            ),
            (
                "upstream loss keeps the hole",
                0,
                &[F(10, Send(0)), F(12, Send(2)), F(13, Send(3))],
            ),
            (
                "a drop closes the hole",
                0,
                &[F(10, Send(0)), D(11), F(12, Send(1)), F(13, Send(2))],
            ),
            ("two drops", 0, &[F(1, Send(0)), D(2), D(3), F(4, Send(1))]),
            ("drop, then loss", 0, &[F(1, Send(0)), D(2), F(4, Send(2))]),
            (
                "wraparound in",
                0,
                &[
                    F(65534, Send(0)),
                    F(65535, Send(1)),
                    F(0, Send(2)),
                    F(1, Send(3)),
                ],
            ),
            (
                "wraparound out",
                65535,
                &[F(7, Send(65535)), F(8, Send(0)), F(9, Send(1))],
            ),
            (
                "0 is newer than 65000",
                0,
                &[F(65000, Send(0)), F(0, Send(536))],
            ),
            (
                "drop across wrap",
                0,
                &[F(65535, Send(0)), D(0), F(1, Send(1))],
            ),
            (
                "reordered packet",
                0,
                &[F(1, Send(0)), F(3, Send(2)), F(2, Send(1)), F(4, Send(3))],
            ),
            (
                "late packet before a drop",
                0,
                &[
                    F(1, Send(0)),
                    F(3, Send(2)),
                    D(4),
                    F(2, Send(1)),
                    F(5, Send(3)),
                ],
            ),
            (
                "late packet after a drop",
                0,
                &[F(1, Send(0)), D(2), F(4, Send(2)), F(3, Send(1))],
            ),
            (
                "duplicate of newest",
                0,
                &[F(1, Send(0)), F(2, Send(1)), F(2, Send(1))],
            ),
            (
                "too old",
                0,
                &[F(5000, Send(0)), F(5001, Send(1)), F(1000, TooOld)],
            ),
            ("before start", 0, &[F(10, Send(0)), F(9, TooOld)]),
            (
                "restart continues numbering",
                0,
                &[
                    F(10, Send(0)),
                    F(11, Send(1)),
                    R,
                    F(40000, Send(2)),
                    F(40001, Send(3)),
                ],
            ),
            (
                "restart after drops",
                0,
                &[F(10, Send(0)), D(11), R, F(7, Send(1))],
            ),
            ("drop before start is no-op", 0, &[D(3), F(4, Send(0))]),
            (
                "big forward jump is loss",
                0,
                &[F(1, Send(0)), F(30001, Send(30000))],
            ),
        ];
        for (name, first_out, ops) in rows {
            eprintln!("row: {name}");
            run(*first_out, ops);
        }
    }

    #[test]
    fn many_drops_beyond_history_still_shift() {
        let mut s = SeqRewriter::new(0);
        assert_eq!(s.forward(0), Send(0));
        for seq in 1..=200u16 {
            s.drop_packet(seq);
        }
        assert_eq!(s.forward(201), Send(1));
    }

    #[test]
    fn long_run_with_periodic_drops_has_no_holes() {
        let mut s = SeqRewriter::new(1234);
        let mut expect = 1234u16;
        for seq in 60000u32..(60000 + 140000) {
            let seq = seq as u16;
            if seq.is_multiple_of(7) {
                s.drop_packet(seq);
            } else {
                assert_eq!(s.forward(seq), Send(expect));
                expect = expect.wrapping_add(1);
            }
        }
    }
}
