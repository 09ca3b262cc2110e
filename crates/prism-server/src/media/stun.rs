//! STUN on a shard's socket: route a binding request to its peer by the
//! server ufrag it names, and authenticate it (FINGERPRINT, then
//! MESSAGE-INTEGRITY with the peer's ICE password) before the engine sees it.
//!
//! Why the shard authenticates and not only the engine: `rtc-ice` 0.21.1
//! acts on ICE-CONTROLLING / ICE-CONTROLLED (role-conflict repair, RFC 8445
//! §7.3.1.1) *before* it checks USERNAME and MESSAGE-INTEGRITY, so one forged
//! request flips a peer's ICE-lite agent to controlling and the real client's
//! checks are then answered with 487 until it gives up. Prism therefore hands
//! the engine only binding requests it has verified itself, byte for byte:
//! everything the engine reads is covered by the integrity tag.
//!
//! The engine treats every datagram that is neither DTLS (first byte 20–63)
//! nor RTP/RTCP (128–191) as STUN, and its STUN decoder ignores the type's
//! two top bits and trailing bytes; [`classify`] mirrors that so nothing
//! reaches the engine's STUN path unchecked.
//!
//! The checks allocate nothing: the HMAC is keyed once per peer
//! ([`IcePassword`]) and fed the message in place.

use std::sync::{Arc, OnceLock};

use rtc::crypto::{constant_time_eq, CryptoError, HmacAlgorithm, Mac, RTCCryptoProvider};
use rtc::stun::fingerprint::fingerprint_value;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER: usize = 20;
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_ICE_CONTROLLED: u16 = 0x8029;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const INTEGRITY_LEN: usize = 20;
const FINGERPRINT_LEN: usize = 4;

prism_core::labelled_enum! {
    /// Why the shard dropped a datagram before any peer's engine saw it. Each
    /// is a label of `prism_dropped_datagrams_total{reason}`.
    pub enum DatagramDrop {
        /// Zero bytes: nothing to route (the engine would log it at ERROR).
        Empty => "empty",
        /// DTLS or RTP/RTCP from an address no peer has proved it owns.
        UnknownAddress => "unknown_address",
        /// Would reach the engine's STUN path but is not STUN (no magic cookie).
        NotStun => "not_stun",
        /// STUN, but neither a binding request nor a binding success response:
        /// indications (keepalives an ICE-lite server does not need), error
        /// responses (the engine ignores them), other methods.
        StunUnexpectedType => "stun_unexpected_type",
        /// A binding request whose length or attributes do not add up, or with
        /// attributes after MESSAGE-INTEGRITY other than FINGERPRINT.
        StunMalformed => "stun_malformed",
        /// No USERNAME, or one that names no peer of this shard.
        StunUnknownUfrag => "stun_unknown_ufrag",
        /// No FINGERPRINT as the last attribute (RFC 8445 §7.2.2 requires it).
        StunNoFingerprint => "stun_no_fingerprint",
        /// FINGERPRINT present but wrong.
        StunBadFingerprint => "stun_bad_fingerprint",
        /// No MESSAGE-INTEGRITY.
        StunNoIntegrity => "stun_no_integrity",
        /// MESSAGE-INTEGRITY does not match the named peer's password: forged.
        StunBadIntegrity => "stun_bad_integrity",
        /// Authentic, but carries ICE-CONTROLLED: the client claims the role
        /// an ICE-lite server must keep. Answered with 487 (Role Conflict),
        /// never given to the engine (see `docs/security.md`).
        StunRoleControlled => "stun_role_controlled",
        /// DTLS/SRTP that arrived before ICE selected a pair and did not fit the
        /// peer's small hold ([`super::peer::SetupHold`]).
        BeforeIce => "before_ice",
        /// An authentic check on an ICE-TCP connection already bound to
        /// another peer (a connection serves the peer it first proved).
        TcpOtherPeer => "tcp_other_peer",
    }
}

/// What an accepted datagram is, as far as connection setup cares
/// ([`super::peer::SetupHold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An authentic binding request; `nominates` when it carries USE-CANDIDATE.
    BindingRequest { nominates: bool },
    /// A binding success response (to one of the engine's own checks).
    BindingSuccess,
    /// DTLS, SRTP or SRTCP: what the engine drops before ICE has selected a pair.
    NotStun,
}

