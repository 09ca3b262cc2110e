//! Logs that cannot be flooded: 50 000 garbage datagrams (random bytes,
//! DTLS-looking, RTP/RTCP-looking, STUN-looking, empty), half from strangers
//! and half from a victim's own addresses (through a relay, so they reach
//! the victim's peer connections), at a real server with a real publisher
//! and viewer, leave fewer than 100 log lines, with the server's default
//! log filter and with a plain `RUST_LOG=info`. Every datagram is counted
//! instead: `prism_dropped_datagrams_total` and `prism_engine_errors_total`,
//! plus at most one summary line per shard every 10 s.

mod common;
#[path = "common/relay.rs"]
mod relay;

use std::time::{Duration, Instant};

use common::{garbage, scrape, TestServer, SERVER_DEFAULT_LOG};
use prism_client::{ClientOptions, MediaClient};
use relay::LossyRelay;

const DATAGRAMS: u32 = 50_000;
const MAX_LINES: usize = 100;

fn sum(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn flood_leaves_few_lines(filter: &str) {
    let mut srv = TestServer::start_with_log(&[], Some(filter));
    let media: std::net::SocketAddr = srv.media[0].parse().unwrap();
    let relay = LossyRelay::start(media, 0.0, 0.0, 3).await;
    let url = srv.ws_url();
    let _publisher = MediaClient::start(ClientOptions::new(&url, "flood", "pub", 1))
        .await
        .unwrap();
    let mut o = ClientOptions::new(&url, "flood", "victim", 2);
    o.publish_audio = false;
    o.publish_video = false;
    o.media_via = Some(relay.addr);
    let victim = MediaClient::start(o).await.unwrap();
    victim
        .wait_for(Duration::from_secs(20), "media flowing", |s| {
            s.received.values().filter(|t| t.packets > 20).count() >= 2
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));

    let lines_before = srv.log().lines().count();
    let mut strangers = Vec::new();
    for _ in 0..8 {
        strangers.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let uplinks = relay.uplinks();
    assert!(!uplinks.is_empty());
    let start = Instant::now();
    for i in 0..DATAGRAMS {
        let d = garbage(i);
        let s = if i % 2 == 0 {
            &strangers[(i as usize / 2) % strangers.len()]
        } else {
            &*uplinks[(i as usize / 2) % uplinks.len()]
        };
        let _ = s.send_to(&d, media).await;
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let flood = start.elapsed();
    // Let the shard take its counts and write its summary (every 10 s).
    let mut log = String::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        log = srv.log();
        if log.contains("refused by the engine") {
            break;
        }
    }
    let flood_lines: Vec<&str> = log.lines().skip(lines_before).collect();
    assert!(
        flood_lines.len() < MAX_LINES,
        "{filter}: {} log lines for {DATAGRAMS} garbage datagrams in {flood:?}:\n{}",
        flood_lines.len(),
        flood_lines[..flood_lines.len().min(20)].join("\n")
    );
    assert!(
        flood_lines
            .iter()
            .any(|l| l.contains("refused by the engine")),
        "{filter}: a summary line of the drops:\n{}",
        flood_lines.join("\n")
    );
    // Everything was counted instead.
    let metrics = scrape(&srv).await;
    let dropped = sum(&metrics, "prism_dropped_datagrams_total{");
    let refused = sum(&metrics, "prism_engine_errors_total{");
    assert!(dropped > 20_000.0, "{filter}: dropped {dropped}\n{metrics}");
    assert!(
        refused > 1_000.0,
        "{filter}: engine refused {refused}\n{metrics}"
    );
    // The victim's call survived the garbage aimed at its own addresses.
    let before: u64 = victim.snapshot().received.values().map(|t| t.packets).sum();
    victim
        .wait_for(Duration::from_secs(5), "victim still receiving", |s| {
            s.received.values().map(|t| t.packets).sum::<u64>() > before + 50
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_flood_with_the_default_filter() {
    flood_leaves_few_lines(SERVER_DEFAULT_LOG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_flood_with_rust_log_info() {
    flood_leaves_few_lines("info").await;
}
