//! docs/signaling.md, checked against the real server: what the subscribe
//! leg's offers look like, when the first one comes, which messages get a
//! reply, how the server closes a socket, and what a replacing socket sees.
//! Each test names the doc's statement it checks.

mod common;

use std::time::Duration;

use common::TestServer;
use prism_client::{ClientCommand, ClientOptions, MediaClient, Signaling};
use prism_signal::{
    ClientMessage, Join, LeaveReason, Leg, MsgId, Offer, ServerMessage, ServerOffer, TrackIds,
    TrackRef,
};

/// The m-sections of an SDP: (mid, the section's lines).
fn sections(sdp: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            out.push((String::new(), vec![line.to_owned()]));
        } else if let Some((mid, lines)) = out.last_mut() {
            if let Some(m) = line.strip_prefix("a=mid:") {
                *mid = m.to_owned();
            }
            lines.push(line.to_owned());
        }
    }
    out
}

fn section<'a>(sdp: &'a [(String, Vec<String>)], mid: &str) -> &'a [String] {
    &sdp.iter()
        .find(|(m, _)| m == mid)
        .unwrap_or_else(|| panic!("no m-section {mid}"))
        .1
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.starts_with(needle))
}

fn ssrcs(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("a=ssrc:"))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn offers(c: &MediaClient) -> Vec<ServerOffer> {
    c.snapshot()
        .messages
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::Offer(o) => Some(o),
            _ => None,
        })
        .collect()
}

async fn wait_offers(c: &MediaClient, n: usize) -> Vec<ServerOffer> {
    c.wait_for(Duration::from_secs(20), "subscribe-leg offers", |s| {
        s.offers as usize >= n
    })
    .await
    .unwrap();
    offers(c)
}

