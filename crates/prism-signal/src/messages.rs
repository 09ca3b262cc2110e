//! Message types. Field names are the wire names (snake_case); every type
//! derives both `Serialize` and `Deserialize` so the server and Rust clients
//! share them.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, MsgId, MAX_NAME_BYTES, MAX_ROOM_NAME_BYTES, MAX_TRACK_IDS};

/// Which of a client's two peer connections a message is about.
///
/// `publish`: the client offers, the server answers (like WHIP).
/// `subscribe`: the server offers whenever the set of tracks changes, the client answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    Publish,
    Subscribe,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Publish => "publish",
            Leg::Subscribe => "subscribe",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a published track shows. Defaults: audio → microphone, video → camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
}

/// A client message with its optional id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEnvelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MsgId>,
    #[serde(flatten)]
    pub msg: ClientMessage,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Join(Join),
    Offer(Offer),
    Answer(Answer),
    Candidate(Candidate),
    Subscribe(TrackIds),
    Unsubscribe(TrackIds),
    Mute(TrackRef),
    Unmute(TrackRef),
    /// A subscriber's wish for one track: the most it wants (a video tile's
    /// size, a quality), or nothing (a hidden tile).
    TrackSettings(TrackSettings),
    Leave(Empty),
    Ping(Empty),
}

impl ClientMessage {
    /// The `type` values a client may send.
    pub const TYPES: &'static [&'static str] = &[
        "join",
        "offer",
        "answer",
        "candidate",
        "subscribe",
        "unsubscribe",
        "mute",
        "unmute",
        "track_settings",
        "leave",
        "ping",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join(_) => "join",
            ClientMessage::Offer(_) => "offer",
            ClientMessage::Answer(_) => "answer",
            ClientMessage::Candidate(_) => "candidate",
            ClientMessage::Subscribe(_) => "subscribe",
            ClientMessage::Unsubscribe(_) => "unsubscribe",
            ClientMessage::Mute(_) => "mute",
            ClientMessage::Unmute(_) => "unmute",
            ClientMessage::TrackSettings(_) => "track_settings",
            ClientMessage::Leave(_) => "leave",
            ClientMessage::Ping(_) => "ping",
        }
    }

    /// Checks values serde cannot: lengths, characters, non-empty strings.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ClientMessage::Join(j) => {
                check_name("room", &j.room, MAX_ROOM_NAME_BYTES)?;
                if !j
                    .room
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
                {
                    return Err("`room` may hold only ASCII letters, digits and - _ . ~".into());
                }
                check_text("name", &j.name, MAX_NAME_BYTES)?;
                if let Some(identity) = &j.identity {
                    check_name("identity", identity, MAX_NAME_BYTES)?;
                }
                Ok(())
            }
            ClientMessage::Offer(o) => check_sdp(&o.sdp),
            ClientMessage::Answer(a) => check_sdp(&a.sdp),
            ClientMessage::Candidate(_) => Ok(()),
            ClientMessage::Subscribe(t) | ClientMessage::Unsubscribe(t) => {
                if t.track_ids.len() > MAX_TRACK_IDS {
                    return Err(format!("at most {MAX_TRACK_IDS} track ids per message"));
                }
                Ok(())
            }
            ClientMessage::TrackSettings(t) => t.validate(),
            ClientMessage::Mute(_)
            | ClientMessage::Unmute(_)
            | ClientMessage::Leave(_)
            | ClientMessage::Ping(_) => Ok(()),
        }
    }
}

fn check_name(field: &str, v: &str, max: usize) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("`{field}` must not be empty"));
    }
    check_text(field, v, max)
}

fn check_text(field: &str, v: &str, max: usize) -> Result<(), String> {
    if v.len() > max {
        return Err(format!("`{field}` is longer than {max} bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("`{field}` must not contain control characters"));
    }
    Ok(())
}

fn check_sdp(sdp: &str) -> Result<(), String> {
    if sdp.trim().is_empty() {
        return Err("`sdp` must not be empty".into());
    }
    Ok(())
}

/// An empty body, for messages that carry only their type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Room name: 1–128 bytes of ASCII letters, digits, `-_.~`. Created on first join.
    pub room: String,
    /// Display name shown to others (may be empty).
    #[serde(default)]
    pub name: String,
    /// Access token (JWT). Optional in dev mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Dev mode only: the stable identity. A second join with the same identity
    /// replaces the first connection (a browser refresh). Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// Simulcast layers of a published track, lowest first when sorted by size.
pub const MAX_LAYERS: usize = 3;

/// One simulcast encoding a publisher sends, as it declares it (the `rid`
/// of its `a=rid` line and the picture size it encodes at).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDecl {
    pub rid: String,
    pub width: u32,
    pub height: u32,
    /// The encoder's bitrate ceiling for this layer, bits/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u32>,
}

/// A subscriber's wanted quality for a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Low,
    Medium,
    High,
}

