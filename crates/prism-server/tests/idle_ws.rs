//! Idle connections close: a WebSocket that does not join within
//! `ws_join_timeout` gets a `not_joined` error and a 1008 close, and is
//! counted; one that joined stays; at most `max_ws_per_address` WebSockets
//! per client address, the next upgrade refused with 429 problem+json and
//! counted under `prism_limit_hits_total{limit="ws_per_address"}`. A TCP
//! connection to the HTTP port that sends nothing within
//! `http_first_byte_timeout` is closed and counted.

mod common;

use std::time::Duration;

use common::{problem, scrape, value, TestServer};
use prism_client::Signaling;
use prism_signal::{ClientMessage, Empty, ErrorCode, Join, MsgId, ServerMessage};

async fn upgrade(srv: &TestServer) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{}/ws", srv.http))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_close_and_addresses_are_capped() {
    let mut srv = TestServer::start(&["--ws-join-timeout", "1s", "--max-ws-per-address", "3"]);
    let url = srv.ws_url();

    // Joins in time: stays past the deadline.
    let mut member = Signaling::connect(&url).await.unwrap();
    member
        .send_with_id(
            Some(MsgId::Num(1)),
            ClientMessage::Join(Join {
                room: "idle".into(),
                name: "m".into(),
                token: None,
                identity: Some("m".into()),
            }),
        )
        .await
        .unwrap();
    member
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Joined(_))
        })
        .await
        .unwrap();

    // Never sends a byte.
    let mut silent = Signaling::connect(&url).await.unwrap();
    // Sends only pings: still not a join.
    let mut pinger = Signaling::connect(&url).await.unwrap();
    // The address has 3 sockets: the fourth upgrade is refused.
    let d = problem(upgrade(&srv).await, 429).await;
    assert!(d.contains("max_ws_per_address"), "{d}");
    let m = scrape(&srv).await;
    assert_eq!(
        value(&m, "prism_limit_hits_total{limit=\"ws_per_address\"}"),
        Some(1.0)
    );

    pinger.send(ClientMessage::Ping(Empty {})).await.unwrap();
    for (name, s) in [("silent", &mut silent), ("pinger", &mut pinger)] {
        let e = s
            .recv_until(Duration::from_secs(5), |m| {
                matches!(m.msg, ServerMessage::Error(_))
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ServerMessage::Error(e) = e.msg else {
            unreachable!()
        };
        assert_eq!(e.code, ErrorCode::NotJoined, "{name}");
        assert!(
            e.message.contains("ws_join_timeout"),
            "{name}: {}",
            e.message
        );
        assert!(
            s.recv_timeout(Duration::from_secs(5)).await.is_err(),
            "{name}: closed"
        );
        assert_eq!(s.close_code(), Some(Some(1008)), "{name}: close code");
    }
    // The member is still served.
    member
        .send_with_id(Some(MsgId::Num(2)), ClientMessage::Ping(Empty {}))
        .await
        .unwrap();
    member
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Pong(_))
        })
        .await
        .unwrap();

    let mut m = String::new();
    for _ in 0..50 {
        m = scrape(&srv).await;
        if value(&m, "prism_websocket_sessions") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        value(&m, "prism_websocket_join_timeouts_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(value(&m, "prism_websocket_sessions"), Some(1.0), "{m}");
    // Their slots were released: the address may open sockets again.
    let again = Signaling::connect(&url).await;
    assert!(again.is_ok(), "a socket after the idle ones closed");
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_connections_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::start(&["--http-first-byte-timeout", "500ms"]);
    let addr = srv.http.to_string();
    // Says nothing: closed by the server soon after the timeout.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Speaks, slowly but within the timeout: served.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    slow.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the silent connection is closed, not left open");
    assert!(matches!(n, Ok(0) | Err(_)), "closed without data: {n:?}");
    let text = scrape(&srv).await;
    assert_eq!(
        value(&text, "prism_http_idle_closes_total"),
        Some(1.0),
        "{text}"
    );
}
