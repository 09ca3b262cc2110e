//! The last step of a forwarded packet's path, decided without I/O: a
//! rewritten packet (see [`super::rewrite`]) made ready for one subscriber's
//! sender. The shard's `flush_sends` then only writes what this returns, so
//! the fuzz harness (`crate::fuzz`) drives the same code with arbitrary
//! packets.

use std::time::Duration;

use bytes::Bytes;
use prism_core::DropReason;
use rtc::rtp;

use crate::media::peer::SenderSlot;

/// What to hand the subscriber leg's engine.
#[derive(Debug)]
pub enum Outgoing {
    /// On the sender's own stream (`RTCRtpSender::write_rtp`).
    Media(rtp::Packet),
    /// A retransmission on the RTX stream (RFC 4588): the connection's write
    /// path routes it by its SSRC.
    Rtx(rtp::Packet),
}

/// The `abs-send-time` payload of one batch, made on first use: one clock
/// reading and one small allocation per batch, not per packet.
#[derive(Debug)]
pub struct SendTime {
    since_epoch: Duration,
    value: Option<Bytes>,
}

impl SendTime {
    pub fn new(since_epoch: Duration) -> Self {
        SendTime {
            since_epoch,
            value: None,
        }
    }

    fn get(&mut self) -> Bytes {
        let since = self.since_epoch;
        self.value
            .get_or_insert_with(|| {
                Bytes::copy_from_slice(&prism_core::extmap::abs_send_time(since))
            })
            .clone()
    }
}

