//! The media engine: shards that each own one UDP socket, the `rtc` peer
//! connections on it, and the rooms whose peers live there.
//!
//! # Concurrency
//!
//! Each shard is one OS thread running a current-thread tokio runtime and one
//! task ([`shard::Shard::run`]). That task owns, with no locks: the socket,
//! every peer connection on it, and the rooms assigned to the shard. Forwarding
//! a packet from a publisher to its subscribers never leaves the task.
//!
//! Other tasks talk to a shard only through its command channel
//! ([`ShardHandle`]): WebSocket sessions send [`ShardCommand`]s; the shard
//! answers through each participant's [`SessionTx`]. A shard ends when every
//! [`ShardHandle`] is dropped (its command channel closes).

pub mod engine_log;
pub mod ice_tcp;
pub mod peer;
pub mod remote;
pub mod sdp;
pub mod sdp_dd;
pub mod shard;
pub mod simulcast;
pub mod stun;
pub mod viewer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prism_core::ParticipantId;
use prism_signal::{ClientEnvelope, ServerEnvelope, SignalError};
use tokio::sync::{mpsc, oneshot};

/// What a shard sends to a WebSocket session.
#[derive(Debug)]
pub enum Outbound {
    Msg(ServerEnvelope),
    /// Close the socket after the messages before this one.
    Close,
}

/// A session's inbox. Bounded: a session that stops reading is disconnected
/// rather than let its queue grow.
pub type SessionTx = mpsc::Sender<Outbound>;

/// Capacity of a session's inbox.
pub const SESSION_QUEUE: usize = 1024;

#[derive(Debug)]
pub enum ShardCommand {
    /// Join (creating the room if needed). The shard sends `joined` through
    /// `session` before any other message for this participant, then answers
    /// `reply` with the participant id.
    Join {
        room: String,
        identity: String,
        name: String,
        /// What the participant's token allows (everything in dev mode).
        grants: crate::auth::Grants,
        /// The `join` message's id, echoed on `joined`.
        id: Option<prism_signal::MsgId>,
        session: SessionTx,
        reply: oneshot::Sender<Result<ParticipantId, SignalError>>,
    },
    /// Any message after `join`; replies go through the participant's session.
    Signal {
        room: String,
        participant: ParticipantId,
        env: ClientEnvelope,
    },
    /// The participant's WebSocket closed.
    Disconnected {
        room: String,
        participant: ParticipantId,
    },
    /// WHIP: a publisher's offer. Adds a participant without a socket.
    HttpPublish {
        room: String,
        name: String,
        session_id: String,
        offer: String,
        reply: oneshot::Sender<Result<HttpAnswer, HttpFailure>>,
    },
    /// WHEP: a viewer's recvonly offer, for the room's tracks (or one
    /// participant's, by id). Adds a hidden viewer.
    HttpView {
        room: String,
        source: Option<String>,
        /// What the viewer wants of the video (query parameters).
        want: ViewWant,
        session_id: String,
        offer: String,
        reply: oneshot::Sender<Result<HttpAnswer, HttpFailure>>,
    },
    /// WHIP/WHEP PATCH: trickled candidates or an ICE restart (sdpfrag).
    HttpPatch {
        room: String,
        participant: ParticipantId,
        fragment: String,
        if_match: Option<String>,
        reply: oneshot::Sender<Result<PatchOutcome, HttpFailure>>,
    },
    /// The server drains: tell every WebSocket participant.
    Drain { deadline_secs: u64 },
    /// The drain timed out: remove everyone still here, telling WebSocket
    /// participants `left {reason: "server_shutdown"}`; reply when done.
    Shutdown {
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// WHIP/WHEP DELETE: the session ends now.
    HttpDelete {
        room: String,
        participant: ParticipantId,
        reply: oneshot::Sender<bool>,
    },
}

/// A WHEP viewer's wish from its query: `?quality=low|medium|high`,
/// `?max_width=`, `?max_height=` (0: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewWant {
    pub quality: Option<prism_signal::Quality>,
    pub max_width: u32,
    pub max_height: u32,
}

/// A WHIP/WHEP session created: the SDP answer and the ICE session's ETag.
#[derive(Debug)]
pub struct HttpAnswer {
    pub participant: ParticipantId,
    pub sdp: String,
    pub etag: String,
    /// WHEP: the viewer's broadcast state, for its server-sent events.
    pub status: Option<viewer::StatusRx>,
}

/// What a PATCH did.
#[derive(Debug)]
pub enum PatchOutcome {
    /// Candidates added (204).
    Trickled,
    /// ICE restarted (200): the server's new ufrag, pwd and candidates.
    Restarted { fragment: String, etag: String },
}

/// A WHIP/WHEP request the shard refused: becomes `application/problem+json`.
#[derive(Debug, Clone)]
pub struct HttpFailure {
    pub status: u16,
    pub title: &'static str,
    pub detail: String,
}

impl HttpFailure {
    pub fn new(status: u16, title: &'static str, detail: impl Into<String>) -> Self {
        HttpFailure {
            status,
            title,
            detail: detail.into(),
        }
    }
}

