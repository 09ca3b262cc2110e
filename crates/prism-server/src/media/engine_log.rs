//! The engine's per-datagram warnings, counted instead of logged.
//!
//! `rtc` 0.21.1 logs (through the `log` crate) one WARN line for every
//! datagram one of its handlers refuses (`DtlsHandler.handle_read got error`,
//! `SrtpHandler.handle_read got error`, ...), at target
//! `rtc::peer_connection::handler`, and swallows the error: `handle_read`
//! returns `Ok`. Garbage DTLS or SRTP sent from an address routed to a peer
//! (a spoofed source, or a buggy client) therefore wrote a line per datagram.
//!
//! The default log filter turns that target off ([`NOISY_TARGET`]); this
//! layer, with its own filter, still sees those events and counts them by
//! [`EngineError`] in a thread-local array. Every engine call of a shard runs
//! on the shard's own thread, so the shard takes the counts in its
//! housekeeping ([`take`]) and exports them as
//! `prism_engine_errors_total{reason}`, with a rate-limited summary line.

use std::cell::Cell;
use std::fmt::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The engine's target whose warnings come one per datagram (this module
/// and its children: the demuxer's "zero length", the endpoint's
/// "unsupported message", every handler's read/write/event error).
pub const NOISY_TARGET: &str = "rtc::peer_connection::handler";

prism_core::labelled_enum! {
    /// Which part of the engine refused a datagram (or a write or event). Each
    /// is a label of `prism_engine_errors_total{reason}`.
    pub enum EngineError {
        /// The DTLS handler: not a DTLS record of this association (garbage
        /// in the DTLS range, a wrong epoch, a failed MAC).
        Dtls => "dtls",
        /// The SRTP handler: SRTP/SRTCP that fails authentication or parsing.
        Srtp => "srtp",
        /// The ICE handler (STUN the shard let through that the agent refused).
        Ice => "ice",
        /// The SCTP or data channel handlers.
        Sctp => "sctp",
        /// The interceptor chain (RTP/RTCP that would not parse after decryption).
        Interceptor => "interceptor",
        /// A zero-length datagram (the shard drops these before the engine).
        Empty => "empty",
        /// A datagram the engine's demultiplexer does not recognise.
        Unsupported => "unsupported",
        /// Any other warning under [`NOISY_TARGET`].
        Other => "other",
    }
}

impl EngineError {
    /// Classifies an event by its target and the start of its message.
    fn classify(target: &str, message: &str) -> EngineError {
        if target.ends_with("::demuxer") {
            return EngineError::Empty;
        }
        if target.ends_with("::endpoint") {
            return EngineError::Unsupported;
        }
        let handler = message.split('.').next().unwrap_or("");
        match handler {
            "DtlsHandler" => EngineError::Dtls,
            "SrtpHandler" => EngineError::Srtp,
            "IceHandler" => EngineError::Ice,
            "SctpHandler" | "DataChannelHandler" => EngineError::Sctp,
            "InterceptorHandler" => EngineError::Interceptor,
            "DemuxerHandler" => EngineError::Unsupported,
            _ => EngineError::Other,
        }
    }
}

thread_local! {
    static COUNTS: [Cell<u64>; EngineError::COUNT] = const { [const { Cell::new(0) }; EngineError::COUNT] };
}

/// The counts this thread's engine calls raised since the last call, by
/// [`EngineError::index`]; resets them.
pub fn take() -> [u64; EngineError::COUNT] {
    COUNTS.with(|c| std::array::from_fn(|i| c[i].replace(0)))
}

/// Counts WARN/ERROR events under [`NOISY_TARGET`]. Install it with
/// [`NoisyFilter`] as its per-layer filter, so it sees nothing else.
pub struct EngineErrorCounter;

