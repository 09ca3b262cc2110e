//! Broadcasting end to end: a WHIP publisher, WHEP viewers and conference
//! participants, all through the real `prism` binary on loopback.

mod common;
#[path = "common/relay.rs"]
mod relay;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use prism_client::events::{events_link, ServerEvent, WhepEvents};
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

/// A viewer's server-sent events, collected in the background.
struct Events {
    seen: Arc<Mutex<Vec<ServerEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Events {
    async fn open(srv: &TestServer, viewer: &MediaClient) -> Events {
        let links = viewer.snapshot().links;
        let link = events_link(&base(srv), &links)
            .unwrap_or_else(|| panic!("the WHEP answer advertises no events: {links:?}"));
        let mut stream = WhepEvents::open(
            &reqwest::Client::new(),
            &base(srv),
            &link,
            &["active", "inactive", "viewercount", "ended"],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("events: {e:#}\n{}", srv.log()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(ev)) = stream.next().await {
                into.lock().unwrap().push(ev);
            }
        });
        Events { seen, task }
    }

    /// The names of the phase events so far (viewer counts left out).
    fn phases(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.name != "viewercount")
            .map(|e| e.name.clone())
            .collect()
    }

    fn last_count(&self) -> Option<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e.name == "viewercount")
            .map(|e| e.data.clone())
    }

    /// Waits (bounded) until `phases()` satisfies `ok`.
    async fn wait(&self, srv: &TestServer, what: &str, ok: impl Fn(&[String]) -> bool) {
        let until = Instant::now() + Duration::from_secs(15);
        while !ok(&self.phases()) {
            assert!(
                Instant::now() < until,
                "{what}: events so far {:?}\n{}",
                self.phases(),
                srv.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn viewer_survives_a_restart(clean: bool) {
    let srv = TestServer::start(&["--publish-timeout", "1s"]);
    let first = whip(&srv, "restart").await;
    let mut viewers = Vec::new();
    for id in 1..=3 {
        viewers.push(whep(&srv, "restart", id).await);
    }
    let mut events = Vec::new();
    for v in &viewers {
        events.push(Events::open(&srv, v).await);
    }
    let from = |sender: u32| {
        move |s: &prism_client::ClientState| {
            s.received
                .values()
                .filter(|t| t.video)
                .any(|t| t.probes.iter().filter(|(who, _)| *who == sender).count() > 30)
        }
    };
    for v in &viewers {
        v.wait_for(
            Duration::from_secs(20),
            "the first publisher's video",
            from(1),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    }
    for e in &events {
        e.wait(&srv, "live at first", |p| p == ["active"]).await;
    }
    if clean {
        first.command(ClientCommand::Leave).await.unwrap();
    } else {
        // Killed: no DELETE; the server finds out when the publish leg has
        // been silent for publish_timeout (1 s here, peer_timeout is 3 s).
        first.kill();
    }
    // Every viewer is told the broadcast paused, on its same session.
    for e in &events {
        e.wait(&srv, "inactive after the publisher went", |p| {
            p == ["active", "inactive"]
        })
        .await;
    }
    for e in &events {
        assert_eq!(
            e.last_count().as_deref(),
            Some(r#"{"viewercount":3}"#),
            "three viewers"
        );
    }
    let second = MediaClient::start_whip(ClientOptions::new(&base(&srv), "restart", "obs", 2))
        .await
        .unwrap_or_else(|e| panic!("second WHIP publish failed: {e:#}\n{}", srv.log()));
    let started = Instant::now();
    for e in &events {
        e.wait(&srv, "active again with the new publisher", |p| {
            p == ["active", "inactive", "active"]
        })
        .await;
    }
    for v in &viewers {
        v.wait_for(
            Duration::from_secs(10),
            "the second publisher's video",
            from(2),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    }
    let took = started.elapsed();
    for v in &viewers {
        let snap = v.snapshot();
        for t in snap.received.values() {
            // One sender, one numbering: never back, never a jump beyond
            // what loss could explain.
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
    }
    eprintln!("second publisher's video reached all 3 viewers {took:?} after its POST");
    // A viewer that leaves: its stream ends, the others count 2.
    viewers
        .pop()
        .unwrap()
        .command(ClientCommand::Leave)
        .await
        .unwrap();
    let gone = events.pop().unwrap();
    tokio::time::timeout(Duration::from_secs(5), gone.task)
        .await
        .expect("the event stream of a deleted session ends")
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while events[0].last_count().as_deref() != Some(r#"{"viewercount":2}"#) {
        assert!(Instant::now() < until, "viewer count after a leave");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
}

/// The publisher's network is cut for 20 s (every datagram dropped, both
/// ways): the server finds the dead publisher after `publish_timeout`, the
/// three viewers go `inactive` and stay connected through the cut; the
/// encoder reconnects when the network is back (a new WHIP session, as OBS
/// does once its connection failed) and the same viewers carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_viewers_ride_out_a_20_second_cut_of_the_publisher() {
    let srv = TestServer::start(&["--publish-timeout", "2s", "--peer-timeout", "15s"]);
    let media: std::net::SocketAddr = srv.media[0].parse().unwrap();
    let relay = relay::LossyRelay::start(media, 0.0, 0.0, 5).await;
    let mut o = ClientOptions::new(&base(&srv), "cut", "obs", 1);
    o.media_via = Some(relay.addr);
    let first = MediaClient::start_whip(o)
        .await
        .unwrap_or_else(|e| panic!("WHIP publish failed: {e:#}\n{}", srv.log()));
    let mut viewers = Vec::new();
    let mut events = Vec::new();
    for id in 1..=3 {
        let v = whep(&srv, "cut", id).await;
        events.push(Events::open(&srv, &v).await);
        viewers.push(v);
    }
    let from = |sender: u32| {
        move |s: &prism_client::ClientState| {
            s.received
                .values()
                .filter(|t| t.video)
                .any(|t| t.probes.iter().filter(|(who, _)| *who == sender).count() > 30)
        }
    };
    for v in &viewers {
        v.wait_for(Duration::from_secs(20), "video before the cut", from(1))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    }
    relay.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    let cut_at = Instant::now();
    for e in &events {
        e.wait(&srv, "inactive during the cut", |p| {
            p == ["active", "inactive"]
        })
        .await;
    }
    eprintln!("viewers told inactive {:?} into the cut", cut_at.elapsed());
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut_at.elapsed())).await;
    relay.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    first.kill();
    let mut o = ClientOptions::new(&base(&srv), "cut", "obs", 2);
    o.media_via = Some(relay.addr);
    let _second = MediaClient::start_whip(o)
        .await
        .unwrap_or_else(|e| panic!("reconnect after the cut failed: {e:#}\n{}", srv.log()));
    for e in &events {
        e.wait(&srv, "active after the cut", |p| {
            p == ["active", "inactive", "active"]
        })
        .await;
    }
    for v in &viewers {
        v.wait_for(Duration::from_secs(10), "video after the cut", from(2))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
        let snap = v.snapshot();
        assert!(snap.subscribe_connected, "the viewer's connection stayed");
        assert_eq!(snap.disconnects, 0, "no viewer connection dropped");
        for t in snap.received.values() {
            assert_eq!(t.ssrcs.len(), 1, "{}: one SSRC throughout", t.track_id);
            assert_eq!(t.corrupt, 0);
        }
    }
    assert!(relay.dropped_up.load(std::sync::atomic::Ordering::Relaxed) > 100);
}

/// No publisher for `broadcast_grace`: each viewer is told `ended`, its
/// event stream closes and its session is gone (DELETE → 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_ends_after_the_grace_time() {
    let srv = TestServer::start(&["--broadcast-grace", "2s"]);
    let publisher = whip(&srv, "grace").await;
    let viewer = whep(&srv, "grace", 1).await;
    let events = Events::open(&srv, &viewer).await;
    events.wait(&srv, "live", |p| p == ["active"]).await;
    viewer
        .wait_for(Duration::from_secs(20), "audio and video", |s| {
            s.received.len() == 2 && s.received.values().all(|t| !t.ssrcs.is_empty())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    publisher.command(ClientCommand::Leave).await.unwrap();
    events
        .wait(&srv, "ended after the grace", |p| {
            p == ["active", "inactive", "ended"]
        })
        .await;
    tokio::time::timeout(Duration::from_secs(5), events.task)
        .await
        .expect("the event stream ends with the broadcast")
        .unwrap();
    // Its streams ended with RTCP BYE (none while it only waited).
    let ssrcs: Vec<u32> = viewer
        .snapshot()
        .received
        .values()
        .flat_map(|t| t.ssrcs.iter().copied())
        .collect();
    viewer
        .wait_for(Duration::from_secs(5), "BYE for each stream", |s| {
            !ssrcs.is_empty() && ssrcs.iter().all(|x| s.byes.contains(x))
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: streams {ssrcs:?}, BYEs {:?}\n{}",
                viewer.snapshot().byes,
                srv.log()
            )
        });
    let url = viewer.snapshot().session_url.expect("session URL");
    let status = reqwest::Client::new()
        .delete(&url)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404, "the ended session is gone");
    let until = Instant::now() + Duration::from_secs(5);
    while common::value(&common::scrape(&srv).await, "prism_broadcasts_ended_total") != Some(1.0) {
        assert!(
            Instant::now() < until,
            "prism_broadcasts_ended_total stays 0"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The events extension's requests: a bad list is a 400 problem, an
/// unknown session 404, and a stream opened without a list gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_list_errors_are_problems() {
    let srv = TestServer::start(&[]);
    let _publisher = whip(&srv, "sse").await;
    let viewer = whep(&srv, "sse", 1).await;
    let link = events_link(&base(&srv), &viewer.snapshot().links).expect("events link");
    let http = reqwest::Client::new();
    for (ctype, body, want) in [
        ("application/json", "{\"active\": true}", 400),
        ("application/json", "not json", 400),
        ("text/plain", "[\"active\"]", 415),
        (
            "application/json",
            "[\"active\",\"layers\",\"nonsense\"]",
            201,
        ),
    ] {
        let r = http
            .post(&link)
            .header("Content-Type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{ctype} {body}");
        if want != 201 {
            assert_eq!(
                r.headers()["content-type"].to_str().unwrap(),
                "application/problem+json"
            );
        }
    }
    let r = http
        .post(format!("{}/whep/sse/nosuchsession/sse", base(&srv)))
        .header("Content-Type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = http
        .get(format!("{}/whep/sse/nosuchsession/sse/events", base(&srv)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
