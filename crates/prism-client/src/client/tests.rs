//! The simulcast sender against a real `rtc` receiver in the same process,
//! on loopback sockets: the receiving engine plays the server's part (it
//! answers `a=simulcast:recv` and binds each layer from mid + rid).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_signal::{LayersWanted, MidTrack};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use tokio::sync::mpsc;

use super::{ClientOptions, Driver, LayerSpec, Mode};
use crate::leg::{LegConn, LegSetup};
use crate::state::{record, ClientState};

fn simulcast_opts() -> ClientOptions {
    let mut o = ClientOptions::new("ws://unused", "r", "pub", 7);
    o.simulcast = Some(LayerSpec::three());
    o
}

fn offline(opts: ClientOptions) -> Driver {
    let (_tx, rx) = mpsc::channel(1);
    Driver::idle(
        opts,
        Mode::Socket,
        None,
        Arc::new(Mutex::new(ClientState::default())),
        rx,
    )
    .expect("no I/O in idle")
}

/// The video m-section of an SDP.
fn video_section(sdp: &str) -> String {
    let start = sdp.find("m=video").expect("a video section");
    let rest = &sdp[start..];
    let end = rest[1..].find("\nm=").map_or(rest.len(), |e| e + 1);
    rest[..end].to_owned()
}

#[tokio::test]
async fn simulcast_offer_has_three_rids_and_no_rtx() {
    let mut d = offline(simulcast_opts());
    let (sdp, tracks) = d.publish_offer().await.unwrap();
    let video = video_section(&sdp);
    for rid in ["q", "h", "f"] {
        assert!(video.contains(&format!("a=rid:{rid} send")), "{video}");
    }
    assert!(video.contains("a=simulcast:send q;h;f"), "{video}");
    // (Not a bare "rtx": the random ICE credentials may spell it.)
    assert!(
        !video.contains("rtx/90000") && !video.contains("apt="),
        "{video}"
    );
    assert!(
        video.contains("urn:ietf:params:rtp-hdrext:sdes:mid"),
        "{video}"
    );
    assert!(
        video.contains("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
        "{video}"
    );
    // The declaration carries the layers, on the video section only.
    let decl: Vec<_> = tracks.iter().filter(|t| !t.layers.is_empty()).collect();
    assert_eq!(decl.len(), 1);
    let layers: Vec<(&str, u32, u32)> = decl[0]
        .layers
        .iter()
        .map(|l| (l.rid.as_str(), l.width, l.height))
        .collect();
    assert_eq!(layers, [("q", 320, 180), ("h", 640, 360), ("f", 1280, 720)]);
    assert_eq!(decl[0].layers[2].max_bitrate, Some(1_500_000));

    // Without simulcast: one stream, RTX as before, no layers declared.
    let mut d = offline(ClientOptions::new("ws://unused", "r", "p", 1));
    let (sdp, tracks) = d.publish_offer().await.unwrap();
    let video = video_section(&sdp);
    assert!(!video.contains("a=rid:"), "{video}");
    assert!(video.contains("rtx/90000"), "{video}");
    assert!(tracks.iter().all(|t| t.layers.is_empty()));
}

/// The receiving end: a default client leg, recvonly, answering the offer.
struct Receiver {
    leg: LegConn,
    /// (rid, SSRC) of each layer the engine bound.
    bound: BTreeMap<String, u32>,
    state: ClientState,
}

impl Receiver {
    /// Moves datagrams both ways and runs both engines' timers once.
    async fn pump(&mut self, d: &mut Driver) {
        let now = Instant::now();
        let publish = d.publish.as_mut().expect("publishing");
        let _ = publish.pc.handle_timeout(now);
        let _ = self.leg.pc.handle_timeout(now);
        d.send_media(now);
        d.drain();
        while let Some(w) = self.leg.pc.poll_write() {
            let _ = self
                .leg
                .socket
                .try_send_to(&w.message, w.transport.peer_addr);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut buf = vec![0u8; 2048];
        let publish = d.publish.as_mut().expect("publishing");
        while let Ok((n, from)) = publish.socket.try_recv_from(&mut buf) {
            publish.read(&buf[..n], from);
        }
        while let Ok((n, from)) = self.leg.socket.try_recv_from(&mut buf) {
            self.leg.read(&buf[..n], from);
        }
        while let Some(ev) = self.leg.pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    if let (Some(rid), ssrc) = (init.rid.clone(), init.ssrc) {
                        self.bound.insert(rid, ssrc);
                    }
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                    self.leg.connected = s == RTCPeerConnectionState::Connected;
                }
                _ => {}
            }
        }
        while let Some(m) = self.leg.pc.poll_read() {
            if let RTCMessage::RtpPacket(track_id, pkt) = m.message {
                record(&mut self.state, track_id, &pkt, true);
            }
        }
    }

    async fn pump_until(
        &mut self,
        d: &mut Driver,
        what: &str,
        done: impl Fn(&Self, &Driver) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self, d) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.pump(d).await;
        }
    }
}

