//! The core on simulated time: requests built with rtc-stun / rtc-turn's
//! types as a client would, responses decoded and checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_SOFTWARE, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageType, Setter, TransactionId, CLASS_ERROR_RESPONSE, CLASS_INDICATION,
    CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::Protocol;

use super::*;
use crate::rest::RestSecret;
use crate::stats::TurnStats;

const WALL0: u64 = 1_800_000_000;
const PEER: &str = "192.0.2.10:5000";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn udp(remote: &str) -> ClientKey {
    ClientKey {
        transport: ClientTransport::Udp,
        remote: sa(remote),
    }
}

struct Harness {
    core: TurnCore,
    stats: Arc<Counters>,
    t0: Instant,
    secret: RestSecret,
}

/// Credentials a client holds after the 401.
#[derive(Clone)]
struct Creds {
    username: String,
    password: String,
    nonce: String,
}

impl Harness {
    fn new(edit: impl FnOnce(&mut Limits)) -> Harness {
        let mut limits = Limits {
            realm: "prism".to_owned(),
            max_allocations: 10,
            max_allocations_per_user: 3,
            max_lifetime: Duration::from_secs(1200),
            max_bitrate_bps: None,
            relay_ip: "203.0.113.1".parse().unwrap(),
        };
        edit(&mut limits);
        let t0 = Instant::now();
        let stats = Arc::new(Counters::default());
        let secret = RestSecret::new("north").unwrap();
        let filter = PeerFilter::deny_all().allow_addr(sa(PEER));
        let nonces = Nonces::new([1; 32], t0, Duration::from_secs(3600));
        let core = TurnCore::new(limits, secret.clone(), filter, stats.clone(), nonces);
        Harness {
            core,
            stats,
            t0,
            secret,
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn wall(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(WALL0 + secs)
    }

    /// Feeds one client packet at `secs`; binds relays like a driver would
    /// (port 50000 + id) and returns every other output.
    fn client(&mut self, secs: u64, client: ClientKey, bytes: &[u8]) -> Vec<Output> {
        self.core
            .handle_client(self.at(secs), Self::wall(secs), client, bytes);
        self.drain(secs)
    }

    fn drain(&mut self, secs: u64) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::BindRelay { alloc } => {
                    let port = 50000 + alloc as u16;
                    self.core.relay_bound(self.at(secs), alloc, Ok(port));
                }
                o => out.push(o),
            }
        }
        out
    }

    fn stats(&self) -> TurnStats {
        self.stats.snapshot()
    }

    /// Credentials for `identity` valid for `ttl` s from time 0, with a
    /// nonce from a 401.
    fn creds(&mut self, identity: &str, ttl: u64, client: ClientKey) -> Creds {
        let c = self
            .secret
            .issue(identity, Duration::from_secs(ttl), Self::wall(0));
        let out = self.client(
            0,
            client,
            &request(METHOD_ALLOCATE, None, vec![transport(17)]),
        );
        let m = only_reply(&out);
        assert_eq!(error_code(&m), Some(401));
        Creds {
            username: c.username,
            password: c.password,
            nonce: TextAttribute::get_from_as(&m, ATTR_NONCE).unwrap().text,
        }
    }

    /// Allocates for `client`; returns the relayed address.
    fn allocate(&mut self, client: ClientKey, creds: &Creds) -> SocketAddr {
        let out = self.client(
            0,
            client,
            &request(METHOD_ALLOCATE, Some(creds), vec![transport(17)]),
        );
        let m = only_reply(&out);
        assert_eq!(m.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&m));
        let mut relayed = RelayedAddress::default();
        relayed.get_from(&m).unwrap();
        SocketAddr::new(relayed.ip, relayed.port)
    }
}

fn transport(proto: u8) -> Box<dyn Setter> {
    Box::new(RequestedTransport {
        protocol: Protocol(proto),
    })
}

fn peer_attr(addr: &str) -> Box<dyn Setter> {
    let a = sa(addr);
    Box::new(PeerAddress {
        ip: a.ip(),
        port: a.port(),
    })
}