fn listener(srv: &TestServer, room: &str, name: &str) -> ClientOptions {
    let mut o = ClientOptions::new(&srv.ws_url(), room, name, 9);
    o.publish_audio = false;
    o.publish_video = false;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_leg_offers_as_documented() {
    let srv = TestServer::start(&[]);
    // "The first subscribe-leg offer comes once there is a track to receive":
    // none while the room has no tracks.
    let viewer = MediaClient::start(listener(&srv, "p", "viewer"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(viewer.snapshot().offers, 0, "no offer for an empty room");
    let publisher = MediaClient::start(ClientOptions::new(&srv.ws_url(), "p", "pub", 1))
        .await
        .unwrap();
    publisher
        .wait_for(Duration::from_secs(20), "published", |s| {
            s.published.len() == 2
        })
        .await
        .unwrap();
    let first = wait_offers(&viewer, 1).await.remove(0);
    assert_eq!(first.leg, Leg::Subscribe);
    assert_eq!(first.tracks.len(), 2);
    let sdp = sections(&first.sdp);
    // "a=msid-semantic: WMS * at session level".
    let session_part = &first.sdp[..first.sdp.find("\nm=").unwrap()];
    assert!(
        session_part.contains("a=msid-semantic: WMS *"),
        "{session_part}"
    );
    let published = publisher.snapshot().published;
    let video_track = published
        .iter()
        .find(|t| {
            let s = sections(&first.sdp);
            first.tracks.iter().any(|ft| {
                ft.track_id == t.track_id && section(&s, &ft.mid)[0].starts_with("m=video")
            })
        })
        .expect("a video track")
        .track_id
        .clone();
    let video_mid = first
        .tracks
        .iter()
        .find(|t| t.track_id == video_track)
        .unwrap()
        .mid
        .clone();
    for t in &first.tracks {
        let lines = section(&sdp, &t.mid);
        // "Every section the server sends on is sendonly".
        assert!(has(lines, "a=sendonly"), "mid {}: {lines:?}", t.mid);
        // "a=msid:<publisher participant id> <track id>".
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("a=msid:") && l.ends_with(&t.track_id)),
            "{lines:?}"
        );
        assert!(has(lines, "a=end-of-candidates"));
    }
    // "Video sections offer abs-send-time" (REMB-only receivers).
    assert!(
        section(&sdp, &video_mid)
            .iter()
            .any(|l| l.starts_with("a=extmap:") && l.contains("abs-send-time")),
        "abs-send-time offered on video"
    );
    let first_ssrcs = ssrcs(section(&sdp, &video_mid));
    assert!(!first_ssrcs.is_empty());
    viewer
        .wait_for(Duration::from_secs(20), "media", |s| s.packets_in > 20)
        .await
        .unwrap();

    // "An m-section whose track was removed goes inactive and is no longer
    // listed in tracks".
    viewer
        .command(ClientCommand::Send(ClientMessage::Unsubscribe(TrackIds {
            track_ids: vec![video_track.clone()],
        })))
        .await
        .unwrap();
    let second = wait_offers(&viewer, 2).await.remove(1);
    assert!(second.tracks.iter().all(|t| t.track_id != video_track));
    let sdp2 = sections(&second.sdp);
    let lines = section(&sdp2, &video_mid);
    assert!(has(lines, "a=inactive"), "{lines:?}");

    // "A re-activated m-section gets new SSRCs: route by mid, or by the
    // latest offer's SSRCs" — and media flows again.
    viewer
        .command(ClientCommand::Send(ClientMessage::Subscribe(TrackIds {
            track_ids: vec![video_track.clone()],
        })))
        .await
        .unwrap();
    let third = wait_offers(&viewer, 3).await.remove(2);
    let again = third
        .tracks
        .iter()
        .find(|t| t.track_id == video_track)
        .expect("the track is offered again");
    let sdp3 = sections(&third.sdp);
    let lines = section(&sdp3, &again.mid);
    assert!(has(lines, "a=sendonly"), "{lines:?}");
    let new_ssrcs = ssrcs(lines);
    assert!(!new_ssrcs.is_empty());
    assert_ne!(new_ssrcs, first_ssrcs, "re-activation uses new SSRCs");
    let before = viewer
        .snapshot()
        .received
        .get(&video_track)
        .map_or(0, |r| r.packets);
    viewer
        .wait_for(Duration::from_secs(20), "video again", |s| {
            s.received
                .get(&video_track)
                .is_some_and(|r| r.packets > before + 20)
        })
        .await
        .unwrap();
}

async fn join(sig: &mut Signaling, room: &str, identity: &str) -> ServerMessage {
    sig.send_with_id(
        Some(MsgId::Num(1)),
        ClientMessage::Join(Join {
            room: room.into(),
            name: identity.into(),
            token: None,
            identity: Some(identity.into()),
        }),
    )
    .await
    .unwrap();
    sig.recv_timeout(Duration::from_secs(5)).await.unwrap().msg
}

/// The next message within `ms`, or None.
async fn next(sig: &mut Signaling, ms: u64) -> Option<prism_signal::ServerEnvelope> {
    sig.recv_timeout(Duration::from_millis(ms)).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_closes_and_replacement_as_documented() {
    let srv = TestServer::start(&[]);
    let mut a = Signaling::connect(&srv.ws_url()).await.unwrap();
    assert!(matches!(
        join(&mut a, "r", "ana").await,
        ServerMessage::Joined(_)
    ));
    // Publish over raw signaling: `answer` carries the offer's id.
    let sdp = prism_client::sample_offer(false, 2).await.unwrap();
    a.send_with_id(
        Some(MsgId::Str("pub".into())),
        ClientMessage::Offer(Offer {
            leg: Leg::Publish,
            sdp,
            tracks: vec![],
        }),
    )
    .await
    .unwrap();
    let m = a.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert_eq!(m.id, Some(MsgId::Str("pub".into())));
    let ServerMessage::Answer(ans) = m.msg else {
        panic!("{m:?}")
    };
    let track = ans.tracks[0].track_id.clone();

    // "mute: no reply with the id; the track_muted event (no id) confirms".
    a.send_with_id(
        Some(MsgId::Num(5)),
        ClientMessage::Mute(TrackRef {
            track_id: track.clone(),
        }),
    )
    .await
    .unwrap();
    let m = next(&mut a, 2000).await.expect("track_muted");
    assert!(m.id.is_none(), "{m:?}");
    assert!(matches!(m.msg, ServerMessage::TrackMuted(ref t) if t.track_id == track));
    // "Muting a muted track changes nothing and sends nothing."
    a.send_with_id(
        Some(MsgId::Num(55)),
        ClientMessage::Mute(TrackRef {
            track_id: track.clone(),
        }),
    )
    .await
    .unwrap();
    assert!(next(&mut a, 500).await.is_none(), "a second mute is silent");
    a.send_with_id(
        Some(MsgId::Num(6)),
        ClientMessage::Unmute(TrackRef {
            track_id: track.clone(),
        }),
    )
    .await
    .unwrap();
    let m = next(&mut a, 2000).await.expect("track_unmuted");
    assert!(
        m.id.is_none() && matches!(m.msg, ServerMessage::TrackUnmuted(_)),
        "{m:?}"
    );
    // "subscribe/unsubscribe: no reply on success".
    a.send_with_id(
        Some(MsgId::Num(7)),
        ClientMessage::Subscribe(TrackIds { track_ids: vec![] }),
    )
    .await
    .unwrap();
    assert!(next(&mut a, 500).await.is_none(), "nothing comes back");

    // An observer sees the replacement as participant_left(replaced) then
    // participant_joined.
    let mut bo = Signaling::connect(&srv.ws_url()).await.unwrap();
    assert!(matches!(
        join(&mut bo, "r", "bo").await,
        ServerMessage::Joined(_)
    ));
    let m = next(&mut a, 2000).await.expect("bo joined");
    assert!(
        matches!(m.msg, ServerMessage::ParticipantJoined(_)),
        "{m:?}"
    );

    // "Replacement: the old socket gets left(replaced) and a close with code
    // 1000; the new socket gets joined, without its predecessor, and nothing
    // about it."
    let mut a2 = Signaling::connect(&srv.ws_url()).await.unwrap();
    let ServerMessage::Joined(j) = join(&mut a2, "r", "ana").await else {
        panic!("joined")
    };
    assert!(j.participants.iter().all(|p| p.identity != "ana"));
    assert_eq!(j.participants.len(), 1, "bo only");
    let m = next(&mut a, 2000).await.expect("left");
    assert!(
        matches!(m.msg, ServerMessage::Left(ref l) if l.reason == LeaveReason::Replaced),
        "{m:?}"
    );
    assert!(next(&mut a, 2000).await.is_none());
    assert_eq!(a.close_code(), Some(Some(1000)), "closed with 1000");
    // The others: the old tracks unpublished, participant_left (replaced),
    // participant_joined (with a new participant id), then offers.
    let mut seen = Vec::new();
    while let Some(m) = next(&mut bo, 1000).await {
        seen.push(m.msg);
    }
    let events: Vec<&ServerMessage> = seen
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMessage::ParticipantLeft(_)
                    | ServerMessage::ParticipantJoined(_)
                    | ServerMessage::TrackUnpublished(_)
            )
        })
        .collect();
    assert!(
        matches!(&events[..], [ServerMessage::TrackUnpublished(_), ServerMessage::TrackUnpublished(_), ServerMessage::ParticipantLeft(l), ServerMessage::ParticipantJoined(p)] if l.reason == LeaveReason::Replaced && p.participant.identity == "ana" && p.participant.id != l.participant_id),
        "{events:?}"
    );
    // The replacing socket hears nothing about its predecessor.
    while let Some(m) = next(&mut a2, 700).await {
        assert!(!matches!(m.msg, ServerMessage::ParticipantLeft(_)), "{m:?}");
    }

    // "leave: left with the id, then a close with code 1000".
    a2.send_with_id(
        Some(MsgId::Str("bye".into())),
        ClientMessage::Leave(Default::default()),
    )
    .await
    .unwrap();
    let m = next(&mut a2, 2000).await.expect("left");
    assert_eq!(m.id, Some(MsgId::Str("bye".into())));
    assert!(matches!(m.msg, ServerMessage::Left(ref l) if l.reason == LeaveReason::Left));
    assert!(next(&mut a2, 2000).await.is_none());
    assert_eq!(a2.close_code(), Some(Some(1000)));
}

