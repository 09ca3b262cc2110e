//! WHIP/WHEP HTTP conformance (RFC 9725 and its WHEP sibling) against the
//! real server: status codes, content types, headers, ETag rules.

mod common;

use common::{problem, scrape, TestServer};
use prism_client::sample_offer;
use reqwest::Client;

fn url(srv: &TestServer, path: &str) -> String {
    format!("http://{}{path}", srv.http)
}

async fn post(srv: &TestServer, path: &str, ctype: &str, body: String) -> reqwest::Response {
    Client::new()
        .post(url(srv, path))
        .header("Content-Type", ctype)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn patch(
    srv: &TestServer,
    location: &str,
    ctype: &str,
    if_match: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut r = Client::new()
        .patch(url(srv, location))
        .header("Content-Type", ctype)
        .body(body.to_owned());
    if let Some(m) = if_match {
        r = r.header("If-Match", m);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_post_errors() {
    let mut srv = TestServer::start(&[]);
    let offer = sample_offer(false, 2).await.unwrap();
    let d = problem(
        post(&srv, "/whip/r", "text/plain", offer.clone()).await,
        415,
    )
    .await;
    assert!(d.contains("application/sdp"), "{d}");
    problem(
        post(&srv, "/whip/r", "application/sdp", "garbage".into()).await,
        400,
    )
    .await;
    let viewer_offer = sample_offer(true, 0).await.unwrap();
    let d = problem(
        post(&srv, "/whip/r", "application/sdp", viewer_offer).await,
        400,
    )
    .await;
    assert!(d.contains("sends no audio or video"), "{d}");
    // An offer the engine parses but cannot answer a section of (found by
    // the sdp_offer fuzz target): refused, not answered with a broken SDP.
    let unanswerable = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/sdp_offer/regress-unanswerable-section.sdp"
    ))
    .unwrap();
    let d = problem(
        post(&srv, "/whip/r", "application/sdp", unanswerable).await,
        400,
    )
    .await;
    assert!(d.contains("media sections could be answered"), "{d}");
    // 17 tracks: the whole offer is refused, not single m-lines.
    let big = sample_offer(false, 17).await.unwrap();
    let d = problem(post(&srv, "/whip/r", "application/sdp", big).await, 400).await;
    assert!(d.contains("16"), "{d}");
    problem(
        post(&srv, "/whip/bad%20room", "application/sdp", offer.clone()).await,
        400,
    )
    .await;
    let huge = "v=0\r\n".repeat(20_000);
    problem(post(&srv, "/whip/r", "application/sdp", huge).await, 413).await;
    let bad_auth = Client::new()
        .post(url(&srv, "/whip/r"))
        .header("Content-Type", "application/sdp")
        .header("Authorization", "Basic abc")
        .body(offer)
        .send()
        .await
        .unwrap();
    problem(bad_auth, 401).await;
    // Nothing refused leaves a room placed on a shard once the room a
    // failed publish opened has closed (room_empty_timeout is 2 s here).
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = scrape(&srv).await;
        if metrics
            .lines()
            .any(|l| l == "prism_room_directory_entries 0")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "prism_room_directory_entries 0"),
        "{metrics}"
    );
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_created_session_headers_and_answer() {
    let mut srv = TestServer::start(&["--ice-servers", "stun:stun.example.net:3478"]);
    let r = Client::new()
        .post(url(&srv, "/whip/show"))
        .header("Content-Type", "application/sdp")
        .header("Authorization", "Bearer stream-key")
        .body(sample_offer(false, 2).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "application/sdp");
    let location = h["location"].to_str().unwrap().to_owned();
    let id = location
        .strip_prefix("/whip/show/")
        .expect("Location under the endpoint");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(h["etag"].to_str().unwrap().starts_with('"'));
    assert_eq!(h["access-control-allow-origin"], "*");
    let link = h["link"].to_str().unwrap();
    assert!(
        link.contains("<stun:stun.example.net:3478>") && link.contains("rel=\"ice-server\""),
        "{link}"
    );
    let answer = r.text().await.unwrap();
    let sections = answer.matches("\r\nm=").count();
    assert_eq!(sections, 2);
    // A UDP host candidate in every m-section, first, and the ICE-TCP
    // passive one after it, ended: clients that never trickle (FFmpeg) use
    // the first candidate of the answer.
    assert_eq!(answer.matches("a=candidate:").count(), 2 * sections);
    assert_eq!(answer.matches(" tcptype passive").count(), sections);
    for m in answer.split("\r\nm=").skip(1) {
        let first = m.lines().find(|l| l.starts_with("a=candidate:")).unwrap();
        assert!(
            first.contains(" udp ") && first.ends_with("typ host"),
            "{first}"
        );
    }
    assert_eq!(answer.matches("a=end-of-candidates").count(), sections);
    assert!(answer.contains("a=recvonly"));
    // Two sessions never share an id.
    let r2 = post(
        &srv,
        "/whip/show",
        "application/sdp",
        sample_offer(false, 2).await.unwrap(),
    )
    .await;
    assert_ne!(r2.headers()["location"].to_str().unwrap(), location);
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_and_head() {
    let mut srv = TestServer::start(&["--ice-servers", "turn:turn.example.net"]);
    for path in ["/whip/r", "/whep/r"] {
        let r = Client::new()
            .request(reqwest::Method::OPTIONS, url(&srv, path))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "{path}");
        let h = r.headers();
        assert_eq!(h["accept-post"], "application/sdp");
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization"));
        assert!(h["link"]
            .to_str()
            .unwrap()
            .contains("turn:turn.example.net"));
    }
    let r = Client::new()
        .head(url(&srv, "/whep/r"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_trickle_restart_and_etag_rules() {
    let mut srv = TestServer::start(&[]);
    let r = post(
        &srv,
        "/whip/p",
        "application/sdp",
        sample_offer(false, 2).await.unwrap(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let frag = "application/trickle-ice-sdpfrag";

    problem(
        patch(&srv, &location, "application/sdp", None, "a=mid:0\r\n").await,
        415,
    )
    .await;
    problem(
        patch(
            &srv,
            "/whip/p/nonexistentnonexistentnonexistent",
            frag,
            None,
            "",
        )
        .await,
        404,
    )
    .await;
    // Trickle: a candidate for the first section.
    let trickle = "a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host\r\n";
    assert_eq!(
        patch(&srv, &location, frag, None, trickle)
            .await
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        patch(&srv, &location, frag, Some(&etag), trickle)
            .await
            .status()
            .as_u16(),
        204
    );
    problem(
        patch(&srv, &location, frag, Some("\"stale\""), trickle).await,
        412,
    )
    .await;
    // ICE restart: new credentials need If-Match.
    let restart = "a=ice-ufrag:newUfrag\r\na=ice-pwd:newPasswordnewPasswordnew\r\na=mid:0\r\n";
    problem(patch(&srv, &location, frag, None, restart).await, 428).await;
    problem(
        patch(&srv, &location, frag, Some("\"stale\""), restart).await,
        412,
    )
    .await;
    let r = patch(&srv, &location, frag, Some("*"), restart).await;
    assert_eq!(r.status().as_u16(), 200, "{}", srv.log());
    assert_eq!(r.headers()["content-type"], frag);
    let new_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag, "a restart is a new ICE session");
    let body = r.text().await.unwrap();
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:"),
        "{body}"
    );
    assert!(
        body.contains("a=candidate:") && body.contains("a=end-of-candidates"),
        "{body}"
    );
    // The old ETag is stale now; the new one works.
    let again = "a=ice-ufrag:third3\r\na=ice-pwd:thirdPasswordthirdPassword\r\n";
    problem(patch(&srv, &location, frag, Some(&etag), again).await, 412).await;
    assert_eq!(
        patch(&srv, &location, frag, Some(&new_etag), again)
            .await
            .status()
            .as_u16(),
        200
    );
    // A failed restart (half the credentials) keeps the session.
    problem(
        patch(&srv, &location, frag, Some("*"), "a=ice-ufrag:only\r\n").await,
        400,
    )
    .await;
    assert_eq!(
        patch(&srv, &location, frag, None, trickle)
            .await
            .status()
            .as_u16(),
        204
    );
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_404_and_whep_errors() {
    let mut srv = TestServer::start(&[]);
    // WHEP on a room without a broadcast says so.
    let viewer_offer = sample_offer(true, 0).await.unwrap();
    let d = problem(
        post(&srv, "/whep/empty", "application/sdp", viewer_offer.clone()).await,
        404,
    )
    .await;
    assert!(d.contains("no published tracks"), "{d}");
    // ...and leaves no placement for the room behind.
    let metrics = scrape(&srv).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "prism_room_directory_entries 0"),
        "{metrics}"
    );
    problem(
        post(&srv, "/whep/empty", "text/plain", viewer_offer.clone()).await,
        415,
    )
    .await;
    let r = post(
        &srv,
        "/whip/d",
        "application/sdp",
        sample_offer(false, 2).await.unwrap(),
    )
    .await;
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    // A WHEP offer that receives nothing, and one for a participant that is not there.
    let d = problem(
        post(
            &srv,
            "/whep/d",
            "application/sdp",
            sample_offer(false, 2).await.unwrap(),
        )
        .await,
        400,
    )
    .await;
    assert!(d.contains("receives no audio or video"), "{d}");
    problem(
        post(
            &srv,
            "/whep/d?participant=PA_999",
            "application/sdp",
            viewer_offer.clone(),
        )
        .await,
        404,
    )
    .await;
    let r = post(&srv, "/whep/d", "application/sdp", viewer_offer).await;
    assert_eq!(r.status().as_u16(), 201);
    let whep_location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(whep_location.starts_with("/whep/d/"));
    // The WHIP session URL is not a WHEP one.
    let wrong = location.replace("/whip/", "/whep/");
    problem(
        Client::new()
            .delete(url(&srv, &wrong))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    for loc in [&whep_location, &location] {
        let first = Client::new().delete(url(&srv, loc)).send().await.unwrap();
        assert_eq!(first.status().as_u16(), 200);
        problem(
            Client::new().delete(url(&srv, loc)).send().await.unwrap(),
            404,
        )
        .await;
    }
    srv.assert_alive();
}