/// A request of `method` with `attrs`, signed with `creds` if given.
fn request(
    method: stun::message::Method,
    creds: Option<&Creds>,
    attrs: Vec<Box<dyn Setter>>,
) -> Vec<u8> {
    let provider = turn::crypto::default_provider().unwrap();
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(MessageType::new(method, CLASS_REQUEST)),
        Box::new(TransactionId::new()),
    ];
    setters.extend(attrs);
    if let Some(c) = creds {
        setters.push(Box::new(TextAttribute::new(
            ATTR_USERNAME,
            c.username.clone(),
        )));
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, "prism".to_owned())));
        setters.push(Box::new(TextAttribute::new(ATTR_NONCE, c.nonce.clone())));
        setters.push(Box::new(
            MessageIntegrity::new_long_term_integrity_with_provider(
                c.username.clone(),
                "prism".to_owned(),
                c.password.clone(),
                provider.crypto(),
            )
            .unwrap(),
        ));
    }
    setters.push(Box::new(FINGERPRINT));
    let mut m = Message::new();
    m.build(&setters).unwrap();
    m.raw
}

fn send_indication(peer: &str, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new();
    m.build(&[
        Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
        Box::new(TransactionId::new()),
        peer_attr(peer),
        Box::new(Data(data.to_vec())),
    ])
    .unwrap();
    m.raw
}

fn only_reply(out: &[Output]) -> Message {
    match out {
        [Output::ToClient { bytes, .. }] => {
            let m = wire::decode(bytes).expect("a STUN response");
            FINGERPRINT
                .check(&m)
                .expect("FINGERPRINT on every response");
            let sw = TextAttribute::get_from_as(&m, ATTR_SOFTWARE).unwrap();
            assert_eq!(sw.text, wire::SOFTWARE);
            m
        }
        other => panic!("expected one response, got {other:?}"),
    }
}

fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    (m.typ.class == CLASS_ERROR_RESPONSE && e.get_from(m).is_ok()).then_some(e.code.0)
}

fn code_of(out: &[Output]) -> Option<u16> {
    error_code(&only_reply(out))
}

fn key_of(creds: &Creds) -> [u8; 16] {
    RestSecret::new("north")
        .unwrap()
        .key(&creds.username, "prism", Harness::wall(0))
        .unwrap()
        .0
}

#[test]
fn allocate_challenge_then_success() {
    let mut h = Harness::new(|_| {});
    let client = udp("198.51.100.1:40000");
    let creds = h.creds("alice", 3600, client);
    let req = request(METHOD_ALLOCATE, Some(&creds), vec![transport(17)]);
    let out = h.client(0, client, &req);
    let mut m = only_reply(&out);
    assert_eq!(m.typ.class, CLASS_SUCCESS_RESPONSE);
    // Signed with the user's long-term key.
    let provider = turn::crypto::default_provider().unwrap();
    MessageIntegrity::check(&mut m, &key_of(&creds), provider.crypto()).unwrap();
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&m).unwrap();
    assert_eq!(relayed.ip, "203.0.113.1".parse::<IpAddr>().unwrap());
    assert_eq!(relayed.port, 50001);
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&m).unwrap();
    assert_eq!(SocketAddr::new(mapped.ip, mapped.port), client.remote);
    let mut life = Lifetime::default();
    life.get_from(&m).unwrap();
    assert_eq!(life.0, Duration::from_secs(600));

    // A retransmission gets the same bytes; a new Allocate gets 437.
    let again = h.client(1, client, &req);
    assert_eq!(again, out);
    let other = h.client(
        1,
        client,
        &request(METHOD_ALLOCATE, Some(&creds), vec![transport(17)]),
    );
    assert_eq!(code_of(&other), Some(437));
    let s = h.stats();
    assert_eq!(
        (
            s.allocations_created,
            s.allocations_active,
            s.auth_challenges
        ),
        (1, 1, 1)
    );
}