/// Where the engine would send a datagram (RFC 7983, as `rtc` 0.21.1's
/// demultiplexer decides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Empty,
    Dtls,
    Rtp,
    /// Everything else: the engine's ICE agent parses it as STUN.
    Stun,
}

pub fn classify(b: &[u8]) -> Class {
    match b.first() {
        None => Class::Empty,
        Some(20..=63) => Class::Dtls,
        Some(128..=191) => Class::Rtp,
        Some(_) => Class::Stun,
    }
}

/// Whether a datagram looks like STUN (RFC 7983 demultiplexing: first byte 0–3
/// and the magic cookie).
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER && b[0] < 4 && b[4..8] == MAGIC_COOKIE
}

/// The local (server) ufrag named by a STUN message's USERNAME attribute
/// (`server_ufrag:client_ufrag`). Routing only: says nothing about who sent it.
pub fn local_ufrag(b: &[u8]) -> Option<&str> {
    match parse(b) {
        Ok(Stun::Request(r)) => Some(r.local_ufrag),
        _ => None,
    }
}

/// A STUN message the shard may hand to an engine, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stun<'a> {
    /// A client's check: routed by its USERNAME, authenticated by the shard
    /// ([`BindingRequest::verify`]).
    Request(BindingRequest<'a>),
    /// A client's answer to a check the engine sent. `rtc-ice` 0.21.1 sends
    /// triggered checks even as a lite agent (before it accepts a
    /// nomination), so these are needed. It carries no USERNAME: it goes
    /// only to the peer that already owns the source address, whose engine
    /// checks its MESSAGE-INTEGRITY (with the client's password) before it
    /// acts on it.
    SuccessResponse,
}

/// Checks a datagram the engine would treat as STUN: a binding request or
/// success response, exactly as long as its header says, with
/// MESSAGE-INTEGRITY and then FINGERPRINT as the last attribute (nothing
/// else after the integrity tag, so every byte the engine reads is covered
/// by it), and a right FINGERPRINT; a request also needs USERNAME. Never
/// panics; allocates nothing.
pub fn parse(b: &[u8]) -> Result<Stun<'_>, DatagramDrop> {
    if b.len() >= HEADER && b[4..8] == MAGIC_COOKIE && b[0..2] == BINDING_SUCCESS {
        frame(b)?;
        return Ok(Stun::SuccessResponse);
    }
    parse_binding_request(b).map(Stun::Request)
}

/// A binding request whose framing and FINGERPRINT are right; whether it is
/// authentic is [`BindingRequest::verify`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingRequest<'a> {
    /// The USERNAME's first half: the server ufrag, which names the peer.
    pub local_ufrag: &'a str,
    /// Carries ICE-CONTROLLED (before MESSAGE-INTEGRITY, so covered by it).
    pub controlled: bool,
    /// Carries USE-CANDIDATE: the client nominates this pair.
    pub use_candidate: bool,
    pub transaction_id: [u8; 12],
    /// Offset of the MESSAGE-INTEGRITY attribute's header.
    integrity_at: usize,
}

/// Checks a datagram the engine would treat as STUN: a binding request,
/// exactly as long as its header says, with USERNAME, MESSAGE-INTEGRITY and
/// then FINGERPRINT as the last attribute (nothing else after the integrity
/// tag, so every byte the engine reads is authenticated), and a right
/// FINGERPRINT. Never panics; allocates nothing.
pub fn parse_binding_request(b: &[u8]) -> Result<BindingRequest<'_>, DatagramDrop> {
    if b.len() < HEADER || b[4..8] != MAGIC_COOKIE {
        return Err(DatagramDrop::NotStun);
    }
    // Exactly 0x0001: the engine would also read 0x4001 as a binding request.
    if b[0..2] != BINDING_REQUEST {
        return Err(DatagramDrop::StunUnexpectedType);
    }
    let f = frame(b)?;
    let local_ufrag = f
        .username
        .and_then(|u| std::str::from_utf8(u).ok())
        .and_then(|u| u.split(':').next())
        .filter(|s| !s.is_empty())
        .ok_or(DatagramDrop::StunUnknownUfrag)?;
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(&b[8..HEADER]);
    Ok(BindingRequest {
        local_ufrag,
        controlled: f.controlled,
        use_candidate: f.use_candidate,
        transaction_id,
        integrity_at: f.integrity_at,
    })
}

