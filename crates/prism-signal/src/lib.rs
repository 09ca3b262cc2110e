//! The Prism signaling protocol: the JSON messages exchanged over `GET /ws`.
//!
//! One message per WebSocket text frame. Every message is a JSON object with a
//! `type` and an optional client-chosen `id` (string or integer) that the server
//! echoes on the replies to that message, errors included.
//!
//! This crate has no I/O. It defines the message types ([`ClientMessage`],
//! [`ServerMessage`]), the error codes ([`ErrorCode`]), and [`parse_client`],
//! which turns one frame into a message or a precise [`SignalError`]. The
//! server, the Rust client and the docs (`docs/signaling.md`) share it.

mod messages;
pub mod offer;

pub use messages::*;
pub use offer::{check_offer, OfferError};

use serde::{Deserialize, Serialize};

/// Largest signaling message the server accepts, in bytes (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest room name, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 128;
/// Longest display name or identity, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest number of track ids in one `subscribe`/`unsubscribe`.
pub const MAX_TRACK_IDS: usize = 256;

/// The client's message id, echoed on replies. Either a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MsgId {
    Num(u64),
    Str(String),
}

/// Error codes carried by the `error` message. The wire form is the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not a JSON object (or not text).
    BadJson,
    /// The `type` is missing or names no message the server knows.
    UnknownType,
    /// A field is missing, has the wrong type, or a value is out of range.
    InvalidMessage,
    /// The frame is larger than [`MAX_MESSAGE_BYTES`].
    MessageTooLarge,
    /// The message needs a joined room and this socket has not joined one.
    NotJoined,
    /// `join` on a socket that already joined a room (one room per socket).
    AlreadyJoined,
    /// The SDP could not be parsed or applied.
    InvalidSdp,
    /// An `answer` arrived with no server offer outstanding on that leg.
    NoOfferPending,
    /// An `offer` or `answer` names a leg that does not take it.
    WrongLeg,
    /// An ICE candidate could not be parsed or applied.
    InvalidCandidate,
    /// The track id names no track in the room (or not one of yours, for mute).
    UnknownTrack,
    /// The token is missing, malformed, expired or not signed by a known key.
    Unauthorized,
    /// The token does not grant this action.
    Forbidden,
    /// A configured limit was reached (participants, tracks, rate).
    LimitExceeded,
    /// The server is draining and takes no new work.
    Draining,
    /// Something failed inside the server; the message names what.
    Internal,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLarge,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::InvalidSdp,
        ErrorCode::NoOfferPending,
        ErrorCode::WrongLeg,
        ErrorCode::InvalidCandidate,
        ErrorCode::UnknownTrack,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::LimitExceeded,
        ErrorCode::Draining,
        ErrorCode::Internal,
    ];

    /// The wire name, e.g. `bad_json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::NoOfferPending => "no_offer_pending",
            ErrorCode::WrongLeg => "wrong_leg",
            ErrorCode::InvalidCandidate => "invalid_candidate",
            ErrorCode::UnknownTrack => "unknown_track",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Draining => "draining",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame was refused: the code, a human sentence, and the id if the frame had one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SignalError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<MsgId>,
}

impl SignalError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        SignalError {
            code,
            message: message.into(),
            id: None,
        }
    }

    pub fn with_id(mut self, id: Option<MsgId>) -> Self {
        self.id = id;
        self
    }

    /// The `error` message that reports this to the client.
    pub fn to_message(&self) -> ServerEnvelope {
        ServerEnvelope {
            id: self.id.clone(),
            msg: ServerMessage::Error(ErrorBody {
                code: self.code,
                message: self.message.clone(),
            }),
        }
    }
}

/// Parses and validates one text frame from a client.
///
/// The checks run in this order, so each failure has exactly one code:
/// size ([`ErrorCode::MessageTooLarge`]), JSON object ([`ErrorCode::BadJson`]),
/// `type` ([`ErrorCode::UnknownType`]), fields and values
/// ([`ErrorCode::InvalidMessage`]). The `id` is recovered as early as possible so
/// that even an invalid message's error carries it.
pub fn parse_client(text: &str) -> Result<ClientEnvelope, SignalError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(SignalError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                text.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| SignalError::new(ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(SignalError::new(
            ErrorCode::BadJson,
            "a message must be a JSON object",
        ));
    };
    let id = match map.remove("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(serde_json::from_value::<MsgId>(v).map_err(|_| {
            SignalError::new(
                ErrorCode::InvalidMessage,
                "`id` must be a string or a non-negative integer",
            )
        })?),
    };
    let ty = match map.get("type") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(
                SignalError::new(ErrorCode::UnknownType, "`type` must be a string").with_id(id),
            )
        }
        None => return Err(SignalError::new(ErrorCode::UnknownType, "missing `type`").with_id(id)),
    };
    if !ClientMessage::TYPES.contains(&ty.as_str()) {
        return Err(SignalError::new(
            ErrorCode::UnknownType,
            format!("unknown message type `{ty}`"),
        )
        .with_id(id));
    }
    let msg: ClientMessage =
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
            SignalError::new(ErrorCode::InvalidMessage, format!("`{ty}`: {e}")).with_id(id.clone())
        })?;
    msg.validate().map_err(|m| {
        SignalError::new(ErrorCode::InvalidMessage, format!("`{ty}`: {m}")).with_id(id.clone())
    })?;
    Ok(ClientEnvelope { id, msg })
}

#[cfg(test)]
mod tests;