impl From<SignalError> for HttpFailure {
    fn from(e: SignalError) -> Self {
        use prism_signal::ErrorCode as C;
        let (status, title) = match e.code {
            C::InvalidSdp => (400, "Invalid SDP"),
            C::LimitExceeded => (400, "Limit exceeded"),
            C::InvalidCandidate => (400, "Invalid candidate"),
            C::UnknownTrack => (404, "Not found"),
            C::Unauthorized => (401, "Unauthorized"),
            C::Forbidden => (403, "Forbidden"),
            C::Draining => (503, "Draining"),
            _ => (500, "Internal error"),
        };
        HttpFailure::new(status, title, e.message)
    }
}

/// WHIP (publish) or WHEP (view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpKind {
    Whip,
    Whep,
}

/// Where a WHIP/WHEP session URL leads.
#[derive(Debug, Clone)]
pub struct HttpSessionEntry {
    pub kind: HttpKind,
    pub room: String,
    pub participant: ParticipantId,
    /// WHEP: the viewer's broadcast state (its sender lives in the shard).
    pub status: Option<viewer::StatusRx>,
    /// WHEP: the server-sent events the viewer asked for (None until it
    /// POSTs its list).
    pub events: Option<viewer::EventSet>,
}

/// A cheap handle to a running shard.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    pub index: usize,
    pub media_addr: SocketAddr,
    /// The ICE-TCP listener's address, when ICE-TCP is on.
    pub tcp_addr: Option<SocketAddr>,
    tx: mpsc::Sender<ShardCommand>,
    /// Rooms on this shard, for placing new rooms on the least loaded one.
    pub rooms: Arc<AtomicUsize>,
    /// The shard's metrics, published once a second.
    pub stats: Arc<std::sync::Mutex<crate::metrics::ShardStats>>,
    /// Milliseconds since the directory's epoch at the shard's last
    /// housekeeping tick: a shard that stops ticking is stuck.
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
}

impl ShardHandle {
    /// Queues a command without waiting: `false` when the shard's queue is
    /// full (overload) or the shard is gone.
    pub fn try_send(&self, cmd: ShardCommand) -> bool {
        self.tx.try_send(cmd).is_ok()
    }

    pub async fn send(&self, cmd: ShardCommand) -> Result<(), SignalError> {
        self.tx.send(cmd).await.map_err(|_| {
            SignalError::new(
                prism_signal::ErrorCode::Internal,
                "media shard is not running",
            )
        })
    }

    pub fn room_count(&self) -> usize {
        self.rooms.load(Ordering::Relaxed)
    }
}

/// Room name → shard index. A room lives on exactly one shard.
#[derive(Debug)]
pub struct Directory {
    rooms: dashmap::DashMap<String, usize>,
    /// The time base of shard heartbeats.
    pub epoch: std::time::Instant,
    /// Set on SIGTERM: no new joins or WHIP/WHEP sessions.
    pub draining: std::sync::atomic::AtomicBool,
    /// WHIP/WHEP session id (the unguessable part of the session URL) → its
    /// room and participant. Removed by DELETE or when the participant goes.
    pub http_sessions: dashmap::DashMap<String, HttpSessionEntry>,
    /// `prism_limit_hits_total`, counted wherever a limit refuses something.
    pub limit_hits: prometheus::IntCounterVec,
    shards: std::sync::OnceLock<Vec<ShardHandle>>,
}

impl Directory {
    pub fn new() -> Arc<Self> {
        Arc::new(Directory {
            rooms: dashmap::DashMap::new(),
            epoch: std::time::Instant::now(),
            draining: std::sync::atomic::AtomicBool::new(false),
            http_sessions: dashmap::DashMap::new(),
            limit_hits: crate::metrics::limit_counter(),
            shards: std::sync::OnceLock::new(),
        })
    }

    pub fn set_shards(&self, shards: Vec<ShardHandle>) {
        // Set once at startup; a second call is a programming error we ignore.
        let _ = self.shards.set(shards);
    }