/// What [`frame`] found in a message's attributes.
struct Frame<'a> {
    username: Option<&'a [u8]>,
    controlled: bool,
    use_candidate: bool,
    integrity_at: usize,
}

/// The attribute walk shared by requests and responses: lengths add up,
/// MESSAGE-INTEGRITY present and followed only by FINGERPRINT, which is
/// last and right. `b` has a STUN header with the magic cookie.
fn frame(b: &[u8]) -> Result<Frame<'_>, DatagramDrop> {
    let body_len = u16::from_be_bytes([b[2], b[3]]) as usize;
    // Trailing bytes are ignored by the engine's decoder: refuse them here.
    if HEADER + body_len != b.len() || body_len & 3 != 0 {
        return Err(DatagramDrop::StunMalformed);
    }
    let mut username: Option<&[u8]> = None;
    let mut controlled = false;
    let mut use_candidate = false;
    let mut integrity_at = None;
    let mut fingerprint_at = None;
    let mut i = HEADER;
    while i < b.len() {
        if fingerprint_at.is_some() {
            // Something after FINGERPRINT: it must be last.
            return Err(DatagramDrop::StunNoFingerprint);
        }
        if i + 4 > b.len() {
            return Err(DatagramDrop::StunMalformed);
        }
        let ty = u16::from_be_bytes([b[i], b[i + 1]]);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        let start = i + 4;
        let padded = len.div_ceil(4) * 4;
        if start + padded > b.len() {
            return Err(DatagramDrop::StunMalformed);
        }
        if integrity_at.is_some() && ty != ATTR_FINGERPRINT {
            // RFC 5389 §15.4: attributes after MESSAGE-INTEGRITY are not
            // covered by it, but the engine would still read them.
            return Err(DatagramDrop::StunMalformed);
        }
        match ty {
            ATTR_USERNAME if username.is_none() => username = Some(&b[start..start + len]),
            ATTR_ICE_CONTROLLED => controlled = true,
            ATTR_USE_CANDIDATE => use_candidate = true,
            ATTR_MESSAGE_INTEGRITY => {
                if len != INTEGRITY_LEN {
                    return Err(DatagramDrop::StunMalformed);
                }
                integrity_at = Some(i);
            }
            ATTR_FINGERPRINT => {
                if len != FINGERPRINT_LEN {
                    return Err(DatagramDrop::StunMalformed);
                }
                fingerprint_at = Some(i);
            }
            _ => {}
        }
        i = start + padded;
    }
    let Some(fp) = fingerprint_at else {
        return Err(DatagramDrop::StunNoFingerprint);
    };
    let Some(integrity_at) = integrity_at else {
        return Err(DatagramDrop::StunNoIntegrity);
    };
    // The CRC covers the message up to the FINGERPRINT attribute, with the
    // header's length already counting it: exactly the bytes in place.
    let want = u32::from_be_bytes([b[fp + 4], b[fp + 5], b[fp + 6], b[fp + 7]]);
    if fingerprint_value(&b[..fp]) != want {
        return Err(DatagramDrop::StunBadFingerprint);
    }
    Ok(Frame {
        username,
        controlled,
        use_candidate,
        integrity_at,
    })
}

impl BindingRequest<'_> {
    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 keyed with the peer's ICE
    /// password, RFC 5389 §15.4) of `b`, the datagram this was parsed from.
    pub fn verify(&self, b: &[u8], key: &mut IcePassword) -> Result<(), DatagramDrop> {
        let at = self.integrity_at;
        // The HMAC input is the message up to the integrity attribute, with
        // the header's length counting up to the end of that attribute (not
        // the FINGERPRINT after it). Only the length differs from the bytes
        // in place, so the header's first four bytes are rebuilt on the stack.
        let covered_len = (at + 4 + INTEGRITY_LEN - HEADER) as u16;
        let len = covered_len.to_be_bytes();
        let head = [b[0], b[1], len[0], len[1]];
        let mut tag = [0u8; INTEGRITY_LEN];
        key.mac
            .sign(&[&head, &b[4..at]], &mut tag)
            .map_err(|_| DatagramDrop::StunBadIntegrity)?;
        if constant_time_eq(&tag, &b[at + 4..at + 4 + INTEGRITY_LEN]) {
            Ok(())
        } else {
            Err(DatagramDrop::StunBadIntegrity)
        }
    }
}

