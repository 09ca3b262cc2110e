//! Bytes on the wire: telling STUN from ChannelData, checking and adding
//! MESSAGE-INTEGRITY, and building responses with the rtc-stun types.
//!
//! MESSAGE-INTEGRITY is checked here rather than with
//! `stun::integrity::MessageIntegrity::check`, because that one computes
//! offsets from the attribute list with unchecked subtraction; this walk
//! bounds-checks every step of untrusted input.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::net::{IpAddr, SocketAddr};

use stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_SOFTWARE, ATTR_XOR_PEER_ADDRESS,
};
use stun::error_code::{ErrorCode, ErrorCodeAttribute};
use stun::fingerprint::FINGERPRINT;
use stun::message::{
    Message, MessageClass, MessageType, Setter, TransactionId, CLASS_ERROR_RESPONSE,
    CLASS_SUCCESS_RESPONSE, MAGIC_COOKIE, MESSAGE_HEADER_SIZE,
};
use stun::textattrs::TextAttribute;

/// The SOFTWARE attribute on every response.
pub(crate) const SOFTWARE: &str = concat!("prism-turn ", env!("CARGO_PKG_VERSION"));

const MI_SIZE: usize = 20;
const CHANNEL_HEADER: usize = 4;

/// One client packet, told apart by its first two bits (RFC 8656 §12).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A STUN message whose header and length are consistent.
    Stun(&'a [u8]),
    /// ChannelData: channel number and the payload (padding stripped).
    ChannelData { number: u16, data: &'a [u8] },
}

/// Classifies a datagram, or one frame cut from a stream. `None` for
/// anything that is neither (counted as malformed by the caller).
pub(crate) fn classify(b: &[u8]) -> Option<Frame<'_>> {
    let first = *b.first()?;
    match first >> 6 {
        0 => {
            if b.len() < MESSAGE_HEADER_SIZE {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            let cookie = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            // The length covers whole 4-byte attributes and exactly the rest
            // of the datagram.
            let ok = cookie == MAGIC_COOKIE && len % 4 == 0 && b.len() == MESSAGE_HEADER_SIZE + len;
            ok.then_some(Frame::Stun(b))
        }
        1 => {
            if b.len() < CHANNEL_HEADER {
                return None;
            }
            let number = u16::from_be_bytes([b[0], b[1]]);
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            // Padding may follow the payload (always on streams, allowed on
            // UDP); a length past the end is a broken packet.
            let data = b.get(CHANNEL_HEADER..CHANNEL_HEADER + len)?;
            Some(Frame::ChannelData { number, data })
        }
        _ => None,
    }
}

/// Decodes a STUN message `classify` accepted.
pub(crate) fn decode(b: &[u8]) -> Option<Message> {
    let mut m = Message::new();
    m.raw.clear();
    m.raw.extend_from_slice(b);
    m.decode().ok()?;
    Some(m)
}

/// Why MESSAGE-INTEGRITY did not verify.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IntegrityError {
    /// No MESSAGE-INTEGRITY attribute.
    Missing,
    /// The attribute or the message around it is malformed.
    Malformed,
    /// The HMAC differs.
    Mismatch,
}

