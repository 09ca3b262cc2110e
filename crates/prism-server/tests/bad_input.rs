//! Bad signaling input, each case on its own: the sender gets an `error` with
//! the documented code and its id, its socket keeps working, the room keeps
//! forwarding media to everyone else, and the server does not panic.

mod common;

use std::time::Duration;

use common::TestServer;
use prism_client::{ClientOptions, MediaClient, Signaling};
use prism_signal::{
    ClientMessage, Empty, ErrorCode, Join, MsgId, ServerMessage, MAX_MESSAGE_BYTES,
};

struct Room {
    srv: TestServer,
    /// Publishes audio+video into the room.
    _publisher: MediaClient,
    /// Receives the publisher; must keep receiving through every bad input.
    viewer: MediaClient,
    /// The socket that misbehaves, joined to the same room.
    sig: Signaling,
}

async fn room_with_traffic() -> Room {
    let srv = TestServer::start(&[]);
    let url = srv.ws_url();
    let publisher = MediaClient::start(ClientOptions::new(&url, "bad", "pub", 1))
        .await
        .unwrap();
    let mut o = ClientOptions::new(&url, "bad", "viewer", 2);
    o.publish_audio = false;
    o.publish_video = false;
    let viewer = MediaClient::start(o).await.unwrap();
    viewer
        .wait_for(Duration::from_secs(20), "media flowing", |s| {
            s.received.values().filter(|t| t.packets > 10).count() == 2
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));
    let mut sig = Signaling::connect(&url).await.unwrap();
    sig.send_with_id(
        Some(MsgId::Str("j1".into())),
        ClientMessage::Join(Join {
            room: "bad".into(),
            name: "mallory".into(),
            token: None,
            identity: Some("mallory".into()),
        }),
    )
    .await
    .unwrap();
    let joined = sig
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Joined(_))
        })
        .await
        .unwrap();
    assert_eq!(
        joined.id,
        Some(MsgId::Str("j1".into())),
        "joined echoes the join's id"
    );
    Room {
        srv,
        _publisher: publisher,
        viewer,
        sig,
    }
}

async fn expect_error(sig: &mut Signaling, code: ErrorCode, id: Option<MsgId>) -> String {
    let m = sig
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Error(_))
        })
        .await
        .expect("an error message");
    let ServerMessage::Error(e) = m.msg else {
        unreachable!()
    };
    assert_eq!(e.code, code, "message: {}", e.message);
    assert_eq!(m.id, id, "the error echoes the message id");
    assert!(!e.message.is_empty());
    e.message
}

