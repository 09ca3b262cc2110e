//! The TURN server on real loopback sockets with a real TURN client
//! (rtc-turn's), over UDP, TCP and TLS.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prism_turn::{
    PeerFilter, RestSecret, TlsListener, TurnConfig, TurnHandle, TurnServer, TurnSettings,
};
use support::{peer, peer_recv, TurnClient};
use tokio::net::{TcpStream, UdpSocket};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn secret() -> RestSecret {
    RestSecret::new("loopback-secret").unwrap()
}

fn creds(identity: &str) -> (String, String) {
    let c = secret().issue(identity, Duration::from_secs(3600), SystemTime::now());
    (c.username, c.password)
}

async fn start(allowed: &[SocketAddr], edit: impl FnOnce(&mut TurnSettings)) -> TurnHandle {
    let mut s = TurnSettings::default();
    edit(&mut s);
    let config = TurnConfig::new(s).unwrap();
    let filter = PeerFilter::deny_all().allow_addrs(allowed.iter().copied());
    TurnServer::start(config, secret(), filter).await.unwrap()
}

/// Allocate, permit the peer, Send indication out, Data back, then
/// ChannelData both ways once the client's channel is bound.
async fn relay_round_trip(mut c: TurnClient, server: &TurnHandle, p: &UdpSocket) {
    let peer_addr = p.local_addr().unwrap();
    let relayed = c.allocate().await.expect("allocation");
    assert_eq!(relayed.ip(), LO);
    c.permit(relayed, peer_addr).await.expect("permission");

    // First send: a Send indication (the client binds a channel meanwhile).
    c.send(relayed, peer_addr, b"one");
    c.pump(Duration::from_millis(50)).await;
    let (data, from) = peer_recv(p).await;
    assert_eq!((data.as_slice(), from), (&b"one"[..], relayed));

    p.send_to(b"pong-1", relayed).await.unwrap();
    let (data, _) = c.recv_from_peer(peer_addr).await;
    assert_eq!(data, b"pong-1");

    // Let the ChannelBind finish; then both directions use the channel.
    c.pump(Duration::from_millis(200)).await;
    c.send(relayed, peer_addr, b"two");
    c.pump(Duration::from_millis(20)).await;
    assert!(
        c.channel_data_sent >= 1,
        "the client never sent ChannelData"
    );
    let (data, from) = peer_recv(p).await;
    assert_eq!((data.as_slice(), from), (&b"two"[..], relayed));
    p.send_to(b"pong-2", relayed).await.unwrap();
    let (data, as_channel) = c.recv_from_peer(peer_addr).await;
    assert_eq!(data, b"pong-2");
    assert!(as_channel, "the server answered without the bound channel");

    let s = server.stats();
    assert_eq!((s.allocations_active, s.allocations_created), (1, 1));
    assert_eq!((s.packets_to_peer, s.bytes_to_peer), (2, 6));
    assert_eq!((s.packets_to_client, s.bytes_to_client), (2, 12));
}

