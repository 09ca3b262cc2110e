//! Chaos through the real server: a publisher process killed with SIGKILL,
//! a subscriber that stops reading, a client behind 20% loss and
//! reordering, and a flood of malformed datagrams. In each, everyone else in
//! the room keeps getting their media (≥ 99% of packets) and the server
//! neither panics nor stalls.

mod common;
#[path = "common/relay.rs"]
mod relay;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{garbage, TestServer};
use prism_client::{ClientCommand, ClientOptions, MediaClient, ReceivedTrack};
use prism_signal::ServerMessage;
use relay::LossyRelay;

fn publisher_opts(url: &str, room: &str, name: &str, id: u32) -> ClientOptions {
    let mut o = ClientOptions::new(url, room, name, id);
    // Keyframes every second: `delivered_ratio` counts video from the
    // second keyframe a subscriber sees.
    o.keyframe_interval = Duration::from_secs(1);
    o
}

fn viewer_opts(url: &str, room: &str, name: &str, id: u32) -> ClientOptions {
    let mut o = ClientOptions::new(url, room, name, id);
    o.publish_audio = false;
    o.publish_video = false;
    o
}

/// Every track `c` receives from sender `id`.
fn from_sender(c: &MediaClient, id: u32) -> Vec<ReceivedTrack> {
    c.snapshot()
        .received
        .into_values()
        .filter(|t| t.probes.first().is_some_and(|(s, _)| *s == id))
        .collect()
}

