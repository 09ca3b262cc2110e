//! One validation for offers: a table of malformed offers gets the same 4xx
//! `application/problem+json` from WHIP and WHEP and the same signaling
//! `error` code from a WebSocket publish `offer`, before any engine work, and
//! a well-formed offer through each door still works afterwards.

mod common;

use std::time::Duration;

use common::{problem, scrape, value, TestServer};
use prism_client::{sample_offer, Signaling};
use prism_signal::{ClientMessage, ErrorCode, Join, Leg, MsgId, Offer, ServerMessage};
use reqwest::Client;

/// A malformed variant of a well-formed offer.
struct Row {
    name: &'static str,
    mangle: fn(&str) -> String,
    http: u16,
    ws: ErrorCode,
    /// A phrase the HTTP detail and the signaling message both contain.
    says: &'static str,
}

fn replace_lines(sdp: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    for l in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(l) = f(l) {
            out.push_str(&l);
            out.push_str("\r\n");
        }
    }
    out
}

/// The offer with its last m-section repeated until it has `n`.
fn sections(sdp: &str, n: usize) -> String {
    let last = sdp.rfind("\r\nm=").expect("an m-section") + 2;
    let have = sdp.matches("\r\nm=").count();
    let mut out = sdp.to_owned();
    for i in have..n {
        let copy = replace_lines(&sdp[last..], |l| {
            Some(if l.starts_with("a=mid:") {
                format!("a=mid:x{i}")
            } else {
                l.to_owned()
            })
        });
        out.push_str(&copy);
    }
    out
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "17 m-lines",
            mangle: |s| sections(s, 17),
            http: 400,
            ws: ErrorCode::LimitExceeded,
            says: "17 m-sections",
        },
        Row {
            name: "500 m-lines",
            mangle: |s| {
                let mut s = s.to_owned();
                for i in 0..500 {
                    s.push_str(&format!(
                        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:y{i}\r\n"
                    ));
                }
                s
            },
            http: 400,
            ws: ErrorCode::LimitExceeded,
            says: "at most 16 tracks",
        },
        Row {
            name: "garbled fingerprint",
            mangle: |s| {
                replace_lines(s, |l| {
                    Some(match l.strip_prefix("a=fingerprint:") {
                        Some(v) => format!("a=fingerprint:{} ZZ:{}", &v[..7], &v[11..]),
                        None => l.to_owned(),
                    })
                })
            },
            http: 400,
            ws: ErrorCode::InvalidSdp,
            says: "hex pairs separated by colons",
        },
        Row {
            name: "unknown hash function",
            mangle: |s| s.replace("a=fingerprint:sha-256", "a=fingerprint:sha-3"),
            http: 400,
            ws: ErrorCode::InvalidSdp,
            says: "unknown hash function `sha-3`",
        },
        Row {
            name: "no fingerprint",
            mangle: |s| replace_lines(s, |l| (!l.starts_with("a=fingerprint:")).then(|| l.into())),
            http: 400,
            ws: ErrorCode::InvalidSdp,
            says: "has no a=fingerprint",
        },
        Row {
            name: "a=setup:bogus",
            mangle: |s| {
                replace_lines(s, |l| {
                    Some(if l.starts_with("a=setup:") {
                        "a=setup:bogus".into()
                    } else {
                        l.to_owned()
                    })
                })
            },
            http: 400,
            ws: ErrorCode::InvalidSdp,
            says: "a=setup:bogus",
        },
        Row {
            name: "RTP/AVP",
            mangle: |s| s.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"),
            http: 400,
            ws: ErrorCode::InvalidSdp,
            says: "profile `RTP/AVP`",
        },
        Row {
            name: "no m-line",
            mangle: |s| s[..s.find("\r\nm=").unwrap() + 2].to_owned(),
            http: 400,
            ws: ErrorCode::InvalidSdp,
            says: "no m-section",
        },
    ]
}

