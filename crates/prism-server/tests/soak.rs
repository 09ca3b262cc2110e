//! Soak: many join → publish → leave cycles through the real server leave
//! nothing behind. After the churn, the server's own gauges (participants,
//! peer connections, tracks, subscriptions, rooms, room placements,
//! WebSocket and WHIP sessions, runtime tasks) are back to where they
//! started, and its resident memory is within 10% of where it stood after
//! warm-up.
//!
//! The test command runs a reduced form (`PRISM_SOAK_CYCLES`, default 60);
//! `scripts/soak.sh` runs it at full size (1000 cycles).

mod common;

use std::time::Duration;

use common::{scrape, TestServer};
use prism_client::{ClientCommand, ClientOptions, MediaClient};

/// The sum of every sample of the family `name` (all label sets).
fn gauge(text: &str, name: &str) -> f64 {
    let samples: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labels) => labels.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
        .collect();
    assert!(!samples.is_empty(), "no {name} in /metrics");
    samples.iter().sum()
}

const LEAK_GAUGES: &[&str] = &[
    "prism_participants",
    "prism_peer_connections",
    "prism_published_tracks",
    "prism_subscriptions",
    "prism_rooms",
    "prism_room_directory_entries",
    "prism_websocket_sessions",
    "prism_whip_whep_sessions",
];

/// A cycle's step, bounded: a hang fails the test with the server's log.
async fn bounded<T>(
    srv: &TestServer,
    cycle: u32,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> T {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("cycle {cycle}: {e:#}\n{}", srv.log()),
        Err(_) => panic!("cycle {cycle}: stuck for 30 s\n{}", srv.log()),
    }
}