/// `track_settings`: what a subscriber wants of one track. Absent fields
/// leave the current setting; a track starts at `high`, any size, enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSettings {
    pub track_id: String,
    /// At most this quality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// At most the largest layer that fits this size (the tile's size in
    /// device pixels; the lowest layer if none fits); 0 = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// false: send nothing of this track (a hidden or off-screen tile); the
    /// subscription stays and resumes at once with `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl TrackSettings {
    fn validate(&self) -> Result<(), String> {
        for (f, v) in [
            ("max_width", self.max_width),
            ("max_height", self.max_height),
        ] {
            if v.is_some_and(|v| v > 16_384) {
                return Err(format!("`{f}` is at most 16384"));
            }
        }
        Ok(())
    }
}

/// Declares what a publish-leg m-section carries, by its `mid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackDecl {
    pub mid: String,
    pub source: TrackSource,
    /// Simulcast: the encodings the section sends (its `a=rid`s), at most
    /// [`MAX_LAYERS`]. Without it the server orders layers by their
    /// measured bitrate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerDecl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub leg: Leg,
    pub sdp: String,
    /// Optional: the source of each sending m-section. Unlisted sections default
    /// to microphone (audio) or camera (video).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<TrackDecl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub leg: Leg,
    pub sdp: String,
}

/// An ICE candidate in the browser's `RTCIceCandidateInit` JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub leg: Leg,
    /// `null` (or an empty `candidate` string) means end-of-candidates.
    pub candidate: Option<IceCandidate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackIds {
    pub track_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackRef {
    pub track_id: String,
}

// ---------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------

/// A server message with the id of the client message it answers, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEnvelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MsgId>,
    #[serde(flatten)]
    pub msg: ServerMessage,
}

impl ServerEnvelope {
    pub fn new(msg: ServerMessage) -> Self {
        ServerEnvelope { id: None, msg }
    }
    pub fn reply(id: Option<MsgId>, msg: ServerMessage) -> Self {
        ServerEnvelope { id, msg }
    }
    pub fn to_json(&self) -> String {
        // Serializing these plain data types cannot fail: no maps with non-string
        // keys, no custom serializers.
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined(Joined),
    ParticipantJoined(ParticipantJoined),
    ParticipantLeft(ParticipantLeft),
    TrackPublished(TrackPublished),
    TrackUnpublished(TrackUnpublished),
    TrackMuted(TrackMuteState),
    TrackUnmuted(TrackMuteState),
    Offer(ServerOffer),
    Answer(ServerAnswer),
    Candidate(Candidate),
    Left(Left),
    /// The server stopped sending a subscribed track: its lowest layer does
    /// not fit the subscriber's bandwidth. Resumed with `track_resumed`.
    TrackPaused(TrackPaused),
    TrackResumed(TrackRef),
    /// Dynacast, to a publisher: the layers of its track some subscriber
    /// takes; the others may be switched off (`active = false`).
    LayersWanted(LayersWanted),
    /// The server is shutting down: finish up and reconnect elsewhere.
    Draining(Draining),
    Pong(Empty),
    Error(ErrorBody),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackPaused {
    pub track_id: String,
    /// Why: `bandwidth` (the allocator could not fit its lowest layer).
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayersWanted {
    pub track_id: String,
    /// The rids to keep sending; every other layer of the track is unused.
    pub rids: Vec<String>,
}

/// A layer as subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub quality: Quality,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    /// The server closes remaining sessions after this many seconds.
    pub deadline_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: String,
    pub participant_id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
    /// Codec MIME type as negotiated with the publisher, e.g. `video/VP8`.
    pub codec: String,
    /// Simulcast layers, lowest first (empty: one stream).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub room: String,
    pub participant_id: String,
    pub identity: String,
    /// Everyone else already in the room, with their published tracks.
    pub participants: Vec<ParticipantInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantJoined {
    pub participant: ParticipantInfo,
}

/// Why a participant is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// Sent `leave`.
    Left,
    /// Closed its WebSocket.
    Disconnected,
    /// Its media connection went silent past the timeout (ICE/consent).
    Timeout,
    /// Another connection joined with the same identity.
    Replaced,
    /// The server is shutting down.
    ServerShutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantLeft {
    pub participant_id: String,
    pub reason: LeaveReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackPublished {
    pub track: TrackInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackUnpublished {
    pub track_id: String,
    pub participant_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackMuteState {
    pub track_id: String,
    pub participant_id: String,
}

/// Maps one m-section of an SDP to a Prism track id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MidTrack {
    pub mid: String,
    pub track_id: String,
}

/// The server's offer on the subscribe leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerOffer {
    pub leg: Leg,
    pub sdp: String,
    /// Which track each sending m-section carries (also in each section's `a=msid`).
    pub tracks: Vec<MidTrack>,
}

/// The server's answer on the publish leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAnswer {
    pub leg: Leg,
    pub sdp: String,
    /// The track id the server gave each m-section the client sends.
    pub tracks: Vec<MidTrack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    pub reason: LeaveReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}