async fn post(srv: &TestServer, path: &str, body: String) -> reqwest::Response {
    Client::new()
        .post(format!("http://{}{path}", srv.http))
        .header("Content-Type", "application/sdp")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn ws_offer(sig: &mut Signaling, id: u64, sdp: String) -> ServerMessage {
    let offer = Offer {
        leg: Leg::Publish,
        sdp,
        tracks: Vec::new(),
    };
    sig.send_with_id(Some(MsgId::Num(id)), ClientMessage::Offer(offer))
        .await
        .unwrap();
    let m = sig
        .recv_until(Duration::from_secs(10), |m| {
            // An oversized message is refused unread: its error has no id.
            m.id == Some(MsgId::Num(id))
                || (m.id.is_none() && matches!(m.msg, ServerMessage::Error(_)))
        })
        .await
        .unwrap_or_else(|e| panic!("a reply to offer {id}: {e}"));
    m.msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_offers_same_refusal_everywhere() {
    // Nobody here connects ICE: keep the sessions past the tests' 3 s.
    let mut srv = TestServer::start(&["--peer-timeout", "60s"]);
    let publish = sample_offer(false, 2).await.unwrap();
    let view = sample_offer(true, 0).await.unwrap();
    // A broadcast in the room, so WHEP's refusals are about the offer only.
    let r = post(&srv, "/whip/t", publish.clone()).await;
    assert_eq!(r.status().as_u16(), 201, "{}", srv.log());
    let mut sig = Signaling::connect(&srv.ws_url()).await.unwrap();
    sig.send_with_id(
        Some(MsgId::Num(0)),
        ClientMessage::Join(Join {
            room: "t".into(),
            name: "ws".into(),
            token: None,
            identity: Some("ws".into()),
        }),
    )
    .await
    .unwrap();
    sig.recv_until(Duration::from_secs(10), |m| {
        matches!(m.msg, ServerMessage::Joined(_))
    })
    .await
    .expect("joined");
    let before = value(
        &scrape(&srv).await,
        "prism_limit_hits_total{limit=\"tracks_per_participant\"}",
    )
    .unwrap_or(0.0);

    let mut limit_rows = 0;
    for (i, row) in rows().into_iter().enumerate() {
        let whip = problem(
            post(&srv, "/whip/t", (row.mangle)(&publish)).await,
            row.http,
        )
        .await;
        let whep = problem(post(&srv, "/whep/t", (row.mangle)(&view)).await, row.http).await;
        let ws = match ws_offer(&mut sig, 100 + i as u64, (row.mangle)(&publish)).await {
            ServerMessage::Error(e) => {
                assert_eq!(e.code, row.ws, "{}: {}", row.name, e.message);
                e.message
            }
            other => panic!("{}: expected an error, got {other:?}", row.name),
        };
        for (door, text) in [("WHIP", &whip), ("WHEP", &whep), ("WebSocket", &ws)] {
            assert!(
                text.contains(row.says),
                "{}: the {door} refusal says `{text}`, not `{}`",
                row.name,
                row.says
            );
        }
        if row.ws == ErrorCode::LimitExceeded {
            limit_rows += 1;
        }
    }

    // Over 64 KiB: 413 from WHIP and WHEP; on the WebSocket the message
    // itself is over its 64 KiB limit.
    let pad = "a=x-pad:".to_owned() + &"p".repeat(1000) + "\r\n";
    problem(
        post(&srv, "/whip/t", publish.clone() + &pad.repeat(70)).await,
        413,
    )
    .await;
    problem(
        post(&srv, "/whep/t", view.clone() + &pad.repeat(70)).await,
        413,
    )
    .await;
    match ws_offer(&mut sig, 99, publish.clone() + &pad.repeat(70)).await {
        ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::MessageTooLarge),
        other => panic!("expected message_too_large, got {other:?}"),
    }

    // Each refused track-count offer counted once per door (WHIP, WHEP, WebSocket).
    let after = value(
        &scrape(&srv).await,
        "prism_limit_hits_total{limit=\"tracks_per_participant\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(after - before, 3.0 * limit_rows as f64);

    // Nothing was left behind, and well-formed offers still work at every door.
    assert_eq!(post(&srv, "/whep/t", view).await.status().as_u16(), 201);
    match ws_offer(&mut sig, 1, publish.clone()).await {
        ServerMessage::Answer(_) => {}
        other => panic!("expected an answer, got {other:?}"),
    }
    assert_eq!(post(&srv, "/whip/t2", publish).await.status().as_u16(), 201);
    srv.assert_alive();
}
