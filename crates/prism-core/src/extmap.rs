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
//!   describe the hop the packet arrived on: the subscriber leg's engine
//!   stamps its own, and a forwarded value would corrupt the subscriber's
//!   congestion feedback.

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

/// Publisher extension id (1–255) → subscriber id; plus the subscriber's `mid` id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionMap {
    map: [u8; 256],
    /// The subscriber leg's id for `sdes:mid`, if negotiated.
    pub mid_id: Option<u8>,
}

impl Default for ExtensionMap {
    fn default() -> Self {
        ExtensionMap {
            map: [0; 256],
            mid_id: None,
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
            if uri == SDES_MID_URI && (1..=255).contains(&id) {
                m.mid_id = Some(id as u8);
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
    }
}
