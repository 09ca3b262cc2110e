//! Simulcast offers against the real server, with the browsers' real
//! offers: by default every rid is answered (layers are forwarded per
//! subscriber) and only RTX leaves rid sections; with `--simulcast false`
//! they are answered with one encoding, through WHIP, its ICE restart and
//! the WebSocket publish leg. `a=ssrc-group:SIM` is narrowed either way.

mod common;

use std::time::Duration;

use common::{scrape, value, TestServer};
use prism_client::Signaling;
use prism_signal::{ClientMessage, Join, Leg, MsgId, Offer, ServerMessage};
use reqwest::Client;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/sdp_offer/");

fn offer(name: &str) -> String {
    std::fs::read_to_string(format!("{CORPUS}{name}")).unwrap()
}

/// The answer's lines from its video m-section on.
fn video_lines(answer: &str) -> Vec<&str> {
    let at = answer.find("m=video").expect("a video section");
    answer[at..]
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .collect()
}

/// Asserts the answer accepts exactly the one rid `rid` and no RTX.
fn assert_one_rid(answer: &str, rid: &str) {
    let video = video_lines(answer);
    let rids: Vec<&&str> = video.iter().filter(|l| l.starts_with("a=rid:")).collect();
    assert_eq!(
        rids,
        vec![&format!("a=rid:{rid} recv").as_str()],
        "{answer}"
    );
    let simulcast: Vec<&&str> = video
        .iter()
        .filter(|l| l.starts_with("a=simulcast:"))
        .collect();
    assert_eq!(
        simulcast,
        vec![&format!("a=simulcast:recv {rid}").as_str()],
        "{answer}"
    );
    assert!(!answer.contains("rtx/90000"), "no RTX: {answer}");
}

async fn narrowed(srv: &TestServer, form: &str) -> f64 {
    value(
        &scrape(srv).await,
        &format!("prism_simulcast_narrowed_total{{form=\"{form}\"}}"),
    )
    .unwrap_or_else(|| panic!("the {form} counter is exported"))
}

/// Waits for the counter to reach `want` (shards publish once a second).
async fn wait_narrowed(srv: &TestServer, form: &str, want: f64) {
    for _ in 0..40 {
        if narrowed(srv, form).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(narrowed(srv, form).await, want, "{form}");
}

async fn whip(srv: &TestServer, room: &str, body: String) -> reqwest::Response {
    Client::new()
        .post(format!("http://{}/whip/{room}", srv.http))
        .header("Content-Type", "application/sdp")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_offers_answered_with_one_encoding_when_off() {
    // Nobody connects ICE here: keep the sessions past the tests' defaults.
    let srv = TestServer::start(&["--peer-timeout", "60s", "--simulcast", "false"]);
    assert_eq!(narrowed(&srv, "rid").await, 0.0);
    assert_eq!(narrowed(&srv, "ssrc_group").await, 0.0);

    // WHIP, Chromium's `sendEncodings` q/h/f: the full layer is kept.
    let r = whip(&srv, "sc", offer("chrome-simulcast.sdp")).await;
    assert_eq!(r.status().as_u16(), 201, "{}", srv.log());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let answer = r.text().await.unwrap();
    assert_one_rid(&answer, "f");
    wait_narrowed(&srv, "rid", 1.0).await;
    assert!(
        srv.log()
            .contains("simulcast offer narrowed to one encoding"),
        "logged"
    );

    // Its ICE restart applies the narrowed offer again: still one
    // negotiation's worth of narrowing.
    let r = Client::new()
        .patch(format!("http://{}{location}", srv.http))
        .header("Content-Type", "application/trickle-ice-sdpfrag")
        .header("If-Match", "*")
        .body("a=ice-ufrag:newUfrag\r\na=ice-pwd:newPasswordnewPasswordnew\r\na=mid:0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", srv.log());

    // WebSocket publish leg, Firefox's h/m/l.
    let mut sig = Signaling::connect(&srv.ws_url()).await.unwrap();
    sig.send_with_id(
        Some(MsgId::Num(0)),
        ClientMessage::Join(Join {
            room: "sc".into(),
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
    let o = Offer {
        leg: Leg::Publish,
        sdp: offer("firefox-simulcast.sdp"),
        tracks: Vec::new(),
    };
    sig.send_with_id(Some(MsgId::Num(1)), ClientMessage::Offer(o))
        .await
        .unwrap();
    let m = sig
        .recv_until(Duration::from_secs(10), |m| m.id == Some(MsgId::Num(1)))
        .await
        .expect("a reply to the offer");
    match m.msg {
        ServerMessage::Answer(a) => assert_one_rid(&a.sdp, "h"),
        other => panic!("expected an answer, got {other:?}"),
    }
    wait_narrowed(&srv, "rid", 2.0).await;

    // WHIP, munged Chromium with ssrc-group:SIM: no simulcast in the answer,
    // and RTX (declared by FID) is kept.
    let r = whip(&srv, "sc2", offer("chrome-ssrc-group-sim.sdp")).await;
    assert_eq!(r.status().as_u16(), 201, "{}", srv.log());
    let answer = r.text().await.unwrap();
    assert!(!answer.contains("a=simulcast"), "{answer}");
    assert!(!answer.contains("a=rid"), "{answer}");
    wait_narrowed(&srv, "ssrc_group", 1.0).await;

    // A plain offer is not counted.
    let plain = prism_client::sample_offer(false, 2).await.unwrap();
    assert_eq!(whip(&srv, "sc3", plain).await.status().as_u16(), 201);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(narrowed(&srv, "rid").await, 2.0);
    assert_eq!(narrowed(&srv, "ssrc_group").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_offers_keep_every_layer_by_default() {
    let srv = TestServer::start(&["--peer-timeout", "60s"]);
    let r = whip(&srv, "sc", offer("chrome-simulcast.sdp")).await;
    assert_eq!(r.status().as_u16(), 201, "{}", srv.log());
    let answer = r.text().await.unwrap();
    let video = video_lines(&answer);
    let rids: Vec<&&str> = video.iter().filter(|l| l.starts_with("a=rid:")).collect();
    assert_eq!(
        rids,
        vec![&"a=rid:q recv", &"a=rid:h recv", &"a=rid:f recv"],
        "{answer}"
    );
    assert!(video.contains(&"a=simulcast:recv q;h;f"), "{answer}");
    assert!(
        !answer.contains("rtx/90000"),
        "no RTX on a rid section: {answer}"
    );
    assert!(
        srv.log().contains("simulcast: layers lowest first"),
        "{}",
        srv.log()
    );
    // SIM groups are still narrowed: the engine cannot bind them.
    let r = whip(&srv, "sc2", offer("chrome-ssrc-group-sim.sdp")).await;
    assert_eq!(r.status().as_u16(), 201, "{}", srv.log());
    assert!(!r.text().await.unwrap().contains("a=simulcast"));
    wait_narrowed(&srv, "ssrc_group", 1.0).await;
    assert_eq!(narrowed(&srv, "rid").await, 0.0);
}