/// The crypto provider the engine uses by default (ring), for the shard's
/// own STUN checks and answers.
pub fn provider() -> &'static Arc<dyn RTCCryptoProvider> {
    static PROVIDER: OnceLock<Arc<dyn RTCCryptoProvider>> = OnceLock::new();
    // unwrap is fine: `rtc`'s default features build the ring provider in,
    // and the engine itself fails to build a peer connection without it.
    PROVIDER.get_or_init(|| rtc::crypto::default_provider().expect("rtc's default crypto provider"))
}

/// A peer's server-side ICE password, with its HMAC keyed once.
pub struct IcePassword {
    pwd: String,
    mac: Box<dyn Mac>,
}

impl std::fmt::Debug for IcePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IcePassword([REDACTED])")
    }
}

impl IcePassword {
    pub fn new(pwd: String) -> Result<Self, CryptoError> {
        let mac = provider()
            .crypto()
            .new_hmac(HmacAlgorithm::Sha1, pwd.as_bytes())?;
        Ok(IcePassword { pwd, mac })
    }

    pub fn as_str(&self) -> &str {
        &self.pwd
    }
}

/// The client's authentic binding request `check`, again, with USE-CANDIDATE
/// added: a new transaction, the same USERNAME, PRIORITY and role attributes,
/// signed with the peer's (server's) password, FINGERPRINT last. What a
/// client that sends DTLS on a pair it has not nominated yet has shown
/// anyway: it uses that pair (mediasoup's "force selected tuple").
pub fn nominating_copy(
    check: &[u8],
    key: &IcePassword,
) -> Result<Vec<u8>, rtc::shared::error::Error> {
    use rtc::stun::attributes::{
        ATTR_FINGERPRINT as FP, ATTR_MESSAGE_INTEGRITY as MI, ATTR_USE_CANDIDATE as UC,
    };
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{Message, Setter, BINDING_REQUEST};
    let mut original = Message::new();
    original.unmarshal_binary(check)?;
    let mut m = Message::new();
    m.build(&[Box::new(BINDING_REQUEST) as Box<dyn Setter>])?;
    m.new_transaction_id()?;
    for a in &original.attributes.0 {
        if ![MI, FP, UC].contains(&a.typ) {
            m.add(a.typ, &a.value);
        }
    }
    m.add(UC, &[]);
    MessageIntegrity::new_short_term_integrity_with_provider(key.pwd.clone(), provider().crypto())
        .add_to(&mut m)?;
    FINGERPRINT.add_to(&mut m)?;
    Ok(m.raw)
}

