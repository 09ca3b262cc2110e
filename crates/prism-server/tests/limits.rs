//! Configured limits against the real server: each refusal carries the
//! documented error and bumps `prism_limit_hits_total`, and nothing else
//! (other rooms, other connections) notices.

mod common;

use std::time::Duration;

use common::{scrape, value, TestServer};
use prism_client::{sample_offer, Signaling};
use prism_signal::{
    ClientMessage, Empty, ErrorCode, Join, Leg, MsgId, Offer, ServerEnvelope, ServerMessage,
};

async fn join(srv: &TestServer, room: &str, identity: &str) -> (Signaling, ServerMessage) {
    let mut sig = Signaling::connect(&srv.ws_url()).await.unwrap();
    sig.send(ClientMessage::Join(Join {
        room: room.into(),
        name: identity.into(),
        token: None,
        identity: Some(identity.into()),
    }))
    .await
    .unwrap();
    let m = sig.recv_timeout(Duration::from_secs(5)).await.unwrap().msg;
    (sig, m)
}

fn is_limit(m: &ServerMessage, needle: &str) -> bool {
    matches!(m, ServerMessage::Error(e) if e.code == ErrorCode::LimitExceeded && e.message.contains(needle))
}

async fn limit_hits(srv: &TestServer, limit: &str) -> u64 {
    let sample = format!("prism_limit_hits_total{{limit=\"{limit}\"}}");
    value(&scrape(srv).await, &sample).expect("every limit label is exported") as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_room_refuses_newcomers_but_not_refreshes() {
    let mut srv = TestServer::start(&["--max-participants-per-room", "2"]);
    let (_a, m) = join(&srv, "small", "a").await;
    assert!(matches!(m, ServerMessage::Joined(_)), "{m:?}");
    let (_b, m) = join(&srv, "small", "b").await;
    assert!(matches!(m, ServerMessage::Joined(_)), "{m:?}");
    let (_c, m) = join(&srv, "small", "c").await;
    assert!(is_limit(&m, "full"), "{m:?}");
    // A refresh of `b` replaces it rather than adding a third participant.
    let (_b2, m) = join(&srv, "small", "b").await;
    assert!(matches!(m, ServerMessage::Joined(_)), "{m:?}");
    // Other rooms are not affected.
    let (_d, m) = join(&srv, "other", "d").await;
    assert!(matches!(m, ServerMessage::Joined(_)), "{m:?}");
    assert_eq!(limit_hits(&srv, "participants_per_room").await, 1);
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_count_and_track_count_limits() {
    let mut srv = TestServer::start(&["--max-rooms", "1", "--max-tracks-per-participant", "2"]);
    let (mut a, m) = join(&srv, "one", "a").await;
    assert!(matches!(m, ServerMessage::Joined(_)), "{m:?}");
    let (_b, m) = join(&srv, "two", "b").await;
    assert!(is_limit(&m, "maximum of 1 rooms"), "{m:?}");
    assert_eq!(limit_hits(&srv, "rooms").await, 1);
    // Joining the open room is still fine.
    let (_c, m) = join(&srv, "one", "c").await;
    assert!(matches!(m, ServerMessage::Joined(_)), "{m:?}");

    a.send(ClientMessage::Offer(Offer {
        leg: Leg::Publish,
        sdp: sample_offer(false, 3).await.unwrap(),
        tracks: vec![],
    }))
    .await
    .unwrap();
    let e = a
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Error(_))
        })
        .await
        .unwrap();
    assert!(is_limit(&e.msg, "at most 2 tracks"), "{:?}", e.msg);
    assert_eq!(limit_hits(&srv, "tracks_per_participant").await, 1);
    // Two tracks are within the limit.
    a.send(ClientMessage::Offer(Offer {
        leg: Leg::Publish,
        sdp: sample_offer(false, 2).await.unwrap(),
        tracks: vec![],
    }))
    .await
    .unwrap();
    a.recv_until(Duration::from_secs(5), |m| {
        matches!(m.msg, ServerMessage::Answer(_))
    })
    .await
    .unwrap();
    srv.assert_alive();
}

async fn ping(sig: &mut Signaling, n: u64) {
    sig.send_with_id(Some(MsgId::Num(n)), ClientMessage::Ping(Empty {}))
        .await
        .unwrap();
}

/// Reads replies until `limit` passes with nothing new.
async fn drain(sig: &mut Signaling, limit: Duration) -> Vec<ServerEnvelope> {
    let mut out = Vec::new();
    while let Ok(m) = sig.recv_timeout(limit).await {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_flood_is_throttled_per_connection() {
    let mut srv = TestServer::start(&["--max-signal-rate", "5"]);
    let (mut flood, _) = join(&srv, "r", "flood").await;
    let (mut calm, _) = join(&srv, "r", "calm").await;
    for i in 0..60 {
        ping(&mut flood, i).await;
    }
    let replies = drain(&mut flood, Duration::from_millis(500)).await;
    let pongs = replies
        .iter()
        .filter(|m| matches!(m.msg, ServerMessage::Pong(_)))
        .count();
    let limited = replies
        .iter()
        .filter(|m| is_limit(&m.msg, "messages per second"))
        .count();
    // A burst of 2 × 5 (the join was one) passes (a few more if the refill ticks meanwhile);
    // the rest are dropped with one error, not one per message.
    assert!((9..30).contains(&pongs), "{pongs} pongs");
    assert!((1..=2).contains(&limited), "{limited} limit errors");
    assert!(limit_hits(&srv, "signal_rate").await >= 30);
    // The other connection never noticed.
    for i in 0..5 {
        ping(&mut calm, i).await;
    }
    let calm_replies = drain(&mut calm, Duration::from_millis(300)).await;
    assert!(
        calm_replies
            .iter()
            .filter(|m| matches!(m.msg, ServerMessage::Pong(_)))
            .count()
            >= 5,
        "{calm_replies:?}"
    );
    // Once the bucket refills, the flooder is served again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ping(&mut flood, 1000).await;
    let m = flood
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Pong(_))
        })
        .await
        .unwrap();
    assert_eq!(m.id, Some(MsgId::Num(1000)));
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_requests_are_limited_per_address() {
    let mut srv = TestServer::start(&["--max-http-rate", "3"]);
    let client = reqwest::Client::new();
    let url = format!("http://{}/whip/r", srv.http);
    // Preflights do not count.
    for _ in 0..5 {
        let r = client
            .request(reqwest::Method::OPTIONS, &url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }
    for _ in 0..3 {
        let r = client
            .post(&url)
            .header("Content-Type", "text/plain")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 415);
    }
    let r = client
        .post(&url)
        .header("Content-Type", "application/sdp")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert_eq!(limit_hits(&srv, "http_rate").await, 1);
    // Signaling and the rest of HTTP are not affected.
    let (_s, m) = join(&srv, "r", "a").await;
    assert!(matches!(m, ServerMessage::Joined(_)), "{m:?}");
    srv.assert_alive();
}
