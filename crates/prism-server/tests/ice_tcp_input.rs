//! What an ICE-TCP port does with connections that are not a client's
//! (issue 14; the UDP side is `stun_attack.rs` and `bad_input.rs`): forged
//! or stray STUN, DTLS and garbage in RFC 4571 frames are dropped and
//! counted under the same reasons as datagrams, a connection that never
//! proves a peer is closed after 10 s, and a call over UDP in the meantime
//! is not disturbed.

mod common;

use std::time::Duration;

use common::{garbage, scrape, value, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A binding request naming a ufrag no peer has, with FINGERPRINT.
fn stray_binding_request() -> Vec<u8> {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
    use rtc::stun::textattrs::TextAttribute;
    let s: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId([7; 12])),
        Box::new(TextAttribute::new(ATTR_USERNAME, "nobody:x".to_owned())),
        Box::new(FINGERPRINT),
    ];
    let mut m = Message::new();
    m.build(&s).unwrap();
    m.raw
}

fn frame(data: &[u8]) -> Vec<u8> {
    let mut f = (data.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(data);
    f
}

#[tokio::test]
async fn junk_on_the_ice_tcp_port_is_counted_and_unbound_connections_close() {
    let srv = TestServer::start(&[]);
    assert_eq!(srv.tcp.len(), 1, "one shard, one ICE-TCP listener");
    let addr = srv.tcp[0].clone();

    let mut junk = TcpStream::connect(&addr).await.unwrap();
    // A stray binding request, a DTLS record and RTP from a connection no
    // check proved, an empty frame, and garbage of every shape.
    let mut bytes = frame(&stray_binding_request());
    bytes.extend(frame(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]));
    bytes.extend(frame(&[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]));
    bytes.extend(frame(&[]));
    for i in 0..50 {
        let g = garbage(i);
        if !g.is_empty() {
            bytes.extend(frame(&g));
        }
    }
    junk.write_all(&bytes).await.unwrap();
    // A second connection announces a 65535-byte frame and stops mid-way.
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(&srv).await;
        let drops = |r: &str| {
            value(
                &text,
                &format!("prism_dropped_datagrams_total{{reason=\"{r}\"}}"),
            )
        };
        // The request has no MESSAGE-INTEGRITY (checked before its ufrag).
        if drops("stun_no_integrity") >= Some(1.0)
            && drops("unknown_address") >= Some(2.0)
            && drops("empty") >= Some(1.0)
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drops not counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        value(
            &text,
            "prism_ice_tcp_connections_total{result=\"accepted\"}"
        ),
        Some(2.0)
    );
    assert_eq!(value(&text, "prism_ice_tcp_connections"), Some(2.0));

    // Neither connection proved a peer: both are closed after 10 s.
    let mut buf = [0u8; 16];
    for (name, conn) in [("junk", &mut junk), ("partial", &mut partial)] {
        let read = tokio::time::timeout(Duration::from_secs(15), conn.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{name}: the server closes an unbound connection, got {read:?}"
        );
    }
    let text = scrape(&srv).await;
    assert_eq!(
        value(&text, "prism_ice_tcp_unbound_closed_total"),
        Some(2.0)
    );
    assert_eq!(value(&text, "prism_ice_tcp_connections"), Some(0.0));
}

#[tokio::test]
async fn ice_tcp_can_be_turned_off() {
    let srv = TestServer::start(&["--ice-tcp", "false"]);
    assert!(srv.tcp.is_empty());
    let text = scrape(&srv).await;
    assert_eq!(value(&text, "prism_ice_tcp_connections"), Some(0.0));
}