async fn flowing(c: &MediaClient, srv: &TestServer, tracks: usize) {
    c.wait_for(Duration::from_secs(20), "media flowing", |s| {
        s.received.values().filter(|t| t.packets > 20).count() >= tracks
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
}

/// Each of `c`'s tracks from sender `id` delivered at least `min`.
fn assert_delivered(c: &MediaClient, id: u32, min: f64, who: &str) {
    let tracks = from_sender(c, id);
    assert_eq!(tracks.len(), 2, "{who}: audio and video from {id}");
    for t in tracks {
        let r = t.delivered_ratio();
        assert!(
            r >= min,
            "{who}: {} track {} delivered {r:.4} (< {min})",
            if t.video { "video" } else { "audio" },
            t.track_id
        );
        assert_eq!(t.corrupt, 0, "{who}: corrupt payloads");
    }
}

/// The publisher half of [`killed_publisher_process`]: runs in a child
/// process (this test binary, re-executed) so it can be SIGKILLed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by killed_publisher_process in a child process"]
async fn child_publisher() {
    let Ok(url) = std::env::var("PRISM_CHAOS_URL") else {
        return;
    };
    let _p = MediaClient::start(publisher_opts(&url, "chaos", "victim", 66))
        .await
        .unwrap();
    // Bounded: the parent kills this process long before.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_publisher_process() {
    let mut srv = TestServer::start(&[]);
    let url = srv.ws_url();
    let survivor = MediaClient::start(publisher_opts(&url, "chaos", "survivor", 1))
        .await
        .unwrap();
    let viewer = MediaClient::start(viewer_opts(&url, "chaos", "viewer", 2))
        .await
        .unwrap();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["child_publisher", "--exact", "--ignored", "--nocapture"])
            .env("PRISM_CHAOS_URL", &url)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    flowing(&viewer, &srv, 4).await;
    assert_eq!(
        from_sender(&viewer, 66).len(),
        2,
        "the victim's media arrives"
    );

    // SIGKILL: no `leave`, no DTLS close, no WebSocket close frame.
    child.0.kill().unwrap();
    let killed_at = Instant::now();
    child.0.wait().unwrap();
    // The test server's peer timeout is 3 s; the kernel's TCP reset
    // usually makes it much sooner.
    viewer
        .wait_for(Duration::from_secs(5), "victim's tracks unpublished", |s| {
            s.messages
                .iter()
                .filter(|m| matches!(m, ServerMessage::TrackUnpublished(_)))
                .count()
                == 2
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // The room carries on: the survivor's media keeps arriving complete.
    let before: u64 = from_sender(&viewer, 1).iter().map(|t| t.packets).sum();
    viewer
        .wait_for(Duration::from_secs(10), "survivor keeps flowing", |s| {
            s.received
                .values()
                .filter(|t| t.probes.first().is_some_and(|(p, _)| *p == 1))
                .map(|t| t.packets)
                .sum::<u64>()
                > before + 100
        })
        .await
        .unwrap();
    assert_delivered(&viewer, 1, 0.99, "viewer");
    drop(survivor);
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_does_not_slow_others() {
    let mut srv = TestServer::start(&[]);
    let url = srv.ws_url();
    let mut o = publisher_opts(&url, "slow", "pub", 1);
    o.video_interval = Duration::from_millis(10);
    o.video_bytes = 1100;
    let _publisher = MediaClient::start(o).await.unwrap();
    let slow = MediaClient::start(viewer_opts(&url, "slow", "slow", 2))
        .await
        .unwrap();
    let healthy = MediaClient::start(viewer_opts(&url, "slow", "healthy", 3))
        .await
        .unwrap();
    flowing(&slow, &srv, 2).await;
    flowing(&healthy, &srv, 2).await;

    // The slow one reads nothing for 2 s (less than the peer timeout), so
    // its socket buffer overflows while the server keeps sending.
    slow.command(ClientCommand::Stall(Duration::from_secs(2)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_delivered(&healthy, 1, 0.99, "healthy subscriber");
    // And the slow one picks up again afterwards.
    let before = slow
        .snapshot()
        .received
        .values()
        .map(|t| t.packets)
        .sum::<u64>();
    slow.wait_for(Duration::from_secs(10), "slow consumer resumes", |s| {
        s.received.values().map(|t| t.packets).sum::<u64>() > before + 50
    })
    .await
    .unwrap();
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_reordering_client_leaves_others_unaffected() {
    let mut srv = TestServer::start(&[]);
    let media: std::net::SocketAddr = srv.media[0].parse().unwrap();
    // 20% loss each way, and a tenth of what passes swapped with its successor.
    let relay = LossyRelay::start_with(media, 0.20, 0.20, 0.10, 99).await;
    let url = srv.ws_url();
    let _publisher = MediaClient::start(publisher_opts(&url, "lossy", "pub", 1))
        .await
        .unwrap();
    // The impaired client publishes too (its uplink is lossy) and receives.
    let mut o = publisher_opts(&url, "lossy", "impaired", 2);
    o.media_via = Some(relay.addr);
    let impaired = MediaClient::start(o).await.unwrap();
    let clean = MediaClient::start(viewer_opts(&url, "lossy", "clean", 3))
        .await
        .unwrap();
    flowing(&clean, &srv, 4).await;
    flowing(&impaired, &srv, 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let dropped = relay
        .dropped_down
        .load(std::sync::atomic::Ordering::Relaxed)
        + relay.dropped_up.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped > 100, "the relay dropped {dropped}");
    // The clean subscriber gets the clean publisher's media complete.
    assert_delivered(&clean, 1, 0.99, "clean subscriber");
    // The impaired client still receives something of it.
    assert!(from_sender(&impaired, 1).iter().all(|t| t.packets > 20));
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagram_flood_does_not_disturb_a_call() {
    let mut srv = TestServer::start(&[]);
    let media: std::net::SocketAddr = srv.media[0].parse().unwrap();
    // A relay whose sockets are the addresses the server knows for the
    // victim: garbage injected there reaches that client's own peer
    // connections (not just the stray-datagram check).
    let relay = LossyRelay::start(media, 0.0, 0.0, 1).await;
    let url = srv.ws_url();
    let _publisher = MediaClient::start(publisher_opts(&url, "flood", "pub", 1))
        .await
        .unwrap();
    let mut o = viewer_opts(&url, "flood", "victim", 2);
    o.media_via = Some(relay.addr);
    let victim = MediaClient::start(o).await.unwrap();
    let bystander = MediaClient::start(viewer_opts(&url, "flood", "bystander", 3))
        .await
        .unwrap();
    flowing(&victim, &srv, 2).await;
    flowing(&bystander, &srv, 2).await;

    // 20 000 datagrams over about 4 s, half from strangers and half from
    // the victim's own addresses. Bounded.
    let strangers: Vec<tokio::net::UdpSocket> = futures_sockets(8).await;
    let uplinks = relay.uplinks();
    assert!(!uplinks.is_empty());
    let start = Instant::now();
    for i in 0..20_000u32 {
        let d = garbage(i);
        if i % 2 == 0 {
            let s = &strangers[(i as usize / 2) % strangers.len()];
            let _ = s.send_to(&d, media).await;
        } else {
            let s = &uplinks[(i as usize / 2) % uplinks.len()];
            let _ = s.send_to(&d, media).await;
        }
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let flood = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_delivered(&bystander, 1, 0.99, "bystander");
    // The victim's connection survived the garbage aimed at it.
    assert_delivered(&victim, 1, 0.99, "victim");
    let before = victim
        .snapshot()
        .received
        .values()
        .map(|t| t.packets)
        .sum::<u64>();
    victim
        .wait_for(Duration::from_secs(5), "victim still receiving", |s| {
            s.received.values().map(|t| t.packets).sum::<u64>() > before + 50
        })
        .await
        .unwrap_or_else(|e| panic!("{e} (flood took {flood:?})\n{}", srv.log()));
    srv.assert_alive();
}

async fn futures_sockets(n: usize) -> Vec<tokio::net::UdpSocket> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    v
}