async fn leave(c: MediaClient) {
    c.command(ClientCommand::Leave).await.unwrap();
    for _ in 0..100 {
        if c.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("client did not finish after leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_publish_leave_cycles_leave_nothing_behind() {
    let cycles: u32 = std::env::var("PRISM_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    // Every fifth cycle is two WHIP requests: above the default per-address rate.
    let mut srv = TestServer::start(&["--max-http-rate", "1000000"]);
    let url = srv.ws_url();
    let base = format!("http://{}", srv.http);
    let idle = scrape(&srv).await;
    let tasks_idle = gauge(&idle, "prism_runtime_tasks");

    // A long-lived subscriber: every cycle's publisher reaches it, so each
    // cycle also renegotiates its subscribe leg twice.
    let mut o = ClientOptions::new(&url, "soak", "watcher", 0);
    o.publish_audio = false;
    o.publish_video = false;
    // PRISM_SOAK_WATCHER=0 leaves it out (to tell its cost from the rest).
    let watch = std::env::var("PRISM_SOAK_WATCHER").map_or(true, |v| v != "0");
    let watcher = if watch {
        Some(MediaClient::start(o).await.unwrap())
    } else {
        None
    };

    let warm_at = (cycles / 10).max(5);
    let mut rss_warm = 0.0;
    let mut rss_curve = Vec::new();
    for i in 1..=cycles {
        if i % 5 == 0 {
            // WHIP publish and DELETE: the HTTP session path.
            let c = bounded(
                &srv,
                i,
                MediaClient::start_whip(ClientOptions::new(&base, "soak", "whip", 10_000 + i)),
            )
            .await;
            c.wait_for(Duration::from_secs(10), "WHIP publishing", |s| {
                s.sent_video > 3
            })
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}\n{}", srv.log()));
            bounded(&srv, i, async {
                leave(c).await;
                Ok(())
            })
            .await;
        } else {
            // A fresh room every tenth cycle: rooms open and close too.
            let room = if i % 10 == 1 {
                format!("soak-{i}")
            } else {
                "soak".to_owned()
            };
            let c = bounded(
                &srv,
                i,
                MediaClient::start(ClientOptions::new(&url, &room, &format!("p{i}"), i)),
            )
            .await;
            if let (Some(watcher), "soak") = (&watcher, room.as_str()) {
                watcher
                    .wait_for(Duration::from_secs(10), "this cycle's media", |s| {
                        s.received
                            .values()
                            .any(|t| t.probes.first().is_some_and(|(id, _)| *id == i))
                    })
                    .await
                    .unwrap_or_else(|e| panic!("cycle {i}: {e}\n{}", srv.log()));
            } else {
                c.wait_for(Duration::from_secs(10), "publishing", |s| s.sent_video > 3)
                    .await
                    .unwrap();
            }
            bounded(&srv, i, async {
                leave(c).await;
                Ok(())
            })
            .await;
        }
        if i == warm_at {
            rss_warm = gauge(&scrape(&srv).await, "process_resident_memory_bytes");
        }
        if i % (cycles / 10).max(1) == 0 {
            let rss = gauge(&scrape(&srv).await, "process_resident_memory_bytes");
            rss_curve.push(format!("{i}:{:.1}", rss / 1048576.0));
        }
    }
    if let Some(w) = watcher {
        leave(w).await;
    }

    // Everything drains: rooms close after their empty timeout.
    let mut last = String::new();
    let mut clean = false;
    for _ in 0..100 {
        last = scrape(&srv).await;
        if LEAK_GAUGES.iter().all(|g| gauge(&last, g) == 0.0) {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary: Vec<String> = LEAK_GAUGES
        .iter()
        .map(|g| format!("{g}={}", gauge(&last, g)))
        .collect();
    assert!(clean, "left behind after {cycles} cycles: {summary:?}");
    // Runtime tasks: back to idle, give or take this scrape's own
    // connection and the timers of connections closing.
    let tasks = gauge(&last, "prism_runtime_tasks");
    assert!(
        tasks <= tasks_idle + 4.0,
        "runtime tasks {tasks} after the churn, {tasks_idle} idle"
    );
    let rss_end = gauge(&last, "process_resident_memory_bytes");
    let growth = rss_end / rss_warm;
    eprintln!("soak: RSS MiB by cycle: {}", rss_curve.join(" "));
    eprintln!(
        "soak: {cycles} cycles; RSS {:.1} MiB after warm-up (cycle {warm_at}), {:.1} MiB at the end ({:+.1}%); tasks {tasks_idle} idle, {tasks} after",
        rss_warm / 1048576.0,
        rss_end / 1048576.0,
        (growth - 1.0) * 100.0
    );
    assert!(
        growth <= 1.10,
        "RSS grew {:.1}% ({rss_warm} → {rss_end})",
        (growth - 1.0) * 100.0
    );
    srv.assert_alive();
}

/// A room that empties while a deferred keyframe request is pending (two
/// subscribers arrived within the keyframe throttle window, then everyone
/// left at once) must still close, and its shard keep serving. This once
/// spun the shard forever: the empty room's close deadline was re-armed in
/// the past inside the loop that takes due deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_emptied_with_a_deferred_keyframe_request_closes() {
    let mut srv = TestServer::start(&[]);
    let url = srv.ws_url();
    for round in 0..3 {
        let room = format!("kf-{round}");
        let p = MediaClient::start(ClientOptions::new(&url, &room, "p", 1))
            .await
            .unwrap();
        p.wait_for(Duration::from_secs(10), "publishing", |s| s.sent_video > 3)
            .await
            .unwrap();
        let mut subs = Vec::new();
        for i in 0..2 {
            let mut o = ClientOptions::new(&url, &room, &format!("s{i}"), 2 + i);
            o.publish_audio = false;
            o.publish_video = false;
            subs.push(MediaClient::start(o).await.unwrap());
        }
        for s in &subs {
            s.wait_for(Duration::from_secs(10), "subscribed", |s| {
                !s.received.is_empty()
            })
            .await
            .unwrap();
        }
        // Everyone leaves inside the 500 ms throttle window.
        for c in subs.into_iter().chain([p]) {
            leave(c).await;
        }
    }
    let mut last = String::new();
    for _ in 0..60 {
        last = scrape(&srv).await;
        if gauge(&last, "prism_rooms") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gauge(&last, "prism_rooms"), 0.0, "rooms did not close");
    let ready = reqwest::get(format!("http://{}/readyz", srv.http))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200, "the shard stopped ticking");
    srv.assert_alive();
}
