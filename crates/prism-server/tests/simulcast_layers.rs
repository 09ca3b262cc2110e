//! Simulcast end to end with Rust clients through the real server: a
//! publisher sends three rid layers (q 320×180, h 640×360, f 1280×720);
//! subscribers get the layer they ask for, a weak one the layer its link
//! carries (or nothing, told so), and layers nobody takes are switched off
//! at the publisher (dynacast).

mod common;

use std::time::Duration;

use common::TestServer;
use prism_client::{ClientCommand, ClientOptions, LayerSpec, MediaClient};
use prism_signal::{Quality, ServerMessage, TrackSettings};

/// One test at a time: each runs a publisher of three layers and several
/// subscribers, whose estimates must see the loopback's capacity, not a
/// machine starved by the other tests of this file.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn publisher_opts(srv: &TestServer, room: &str) -> ClientOptions {
    let mut o = ClientOptions::new(&srv.ws_url(), room, "cam", 1);
    o.simulcast = Some(LayerSpec::three());
    o
}

fn viewer_opts(srv: &TestServer, room: &str, name: &str, id: u32) -> ClientOptions {
    let mut o = ClientOptions::new(&srv.ws_url(), room, name, id);
    o.publish_audio = false;
    o.publish_video = false;
    o
}

async fn start(srv: &TestServer, o: ClientOptions) -> MediaClient {
    MediaClient::start(o)
        .await
        .unwrap_or_else(|e| panic!("client failed: {e:#}\n{}", srv.log()))
}