impl<S: Subscriber> Layer<S> for EngineErrorCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = MessageStart::default();
        event.record(&mut visitor);
        // Events from the `log` crate carry their target in `log.target`.
        let target = visitor.target().unwrap_or(meta.target()).to_owned();
        let reason = EngineError::classify(&target, visitor.message());
        COUNTS.with(|c| {
            let cell = &c[reason.index()];
            cell.set(cell.get() + 1);
        });
    }
}

/// The per-layer filter of [`EngineErrorCounter`]: WARN and ERROR under
/// [`NOISY_TARGET`] (so its level hint keeps the engine's debug and trace
/// callsites disabled).
pub fn noisy_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new().with_target(NOISY_TARGET, Level::WARN)
}

/// The first bytes of an event's message (no allocation), and its `log`
/// target if it came from the `log` crate.
struct MessageStart {
    buf: [u8; 32],
    len: usize,
    target: [u8; 64],
    target_len: usize,
}

impl Default for MessageStart {
    fn default() -> Self {
        MessageStart {
            buf: [0; 32],
            len: 0,
            target: [0; 64],
            target_len: 0,
        }
    }
}

impl MessageStart {
    fn message(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
    fn target(&self) -> Option<&str> {
        (self.target_len > 0)
            .then(|| std::str::from_utf8(&self.target[..self.target_len]).ok())
            .flatten()
    }
}

/// Writes into a fixed buffer, silently keeping only what fits.
struct Clip<'a> {
    buf: &'a mut [u8],
    len: &'a mut usize,
}

impl Write for Clip<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for &b in s.as_bytes() {
            if *self.len == self.buf.len() {
                return Err(std::fmt::Error); // full: stop formatting
            }
            self.buf[*self.len] = b;
            *self.len += 1;
        }
        Ok(())
    }
}

impl Visit for MessageStart {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            let mut w = Clip {
                buf: &mut self.target,
                len: &mut self.target_len,
            };
            let _ = w.write_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && self.len == 0 {
            let mut w = Clip {
                buf: &mut self.buf,
                len: &mut self.len,
            };
            let _ = write!(w, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let h = NOISY_TARGET;
        let rows = [
            (h, "DtlsHandler.handle_read got error: x", EngineError::Dtls),
            (h, "SrtpHandler.handle_read got error: y", EngineError::Srtp),
            (h, "IceHandler.handle_event got error", EngineError::Ice),
            (h, "DataChannelHandler.handle_read", EngineError::Sctp),
            (
                h,
                "InterceptorHandler.handle_read",
                EngineError::Interceptor,
            ),
            (
                "rtc::peer_connection::handler::demuxer",
                "drop invalid packet due to zero length",
                EngineError::Empty,
            ),
            (
                "rtc::peer_connection::handler::endpoint",
                "drop unsupported message from 1.2.3.4:5",
                EngineError::Unsupported,
            ),
            (h, "something new", EngineError::Other),
        ];
        for (target, msg, want) in rows {
            assert_eq!(EngineError::classify(target, msg), want, "{msg}");
        }
    }

    #[test]
    fn counts_through_a_subscriber_and_take_resets() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer as _;
        let sub =
            tracing_subscriber::registry().with(EngineErrorCounter.with_filter(noisy_filter()));
        tracing::subscriber::with_default(sub, || {
            let _ = take();
            tracing::warn!(target: "rtc::peer_connection::handler", "SrtpHandler.handle_read got error: bad tag");
            tracing::warn!(target: "rtc::peer_connection::handler", "SrtpHandler.handle_read got error: bad tag");
            tracing::error!(target: "rtc::peer_connection::handler::demuxer", "drop invalid packet due to zero length");
            // Not counted: another target, or below WARN.
            tracing::warn!(target: "rtc::peer_connection", "x");
            tracing::info!(target: "rtc::peer_connection::handler", "DtlsHandler.x");
        });
        let counts = take();
        assert_eq!(counts[EngineError::Srtp.index()], 2);
        assert_eq!(counts[EngineError::Empty.index()], 1);
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert_eq!(take().iter().sum::<u64>(), 0);
    }
}