#[test]
fn authentication_refusals_table() {
    let mut h = Harness::new(|_| {});
    let client = udp("198.51.100.1:40000");
    let good = h.creds("alice", 3600, client);
    let expired = Creds {
        username: format!("{}:alice", WALL0 - 1),
        password: h.secret.password(&format!("{}:alice", WALL0 - 1)),
        ..good.clone()
    };
    let forged = Creds {
        password: "guessed".to_owned(),
        ..good.clone()
    };
    let malformed = Creds {
        username: "alice".to_owned(),
        ..good.clone()
    };
    let stale_nonce = Creds {
        nonce: "0".repeat(56),
        ..good.clone()
    };
    type Row<'a> = (&'a str, &'a Creds, u64, u16);
    let rows: &[Row<'_>] = &[
        ("expired", &expired, 0, 401),
        ("forged password", &forged, 0, 401),
        ("no expiry in username", &malformed, 0, 401),
        ("nonce not ours", &stale_nonce, 0, 438),
        ("nonce past its hour", &good, 3601, 438),
    ];
    for (name, creds, at, code) in rows {
        let out = h.client(
            *at,
            client,
            &request(METHOD_ALLOCATE, Some(creds), vec![transport(17)]),
        );
        let m = only_reply(&out);
        assert_eq!(error_code(&m), Some(*code), "{name}");
        // 401 and 438 carry a fresh nonce and the realm.
        assert!(TextAttribute::get_from_as(&m, ATTR_NONCE).is_ok(), "{name}");
        assert_eq!(
            TextAttribute::get_from_as(&m, ATTR_REALM).unwrap().text,
            "prism"
        );
    }
    let s = h.stats();
    assert_eq!(
        (
            s.auth_expired,
            s.auth_bad_integrity,
            s.auth_malformed,
            s.auth_stale_nonce
        ),
        (1, 1, 1, 2)
    );
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn allocate_refusals_table() {
    let mut h = Harness::new(|_| {});
    let client = udp("198.51.100.1:40000");
    let creds = h.creds("alice", 3600, client);
    type Row = (&'static str, Vec<Box<dyn Setter>>, u16);
    let rows: Vec<Row> = vec![
        ("TCP relay", vec![transport(6)], 442),
        ("no REQUESTED-TRANSPORT", vec![], 400),
    ];
    for (name, attrs, code) in rows {
        let out = h.client(0, client, &request(METHOD_ALLOCATE, Some(&creds), attrs));
        assert_eq!(code_of(&out), Some(code), "{name}");
    }
    // Refresh before any allocation: 437.
    let out = h.client(0, client, &request(METHOD_REFRESH, Some(&creds), vec![]));
    assert_eq!(code_of(&out), Some(437));
}

#[test]
fn lifetime_is_clamped() {
    // Max 1200 s, default 600 s.
    let rows: &[(Option<u64>, u64)] = &[
        (None, 600),
        (Some(60), 600),
        (Some(900), 900),
        (Some(99_999), 1200),
    ];
    for (i, (asked, granted)) in rows.iter().enumerate() {
        let mut h = Harness::new(|_| {});
        let client = udp("198.51.100.1:40000");
        let creds = h.creds("alice", 3600, client);
        let mut attrs = vec![transport(17)];
        if let Some(s) = asked {
            attrs.push(Box::new(Lifetime(Duration::from_secs(*s))));
        }
        let m = only_reply(&h.client(0, client, &request(METHOD_ALLOCATE, Some(&creds), attrs)));
        let mut life = Lifetime::default();
        life.get_from(&m).unwrap();
        assert_eq!(life.0.as_secs(), *granted, "row {i}");
    }
}

#[test]
fn quotas_per_user_and_total() {
    let mut h = Harness::new(|l| {
        l.max_allocations = 3;
        l.max_allocations_per_user = 2;
    });
    let c = |i| udp(&format!("198.51.100.1:{}", 40000 + i));
    let alice = h.creds("alice", 3600, c(0));
    h.allocate(c(0), &alice);
    h.allocate(c(1), &alice);
    let out = h.client(
        0,
        c(2),
        &request(METHOD_ALLOCATE, Some(&alice), vec![transport(17)]),
    );
    assert_eq!(code_of(&out), Some(486));
    let bob = h.creds("bob", 3600, c(3));
    h.allocate(c(3), &bob);
    let out = h.client(
        0,
        c(4),
        &request(METHOD_ALLOCATE, Some(&bob), vec![transport(17)]),
    );
    assert_eq!(code_of(&out), Some(508));
    let s = h.stats();
    assert_eq!((s.quota_user_refusals, s.quota_total_refusals), (1, 1));
    // Deleting one of alice's frees her quota.
    let out = h.client(
        1,
        c(0),
        &request(
            METHOD_REFRESH,
            Some(&alice),
            vec![Box::new(Lifetime(Duration::ZERO))],
        ),
    );
    assert!(out.contains(&Output::CloseRelay { alloc: 1 }));
    h.allocate(c(2), &alice);
}

#[test]
fn allocation_expires_unless_refreshed() {
    let mut h = Harness::new(|_| {});
    let client = udp("198.51.100.1:40000");
    let creds = h.creds("alice", 86_400, client);
    h.allocate(client, &creds);
    assert_eq!(h.core.poll_timeout(), Some(h.at(600)));
    // Refreshed at 500 s for 600 s: lives until 1100 s.
    let out = h.client(500, client, &request(METHOD_REFRESH, Some(&creds), vec![]));
    assert_eq!(only_reply(&out).typ.class, CLASS_SUCCESS_RESPONSE);
    h.core.handle_timeout(h.at(1099));
    assert_eq!(h.core.allocation_count(), 1);
    h.core.handle_timeout(h.at(1100));
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.drain(1100), vec![Output::CloseRelay { alloc: 1 }]);
    let s = h.stats();
    assert_eq!((s.allocations_active, s.allocations_expired), (0, 1));
    // The 5-tuple is free again.
    h.allocate(client, &creds);
}

#[test]
fn permissions_and_relaying_both_ways() {
    let mut h = Harness::new(|_| {});
    let client = udp("198.51.100.1:40000");
    let creds = h.creds("alice", 86_400, client);
    h.allocate(client, &creds);
    let peer = sa(PEER);

    // Before any permission: dropped, both ways.
    assert!(h
        .client(0, client, &send_indication(PEER, b"early"))
        .is_empty());
    h.core.handle_peer(h.at(0), 1, peer, b"early");
    assert!(h.drain(0).is_empty());

    // A peer outside the filter: 403, counted.
    let out = h.client(
        0,
        client,
        &request(
            METHOD_CREATE_PERMISSION,
            Some(&creds),
            vec![peer_attr("10.0.0.1:5000")],
        ),
    );
    assert_eq!(code_of(&out), Some(403));
    // Also when only one of several is outside.
    let out = h.client(
        0,
        client,
        &request(
            METHOD_CREATE_PERMISSION,
            Some(&creds),
            vec![peer_attr(PEER), peer_attr("127.0.0.1:5000")],
        ),
    );
    assert_eq!(code_of(&out), Some(403));
    assert_eq!(h.stats().forbidden_peers, 2);

    let out = h.client(
        0,
        client,
        &request(
            METHOD_CREATE_PERMISSION,
            Some(&creds),
            vec![peer_attr(PEER)],
        ),
    );
    assert_eq!(only_reply(&out).typ.class, CLASS_SUCCESS_RESPONSE);

    // Send indication → peer.
    let out = h.client(1, client, &send_indication(PEER, b"hello"));
    assert_eq!(
        out,
        vec![Output::ToPeer {
            alloc: 1,
            peer,
            bytes: b"hello".to_vec()
        }]
    );
    // Same IP, another port: the filter still refuses.
    assert!(h
        .client(1, client, &send_indication("192.0.2.10:5001", b"x"))
        .is_empty());
    // Peer → client as a Data indication.
    h.core.handle_peer(h.at(1), 1, peer, b"pong");
    let out = h.drain(1);
    let [Output::ToClient { client: to, bytes }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(*to, client);
    let m = wire::decode(bytes).unwrap();
    assert_eq!(m.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
    let mut from = PeerAddress::default();
    from.get_from(&m).unwrap();
    assert_eq!(SocketAddr::new(from.ip, from.port), peer);
    let mut data = Data::default();
    data.get_from(&m).unwrap();
    assert_eq!(data.0, b"pong");

    // The permission lasts 300 s.
    assert_eq!(h.client(299, client, &send_indication(PEER, b"a")).len(), 1);
    assert!(h
        .client(300, client, &send_indication(PEER, b"b"))
        .is_empty());
    h.core.handle_peer(h.at(300), 1, peer, b"late");
    assert!(h.drain(300).is_empty());
    let s = h.stats();
    assert_eq!(
        (
            s.dropped_no_permission_to_peer,
            s.dropped_no_permission_from_peer
        ),
        (3, 2)
    );
    assert_eq!(
        (
            s.packets_to_peer,
            s.bytes_to_peer,
            s.packets_to_client,
            s.bytes_to_client
        ),
        (2, 6, 1, 4)
    );
}

#[test]
fn channels_relay_and_pad_on_streams() {
    let mut h = Harness::new(|_| {});
    let client = ClientKey {
        transport: ClientTransport::Stream(7),
        remote: sa("198.51.100.1:40000"),
    };
    let creds = h.creds("alice", 86_400, client);
    h.allocate(client, &creds);
    let peer = sa(PEER);
    let bind = |n: u16, p: &str| {
        request(
            METHOD_CHANNEL_BIND,
            Some(&creds),
            vec![Box::new(ChannelNumber(n)), peer_attr(p)],
        )
    };
    assert_eq!(
        only_reply(&h.client(0, client, &bind(0x4001, PEER)))
            .typ
            .class,
        CLASS_SUCCESS_RESPONSE
    );
    let rows: &[(u16, &str, u16)] = &[
        (0x4002, PEER, 400),            // the peer already has 0x4001
        (0x3000, PEER, 400),            // not a channel number
        (0x4003, "10.1.1.1:5000", 403), // not allowed by the filter
    ];
    for (n, p, code) in rows {
        assert_eq!(
            code_of(&h.client(0, client, &bind(*n, p))),
            Some(*code),
            "{n:x} {p}"
        );
    }
    // ChannelData from the client (padded, as on a stream) → peer.
    let out = h.client(1, client, &[0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0]);
    assert_eq!(
        out,
        vec![Output::ToPeer {
            alloc: 1,
            peer,
            bytes: b"abc".to_vec()
        }]
    );
    // An unbound channel: dropped.
    assert!(h
        .client(1, client, &[0x40, 0x09, 0x00, 0x01, b'a', 0, 0, 0])
        .is_empty());
    // Peer → client as ChannelData, padded for the stream.
    h.core.handle_peer(h.at(1), 1, peer, b"hi!");
    assert_eq!(
        h.drain(1),
        vec![Output::ToClient {
            client,
            bytes: vec![0x40, 0x01, 0x00, 0x03, b'h', b'i', b'!', 0]
        }]
    );
    // Closing the connection ends the allocation.
    h.core.handle_conn_closed(7);
    assert_eq!(h.drain(2), vec![Output::CloseRelay { alloc: 1 }]);
    assert_eq!(h.stats().allocations_active, 0);
}

#[test]
fn bandwidth_limit_drops_and_counts() {
    // 1 Mbit/s: a 64 KiB-floor bucket of 1_000_000 bits = 125_000 bytes.
    let mut h = Harness::new(|l| l.max_bitrate_bps = Some(1_000_000));
    let client = udp("198.51.100.1:40000");
    let creds = h.creds("alice", 86_400, client);
    h.allocate(client, &creds);
    h.client(
        0,
        client,
        &request(
            METHOD_CREATE_PERMISSION,
            Some(&creds),
            vec![peer_attr(PEER)],
        ),
    );
    let payload = vec![0u8; 1000];
    let mut sent = 0;
    for _ in 0..200 {
        sent += h.client(0, client, &send_indication(PEER, &payload)).len();
    }
    assert_eq!(sent, 125);
    // Peer → client draws on the same bucket.
    h.core.handle_peer(h.at(0), 1, sa(PEER), &payload);
    assert!(h.drain(0).is_empty());
    assert_eq!(h.stats().bandwidth_drops, 76);
    // A second later the bucket has refilled.
    assert_eq!(
        h.client(1, client, &send_indication(PEER, &payload)).len(),
        1
    );
}

#[test]
fn other_users_credentials_get_441() {
    let mut h = Harness::new(|_| {});
    let client = udp("198.51.100.1:40000");
    let alice = h.creds("alice", 3600, client);
    h.allocate(client, &alice);
    let bob = h.creds("bob", 3600, udp("198.51.100.1:40001"));
    let out = h.client(
        0,
        client,
        &request(METHOD_CREATE_PERMISSION, Some(&bob), vec![peer_attr(PEER)]),
    );
    assert_eq!(code_of(&out), Some(441));
}

#[test]
fn garbage_never_panics() {
    let mut h = Harness::new(|_| {});
    let client = udp("198.51.100.1:40000");
    let creds = h.creds("alice", 86_400, client);
    h.allocate(client, &creds);
    let valid = request(
        METHOD_CREATE_PERMISSION,
        Some(&creds),
        vec![peer_attr(PEER)],
    );
    let mut seed = 0x9e37_79b9u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for i in 0..5000 {
        // Mutate a valid request, or send random bytes with a STUN header.
        let mut b = if i % 2 == 0 {
            valid.clone()
        } else {
            (0..(rnd() % 120) as usize).map(|_| rnd() as u8).collect()
        };
        if !b.is_empty() {
            for _ in 0..(1 + rnd() % 4) {
                let at = rnd() as usize % b.len();
                b[at] = rnd() as u8;
            }
        }
        if i % 4 == 1 && b.len() >= 8 {
            b[4..8].copy_from_slice(&stun::message::MAGIC_COOKIE.to_be_bytes());
            b[0] &= 0x3f;
        }
        h.client(1, client, &b);
        h.core.handle_peer(h.at(1), 1, sa(PEER), &b);
        h.drain(1);
    }
    assert!(h.stats().malformed_input > 0);
}