/// The socket answers ping, the viewer still receives, nothing panicked.
async fn still_fine(r: &mut Room) {
    r.sig
        .send_with_id(Some(MsgId::Str("p".into())), ClientMessage::Ping(Empty {}))
        .await
        .unwrap();
    let pong = r
        .sig
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Pong(_))
        })
        .await
        .unwrap();
    assert_eq!(pong.id, Some(MsgId::Str("p".into())));
    let before: u64 = r
        .viewer
        .snapshot()
        .received
        .values()
        .map(|t| t.packets)
        .sum();
    r.viewer
        .wait_for(Duration::from_secs(5), "media keeps flowing", |s| {
            s.received.values().map(|t| t.packets).sum::<u64>() > before + 20
        })
        .await
        .unwrap();
    r.srv.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_frame() {
    let mut r = room_with_traffic().await;
    r.sig.send_raw("this is { not json".into()).await.unwrap();
    expect_error(&mut r.sig, ErrorCode::BadJson, None).await;
    r.sig.send_binary(vec![0, 159, 146, 150]).await.unwrap();
    expect_error(&mut r.sig, ErrorCode::BadJson, None).await;
    still_fine(&mut r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type() {
    let mut r = room_with_traffic().await;
    r.sig
        .send_raw(r#"{"type":"self_destruct","id":9}"#.into())
        .await
        .unwrap();
    let msg = expect_error(&mut r.sig, ErrorCode::UnknownType, Some(MsgId::Num(9))).await;
    assert!(msg.contains("self_destruct"));
    still_fine(&mut r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fields() {
    let mut r = room_with_traffic().await;
    r.sig
        .send_raw(r#"{"type":"offer","leg":"publish","id":"m1"}"#.into())
        .await
        .unwrap();
    let msg = expect_error(
        &mut r.sig,
        ErrorCode::InvalidMessage,
        Some(MsgId::Str("m1".into())),
    )
    .await;
    assert!(msg.contains("sdp"), "names the missing field: {msg}");
    r.sig
        .send_raw(r#"{"type":"mute","id":"m2"}"#.into())
        .await
        .unwrap();
    expect_error(
        &mut r.sig,
        ErrorCode::InvalidMessage,
        Some(MsgId::Str("m2".into())),
    )
    .await;
    still_fine(&mut r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_64_kib() {
    let mut r = room_with_traffic().await;
    let huge = format!(
        r#"{{"type":"offer","leg":"publish","sdp":"{}"}}"#,
        "x".repeat(MAX_MESSAGE_BYTES + 10)
    );
    r.sig.send_raw(huge).await.unwrap();
    expect_error(&mut r.sig, ErrorCode::MessageTooLarge, None).await;
    still_fine(&mut r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_sdp_in_offer() {
    let mut r = room_with_traffic().await;
    for (i, sdp) in [
        "garbage",
        "v=0\r\nm=video banana\r\n",
        "v=0\r\no=- 0 0 IN IP4 0\r\ns=-\r\nt=0 0\r\n",
    ]
    .iter()
    .enumerate()
    {
        r.sig
            .send_with_id(
                Some(MsgId::Num(i as u64)),
                ClientMessage::Offer(prism_signal::Offer {
                    leg: prism_signal::Leg::Publish,
                    sdp: sdp.to_string(),
                    tracks: vec![],
                }),
            )
            .await
            .unwrap();
        expect_error(
            &mut r.sig,
            ErrorCode::InvalidSdp,
            Some(MsgId::Num(i as u64)),
        )
        .await;
    }
    still_fine(&mut r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_without_offer() {
    let mut r = room_with_traffic().await;
    // mallory publishes nothing, but receives the publisher: its subscribe
    // offer arrives first. Answer something else while none is pending.
    r.sig
        .recv_until(Duration::from_secs(5), |m| {
            matches!(m.msg, ServerMessage::Offer(_))
        })
        .await
        .unwrap();
    let bogus = ClientMessage::Answer(prism_signal::Answer {
        leg: prism_signal::Leg::Subscribe,
        sdp: "v=0\r\n".into(),
    });
    // The first answer is garbage SDP: refused, the offer stays pending.
    r.sig
        .send_with_id(Some(MsgId::Num(1)), bogus.clone())
        .await
        .unwrap();
    expect_error(&mut r.sig, ErrorCode::InvalidSdp, Some(MsgId::Num(1))).await;
    // An answer on the publish leg (no offer can exist there).
    r.sig
        .send_with_id(
            Some(MsgId::Num(2)),
            ClientMessage::Answer(prism_signal::Answer {
                leg: prism_signal::Leg::Publish,
                sdp: "v=0\r\n".into(),
            }),
        )
        .await
        .unwrap();
    expect_error(&mut r.sig, ErrorCode::WrongLeg, Some(MsgId::Num(2))).await;
    // A fresh socket that never got an offer.
    let mut s2 = Signaling::connect(&r.srv.ws_url()).await.unwrap();
    s2.send(ClientMessage::Join(Join {
        room: "bad2".into(),
        name: "x".into(),
        token: None,
        identity: None,
    }))
    .await
    .unwrap();
    s2.recv_until(Duration::from_secs(5), |m| {
        matches!(m.msg, ServerMessage::Joined(_))
    })
    .await
    .unwrap();
    s2.send_with_id(Some(MsgId::Num(3)), bogus).await.unwrap();
    expect_error(&mut s2, ErrorCode::NoOfferPending, Some(MsgId::Num(3))).await;
    still_fine(&mut r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_room_on_same_socket() {
    let mut r = room_with_traffic().await;
    r.sig
        .send_with_id(
            Some(MsgId::Str("j2".into())),
            ClientMessage::Join(Join {
                room: "elsewhere".into(),
                name: "m".into(),
                token: None,
                identity: None,
            }),
        )
        .await
        .unwrap();
    expect_error(
        &mut r.sig,
        ErrorCode::AlreadyJoined,
        Some(MsgId::Str("j2".into())),
    )
    .await;
    still_fine(&mut r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_join_and_unknown_tracks() {
    let mut r = room_with_traffic().await;
    let mut s2 = Signaling::connect(&r.srv.ws_url()).await.unwrap();
    s2.send_with_id(
        Some(MsgId::Num(5)),
        ClientMessage::Mute(prism_signal::TrackRef {
            track_id: "TR_1".into(),
        }),
    )
    .await
    .unwrap();
    expect_error(&mut s2, ErrorCode::NotJoined, Some(MsgId::Num(5))).await;
    // Muting a track that is not yours, or does not exist.
    for (i, t) in ["TR_1", "TR_999", "nonsense"].iter().enumerate() {
        r.sig
            .send_with_id(
                Some(MsgId::Num(i as u64)),
                ClientMessage::Mute(prism_signal::TrackRef {
                    track_id: t.to_string(),
                }),
            )
            .await
            .unwrap();
        expect_error(
            &mut r.sig,
            ErrorCode::UnknownTrack,
            Some(MsgId::Num(i as u64)),
        )
        .await;
    }
    r.sig
        .send_with_id(
            Some(MsgId::Num(7)),
            ClientMessage::Unsubscribe(prism_signal::TrackIds {
                track_ids: vec!["TR_404".into()],
            }),
        )
        .await
        .unwrap();
    expect_error(&mut r.sig, ErrorCode::UnknownTrack, Some(MsgId::Num(7))).await;
    still_fine(&mut r).await;
}
