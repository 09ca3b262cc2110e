//! Broadcasting end to end: a WHIP publisher, WHEP viewers and conference
//! participants, all through the real `prism` binary on loopback.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use prism_client::{ClientCommand, ClientOptions, MediaClient};

fn base(srv: &TestServer) -> String {
    format!("http://{}", srv.http)
}

async fn whip(srv: &TestServer, room: &str) -> MediaClient {
    MediaClient::start_whip(ClientOptions::new(&base(srv), room, "obs", 1))
        .await
        .unwrap_or_else(|e| panic!("WHIP publish failed: {e:#}\n{}", srv.log()))
}

async fn whep(srv: &TestServer, room: &str, id: u32) -> MediaClient {
    let mut o = ClientOptions::new(&base(srv), room, &format!("viewer{id}"), 100 + id);
    o.publish_audio = false;
    o.publish_video = false;
    MediaClient::start_whep(o, None)
        .await
        .unwrap_or_else(|e| panic!("WHEP view failed: {e:#}\n{}", srv.log()))
}

fn is_key(payload: &[u8]) -> bool {
    prism_core::is_keyframe_start(prism_core::VideoCodec::Vp8, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_to_one_whep_viewer() {
    let mut srv = TestServer::start(&[]);
    let publisher = whip(&srv, "live").await;
    publisher
        .wait_for(Duration::from_secs(20), "publishing", |s| s.sent_video > 10)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    let viewer = whep(&srv, "live", 1).await;
    viewer
        .wait_for(Duration::from_secs(20), "audio and video", |s| {
            s.received.len() == 2 && s.received.values().all(|t| t.packets > 20)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    let s = viewer.snapshot();
    let v = s.received.values().find(|t| t.video).unwrap();
    assert!(is_key(&v.first_payload), "first video packet is a keyframe");
    let setup = s.first_packet_at.unwrap() - s.posted_at.unwrap();
    eprintln!("WHEP POST → first packet: {setup:?}");
    srv.assert_alive();
}

fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], *v.last().unwrap())
}

/// One WHIP publisher (Opus + VP8) → 50 WHEP viewers: each gets ≥ 99% of what
/// was sent after it joined, starts with a keyframe, and the time from its
/// POST to its first packet is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_to_fifty_whep_viewers() {
    let mut srv = TestServer::start(&[]);
    let publisher = whip(&srv, "fifty").await;
    publisher
        .wait_for(Duration::from_secs(20), "publishing", |s| s.sent_video > 10)
        .await
        .unwrap();
    let mut viewers = Vec::new();
    for i in 0..50 {
        viewers.push(whep(&srv, "fifty", i).await);
    }
    for (i, v) in viewers.iter().enumerate() {
        v.wait_for(Duration::from_secs(30), "audio and video", |s| {
            s.received.len() == 2 && s.received.values().all(|t| t.packets > 10)
        })
        .await
        .unwrap_or_else(|e| panic!("viewer {i}: {e}\n{}", srv.log()));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut setups = Vec::new();
    for (i, v) in viewers.iter().enumerate() {
        let s = v.snapshot();
        setups.push(s.first_packet_at.unwrap() - s.posted_at.unwrap());
        for t in s.received.values() {
            assert_eq!(t.corrupt, 0);
            let d = t.delivered_ratio();
            assert!(d >= 0.99, "viewer {i} video={}: delivered {d:.4}", t.video);
            if t.video {
                assert!(
                    is_key(&t.first_payload),
                    "viewer {i}: first video packet is a keyframe"
                );
            }
        }
    }
    let (median, max) = median_max(setups);
    eprintln!("50 WHEP viewers, POST → first packet: median {median:?}, max {max:?}");
    srv.assert_alive();
}

/// A conference participant and a WHEP viewer watch the same WHIP publisher.
/// The publisher is a participant of the room; the viewer is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_viewer_and_conference_participant_side_by_side() {
    let mut srv = TestServer::start(&[]);
    let mut o = ClientOptions::new(&srv.ws_url(), "mixed", "ana", 7);
    o.publish_audio = false;
    o.publish_video = false;
    let ana = MediaClient::start(o).await.unwrap();
    let publisher = whip(&srv, "mixed").await;
    let viewer = whep_after_publish(&srv, &publisher, "mixed").await;
    for c in [&ana, &viewer] {
        c.wait_for(Duration::from_secs(20), "the WHIP publisher's media", |s| {
            s.received.len() == 2 && s.received.values().all(|t| t.packets > 20)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    }
    let s = ana.snapshot();
    let joined: Vec<_> = s
        .messages
        .iter()
        .filter_map(|m| match m {
            prism_signal::ServerMessage::ParticipantJoined(p) => {
                Some(p.participant.identity.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        joined.len(),
        1,
        "only the WHIP publisher joined, not the viewer: {joined:?}"
    );
    assert!(joined[0].starts_with("whip-"));
    srv.assert_alive();
}

async fn whep_after_publish(srv: &TestServer, publisher: &MediaClient, room: &str) -> MediaClient {
    publisher
        .wait_for(Duration::from_secs(20), "publishing", |s| s.sent_video > 5)
        .await
        .unwrap();
    whep(srv, room, 1).await
}

/// DELETE of the WHIP session ends every viewer's media and removes the
/// publisher from the room at once; a second DELETE is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_the_broadcast() {
    let mut srv = TestServer::start(&[]);
    let mut o = ClientOptions::new(&srv.ws_url(), "del", "ana", 7);
    o.publish_audio = false;
    o.publish_video = false;
    let ana = MediaClient::start(o).await.unwrap();
    let publisher = whip(&srv, "del").await;
    let viewer = whep_after_publish(&srv, &publisher, "del").await;
    viewer
        .wait_for(Duration::from_secs(20), "media", |s| {
            s.received.values().all(|t| t.packets > 10) && s.received.len() == 2
        })
        .await
        .unwrap();
    let url = publisher.snapshot().session_url.unwrap();
    let deleted_at = Instant::now();
    publisher.command(ClientCommand::Leave).await.unwrap();
    publisher
        .wait_for(Duration::from_secs(5), "DELETE answered", |s| {
            s.delete_status.is_some()
        })
        .await
        .unwrap();
    assert_eq!(publisher.snapshot().delete_status, Some(200));
    ana.wait_for(Duration::from_secs(5), "publisher gone", |s| {
        s.messages
            .iter()
            .any(|m| matches!(m, prism_signal::ServerMessage::ParticipantLeft(_)))
    })
    .await
    .unwrap();
    eprintln!(
        "DELETE → participant_left at a conference participant: {:?}",
        deleted_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: u64 = viewer.snapshot().received.values().map(|t| t.packets).sum();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after: u64 = viewer.snapshot().received.values().map(|t| t.packets).sum();
    assert_eq!(before, after, "the viewer's media ended");
    let second = reqwest::Client::new().delete(&url).send().await.unwrap();
    assert_eq!(second.status().as_u16(), 404);
    srv.assert_alive();
}

/// A WHIP publisher killed without DELETE is removed after the consent/ICE
/// timeout (3 s in tests), and the room hears it timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_whip_publisher_times_out() {
    let mut srv = TestServer::start(&[]);
    let mut o = ClientOptions::new(&srv.ws_url(), "kill", "ana", 7);
    o.publish_audio = false;
    o.publish_video = false;
    let ana = MediaClient::start(o).await.unwrap();
    let publisher = whip(&srv, "kill").await;
    ana.wait_for(Duration::from_secs(20), "media", |s| s.received.len() == 2)
        .await
        .unwrap();
    publisher.kill();
    ana.wait_for(Duration::from_secs(10), "publisher timed out", |s| {
        s.messages.iter().any(|m| {
            matches!(m, prism_signal::ServerMessage::ParticipantLeft(l) if l.reason == prism_signal::LeaveReason::Timeout)
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    srv.assert_alive();
}

/// A broadcast survives its publisher's restart: a WHEP viewer whose WHIP
/// publisher was killed carries on with the next publisher of the room, on
/// the same connection and senders, its RTP numbering continuous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_viewer_continues_after_the_publisher_is_killed() {
    viewer_survives_a_restart(false).await;
}

/// The same with a clean restart: the publisher DELETEs its session and
/// POSTs again (OBS stopping and starting its stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_viewer_continues_after_the_publisher_restarts_cleanly() {
    viewer_survives_a_restart(true).await;
}

async fn viewer_survives_a_restart(clean: bool) {
    let srv = TestServer::start(&[]);
    let first = whip(&srv, "restart").await;
    let viewer = whep(&srv, "restart", 1).await;
    let from = |sender: u32| {
        move |s: &prism_client::ClientState| {
            s.received
                .values()
                .filter(|t| t.video)
                .any(|t| t.probes.iter().filter(|(who, _)| *who == sender).count() > 30)
        }
    };
    viewer
        .wait_for(
            Duration::from_secs(20),
            "the first publisher's video",
            from(1),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    if clean {
        first.command(ClientCommand::Leave).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    } else {
        // Killed: no DELETE, the server finds out after the peer timeout (3 s).
        first.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let second = MediaClient::start_whip(ClientOptions::new(&base(&srv), "restart", "obs", 2))
        .await
        .unwrap_or_else(|e| panic!("second WHIP publish failed: {e:#}\n{}", srv.log()));
    let started = Instant::now();
    viewer
        .wait_for(
            Duration::from_secs(10),
            "the second publisher's video",
            from(2),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    let took = started.elapsed();
    let snap = viewer.snapshot();
    for t in snap.received.values() {
        // One sender, one numbering: never back, never a jump beyond what
        // loss could explain.
        for w in t.rtp_seqs.windows(2) {
            let step = w[1].wrapping_sub(w[0]) as i16;
            assert!(
                (-20..=20).contains(&step),
                "{}: {} → {}",
                t.track_id,
                w[0],
                w[1]
            );
        }
        assert_eq!(t.ssrcs.len(), 1, "{}: one SSRC throughout", t.track_id);
        assert_eq!(t.corrupt, 0);
    }
    assert!(snap.subscribe_connected, "the viewer's connection stayed");
    eprintln!("second publisher's video reached the viewer {took:?} after its POST");
    drop(second);
}
