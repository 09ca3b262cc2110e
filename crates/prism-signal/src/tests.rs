use super::*;

fn code(text: &str) -> ErrorCode {
    parse_client(text).unwrap_err().code
}

#[test]
fn parses_every_client_message() {
    let cases = [
        r#"{"type":"join","room":"standup","name":"Ana","id":1}"#,
        r#"{"type":"join","room":"r","identity":"ana@example","token":"x"}"#,
        r#"{"type":"offer","leg":"publish","sdp":"v=0","tracks":[{"mid":"1","source":"screen"}]}"#,
        r#"{"type":"answer","leg":"subscribe","sdp":"v=0"}"#,
        r#"{"type":"candidate","leg":"publish","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        r#"{"type":"candidate","leg":"publish","candidate":null}"#,
        r#"{"type":"subscribe","track_ids":["TR_1"]}"#,
        r#"{"type":"unsubscribe","track_ids":[]}"#,
        r#"{"type":"mute","track_id":"TR_1"}"#,
        r#"{"type":"unmute","track_id":"TR_1"}"#,
        r#"{"type":"leave"}"#,
        r#"{"type":"ping","id":"abc"}"#,
    ];
    for c in cases {
        let env = parse_client(c).unwrap_or_else(|e| panic!("{c}: {e}"));
        // Round trip: what a Rust client serializes, the server parses back.
        let again = serde_json::to_string(&env).unwrap();
        assert_eq!(parse_client(&again).unwrap(), env, "{c}");
    }
}

#[test]
fn id_is_echoed_even_on_invalid_messages() {
    let e = parse_client(r#"{"type":"join","id":"q1"}"#).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidMessage);
    assert_eq!(e.id, Some(MsgId::Str("q1".into())));
    assert!(e.message.contains("room"), "{}", e.message);
    let e = parse_client(r#"{"type":"nope","id":7}"#).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownType);
    assert_eq!(e.id, Some(MsgId::Num(7)));
}

#[test]
fn rejects_bad_input_with_precise_codes() {
    let rows: &[(&str, ErrorCode)] = &[
        ("not json", ErrorCode::BadJson),
        ("[1,2]", ErrorCode::BadJson),
        ("\"join\"", ErrorCode::BadJson),
        ("{}", ErrorCode::UnknownType),
        (r#"{"type":5}"#, ErrorCode::UnknownType),
        (r#"{"type":"launch_rockets"}"#, ErrorCode::UnknownType),
        (r#"{"type":"join"}"#, ErrorCode::InvalidMessage),
        (r#"{"type":"join","room":""}"#, ErrorCode::InvalidMessage),
        (r#"{"type":"join","room":"a b"}"#, ErrorCode::InvalidMessage),
        (
            r#"{"type":"join","room":"a","name":"x\u0000"}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type":"offer","leg":"sideways","sdp":"v=0"}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type":"offer","leg":"publish","sdp":""}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type":"offer","leg":"publish"}"#,
            ErrorCode::InvalidMessage,
        ),
        (r#"{"type":"mute"}"#, ErrorCode::InvalidMessage),
        (r#"{"type":"ping","id":[1]}"#, ErrorCode::InvalidMessage),
        (
            r#"{"type":"subscribe","track_ids":"TR_1"}"#,
            ErrorCode::InvalidMessage,
        ),
    ];
    for (text, want) in rows {
        assert_eq!(code(text), *want, "{text}");
    }
}

#[test]
fn size_limit_is_checked_first() {
    let big = format!(
        r#"{{"type":"offer","leg":"publish","sdp":"{}"}}"#,
        "a".repeat(MAX_MESSAGE_BYTES)
    );
    assert_eq!(code(&big), ErrorCode::MessageTooLarge);
    let at_limit = format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "a".repeat(MAX_MESSAGE_BYTES - 24)
    );
    assert_eq!(at_limit.len(), MAX_MESSAGE_BYTES);
    assert!(parse_client(&at_limit).is_ok());
}

#[test]
fn too_many_track_ids() {
    let ids: Vec<String> = (0..=MAX_TRACK_IDS).map(|i| format!("\"T{i}\"")).collect();
    let text = format!(r#"{{"type":"subscribe","track_ids":[{}]}}"#, ids.join(","));
    assert_eq!(code(&text), ErrorCode::InvalidMessage);
}

#[test]
fn error_codes_have_stable_wire_names() {
    for c in ErrorCode::ALL {
        let json = serde_json::to_string(c).unwrap();
        assert_eq!(json, format!("\"{}\"", c.as_str()));
    }
}

#[test]
fn server_messages_round_trip() {
    let msgs = vec![
        ServerEnvelope::reply(
            Some(MsgId::Num(1)),
            ServerMessage::Joined(Joined {
                room: "r".into(),
                participant_id: "PA_1".into(),
                identity: "ana".into(),
                participants: vec![ParticipantInfo {
                    id: "PA_2".into(),
                    identity: "bo".into(),
                    name: "Bo".into(),
                    tracks: vec![TrackInfo {
                        id: "TR_1".into(),
                        participant_id: "PA_2".into(),
                        kind: TrackKind::Video,
                        source: TrackSource::Camera,
                        muted: false,
                        codec: "video/VP8".into(),
                        layers: Vec::new(),
                    }],
                }],
            }),
        ),
        ServerEnvelope::new(ServerMessage::Pong(Empty {})),
        SignalError::new(ErrorCode::InvalidSdp, "bad").to_message(),
        ServerEnvelope::new(ServerMessage::Left(Left {
            reason: LeaveReason::Replaced,
        })),
    ];
    for m in msgs {
        let json = m.to_json();
        let back: ServerEnvelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m, "{json}");
    }
    let json = ServerEnvelope::new(ServerMessage::Pong(Empty {})).to_json();
    assert_eq!(json, r#"{"type":"pong"}"#);
}