#[tokio::test]
async fn udp_client_relays_both_ways() {
    let p = peer().await;
    let server = start(&[p.local_addr().unwrap()], |_| {}).await;
    let (user, pass) = creds("alice");
    let c = TurnClient::udp(server.local_addrs().udp.unwrap(), &user, &pass).await;
    relay_round_trip(c, &server, &p).await;
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_client_relays_both_ways_and_closing_frees_the_allocation() {
    let p = peer().await;
    let server = start(&[p.local_addr().unwrap()], |_| {}).await;
    let (user, pass) = creds("alice");
    let c = TurnClient::tcp(server.local_addrs().tcp.unwrap(), &user, &pass).await;
    relay_round_trip(c, &server, &p).await; // drops the client: the stream closes
    let mut waited = 0;
    while server.stats().allocations_active != 0 {
        assert!(waited < 100, "the allocation outlived its TCP connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn tls_client_relays_both_ways() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("prism-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let p = peer().await;
    let server = start(&[p.local_addr().unwrap()], |s| {
        s.udp_port = None;
        s.tcp_port = None;
        s.tls = Some(TlsListener {
            port: 0,
            cert_path: cert_path.clone(),
            key_path: key_path.clone(),
        });
    })
    .await;
    let addr = server.local_addrs().tls.unwrap();
    assert_eq!(server.local_addrs().udp, None);

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");

    let (user, pass) = creds("alice");
    let c = TurnClient::over_stream(Box::new(stream), local, addr, &user, &pass);
    relay_round_trip(c, &server, &p).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn refusals_are_answered_and_counted() {
    let p = peer().await;
    let allowed = p.local_addr().unwrap();
    let server = start(&[allowed], |s| s.max_allocations_per_user = 1).await;
    let udp = server.local_addrs().udp.unwrap();

    // Expired credentials.
    let old = secret().issue(
        "alice",
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(120),
    );
    let mut c = TurnClient::udp(udp, &old.username, &old.password).await;
    let err = c.allocate().await.unwrap_err();
    assert!(err.contains("401"), "{err}");

    // A forged password (integrity mismatch).
    let (user, _) = creds("alice");
    let mut c = TurnClient::udp(udp, &user, "Zm9yZ2Vk").await;
    let err = c.allocate().await.unwrap_err();
    assert!(err.contains("401"), "{err}");

    // Valid credentials, a peer outside the allow list: 403.
    let (user, pass) = creds("alice");
    let mut c = TurnClient::udp(udp, &user, &pass).await;
    let relayed = c.allocate().await.unwrap();
    let outside = peer().await.local_addr().unwrap(); // loopback, another port: not listed
    let err = c.permit(relayed, outside).await.unwrap_err();
    assert!(err.contains("403"), "{err}");
    // The listed one works on the same allocation.
    c.permit(relayed, allowed).await.unwrap();

    // The same identity from another 5-tuple: over its quota of 1.
    let (user2, pass2) = creds("alice");
    let mut c2 = TurnClient::tcp(server.local_addrs().tcp.unwrap(), &user2, &pass2).await;
    let err = c2.allocate().await.unwrap_err();
    assert!(err.contains("486"), "{err}");
    // Another identity is not affected.
    let (bob, bob_pass) = creds("bob");
    let mut c3 = TurnClient::udp(udp, &bob, &bob_pass).await;
    c3.allocate().await.unwrap();

    // A peer sending to the relayed address without a permission: dropped.
    let stranger = peer().await;
    stranger.send_to(b"let me in", relayed).await.unwrap();
    let mut waited = 0;
    while server.stats().dropped_no_permission_from_peer == 0 {
        assert!(waited < 100, "the stranger's packet was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }

    let s = server.stats();
    assert_eq!(s.auth_expired, 1);
    assert_eq!(s.auth_bad_integrity, 1);
    assert_eq!(s.forbidden_peers, 1);
    assert_eq!(s.quota_user_refusals, 1);
    assert_eq!(s.allocations_active, 2);
    assert_eq!(s.packets_to_client, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_listeners_is_counted_not_fatal() {
    let p = peer().await;
    let server = start(&[p.local_addr().unwrap()], |_| {}).await;
    let addrs = server.local_addrs();
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for b in [
        &b"\xff\xff\xff\xff"[..],
        b"",
        b"\x00\x01\x00\x00nope",
        b"\x40\x00\xff\xff",
    ] {
        junk.send_to(b, addrs.udp.unwrap()).await.unwrap();
    }
    // A stream that loses framing is closed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addrs.tcp.unwrap()).await.unwrap();
    tcp.write_all(b"\xc0\x00\x00\x00GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "the connection stayed open");
    // The server still works.
    let (user, pass) = creds("alice");
    let c = TurnClient::udp(addrs.udp.unwrap(), &user, &pass).await;
    relay_round_trip_after_garbage(c, &p).await;
    assert!(server.stats().malformed_input >= 4);
    server.shutdown().await;
}

async fn relay_round_trip_after_garbage(mut c: TurnClient, p: &UdpSocket) {
    let relayed = c.allocate().await.unwrap();
    c.permit(relayed, p.local_addr().unwrap()).await.unwrap();
    c.send(relayed, p.local_addr().unwrap(), b"still here");
    c.pump(Duration::from_millis(20)).await;
    assert_eq!(peer_recv(p).await.0, b"still here");
}