    pub fn shards(&self) -> &[ShardHandle] {
        self.shards.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The shard that hosts `room`, placing a new room on the shard with the
    /// fewest rooms.
    pub fn shard_for(&self, room: &str) -> Option<ShardHandle> {
        let shards = self.shards();
        if shards.is_empty() {
            return None;
        }
        let idx = *self.rooms.entry(room.to_owned()).or_insert_with(|| {
            shards
                .iter()
                .min_by_key(|s| s.room_count())
                .map(|s| s.index)
                .unwrap_or(0)
        });
        shards.get(idx).cloned()
    }

    /// A shard is about to host `room`: true if the directory agrees (the
    /// entry is absent or already names this shard). False means another
    /// shard took the room after this one released it; the join must retry.
    pub fn claim(&self, room: &str, shard: usize) -> bool {
        *self.rooms.entry(room.to_owned()).or_insert(shard) == shard
    }

    /// A shard closed `room`; forget it unless it was re-placed meanwhile.
    pub fn release(&self, room: &str, shard: usize) {
        self.rooms.remove_if(room, |_, v| *v == shard);
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Rooms the shards actually host (the directory may also hold rooms
    /// placed for a join still in flight).
    pub fn open_rooms(&self) -> usize {
        self.shards().iter().map(|s| s.room_count()).sum()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Participants across all shards, as last published (≤ 1 s old).
    pub fn participant_count(&self) -> u64 {
        self.shards()
            .iter()
            .map(|s| {
                let st = s.stats.lock().unwrap_or_else(|e| e.into_inner());
                st.participants.iter().sum::<u64>()
            })
            .sum()
    }

    /// Every shard ticked within `limit` (a stuck shard makes us unready).
    pub fn shards_alive(&self, limit: std::time::Duration) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let limit = limit.as_millis() as u64;
        self.shards().iter().all(|s| {
            let at = s.heartbeat.load(std::sync::atomic::Ordering::Relaxed);
            // Not ticked yet: started less than a tick ago.
            at == 0 && now < 2_000 || now.saturating_sub(at) <= limit
        })
    }
}

/// Binds every shard's socket and starts its thread.
pub fn start_shards(
    cfg: Arc<crate::config::Config>,
    directory: Arc<Directory>,
) -> anyhow::Result<Vec<ShardHandle>> {
    let n = cfg.shard_count();
    let mut handles = Vec::with_capacity(n);
    for index in 0..n {
        let port = if cfg.udp_port == 0 {
            0
        } else {
            cfg.udp_port + index as u16
        };
        let bind = SocketAddr::new(cfg.media_ip, port);
        let socket = shard::bind_udp(bind)
            .map_err(|e| anyhow::anyhow!("cannot bind media UDP socket {bind}: {e}"))?;
        let local = socket.local_addr()?;
        let tcp = if cfg.ice_tcp {
            let first = cfg.ice_tcp_port();
            let port = if first == 0 { 0 } else { first + index as u16 };
            let bind = SocketAddr::new(cfg.media_ip, port);
            Some(
                std::net::TcpListener::bind(bind)
                    .map_err(|e| anyhow::anyhow!("cannot bind ICE-TCP listener {bind}: {e}"))?,
            )
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(4096);
        let handle = ShardHandle {
            index,
            media_addr: local,
            tcp_addr: tcp.as_ref().and_then(|l| l.local_addr().ok()),
            tx,
            rooms: Default::default(),
            stats: Default::default(),
            heartbeat: Default::default(),
        };
        let cfg = cfg.clone();
        let dir = directory.clone();
        let shared = handle.clone();
        std::thread::Builder::new()
            .name(format!("prism-shard-{index}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds with the default settings");
                rt.block_on(async move {
                    match shard::Shard::new(index, socket, tcp, cfg, dir, rx, &shared) {
                        Ok(s) => s.run().await,
                        Err(e) => tracing::error!(shard = index, "shard failed to start: {e}"),
                    }
                });
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_error_names_no_particular_limit_in_its_title() {
        // Before: every LimitExceeded became "Too many tracks", also for a
        // full room or too many rooms; the detail says which limit.
        let e = SignalError::new(
            prism_signal::ErrorCode::LimitExceeded,
            "room r is full (at most 2 participants)",
        );
        let f = HttpFailure::from(e);
        assert_eq!((f.status, f.title), (400, "Limit exceeded"));
        assert!(f.detail.contains("full"));
    }

    fn handle(index: usize) -> ShardHandle {
        let (tx, _rx) = mpsc::channel(1);
        ShardHandle {
            index,
            media_addr: SocketAddr::from(([127, 0, 0, 1], 50000 + index as u16)),
            tcp_addr: None,
            tx,
            rooms: Arc::new(AtomicUsize::new(0)),
            stats: Default::default(),
            heartbeat: Default::default(),
        }
    }

    #[test]
    fn rooms_go_to_the_least_loaded_shard_and_stay_there() {
        let d = Directory::new();
        d.set_shards(vec![handle(0), handle(1)]);
        d.shards()[0].rooms.store(5, Ordering::Relaxed);
        assert_eq!(d.shard_for("a").unwrap().index, 1);
        d.shards()[1].rooms.store(9, Ordering::Relaxed);
        assert_eq!(
            d.shard_for("a").unwrap().index,
            1,
            "a room never moves while open"
        );
        assert_eq!(d.shard_for("b").unwrap().index, 0);
    }

    #[test]
    fn a_released_room_can_be_claimed_once() {
        let d = Directory::new();
        d.set_shards(vec![handle(0), handle(1)]);
        assert_eq!(d.shard_for("r").unwrap().index, 0);
        d.release("r", 0);
        // Another join placed it on shard 1 meanwhile...
        d.shards()[0].rooms.store(3, Ordering::Relaxed);
        assert_eq!(d.shard_for("r").unwrap().index, 1);
        // ...so shard 0, still holding a late join for it, must not host it too.
        assert!(!d.claim("r", 0));
        assert!(d.claim("r", 1));
        d.release("r", 0);
        assert_eq!(
            d.room_count(),
            1,
            "releasing from the wrong shard is a no-op"
        );
    }
}
