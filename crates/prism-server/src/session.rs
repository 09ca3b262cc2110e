//! One WebSocket signaling session (`GET /ws`).
//!
//! The session task owns the socket. It parses each frame (prism-signal),
//! answers `ping` and protocol errors itself, and sends everything else to the
//! shard that hosts its room. The shard answers through the session's inbox
//! ([`SessionTx`]), which this task writes to the socket in order. The task
//! ends when the socket closes or the shard says `Close`; it then tells the
//! shard, which removes the participant.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use prism_core::ParticipantId;
use prism_signal::{
    parse_client, ClientMessage, Empty, ErrorCode, ServerEnvelope, ServerMessage, SignalError,
};
use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::{mpsc, oneshot};

use governor::{Quota, RateLimiter};

use crate::auth::{Grants, Keys};
use crate::http::AppState;
use crate::media::{Directory, Outbound, ShardCommand, ShardHandle, SESSION_QUEUE};
use crate::metrics::Metrics;

/// How long a `join` may wait for its shard.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

struct Joined {
    shard: ShardHandle,
    room: String,
    participant: ParticipantId,
}

pub async fn run(mut ws: WebSocket, state: AppState) {
    let AppState {
        directory,
        metrics,
        keys,
        cfg,
        ..
    } = state;
    let (tx, mut rx) = mpsc::channel::<Outbound>(SESSION_QUEUE);
    let mut joined: Option<Joined> = None;
    let _open = SessionGauge::open(&metrics);
    // Messages per second, with bursts of twice that (join, offer and a
    // handful of candidates arrive together).
    let rate = NonZeroU32::new(cfg.max_signal_rate).unwrap_or(NonZeroU32::MIN);
    let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 > 0"));
    let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
    // Over the limit, messages are dropped; the client hears it once a second.
    let mut last_limit_error: Option<Instant> = None;
    // A socket that does not join in time is closed: an idle connection
    // must not hold a task and a slot of its address forever.
    let join_deadline = tokio::time::sleep(cfg.ws_join_timeout);
    tokio::pin!(join_deadline);
    loop {
        tokio::select! {
            _ = &mut join_deadline, if joined.is_none() => {
                metrics.ws_join_timeouts.inc();
                let e = SignalError::new(ErrorCode::NotJoined, format!(
                    "no `join` within {:?} (ws_join_timeout); closing", cfg.ws_join_timeout));
                let _ = send(&mut ws, &e.to_message()).await;
                // 1008 (policy violation): the client broke a server rule.
                let frame = axum::extract::ws::CloseFrame {
                    code: axum::extract::ws::close_code::POLICY,
                    reason: "join timeout".into(),
                };
                let _ = ws.send(Message::Close(Some(frame))).await;
                break;
            }
            frame = ws.recv() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        let e = SignalError::new(ErrorCode::BadJson, "binary frames are not accepted; send JSON text");
                        if send(&mut ws, &e.to_message()).await.is_err() { break; }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue, // ping/pong frames: axum answers pings
                };
                if limiter.check().is_err() {
                    metrics.limit_hits.with_label_values(&["signal_rate"]).inc();
                    if last_limit_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_limit_error = Some(Instant::now());
                        let e = SignalError::new(ErrorCode::LimitExceeded, format!(
                            "more than {} messages per second; messages are being dropped", cfg.max_signal_rate));
                        if send(&mut ws, &e.to_message()).await.is_err() { break; }
                    }
                    continue;
                }
                let parsed = parse_client(text.as_str());
                count(&metrics, &parsed);
                let reply = match parsed {
                    Err(e) => Some(e.to_message()),
                    Ok(env) => match env.msg {
                        ClientMessage::Ping(_) => Some(ServerEnvelope::reply(env.id, ServerMessage::Pong(Empty {}))),
                        ClientMessage::Join(j) => {
                            if joined.is_some() {
                                Some(SignalError::new(ErrorCode::AlreadyJoined, "this socket already joined a room; open another socket for another room").with_id(env.id).to_message())
                            } else {
                                match join(&directory, &keys, &metrics, j, env.id.clone(), tx.clone()).await {
                                    Ok(j) => { joined = Some(j); None }
                                    Err(e) => Some(e.with_id(env.id).to_message()),
                                }
                            }
                        }
                        _ => match &joined {
                            None => Some(SignalError::new(ErrorCode::NotJoined, format!("`{}` needs a joined room; send `join` first", env.msg.type_name())).with_id(env.id).to_message()),
                            Some(j) => match check_publish_offer(&metrics, &cfg, &env.msg) {
                                // Refused before the shard spends any work on it.
                                Err(e) => Some(e.with_id(env.id).to_message()),
                                Ok(()) => {
                                    let cmd = ShardCommand::Signal { room: j.room.clone(), participant: j.participant, env };
                                    j.shard.send(cmd).await.err().map(|e| e.to_message())
                                }
                            },
                        },
                    },
                };
                if let Some(r) = reply {
                    if send(&mut ws, &r).await.is_err() { break; }
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Msg(env)) => {
                    if send(&mut ws, &env).await.is_err() { break; }
                }
                Some(Outbound::Close) | None => {
                    // 1000 (normal closure): the server ended the session on
                    // purpose, after `left` said why.
                    let frame = axum::extract::ws::CloseFrame {
                        code: axum::extract::ws::close_code::NORMAL,
                        reason: "".into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                    break;
                }
            },
        }
    }
    if let Some(j) = joined {
        let _ = j
            .shard
            .send(ShardCommand::Disconnected {
                room: j.room,
                participant: j.participant,
            })
            .await;
    }
}

