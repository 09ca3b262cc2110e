//! Access tokens against the real server started with `--keys`: every kind
//! of bad token is refused with its documented error (signaling `error`
//! code, or HTTP 401/403 problem+json), valid tokens work end to end, and
//! the server refuses to listen publicly without keys.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{problem, scrape, TestServer};
use prism_client::{sample_offer, ClientOptions, MediaClient, Signaling};
use prism_server::auth::{Claims, Grants, Keys};
use prism_signal::{ClientMessage, ErrorCode, Join, Leg, Offer, ServerMessage};
use reqwest::Client;

const KEY: &str = "prism-test-key-0123456789abcdef0123456789";
const OTHER_KEY: &str = "another-key-that-this-server-does-not-know-42";

fn keys() -> Keys {
    Keys::new(&[KEY.to_owned()]).unwrap()
}

fn grants(publish: bool, subscribe: bool) -> Grants {
    Grants {
        publish,
        subscribe,
        ..Default::default()
    }
}

fn token(room: &str, identity: &str, g: Grants) -> String {
    keys()
        .mint(room, identity, None, g, Duration::from_secs(600), None)
        .unwrap()
}

fn claims(room: &str, exp: u64, nbf: Option<u64>) -> Claims {
    Claims {
        sub: "alice".into(),
        name: None,
        room: room.into(),
        grants: grants(true, true),
        exp,
        nbf,
        iat: Keys::now(),
    }
}

/// Base64url without padding (RFC 7515), for hand-made tokens.
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn server() -> TestServer {
    TestServer::start(&["--keys", KEY])
}

/// Joins with `token`; returns the first reply.
async fn join(srv: &TestServer, room: &str, token: Option<String>) -> ServerMessage {
    let mut sig = Signaling::connect(&srv.ws_url()).await.unwrap();
    sig.send(ClientMessage::Join(Join {
        room: room.into(),
        name: "someone".into(),
        token,
        identity: Some("chosen-by-client".into()),
    }))
    .await
    .unwrap();
    sig.recv_timeout(Duration::from_secs(5)).await.unwrap().msg
}