/// "leave, then the socket closes at once" is reported as `left`, every
/// time (it used to race the failed send of `left` into `disconnected`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_then_close_is_always_left() {
    const N: usize = 100;
    let srv = TestServer::start(&[]);
    let mut observer = Signaling::connect(&srv.ws_url()).await.unwrap();
    assert!(matches!(
        join(&mut observer, "lv", "observer").await,
        ServerMessage::Joined(_)
    ));
    for i in 0..N {
        let mut s = Signaling::connect(&srv.ws_url()).await.unwrap();
        assert!(matches!(
            join(&mut s, "lv", &format!("p{i}")).await,
            ServerMessage::Joined(_)
        ));
        // Read what the server has sent (the previous participant's
        // departure, say) until it is quiet: a socket closed with unread
        // data sends a TCP RST, and a RST makes the server's kernel discard
        // what it had not handed to the server yet — the `leave` itself.
        // No server can see a message its kernel threw away; what is under
        // test is that one it did see is never taken for a disconnect.
        while s.recv_timeout(Duration::from_millis(100)).await.is_ok() {}
        s.send(ClientMessage::Leave(Default::default()))
            .await
            .unwrap();
        if i % 2 == 0 {
            // A close frame right behind the leave.
            s.close().await;
        } else {
            // The TCP connection dropped without a close frame.
            drop(s);
        }
    }
    let mut reasons = Vec::new();
    while reasons.len() < N {
        let m = observer
            .recv_timeout(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("after {} departures: {e}", reasons.len()));
        if let ServerMessage::ParticipantLeft(l) = m.msg {
            reasons.push(l.reason);
        }
    }
    let not_left: Vec<_> = reasons
        .iter()
        .filter(|r| **r != LeaveReason::Left)
        .collect();
    assert!(
        not_left.is_empty(),
        "{} of {N} not `left`: {not_left:?}",
        not_left.len()
    );
}