async fn connected_pair() -> (Driver, Receiver) {
    let mut d = offline(simulcast_opts());
    let (offer, _) = d.publish_offer().await.unwrap();
    let mut leg = LegConn::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &LegSetup::default())
        .await
        .unwrap();
    let answer = leg.answer(offer).unwrap();
    assert!(answer.contains("a=simulcast:recv q;h;f"), "{answer}");
    let video = video_section(
        &d.publish
            .as_ref()
            .unwrap()
            .pc
            .local_description()
            .unwrap()
            .sdp,
    );
    let mid = video
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .unwrap()
        .to_owned();
    d.apply_publish_answer(
        answer,
        vec![MidTrack {
            mid,
            track_id: "TR_video".into(),
        }],
    )
    .unwrap();
    let mut r = Receiver {
        leg,
        bound: BTreeMap::new(),
        state: ClientState::default(),
    };
    r.pump_until(&mut d, "both legs connected", |r, d| {
        r.leg.connected && d.publish.as_ref().unwrap().connected
    })
    .await;
    (d, r)
}

fn layers_seen(r: &Receiver) -> BTreeMap<u8, (u16, u16)> {
    r.state
        .received
        .values()
        .flat_map(|t| t.layers.iter().map(|(i, l)| (*i, (l.width, l.height))))
        .collect()
}

#[tokio::test]
async fn a_receiving_engine_binds_every_layer_by_mid_and_rid() {
    let (mut d, mut r) = connected_pair().await;
    r.pump_until(&mut d, "three layers bound and received", |r, _| {
        r.bound.len() == 3 && layers_seen(r).len() == 3
    })
    .await;
    assert_eq!(
        r.bound.keys().map(String::as_str).collect::<Vec<_>>(),
        ["f", "h", "q"]
    );
    assert_eq!(
        layers_seen(&r),
        BTreeMap::from([(0, (320, 180)), (1, (640, 360)), (2, (1280, 720))])
    );
    assert!(r.state.received.values().all(|t| t.corrupt == 0));
    // One engine track for the three layers, as for a browser's simulcast.
    let video: Vec<_> = r.state.received.values().filter(|t| t.video).collect();
    assert_eq!(video.len(), 1);
    let t = video[0];
    // Each layer's probes arrive in order, so far with no gap.
    assert!(
        t.layer_runs.iter().all(|r| r.missing == 0),
        "{:?}",
        t.layer_runs
    );
    // Each layer's bytes follow its bitrate: f sends ten times q's.
    let (q, f) = (t.layers[&0].bytes, t.layers[&2].bytes);
    assert!(f > 5 * q, "q {q} bytes, f {f} bytes");
}

#[tokio::test]
async fn a_pli_for_one_layer_gets_a_keyframe_on_that_layer_only() {
    let (mut d, mut r) = connected_pair().await;
    r.pump_until(&mut d, "three layers bound", |r, _| r.bound.len() == 3)
        .await;
    // Past the start-up keyframes, then ask for one on h.
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.pump(&mut d).await;
    let before = d.state.lock().unwrap().layers_sent.clone();
    let receiver = r.leg.pc.get_receivers().next().unwrap();
    let pli = PictureLossIndication {
        sender_ssrc: 1,
        media_ssrc: r.bound["h"],
    };
    r.leg
        .pc
        .rtp_receiver(receiver)
        .unwrap()
        .write_rtcp(Instant::now(), vec![Box::new(pli)])
        .unwrap();
    r.pump_until(&mut d, "the PLI answered", |_, d| {
        d.state.lock().unwrap().layers_sent["h"].keyframes > before["h"].keyframes
    })
    .await;
    let after = d.state.lock().unwrap().layers_sent.clone();
    assert_eq!(after["h"].keyframe_requests, 1);
    assert_eq!(after["q"].keyframe_requests, 0);
    assert_eq!(after["f"].keyframe_requests, 0);
    assert_eq!(after["q"].keyframes, before["q"].keyframes);
    assert_eq!(after["f"].keyframes, before["f"].keyframes);
}