/// A 487 (Role Conflict) error response to an authentic request, signed with
/// the peer's password (RFC 8445 §7.3.1.1: the agent keeps its role and the
/// requester, on 487, switches to controlling and retries, §7.2.5.1).
pub fn role_conflict_response(
    transaction_id: [u8; 12],
    key: &IcePassword,
) -> Result<Vec<u8>, rtc::shared::error::Error> {
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_ERROR};
    let mut m = Message::new();
    let setters: [Box<dyn Setter + '_>; 5] = [
        Box::new(BINDING_ERROR),
        Box::new(TransactionId(transaction_id)),
        Box::new(rtc::stun::error_code::CODE_ROLE_CONFLICT),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            key.pwd.clone(),
            provider().crypto(),
        )),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters)?;
    Ok(m.raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::{ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_USERNAME};
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
    use rtc::stun::textattrs::TextAttribute;

    const PWD: &str = "0123456789abcdefghijABCDEFGHIJkl";

    /// A request as the STUN library builds it: `controlled` adds
    /// ICE-CONTROLLED, else ICE-CONTROLLING; `pwd` None leaves out
    /// MESSAGE-INTEGRITY; FINGERPRINT always last.
    fn request(username: &str, controlled: bool, pwd: Option<&str>) -> Vec<u8> {
        let crypto = provider().crypto();
        let mut m = Message::new();
        let mut s: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId([7; 12])),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
        ];
        let role = if controlled {
            ATTR_ICE_CONTROLLED
        } else {
            ATTR_ICE_CONTROLLING
        };
        s.push(Box::new(RawAttr(role, 1u64.to_be_bytes().to_vec())));
        if let Some(p) = pwd {
            s.push(Box::new(
                MessageIntegrity::new_short_term_integrity_with_provider(p.to_owned(), crypto),
            ));
        }
        s.push(Box::new(FINGERPRINT));
        m.build(&s).unwrap();
        m.raw
    }

    struct RawAttr(rtc::stun::attributes::AttrType, Vec<u8>);
    impl Setter for RawAttr {
        fn add_to(&self, m: &mut Message) -> rtc::shared::error::Result<()> {
            m.add(self.0, &self.1);
            Ok(())
        }
    }

    fn key() -> IcePassword {
        IcePassword::new(PWD.to_owned()).unwrap()
    }

    #[test]
    fn an_authentic_request_passes() {
        let b = request("srvUfrag:cli", false, Some(PWD));
        let r = parse_binding_request(&b).unwrap();
        assert_eq!(r.local_ufrag, "srvUfrag");
        assert!(!r.controlled);
        assert_eq!(r.verify(&b, &mut key()), Ok(()));
        // The keyed HMAC is reusable.
        assert_eq!(r.verify(&b, &mut key()), Ok(()));
        assert_eq!(local_ufrag(&b), Some("srvUfrag"));
    }

    #[test]
    fn an_authentic_controlled_request_is_flagged() {
        let b = request("srvUfrag:cli", true, Some(PWD));
        let r = parse_binding_request(&b).unwrap();
        assert!(r.controlled);
        assert_eq!(r.verify(&b, &mut key()), Ok(()));
    }

    #[test]
    fn forgeries_are_refused() {
        let mut k = key();
        let verdict =
            |b: &[u8], k: &mut IcePassword| parse_binding_request(b).and_then(|r| r.verify(b, k));
        // The attack of issue 19: right ufrag, ICE-CONTROLLED, no integrity.
        let b = request("srvUfrag:x", true, None);
        assert_eq!(verdict(&b, &mut k), Err(DatagramDrop::StunNoIntegrity));
        // Integrity computed with a guessed password.
        let b = request("srvUfrag:x", true, Some("guess"));
        assert_eq!(verdict(&b, &mut k), Err(DatagramDrop::StunBadIntegrity));
        let b = request("srvUfrag:x", false, Some("guess"));
        assert_eq!(verdict(&b, &mut k), Err(DatagramDrop::StunBadIntegrity));
        // An authentic request with one bit flipped before the tag: the
        // fingerprint catches it first; with the fingerprint fixed up, the
        // integrity does.
        let mut b = request("srvUfrag:cli", false, Some(PWD));
        b[HEADER + 5] ^= 1;
        assert_eq!(verdict(&b, &mut k), Err(DatagramDrop::StunBadFingerprint));
        let fp = b.len() - 8;
        let v = fingerprint_value(&b[..fp]).to_be_bytes();
        b[fp + 4..].copy_from_slice(&v);
        assert_eq!(verdict(&b, &mut k), Err(DatagramDrop::StunBadIntegrity));
        // No FINGERPRINT.
        let mut b = request("srvUfrag:cli", false, Some(PWD));
        b.truncate(b.len() - 8);
        let len = (b.len() - HEADER) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(verdict(&b, &mut k), Err(DatagramDrop::StunNoFingerprint));
    }

    #[test]
    fn unauthenticated_bytes_the_engine_would_read_are_refused() {
        let good = request("srvUfrag:cli", false, Some(PWD));
        // Trailing bytes (the engine's decoder ignores them).
        let mut b = good.clone();
        b.extend_from_slice(&[0; 8]);
        assert_eq!(parse_binding_request(&b), Err(DatagramDrop::StunMalformed));
        // The type's top bits set: the engine reads 0x4001 as a binding request.
        let mut b = good.clone();
        b[0] = 0x40;
        assert_eq!(classify(&b), Class::Stun);
        assert_eq!(
            parse_binding_request(&b),
            Err(DatagramDrop::StunUnexpectedType)
        );
        // ICE-CONTROLLED appended after the integrity tag.
        let mut b = good[..good.len() - 8].to_vec();
        b.extend_from_slice(&[0x80, 0x29, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        let len = (b.len() + 8 - HEADER) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        let v = fingerprint_value(&b).to_be_bytes();
        b.extend_from_slice(&[0x80, 0x28, 0, 4]);
        b.extend_from_slice(&v);
        assert_eq!(parse_binding_request(&b), Err(DatagramDrop::StunMalformed));
        // Responses and indications.
        let mut b = good.clone();
        b[1] = 0x11; // indication
        assert_eq!(
            parse_binding_request(&b),
            Err(DatagramDrop::StunUnexpectedType)
        );
        b[0] = 0x01; // error response 0x0111
        assert_eq!(parse(&b), Err(DatagramDrop::StunUnexpectedType));
        // A success response passes the framing checks (its integrity is
        // the engine's to check, with the client's password) but is
        // never a routable request.
        b[1] = 0x01;
        let fp = b.len() - 8;
        let v = fingerprint_value(&b[..fp]).to_be_bytes();
        b[fp + 4..].copy_from_slice(&v);
        assert_eq!(parse(&b), Ok(Stun::SuccessResponse));
        assert_eq!(local_ufrag(&b), None);
    }

    #[test]
    fn the_role_conflict_answer_is_signed() {
        let raw = role_conflict_response([9; 12], &key()).unwrap();
        let mut m = Message::new();
        m.raw = raw;
        m.decode().unwrap();
        assert_eq!(m.transaction_id.0, [9; 12]);
        MessageIntegrity::check(&mut m, PWD.as_bytes(), provider().crypto()).unwrap();
        FINGERPRINT.check(&m).unwrap();
    }

    #[test]
    fn a_nominating_copy_is_an_authentic_nomination_of_the_same_pair() {
        let check = request("srvUfrag:cli", false, Some(PWD));
        let orig = parse_binding_request(&check).unwrap();
        assert!(!orig.use_candidate);
        let copy = nominating_copy(&check, &key()).unwrap();
        let r = parse_binding_request(&copy).expect("framing and FINGERPRINT right");
        assert!(r.use_candidate, "USE-CANDIDATE added");
        assert_eq!(r.local_ufrag, "srvUfrag");
        assert!(!r.controlled);
        assert_ne!(r.transaction_id, orig.transaction_id, "a new transaction");
        r.verify(&copy, &mut key())
            .expect("signed with the peer's password");
        let mut m = Message::new();
        m.unmarshal_binary(&copy).unwrap();
        let user = TextAttribute::get_from_as(&m, ATTR_USERNAME).unwrap();
        assert_eq!(user.text, "srvUfrag:cli");
        assert!(
            m.contains(ATTR_ICE_CONTROLLING),
            "the role attribute is kept"
        );
        // Not from garbage.
        assert!(nominating_copy(&[1, 2, 3], &key()).is_err());
    }

    #[test]
    fn classify_mirrors_the_engine() {
        assert_eq!(classify(&[]), Class::Empty);
        assert_eq!(classify(&[22, 254, 253]), Class::Dtls);
        assert_eq!(classify(&[0x80, 0x60]), Class::Rtp);
        for first in [0u8, 3, 4, 19, 64, 127, 192, 255] {
            assert_eq!(classify(&[first]), Class::Stun, "first byte {first}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(local_ufrag(&[]), None);
        assert_eq!(local_ufrag(&[0x80; 40]), None, "RTP is not STUN");
        let good = request("a:b", false, Some(PWD));
        for cut in 0..good.len() {
            let _ = parse_binding_request(&good[..cut]);
        }
        let mut m = good.clone();
        m[2] = 0xFF; // length larger than the datagram
        m[3] = 0xFF;
        assert!(parse_binding_request(&m).is_err());
        for n in 0..64 {
            let mut junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            if junk.len() >= 8 {
                junk[0] = 0;
                junk[1] = 1;
                junk[4..8].copy_from_slice(&MAGIC_COOKIE);
            }
            let _ = parse_binding_request(&junk);
        }
    }
}
