//! Loss through the real server: a UDP relay on loopback drops 5% of media
//! datagrams on one side; NACKs recover video on the other.

mod common;
#[path = "common/relay.rs"]
mod relay;

use std::time::Duration;

use common::TestServer;
use prism_client::{ClientOptions, MediaClient, ReceivedTrack};
use relay::LossyRelay;

fn video(s: &prism_client::ClientState) -> ReceivedTrack {
    s.received
        .values()
        .find(|t| t.video)
        .cloned()
        .expect("a video track")
}

/// 5% loss between the server and one subscriber: the subscriber NACKs, the
/// server answers from its history, video arrives complete; another
/// subscriber on a clean path is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_side_loss_is_repaired_by_nack() {
    let mut srv = TestServer::start_with_log(&[], Some("info,prism_server=debug,rtc=warn"));
    let media: std::net::SocketAddr = srv.media[0].parse().unwrap();
    let relay = LossyRelay::start(media, 0.05, 0.0, 42).await;
    let url = srv.ws_url();
    // 100 video packets/s so 5% loss is dozens of packets to recover.
    let mut o = ClientOptions::new(&url, "loss", "pub", 1);
    o.video_interval = Duration::from_millis(10);
    let publisher = MediaClient::start(o).await.unwrap();
    let mut o = ClientOptions::new(&url, "loss", "lossy", 2);
    o.publish_audio = false;
    o.publish_video = false;
    o.media_via = Some(relay.addr);
    let lossy = MediaClient::start(o).await.unwrap();
    let mut o = ClientOptions::new(&url, "loss", "clean", 3);
    o.publish_audio = false;
    o.publish_video = false;
    let clean = MediaClient::start(o).await.unwrap();
    for c in [&lossy, &clean] {
        c.wait_for(Duration::from_secs(20), "video flowing", |s| {
            s.received.values().any(|t| t.video && t.packets > 30)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lv = video(&lossy.snapshot());
    let cv = video(&clean.snapshot());
    let dropped = relay
        .dropped_down
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped > 30, "the relay dropped packets: {dropped}");
    assert!(
        lv.delivered_ratio() >= 0.99,
        "lossy subscriber's video after NACK: {:.4}",
        lv.delivered_ratio()
    );
    assert!(
        cv.delivered_ratio() >= 0.99,
        "clean subscriber unaffected: {:.4}",
        cv.delivered_ratio()
    );
    assert_eq!(lv.corrupt + cv.corrupt, 0);
    // Retransmissions went as RTX (the subscriber negotiated it).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rtx = srv.counter("retransmits_rtx").unwrap_or(0);
    let total = srv.counter("retransmits").unwrap_or(0);
    assert!(
        rtx > 10 && rtx == total,
        "RTX retransmissions: {rtx} of {total}"
    );
    let _ = publisher;
    srv.assert_alive();
}

/// 5% loss between the publisher and the server: the server NACKs upstream,
/// the publisher retransmits, both subscribers get complete video, and the
/// server's REMB reaches the publisher through the lossy path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_side_loss_is_repaired_upstream() {
    let mut srv = TestServer::start(&[]);
    let media: std::net::SocketAddr = srv.media[0].parse().unwrap();
    let relay = LossyRelay::start(media, 0.0, 0.05, 7).await;
    let url = srv.ws_url();
    let mut o = ClientOptions::new(&url, "uplink", "pub", 1);
    o.media_via = Some(relay.addr);
    o.video_interval = Duration::from_millis(10);
    let publisher = MediaClient::start(o).await.unwrap();
    let mut subs = Vec::new();
    for i in 0..2 {
        let mut o = ClientOptions::new(&url, "uplink", &format!("s{i}"), 10 + i);
        o.publish_audio = false;
        o.publish_video = false;
        subs.push(MediaClient::start(o).await.unwrap());
    }
    for c in &subs {
        c.wait_for(Duration::from_secs(20), "video flowing", |s| {
            s.received.values().any(|t| t.video && t.packets > 30)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let dropped = relay.dropped_up.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped > 30, "the relay dropped packets: {dropped}");
    for c in &subs {
        let v = video(&c.snapshot());
        assert!(
            v.delivered_ratio() >= 0.99,
            "video after upstream NACK: {:.4}",
            v.delivered_ratio()
        );
        assert_eq!(v.corrupt, 0);
    }
    // Through the same lossy path, the server's REMB reaches the publisher.
    publisher
        .wait_for(Duration::from_secs(5), "a REMB", |s| !s.rembs.is_empty())
        .await
        .unwrap();
    let _ = publisher;
    srv.assert_alive();
}

/// The server tells the publisher what its subscribers can take (REMB, once a
/// second): the subscriber's send-side estimate from its TWCC feedback, never
/// more than `--max-publish-bitrate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remb_reaches_the_publisher_within_the_cap() {
    for cap in [400_000u64, 20_000_000] {
        let mut srv = TestServer::start(&["--max-publish-bitrate", &cap.to_string()]);
        let url = srv.ws_url();
        let publisher = MediaClient::start(ClientOptions::new(&url, "remb", "pub", 1))
            .await
            .unwrap();
        let mut o = ClientOptions::new(&url, "remb", "sub", 2);
        o.publish_audio = false;
        o.publish_video = false;
        let sub = MediaClient::start(o).await.unwrap();
        sub.wait_for(Duration::from_secs(20), "video flowing", |s| {
            s.received.values().any(|t| t.video && t.packets > 10)
        })
        .await
        .unwrap();
        publisher
            .wait_for(Duration::from_secs(10), "3 REMBs", |s| s.rembs.len() >= 3)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
        let rembs = publisher.snapshot().rembs;
        assert!(
            rembs.iter().all(|b| (100_000..=cap).contains(b)),
            "cap {cap}: within [floor, cap]: {rembs:?}"
        );
        if cap > 10_000_000 {
            // Far above what GCC reaches in seconds: the subscriber's estimate
            // (a few Mbit/s on loopback) is what the publisher is told.
            assert!(rembs.iter().any(|b| *b < cap), "estimate-driven: {rembs:?}");
        }
        srv.assert_alive();
    }
}