/// Counts an open session in `prism_websocket_sessions` until dropped.
struct SessionGauge<'a>(&'a Metrics);
impl<'a> SessionGauge<'a> {
    fn open(m: &'a Metrics) -> Self {
        m.ws_sessions.inc();
        SessionGauge(m)
    }
}
impl Drop for SessionGauge<'_> {
    fn drop(&mut self) {
        self.0.ws_sessions.dec();
    }
}

/// Counts a received frame by message type and parse result.
fn count(metrics: &Metrics, parsed: &Result<prism_signal::ClientEnvelope, SignalError>) {
    let (ty, result) = match parsed {
        Ok(env) => (env.msg.type_name(), "ok"),
        Err(e) => ("invalid", e.code.as_str()),
    };
    metrics.signaling.with_label_values(&[ty, result]).inc();
}

/// A publish-leg `offer` passes the checks WHIP and WHEP apply
/// (`prism_signal::check_offer`) here, in the session task, so a malformed or
/// oversized offer costs the room's shard nothing.
fn check_publish_offer(
    metrics: &Metrics,
    cfg: &crate::config::Config,
    msg: &ClientMessage,
) -> Result<(), SignalError> {
    let ClientMessage::Offer(o) = msg else {
        return Ok(());
    };
    if o.leg != prism_signal::Leg::Publish {
        return Ok(()); // the shard answers `wrong_leg`
    }
    prism_signal::check_offer(&o.sdp, cfg.max_tracks_per_participant).map_err(|e| {
        if let Some(limit) = e.limit() {
            metrics.limit_hits.with_label_values(&[limit]).inc();
        }
        SignalError::new(e.code(), format!("offer: {e}"))
    })
}

async fn send(ws: &mut WebSocket, env: &ServerEnvelope) -> Result<(), axum::Error> {
    ws.send(Message::Text(env.to_json().into())).await
}

async fn join(
    directory: &Directory,
    keys: &Keys,
    metrics: &Metrics,
    j: prism_signal::Join,
    id: Option<prism_signal::MsgId>,
    session: crate::media::SessionTx,
) -> Result<Joined, SignalError> {
    let (identity, name, grants) = if keys.dev_mode() {
        // Dev mode: no token needed; the identity is the client's choice or
        // a fresh one, and everything is allowed.
        let identity = j.identity.unwrap_or_else(|| {
            format!("guest-{}", Alphanumeric.sample_string(&mut rand::rng(), 10))
        });
        (identity, j.name, Grants::all())
    } else {
        // The token decides who this is and what it may do; a client-sent
        // `identity` is ignored.
        let claims = keys.verify(j.token.as_deref(), &j.room).map_err(|e| {
            metrics.auth_failures.with_label_values(&[e.reason()]).inc();
            e.to_signal()
        })?;
        let name = claims.name.unwrap_or(j.name);
        (claims.sub, name, claims.grants)
    };
    if directory.is_draining() {
        return Err(SignalError::new(
            ErrorCode::Draining,
            "the server is shutting down; join on another instance",
        ));
    }
    let shard = directory
        .shard_for(&j.room)
        .ok_or_else(|| SignalError::new(ErrorCode::Internal, "no media shard is running"))?;
    let (reply_tx, reply_rx) = oneshot::channel();
    shard
        .send(ShardCommand::Join {
            room: j.room.clone(),
            identity,
            name,
            grants,
            id,
            session,
            reply: reply_tx,
        })
        .await?;
    let pid = tokio::time::timeout(JOIN_TIMEOUT, reply_rx)
        .await
        .map_err(|_| SignalError::new(ErrorCode::Internal, "join timed out"))?
        .map_err(|_| SignalError::new(ErrorCode::Internal, "media shard dropped the join"))??;
    Ok(Joined {
        shard,
        room: j.room,
        participant: pid,
    })
}