fn assert_refused(msg: ServerMessage, code: ErrorCode, needle: &str) {
    let ServerMessage::Error(e) = msg else {
        panic!("expected error {code}, got {msg:?}");
    };
    assert_eq!(e.code, code, "{}", e.message);
    assert!(
        e.message.contains(needle),
        "{:?} lacks {needle:?}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refuses_every_bad_token() {
    let mut srv = server();
    let now = Keys::now();
    assert_refused(
        join(&srv, "a", None).await,
        ErrorCode::Unauthorized,
        "required",
    );
    assert_refused(
        join(&srv, "a", Some("not.a.jwt".into())).await,
        ErrorCode::Unauthorized,
        "invalid",
    );
    let expired = keys().sign(&claims("a", now - 120, None)).unwrap();
    assert_refused(
        join(&srv, "a", Some(expired)).await,
        ErrorCode::Unauthorized,
        "expired",
    );
    let early = keys()
        .sign(&claims("a", now + 7200, Some(now + 3600)))
        .unwrap();
    assert_refused(
        join(&srv, "a", Some(early)).await,
        ErrorCode::Unauthorized,
        "not valid yet",
    );
    let forged = Keys::new(&[OTHER_KEY.to_owned()])
        .unwrap()
        .sign(&claims("a", now + 600, None))
        .unwrap();
    assert_refused(
        join(&srv, "a", Some(forged)).await,
        ErrorCode::Unauthorized,
        "signature",
    );
    // An unsigned token (`alg: none`) with valid claims.
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(
            serde_json::to_string(&claims("a", now + 600, None))
                .unwrap()
                .as_bytes()
        )
    );
    assert_refused(
        join(&srv, "a", Some(unsigned)).await,
        ErrorCode::Unauthorized,
        "invalid",
    );
    assert_refused(
        join(&srv, "b", Some(token("a", "alice", grants(true, true)))).await,
        ErrorCode::Forbidden,
        "room `a`",
    );
    // A good token: the identity comes from the token, not the client.
    match join(&srv, "a", Some(token("a", "alice", grants(true, true)))).await {
        ServerMessage::Joined(j) => assert_eq!(j.identity, "alice"),
        other => panic!("expected joined, got {other:?}"),
    }
    let metrics = scrape(&srv).await;
    // Invalid: "not.a.jwt", the forged and the unsigned token.
    for (reason, n) in [
        ("missing", 1),
        ("invalid", 3),
        ("expired", 1),
        ("not_yet_valid", 1),
        ("wrong_room", 1),
        ("missing_grant", 0),
    ] {
        let sample = format!("prism_auth_failures_total{{reason=\"{reason}\"}} {n}");
        assert!(
            metrics.lines().any(|l| l == sample),
            "no `{sample}` in:\n{metrics}"
        );
    }
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_only_token_cannot_publish_but_receives() {
    let mut srv = server();
    let url = srv.ws_url();
    let mut o = ClientOptions::new(&url, "g", "pub", 1);
    o.token = Some(token("g", "pub", grants(true, false)));
    let publisher = MediaClient::start(o).await.unwrap();

    // The viewer's token only subscribes: its publish offer is refused...
    let mut sig = Signaling::connect(&url).await.unwrap();
    sig.send(ClientMessage::Join(Join {
        room: "g".into(),
        name: "viewer".into(),
        token: Some(token("g", "sneaky", grants(false, true))),
        identity: None,
    }))
    .await
    .unwrap();
    sig.recv_until(Duration::from_secs(5), |m| {
        matches!(m.msg, ServerMessage::Joined(_))
    })
    .await
    .unwrap();
    sig.send(ClientMessage::Offer(Offer {
        leg: Leg::Publish,
        sdp: sample_offer(false, 2).await.unwrap(),
        tracks: vec![],
    }))
    .await
    .unwrap();
    let e = sig
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Error(_))
        })
        .await
        .unwrap();
    assert_refused(e.msg, ErrorCode::Forbidden, "publish");
    drop(sig);

    // ...while a subscribe-only client still gets the media.
    let mut o = ClientOptions::new(&url, "g", "viewer", 2);
    o.publish_audio = false;
    o.publish_video = false;
    o.token = Some(token("g", "viewer", grants(false, true)));
    let viewer = MediaClient::start(o).await.unwrap();
    // A second publisher with every grant: the viewer gets both, while the
    // publish-only publisher is never offered a subscribe leg.
    let mut o = ClientOptions::new(&url, "g", "both", 3);
    o.token = Some(token("g", "both", grants(true, true)));
    let both = MediaClient::start(o).await.unwrap();
    viewer
        .wait_for(Duration::from_secs(20), "media with tokens", |s| {
            s.received.values().filter(|t| t.packets > 10).count() == 4
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    both.wait_for(
        Duration::from_secs(20),
        "media to a full-grant client",
        |s| s.received.values().filter(|t| t.packets > 10).count() == 2,
    )
    .await
    .unwrap();
    assert!(publisher.snapshot().received.is_empty());
    srv.assert_alive();
}

async fn post(
    srv: &TestServer,
    path: &str,
    bearer: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut r = Client::new()
        .post(format!("http://{}{path}", srv.http))
        .header("Content-Type", "application/sdp")
        .body(body);
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_need_bearer_tokens() {
    let mut srv = server();
    let offer = sample_offer(false, 2).await.unwrap();
    let d = problem(post(&srv, "/whip/live", None, offer.clone()).await, 401).await;
    assert!(d.contains("required"), "{d}");
    let d = problem(
        post(&srv, "/whip/live", Some("garbage"), offer.clone()).await,
        401,
    )
    .await;
    assert!(d.contains("invalid"), "{d}");
    let viewer_only = token("live", "v", grants(false, true));
    let d = problem(
        post(&srv, "/whip/live", Some(&viewer_only), offer.clone()).await,
        403,
    )
    .await;
    assert!(d.contains("publish"), "{d}");
    let other_room = token("elsewhere", "p", grants(true, false));
    problem(
        post(&srv, "/whip/live", Some(&other_room), offer.clone()).await,
        403,
    )
    .await;
    let viewer_offer = sample_offer(true, 0).await.unwrap();
    let publisher_only = token("live", "p", grants(true, false));
    let d = problem(
        post(
            &srv,
            "/whep/live",
            Some(&publisher_only),
            viewer_offer.clone(),
        )
        .await,
        403,
    )
    .await;
    assert!(d.contains("subscribe"), "{d}");
    problem(post(&srv, "/whep/live", None, viewer_offer).await, 401).await;

    // A valid publisher token creates the session; its URL needs a token too.
    let r = post(&srv, "/whip/live", Some(&publisher_only), offer).await;
    assert_eq!(r.status().as_u16(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let session = format!("http://{}{location}", srv.http);
    let r = Client::new().delete(&session).send().await.unwrap();
    problem(r, 401).await;
    let r = Client::new()
        .delete(&session)
        .bearer_auth(&publisher_only)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_to_whep_with_tokens() {
    let mut srv = server();
    let base = format!("http://{}", srv.http);
    let mut o = ClientOptions::new(&base, "show", "obs", 1);
    o.token = Some(token("show", "obs", grants(true, false)));
    let publisher = MediaClient::start_whip(o).await.unwrap();
    publisher
        .wait_for(Duration::from_secs(20), "publishing", |s| s.sent_video > 5)
        .await
        .unwrap();
    let mut o = ClientOptions::new(&base, "show", "viewer", 2);
    o.token = Some(token("show", "viewer", grants(false, true)));
    let viewer = MediaClient::start_whep(o, None).await.unwrap();
    viewer
        .wait_for(Duration::from_secs(20), "WHEP media", |s| {
            s.received.values().filter(|t| t.packets > 10).count() == 2
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    srv.assert_alive();
}

#[test]
fn token_command_mints_a_token_the_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args([
            "token",
            "--room",
            "cli",
            "--identity",
            "carol",
            "--subscribe",
        ])
        .env("PRISM_KEYS", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap();
    let c = keys().verify(Some(t.trim()), "cli").unwrap();
    assert_eq!(c.sub, "carol");
    assert!(c.grants.subscribe && !c.grants.publish);
    assert!(c.exp > Keys::now() + 3000 && c.exp <= Keys::now() + 3600);

    // Without a key there is nothing to sign with.
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["token", "--room", "cli", "--identity", "carol"])
        .env_remove("PRISM_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PRISM_KEYS"));
}

#[test]
fn public_address_without_keys_or_with_short_keys_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["--http-addr", "0.0.0.0:0", "--udp-port", "0"])
        .env_remove("PRISM_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without access-token keys"), "{err}");
    assert!(err.contains("PRISM_KEYS"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["--udp-port", "0", "--keys", "too-short"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 32 bytes"), "{err}");
}