#[tokio::test]
async fn layers_wanted_switches_layers_off_and_back_on() {
    let (mut d, mut r) = connected_pair().await;
    r.pump_until(&mut d, "three layers received", |r, _| {
        layers_seen(r).len() == 3
    })
    .await;
    d.on_layers_wanted(&LayersWanted {
        track_id: "TR_video".into(),
        rids: vec!["q".into()],
    });
    // Let what is in flight land, then count.
    for _ in 0..5 {
        r.pump(&mut d).await;
    }
    let count = |r: &Receiver, i: u8| {
        r.state
            .received
            .values()
            .map(|t| t.layers.get(&i).map_or(0, |l| l.packets))
            .sum::<u64>()
    };
    let (h0, f0, q0) = (count(&r, 1), count(&r, 2), count(&r, 0));
    for _ in 0..50 {
        r.pump(&mut d).await;
    }
    assert_eq!((count(&r, 1), count(&r, 2)), (h0, f0), "h and f stopped");
    assert!(count(&r, 0) > q0, "q goes on");
    {
        let st = d.state.lock().unwrap();
        assert!(st.layers_sent["h"].paused && st.layers_sent["f"].paused);
        assert_eq!(st.dynacast_switches, 2);
    }
    let f_keys = d.state.lock().unwrap().layers_sent["f"].keyframes;
    d.on_layers_wanted(&LayersWanted {
        track_id: "TR_video".into(),
        rids: vec!["q".into(), "f".into()],
    });
    r.pump_until(&mut d, "f back", |r, _| count(r, 2) > f0)
        .await;
    let st = d.state.lock().unwrap();
    assert!(!st.layers_sent["f"].paused && st.layers_sent["h"].paused);
    assert_eq!(
        st.layers_sent["f"].keyframes,
        f_keys + 1,
        "f resumes on a keyframe"
    );
    // Another track's wish changes nothing.
    let names: BTreeSet<_> = st.layers_sent.keys().cloned().collect();
    assert_eq!(names, BTreeSet::from(["q".into(), "h".into(), "f".into()]));
}

#[tokio::test]
async fn a_weak_subscriber_answers_without_twcc_and_reports_its_cap_in_remb() {
    let mut p = offline(simulcast_opts());
    let (offer, _) = p.publish_offer().await.unwrap();
    let mut opts = ClientOptions::new("ws://unused", "r", "weak", 8);
    opts.publish_audio = false;
    opts.publish_video = false;
    opts.max_receive_bitrate = Some(300_000);
    let mut s = offline(opts);
    let mut leg = LegConn::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &s.receive_setup())
        .await
        .unwrap();
    let answer = leg.answer(offer).unwrap();
    // No transport-cc: the server then takes this leg's REMB as its estimate.
    assert!(!answer.contains("transport-cc"), "{answer}");
    assert!(answer.contains("goog-remb"), "{answer}");
    s.subscribe = Some(leg);
    p.apply_publish_answer(answer, Vec::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 2048];
    while !p.state.lock().unwrap().rembs.contains(&300_000) {
        assert!(Instant::now() < deadline, "no REMB arrived");
        let now = Instant::now();
        for l in [p.publish.as_mut(), s.subscribe.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = l.pc.handle_timeout(now);
        }
        p.send_media(now);
        s.send_remb(now);
        p.drain();
        s.drain();
        tokio::time::sleep(Duration::from_millis(2)).await;
        for l in [p.publish.as_mut(), s.subscribe.as_mut()]
            .into_iter()
            .flatten()
        {
            while let Ok((n, from)) = l.socket.try_recv_from(&mut buf) {
                l.read(&buf[..n], from);
            }
        }
    }
    assert!(s.state.lock().unwrap().rembs_sent >= 1);
}
