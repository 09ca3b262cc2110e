//! Header-extension id mapping between a publisher leg and a subscriber leg.
//!
//! Extension ids are per-connection: the same URI may be id 3 for the
//! publisher and id 9 for a subscriber. Extensions are matched by URI when a
//! subscriber leg is negotiated; this map then turns a publisher id into the
//! subscriber's id (or none: the extension is not forwarded) with one array
//! index per extension.
//!
//! Some URIs are never forwarded:
//! - `sdes:mid`, `rtp-stream-id` and `repaired-rtp-stream-id` name the
//!   publisher's m-section and encodings and would land the packet on the
//!   wrong subscriber m-line; the subscriber's own `mid` is stamped instead;
//! - transport-wide sequence numbers (`transport-wide-cc`) and `abs-send-time`
//!   describe the hop the packet arrived on: a forwarded value would corrupt
//!   the subscriber's congestion feedback. The subscriber leg's engine stamps
//!   its own transport-wide sequence numbers; the server stamps its own send
//!   time into `abs-send-time` (receivers that estimate bandwidth for REMB,
//!   such as aiortc, need it), at the id in [`ExtensionMap::abs_send_time_id`].

pub const SDES_MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub const SDES_RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
pub const SDES_REPAIRED_RTP_STREAM_ID_URI: &str =
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
pub const TRANSPORT_CC_02_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/transport-wide-cc-02";
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// URIs that describe the publisher's hop or m-section and are never forwarded.
pub fn is_hop_local(uri: &str) -> bool {
    [
        SDES_MID_URI,
        SDES_RTP_STREAM_ID_URI,
        SDES_REPAIRED_RTP_STREAM_ID_URI,
        TRANSPORT_CC_URI,
        TRANSPORT_CC_02_URI,
        ABS_SEND_TIME_URI,
    ]
    .contains(&uri)
}

/// Publisher extension id (1–255) → subscriber id; plus the subscriber's ids
/// for the extensions the server stamps itself (`mid`, `abs-send-time`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionMap {
    map: [u8; 256],
    /// The subscriber leg's id for `sdes:mid`, if negotiated.
    pub mid_id: Option<u8>,
    /// The subscriber leg's id for `abs-send-time`, if negotiated.
    pub abs_send_time_id: Option<u8>,
    /// The publisher's id for the AV1 dependency descriptor, when both legs
    /// negotiated it (an SVC leg rewrites its active decode targets).
    pub dependency_descriptor_id: Option<u8>,
}

impl Default for ExtensionMap {
    fn default() -> Self {
        ExtensionMap {
            map: [0; 256],
            mid_id: None,
            abs_send_time_id: None,
            dependency_descriptor_id: None,
        }
    }
}

impl ExtensionMap {
    /// Build from the (uri, id) lists both legs negotiated.
    pub fn build<'a>(
        publisher: impl IntoIterator<Item = (&'a str, u16)>,
        subscriber: impl IntoIterator<Item = (&'a str, u16)> + Clone,
    ) -> Self {
        let mut m = ExtensionMap::default();
        for (uri, id) in subscriber.clone() {
            if !(1..=255).contains(&id) {
                continue;
            }
            match uri {
                SDES_MID_URI => m.mid_id = Some(id as u8),
                ABS_SEND_TIME_URI => m.abs_send_time_id = Some(id as u8),
                _ => {}
            }
        }
        for (uri, pub_id) in publisher {
            if is_hop_local(uri) || !(1..=255).contains(&pub_id) {
                continue;
            }
            if let Some((_, sub_id)) = subscriber
                .clone()
                .into_iter()
                .find(|(u, id)| *u == uri && (1..=255).contains(id))
            {
                m.map[pub_id as usize] = sub_id as u8;
                if uri == crate::av1_dd::DEPENDENCY_DESCRIPTOR_URI {
                    m.dependency_descriptor_id = Some(pub_id as u8);
                }
            }
        }
        m
    }

    /// The subscriber's id for a publisher's extension id, if it is forwarded.
    #[inline]
    pub fn map(&self, publisher_id: u8) -> Option<u8> {
        match self.map[publisher_id as usize] {
            0 => None,
            id => Some(id),
        }
    }
}

/// The `abs-send-time` payload for a send time `since` an arbitrary epoch:
/// seconds in 6.18 fixed point, modulo 64 s, big-endian in 3 bytes.
/// Receivers use only differences between packets, so any epoch will do.
pub fn abs_send_time(since: std::time::Duration) -> [u8; 3] {
    let units = (since.as_secs() << 18) | ((u64::from(since.subsec_nanos()) << 18) / 1_000_000_000);
    let v = (units & 0x00FF_FFFF) as u32;
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_by_uri_and_never_forwards_hop_local_extensions() {
        let abs = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
        let twcc = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
        let audio_level = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
        let level = "urn:ietf:params:rtp-hdrext:toffset";
        let publisher = [
            (SDES_MID_URI, 1u16),
            (abs, 2),
            (twcc, 3),
            (SDES_RTP_STREAM_ID_URI, 4),
            (audio_level, 5),
            (level, 6),
        ];
        let subscriber = [(twcc, 7u16), (SDES_MID_URI, 9), (abs, 1), (level, 12)];
        let m = ExtensionMap::build(publisher, subscriber);
        assert_eq!(m.map(1), None, "publisher mid is stripped");
        assert_eq!(m.map(2), None, "abs-send-time is hop-by-hop");
        assert_eq!(
            m.map(3),
            None,
            "transport-wide sequence numbers are hop-by-hop"
        );
        assert_eq!(m.map(6), Some(12), "other extensions map by URI");
        assert_eq!(m.map(4), None, "rid is stripped");
        assert_eq!(m.map(5), None, "not negotiated by the subscriber");
        assert_eq!(m.map(0), None);
        assert_eq!(m.map(255), None);
        assert_eq!(m.mid_id, Some(9));
        assert_eq!(m.abs_send_time_id, Some(1), "the server stamps its own");
        assert_eq!(m.dependency_descriptor_id, None, "not negotiated");
        let dd = crate::av1_dd::DEPENDENCY_DESCRIPTOR_URI;
        let m = ExtensionMap::build([(dd, 11u16)], [(dd, 4u16)]);
        assert_eq!(
            (m.map(11), m.dependency_descriptor_id),
            (Some(4), Some(11)),
            "forwarded by URI; the publisher's id is the one packets carry"
        );
        let m = ExtensionMap::build([(dd, 11u16)], [(level, 4u16)]);
        assert_eq!(m.dependency_descriptor_id, None, "the subscriber lacks it");
        let none = ExtensionMap::build(publisher, [(SDES_MID_URI, 0u16), (abs, 256)]);
        assert_eq!((none.mid_id, none.abs_send_time_id), (None, None));
    }

    #[test]
    fn abs_send_time_is_6_18_fixed_point_mod_64_s() {
        use std::time::Duration;
        let t = |d: Duration| abs_send_time(d);
        assert_eq!(t(Duration::ZERO), [0, 0, 0]);
        assert_eq!(t(Duration::from_secs(1)), [0x04, 0, 0]);
        assert_eq!(t(Duration::from_millis(500)), [0x02, 0, 0]);
        assert_eq!(t(Duration::from_secs(63)), [0xFC, 0, 0]);
        assert_eq!(t(Duration::from_secs(64)), [0, 0, 0], "wraps every 64 s");
        assert_eq!(
            t(Duration::from_nanos(3_815)),
            [0, 0, 1],
            "one unit is 2^-18 s"
        );
    }
}