/// Verifies the MESSAGE-INTEGRITY of `raw` (RFC 8489 §14.5) with `key`.
pub(crate) fn check_integrity(raw: &[u8], key: &[u8]) -> Result<(), IntegrityError> {
    let mut at = MESSAGE_HEADER_SIZE;
    // Bounded: every step advances by at least the 4-byte attribute header.
    while at + 4 <= raw.len() {
        let typ = u16::from_be_bytes([raw[at], raw[at + 1]]);
        let len = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
        if typ == ATTR_MESSAGE_INTEGRITY.value() {
            if len != MI_SIZE {
                return Err(IntegrityError::Malformed);
            }
            let mac_value = raw
                .get(at + 4..at + 4 + MI_SIZE)
                .ok_or(IntegrityError::Malformed)?;
            // The HMAC covers the header with the length as if the message
            // ended right after MESSAGE-INTEGRITY.
            let covered_len = u16::try_from(at + 4 + MI_SIZE - MESSAGE_HEADER_SIZE)
                .map_err(|_| IntegrityError::Malformed)?;
            let mut mac =
                Hmac::<Sha1>::new_from_slice(key).map_err(|_| IntegrityError::Malformed)?;
            mac.update(&raw[..2]);
            mac.update(&covered_len.to_be_bytes());
            mac.update(&raw[4..at]);
            return mac
                .verify_slice(mac_value)
                .map_err(|_| IntegrityError::Mismatch);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    Err(IntegrityError::Missing)
}

/// Appends MESSAGE-INTEGRITY computed with `key` to `m`.
fn add_integrity(m: &mut Message, key: &[u8]) {
    let length = m.length;
    m.length += (4 + MI_SIZE) as u32;
    m.write_length();
    let value: [u8; MI_SIZE] = match Hmac::<Sha1>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(&m.raw);
            mac.finalize().into_bytes().into()
        }
        // HMAC accepts keys of any length; this branch cannot run.
        Err(_) => [0; MI_SIZE],
    };
    m.length = length;
    m.write_length();
    m.add(ATTR_MESSAGE_INTEGRITY, &value);
}

/// A response under construction: type, transaction and attributes, then
/// SOFTWARE, MESSAGE-INTEGRITY (when `key` is set) and FINGERPRINT.
pub(crate) struct Reply<'k> {
    typ: MessageType,
    tid: TransactionId,
    key: Option<&'k [u8; 16]>,
    attrs: Vec<Box<dyn Setter>>,
}

