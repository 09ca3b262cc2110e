//! Retransmissions inside transport-wide congestion control.
//!
//! The engine binds a sender's media SSRC to its interceptors, not its RTX
//! SSRC, so the transport-cc tagger and the congestion controller ignore
//! RTX packets: they carry no transport-wide sequence number, the
//! subscriber never reports them, and the bandwidth estimate never sees
//! them — yet they take the same link. On a full link (issue 13's throttled
//! viewer) the rate the subscriber acknowledged was then only the media
//! part of what its link carried, and the estimate fell below the link.
//! libwebrtc tags RTX like media; [`AlsoRtx`] makes the engine's
//! interceptors do the same by binding each stream's RTX SSRC as a stream
//! of its own.

use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Wraps an interceptor whose per-SSRC state should cover RTX streams too.
pub struct AlsoRtx<I>(pub I);

impl<I> AlsoRtx<I> {
    /// The RTX stream of `info` as a stream of its own (same extensions).
    fn rtx(info: &StreamInfo) -> Option<StreamInfo> {
        let ssrc = info.ssrc_rtx?;
        let mut rtx = info.clone();
        rtx.ssrc = ssrc;
        rtx.ssrc_rtx = None;
        if let Some(pt) = info.payload_type_rtx {
            rtx.payload_type = pt;
        }
        Some(rtx)
    }
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for AlsoRtx<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_read(msg)
    }
    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.0.poll_read()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_write(msg)
    }
    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.0.poll_write()
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.0.handle_timeout(now)
    }
    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.0.poll_timeout()
    }
}

impl<I: Interceptor> Interceptor for AlsoRtx<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.0.bind_local_stream(info);
        if let Some(rtx) = Self::rtx(info) {
            self.0.bind_local_stream(&rtx);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = Self::rtx(info) {
            self.0.unbind_local_stream(&rtx);
        }
        self.0.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the SSRCs bound to it.
    #[derive(Default)]
    struct Bound(Vec<u32>);

    impl Protocol<TaggedPacket, TaggedPacket, ()> for Bound {
        type Rout = TaggedPacket;
        type Wout = TaggedPacket;
        type Eout = ();
        type Error = Error;
        type Time = Instant;
        fn handle_read(&mut self, _: TaggedPacket) -> Result<(), Error> {
            Ok(())
        }
        fn poll_read(&mut self) -> Option<TaggedPacket> {
            None
        }
        fn handle_write(&mut self, _: TaggedPacket) -> Result<(), Error> {
            Ok(())
        }
        fn poll_write(&mut self) -> Option<TaggedPacket> {
            None
        }
        fn handle_timeout(&mut self, _: Instant) -> Result<(), Error> {
            Ok(())
        }
        fn poll_timeout(&mut self) -> Option<Instant> {
            None
        }
    }

    impl Interceptor for Bound {
        fn bind_local_stream(&mut self, info: &StreamInfo) {
            self.0.push(info.ssrc);
        }
        fn unbind_local_stream(&mut self, info: &StreamInfo) {
            self.0.retain(|s| *s != info.ssrc);
        }
        fn bind_remote_stream(&mut self, _: &StreamInfo) {}
        fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
    }

    #[test]
    fn a_streams_rtx_ssrc_is_bound_with_it() {
        let mut i = AlsoRtx(Bound::default());
        let with_rtx = StreamInfo {
            ssrc: 10,
            ssrc_rtx: Some(11),
            payload_type: 96,
            payload_type_rtx: Some(97),
            ..Default::default()
        };
        let audio = StreamInfo {
            ssrc: 20,
            ..Default::default()
        };
        i.bind_local_stream(&with_rtx);
        i.bind_local_stream(&audio);
        assert_eq!(i.0 .0, vec![10, 11, 20]);
        i.unbind_local_stream(&with_rtx);
        assert_eq!(i.0 .0, vec![20]);
    }
}