/// Stamps this leg's `mid` (Chrome demultiplexes by it) and the server's
/// `abs-send-time` where negotiated, and turns a retransmission into RTX
/// where the subscriber negotiated RTX for the packet's payload type (else
/// it goes again as the original packet).
///
/// Err: the packet cannot be sent right (counted by the caller).
pub fn prepare(
    mut pkt: rtp::Packet,
    s: &mut SenderSlot,
    retransmission: bool,
    send_time: &mut SendTime,
) -> Result<Outgoing, DropReason> {
    let abs_id = s
        .params
        .as_ref()
        .and_then(|p| p.extensions.abs_send_time_id);
    // A header without extensions yet would take the one-byte form from
    // the first one set (and the engine does not check the id then):
    // ids above 14 need the two-byte form (RFC 8285).
    if !pkt.header.extension && [s.mid_ext_id, abs_id].iter().flatten().any(|id| *id > 14) {
        pkt.header.extension = true;
        pkt.header.extension_profile = rtp::header::EXTENSION_PROFILE_TWO_BYTE;
    }
    // Without its mid the packet lands on no m-section (or the wrong one):
    // drop and count rather than send it astray.
    if let (Some(id), Some(mid)) = (s.mid_ext_id, &s.mid) {
        pkt.header
            .set_extension(id, mid.clone())
            .map_err(|_| DropReason::ExtensionRewrite)?;
    }
    if let Some(id) = abs_id {
        // A failure costs only one sample of the receiver's estimate.
        let _ = pkt.header.set_extension(id, send_time.get());
    }
    let rtx = s.rtx.as_ref().filter(|_| retransmission).and_then(|r| {
        r.payload_types
            .iter()
            .find(|(apt, _)| *apt == pkt.header.payload_type)
            .map(|(_, pt)| (r.ssrc, *pt))
    });
    let Some((rtx_ssrc, pt)) = rtx else {
        return Ok(Outgoing::Media(pkt));
    };
    s.rtx_seq = s.rtx_seq.wrapping_add(1);
    let osn = pkt.header.sequence_number;
    let mut payload = Vec::with_capacity(pkt.payload.len() + 2);
    payload.extend_from_slice(&osn.to_be_bytes());
    payload.extend_from_slice(&pkt.payload);
    pkt.header.ssrc = rtx_ssrc;
    pkt.header.payload_type = pt;
    pkt.header.sequence_number = s.rtx_seq;
    pkt.payload = Bytes::from(payload);
    Ok(Outgoing::Rtx(pkt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::peer::RtxInfo;
    use prism_core::{ExtensionMap, SinkParams, TrackId};
    use rtc::rtp_transceiver::RTCRtpSenderId;

    pub(crate) fn slot(mid_id: Option<u8>, abs: Option<u16>, rtx: bool) -> SenderSlot {
        let mut subscriber = vec![("urn:ietf:params:rtp-hdrext:sdes:mid", 0u16)];
        if let Some(id) = mid_id {
            subscriber[0].1 = u16::from(id);
        }
        if let Some(id) = abs {
            subscriber.push((prism_core::extmap::ABS_SEND_TIME_URI, id));
        }
        let extensions = ExtensionMap::build(std::iter::empty(), subscriber);
        SenderSlot {
            track: TrackId(1),
            sender: RTCRtpSenderId::from(0),
            ssrc: 0xA,
            codec: Default::default(),
            mid: Some(Bytes::from_static(b"3")),
            mid_ext_id: extensions.mid_id,
            params: Some(SinkParams {
                ssrc: 0xA,
                payload_types: [None; prism_core::MAX_MAPPED_PAYLOAD_TYPES],
                extensions,
            }),
            rtx: rtx.then(|| RtxInfo {
                ssrc: 0xB,
                payload_types: vec![(96, 97)],
            }),
            rtx_seq: 65535,
        }
    }

    fn packet(pt: u8, seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                ssrc: 0xA,
                ..Default::default()
            },
            payload: Bytes::from_static(b"payload"),
        }
    }

    #[test]
    fn a_table_of_sends() {
        let mut t = SendTime::new(Duration::from_secs(1));
        // (mid id, abs id, rtx negotiated, retransmission, pt) → RTX?, mid?, abs?
        #[allow(clippy::type_complexity)]
        let rows: &[(Option<u8>, Option<u16>, bool, bool, u8, bool, bool, bool)] = &[
            (Some(1), None, false, false, 96, false, true, false),
            (Some(1), Some(4), false, false, 96, false, true, true),
            (None, None, false, false, 96, false, false, false),
            // A retransmission without RTX goes as the original packet.
            (Some(1), None, false, true, 96, false, true, false),
            // With RTX for its payload type: RTX.
            (Some(1), Some(4), true, true, 96, true, true, true),
            // RTX negotiated, but not for this payload type: the original.
            (Some(1), None, true, true, 111, false, true, false),
            // RTX negotiated, but a first send is never RTX.
            (Some(1), None, true, false, 96, false, true, false),
            // Two-byte ids (above 14) work too.
            (Some(20), Some(30), false, false, 96, false, true, true),
        ];
        for (i, &(mid, abs, rtx, re, pt, want_rtx, want_mid, want_abs)) in rows.iter().enumerate() {
            let mut s = slot(mid, abs, rtx);
            let out = prepare(packet(pt, 1000), &mut s, re, &mut t).expect("sendable");
            let p = match out {
                Outgoing::Rtx(p) => {
                    assert!(want_rtx, "row {i}: unexpected RTX");
                    assert_eq!((p.header.ssrc, p.header.payload_type), (0xB, 97));
                    assert_eq!(p.header.sequence_number, 0, "row {i}: RTX seq wraps");
                    assert_eq!(
                        &p.payload[..2],
                        &1000u16.to_be_bytes(),
                        "row {i}: OSN first"
                    );
                    assert_eq!(&p.payload[2..], b"payload");
                    p
                }
                Outgoing::Media(p) => {
                    assert!(!want_rtx, "row {i}: expected RTX");
                    assert_eq!((p.header.ssrc, p.header.sequence_number), (0xA, 1000));
                    p
                }
            };
            let mid_ok = mid.is_some_and(|id| p.header.get_extension(id).as_deref() == Some(b"3"));
            assert_eq!(mid_ok, want_mid, "row {i}: mid");
            let abs_ok = abs.is_some_and(|id| {
                p.header.get_extension(id as u8).as_deref() == Some(&[4u8, 0, 0][..])
            });
            assert_eq!(abs_ok, want_abs, "row {i}: abs-send-time");
        }
    }
}