impl<'k> Reply<'k> {
    /// A success response to a request of `typ`.
    pub fn success(req: &Message, key: Option<&'k [u8; 16]>) -> Reply<'k> {
        Reply::new(req, CLASS_SUCCESS_RESPONSE, key)
    }

    /// An error response with `code` and its reason phrase.
    pub fn error(req: &Message, code: u16, key: Option<&'k [u8; 16]>) -> Reply<'k> {
        Reply::new(req, CLASS_ERROR_RESPONSE, key).with(ErrorCodeAttribute {
            code: ErrorCode(code),
            reason: reason(code).as_bytes().to_vec(),
        })
    }

    /// A 401 or 438 carrying REALM and a fresh NONCE, without integrity.
    pub fn challenge(req: &Message, code: u16, realm: &str, nonce: String) -> Reply<'k> {
        Reply::error(req, code, None)
            .with(TextAttribute::new(ATTR_REALM, realm.to_owned()))
            .with(TextAttribute::new(ATTR_NONCE, nonce))
    }

    fn new(req: &Message, class: MessageClass, key: Option<&'k [u8; 16]>) -> Reply<'k> {
        Reply {
            typ: MessageType::new(req.typ.method, class),
            tid: req.transaction_id,
            key,
            attrs: Vec::new(),
        }
    }

    /// Adds an attribute.
    pub fn with(mut self, attr: impl Setter + 'static) -> Reply<'k> {
        self.attrs.push(Box::new(attr));
        self
    }

    /// The encoded message. `None` only if an attribute refused to encode
    /// (a text past STUN's length limits), which the callers rule out.
    pub fn encode(self) -> Option<Vec<u8>> {
        let mut m = Message::new();
        m.build(&[Box::new(self.typ), Box::new(self.tid)]).ok()?;
        for a in &self.attrs {
            a.add_to(&mut m).ok()?;
        }
        TextAttribute::new(ATTR_SOFTWARE, SOFTWARE.to_owned())
            .add_to(&mut m)
            .ok()?;
        if let Some(key) = self.key {
            add_integrity(&mut m, key);
        }
        FINGERPRINT.add_to(&mut m).ok()?;
        Some(m.raw)
    }
}

/// Every XOR-PEER-ADDRESS of `m`, decoded; `None` for a malformed one.
/// (rtc-turn's `PeerAddress` getter reads only the first, and
/// CreatePermission may carry several.)
pub(crate) fn xor_peer_addrs(m: &Message) -> Vec<Option<SocketAddr>> {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&m.transaction_id.0);
    m.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        .map(|a| {
            let v = &a.value;
            let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
            let ip = match (v.get(1)?, v.len()) {
                (0x01, 8) => {
                    let mut b = [0u8; 4];
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = v[4 + i] ^ mask[i];
                    }
                    IpAddr::from(b)
                }
                (0x02, 20) => {
                    let mut b = [0u8; 16];
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = v[4 + i] ^ mask[i];
                    }
                    IpAddr::from(b)
                }
                _ => return None,
            };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// The reason phrases of the codes this server sends.
fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// A ChannelData message; padded to 4 bytes when `pad` (streams, RFC
/// 8656 §12.5).
pub(crate) fn channel_data(number: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let padded = if pad {
        data.len().div_ceil(4) * 4
    } else {
        data.len()
    };
    let mut out = Vec::with_capacity(CHANNEL_HEADER + padded);
    out.extend_from_slice(&number.to_be_bytes());
    // Callers pass at most one datagram (< 64 KiB).
    out.extend_from_slice(&(data.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(CHANNEL_HEADER + padded, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::integrity::MessageIntegrity;
    use stun::message::BINDING_REQUEST;

    fn signed(key: &[u8]) -> Vec<u8> {
        let provider = turn::crypto::default_provider().unwrap();
        let mut m = Message::new();
        m.build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_SOFTWARE, "x".to_owned())),
            Box::new(MessageIntegrity::new_raw_integrity_with_provider(
                key.to_vec(),
                provider.crypto(),
            )),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
        m.raw
    }

    #[test]
    fn integrity_matches_rtc_stun() {
        let raw = signed(b"0123456789abcdef");
        assert_eq!(check_integrity(&raw, b"0123456789abcdef"), Ok(()));
        assert_eq!(
            check_integrity(&raw, b"0123456789abcdeX"),
            Err(IntegrityError::Mismatch)
        );
        // Our own responses verify with rtc-stun's checker.
        let req = decode(&raw).unwrap();
        let key = [7u8; 16];
        let out = Reply::success(&req, Some(&key)).encode().unwrap();
        let mut m = decode(&out).unwrap();
        let provider = turn::crypto::default_provider().unwrap();
        MessageIntegrity::check(&mut m, &key, provider.crypto()).unwrap();
        FINGERPRINT.check(&m).unwrap();
    }

    #[test]
    fn classify_table() {
        let stun = signed(b"k");
        let rows: Vec<(Vec<u8>, &str)> = vec![
            (stun.clone(), "stun"),
            (stun[..stun.len() - 4].to_vec(), "none"), // truncated
            ([stun.clone(), vec![0; 4]].concat(), "none"), // trailing bytes
            (vec![0x40, 0x00, 0x00, 0x03, 1, 2, 3], "chan"),
            (vec![0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0], "chan"), // padded
            (vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3], "none"),    // short
            (vec![0x80, 0, 0, 0], "none"),
            (vec![], "none"),
            (vec![0x40], "none"),
        ];
        for (bytes, want) in rows {
            let got = match classify(&bytes) {
                Some(Frame::Stun(_)) => "stun",
                Some(Frame::ChannelData { .. }) => "chan",
                None => "none",
            };
            assert_eq!(got, want, "{bytes:02x?}");
        }
    }

    #[test]
    fn integrity_survives_garbage() {
        // Any byte string: no panic, never Ok.
        let mut seed = 0x1234_5678u32;
        for n in 0..2000 {
            let len = 20 + (n % 90);
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if n % 3 == 0 && b.len() > 21 {
                b[20] = 0x00;
                b[21] = 0x08;
            }
            assert_ne!(check_integrity(&b, b"k"), Ok(()));
            let _ = classify(&b).and_then(|f| match f {
                Frame::Stun(s) => decode(s),
                Frame::ChannelData { .. } => None,
            });
        }
    }

    #[test]
    fn channel_data_padding() {
        assert_eq!(
            channel_data(0x4001, &[1, 2, 3], true),
            vec![0x40, 1, 0, 3, 1, 2, 3, 0]
        );
        assert_eq!(
            channel_data(0x4001, &[1, 2, 3], false),
            vec![0x40, 1, 0, 3, 1, 2, 3]
        );
    }
}