/// The id of the publisher's video track, once `c` receives it.
async fn video_track(srv: &TestServer, c: &MediaClient) -> String {
    c.wait_for(Duration::from_secs(20), "the simulcast video", |s| {
        s.received.values().any(|t| t.video && t.packets > 10)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    c.snapshot()
        .received
        .values()
        .find(|t| t.video)
        .map(|t| t.track_id.clone())
        .unwrap()
}

/// Waits until `c` receives layer `layer` of its video, 60 packets into it.
async fn on_layer(srv: &TestServer, c: &MediaClient, layer: u8, what: &str) {
    c.wait_for(Duration::from_secs(20), what, |s| {
        s.received.values().any(|t| {
            t.video
                && t.current_layer() == Some(layer)
                && t.layer_runs.last().is_some_and(|r| r.packets > 60)
        })
    })
    .await
    .unwrap_or_else(|e| {
        let seen: Vec<_> = c
            .snapshot()
            .received
            .values()
            .filter(|t| t.video)
            .map(|t| t.layer_sequence())
            .collect();
        panic!("{e}: layers seen {seen:?}\n{}", srv.log())
    });
}

/// One sender, one numbering: no sequence gap the server made (loopback
/// loses nothing), one SSRC, nothing corrupt.
fn assert_one_stream(c: &MediaClient) {
    let snap = c.snapshot();
    let t = snap.received.values().find(|t| t.video).expect("video");
    // Sequence numbers never received (a retransmission that arrives late
    // fills its hole): the server's numbering leaves none across switches.
    let mut seen = std::collections::BTreeSet::new();
    let mut ext: i64 = 0;
    let mut last: Option<u16> = None;
    for &s in &t.rtp_seqs {
        if let Some(l) = last {
            ext += i64::from(s.wrapping_sub(l) as i16);
        }
        last = Some(s);
        seen.insert(ext);
    }
    let span = seen.last().unwrap_or(&0) - seen.first().unwrap_or(&0) + 1;
    let holes = span - seen.len() as i64;
    assert_eq!(holes, 0, "sequence holes in {:?}", t.layer_sequence());
    assert_eq!(t.ssrcs.len(), 1, "one SSRC across layer switches");
    assert_eq!(t.corrupt, 0);
    let last = t.layer_runs.last().expect("a run");
    assert_eq!(last.missing, 0, "no loss inside the current run");
}

fn settings(track: &str, quality: Quality) -> ClientCommand {
    ClientCommand::TrackSettings(TrackSettings {
        track_id: track.to_owned(),
        quality: Some(quality),
        max_width: None,
        max_height: None,
        enabled: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_subscribers_each_get_the_layer_they_ask_for() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(&[]);
    let _publisher = start(&srv, publisher_opts(&srv, "layers")).await;
    let mut subs = Vec::new();
    for (i, q) in [Quality::Low, Quality::Medium, Quality::High]
        .into_iter()
        .enumerate()
    {
        let c = start(
            &srv,
            viewer_opts(&srv, "layers", &format!("v{i}"), 10 + i as u32),
        )
        .await;
        let track = video_track(&srv, &c).await;
        c.command(settings(&track, q)).await.unwrap();
        subs.push(c);
    }
    let sizes = [(320, 180), (640, 360), (1280, 720)];
    for (i, c) in subs.iter().enumerate() {
        on_layer(&srv, c, i as u8, &format!("subscriber {i} on layer {i}")).await;
        let snap = c.snapshot();
        let t = snap.received.values().find(|t| t.video).unwrap();
        let l = &t.layers[&(i as u8)];
        assert_eq!(
            (l.width as u32, l.height as u32),
            sizes[i],
            "layer {i}'s size"
        );
        assert_one_stream(c);
    }
    // The low subscriber asks for high: it moves up, still one stream.
    let track = video_track(&srv, &subs[0]).await;
    subs[0]
        .command(settings(&track, Quality::High))
        .await
        .unwrap();
    on_layer(&srv, &subs[0], 2, "the low subscriber moved up to high").await;
    assert_one_stream(&subs[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_subscriber_gets_what_its_link_carries_and_nobody_else_loses() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(&[]);
    let _publisher = start(&srv, publisher_opts(&srv, "weak")).await;
    let strong = start(&srv, viewer_opts(&srv, "weak", "strong", 10)).await;
    let mut o = viewer_opts(&srv, "weak", "weak", 11);
    o.max_receive_bitrate = Some(300_000);
    let weak = start(&srv, o).await;
    on_layer(&srv, &strong, 2, "the strong subscriber on the high layer").await;
    on_layer(&srv, &weak, 0, "the 300 kbit/s subscriber on the low layer").await;
    assert_one_stream(&weak);
    // Its link gets worse than the low layer: paused, and told so.
    weak.command(ClientCommand::SetReceiveBitrate(60_000))
        .await
        .unwrap();
    weak.wait_for(Duration::from_secs(10), "track_paused", |s| {
        s.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::TrackPaused(p) if p.reason == "bandwidth"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    // Better again: resumed, and back up step by step.
    weak.command(ClientCommand::SetReceiveBitrate(5_000_000))
        .await
        .unwrap();
    weak.wait_for(Duration::from_secs(15), "track_resumed", |s| {
        s.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::TrackResumed(_)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    on_layer(&srv, &weak, 2, "the recovered subscriber back on high").await;
    // The strong one kept the high layer: it ends there, and got most of
    // its video on it (a loaded CI machine drops loopback packets of its
    // own, which may move it down for a moment, but never for the weak
    // subscriber's sake).
    on_layer(&srv, &strong, 2, "the strong subscriber still on high").await;
    let snap = strong.snapshot();
    let t = snap.received.values().find(|t| t.video).unwrap();
    let high: u64 = t
        .layer_runs
        .iter()
        .filter(|r| r.layer == 2)
        .map(|r| r.packets)
        .sum();
    let all: u64 = t.layer_runs.iter().map(|r| r.packets).sum();
    assert!(
        high * 10 >= all * 7,
        "strong subscriber: {high} of {all} video packets on the high layer, layers {:?}",
        t.layer_sequence()
    );
    assert_one_stream(&strong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_nobody_takes_are_switched_off_at_the_publisher() {
    let _serial = SERIAL.lock().await;
    let srv = TestServer::start(&[]);
    let publisher = start(&srv, publisher_opts(&srv, "dyna")).await;
    let viewer = start(&srv, viewer_opts(&srv, "dyna", "v", 10)).await;
    let track = video_track(&srv, &viewer).await;
    viewer
        .command(settings(&track, Quality::Low))
        .await
        .unwrap();
    publisher
        .wait_for(Duration::from_secs(15), "f switched off", |s| {
            s.layers_sent.get("f").is_some_and(|l| l.paused)
                && s.layers_sent.get("q").is_some_and(|l| !l.paused)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    viewer
        .command(settings(&track, Quality::High))
        .await
        .unwrap();
    publisher
        .wait_for(Duration::from_secs(15), "f back on", |s| {
            s.layers_sent.get("f").is_some_and(|l| !l.paused)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    on_layer(&srv, &viewer, 2, "the viewer on the high layer again").await;
}
