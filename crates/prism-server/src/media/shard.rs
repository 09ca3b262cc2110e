//! The shard task: one UDP socket, its peers, its rooms.
//!
//! Each turn of [`Shard::run`] waits for one of: a command from a session, a
//! datagram, the earliest peer deadline, or the one-second housekeeping tick.
//! It feeds the input to the right peer, then drains every peer that was
//! touched ([`Shard::flush`]): datagrams out, engine events, RTP/RTCP in. RTP
//! from a publisher goes through the room's forwarders and straight into each
//! subscriber's sender, within the same turn.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_core::{DropCounts, LeaveCause, ParticipantId, Room, SinkId};
use prism_signal::{ErrorCode, Leg, SignalError};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::TransportProtocol;
use slab::Slab;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::ice_tcp::{IceTcp, TcpEvent, TcpInput};
use super::peer::{Peer, PeerSettings};
use super::remote::Remote;
use super::{Directory, Outbound, SessionTx, ShardCommand};
use crate::config::Config;
use crate::metrics::ShardStats;

mod allocate;
mod control;
mod demux;
pub mod egress;
pub mod feedback;
mod forward;
mod http;
mod negotiate;
mod reports;
mod stats;
mod viewers;

pub use forward::rewrite;

pub use stats::EngineSeen;

/// Ceiling of a subscribe leg's bandwidth estimate, bits per second.
pub(super) const SUBSCRIBER_MAX_ESTIMATE: f64 = 20_000_000.0;

/// Datagrams read per wakeup before draining peers.
const RECV_BATCH: usize = 64;

pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol as SockProto, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    // Large buffers absorb bursts (a keyframe to many subscribers); the kernel
    // caps them at its own maximum.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// How a participant talks to Prism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberKind {
    /// WebSocket signaling: both legs, events, renegotiation.
    Socket,
    /// A WHIP publisher: a publish leg only, driven over HTTP.
    Whip,
    /// A WHEP viewer: a hidden subscriber whose one offer fixed its tracks.
    Whep,
}

/// A participant as the shard sees it: its session and its two legs.
#[derive(Debug)]
struct Member {
    kind: MemberKind,
    /// The WebSocket session's inbox (None for WHIP/WHEP).
    session: Option<SessionTx>,
    /// The WHIP/WHEP session id, to forget it when the participant goes.
    http_session: Option<String>,
    publish: Option<usize>,
    subscribe: Option<usize>,
    /// What its token allows: no publish leg without `publish`, no
    /// subscribe leg without `subscribe`.
    grants: crate::auth::Grants,
    joined_at: Instant,
    /// One of its legs connected (for the join-duration histogram).
    media_connected: bool,
    /// WHEP: the viewer's broadcast state, read by its event streams.
    status: Option<super::viewer::StatusTx>,
    /// WHEP: since when no publisher feeds the viewer.
    inactive_since: Option<Instant>,
    /// What it wants of each subscribed video track (`track_settings`).
    wishes: HashMap<prism_core::TrackId, Wish>,
    /// What it wants of a track it sent no `track_settings` for (a WHEP
    /// viewer's `?quality=` / `?max_width=` / `?max_height=`).
    default_wish: Wish,
}

/// A subscriber's wish for one track: at most this quality and size, or
/// nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wish {
    quality: prism_signal::Quality,
    /// 0: no limit.
    max_width: u32,
    max_height: u32,
    enabled: bool,
}

impl Default for Wish {
    fn default() -> Self {
        Wish {
            quality: prism_signal::Quality::High,
            max_width: 0,
            max_height: 0,
            enabled: true,
        }
    }
}

impl Member {
    /// Sends to the participant's WebSocket, if it has one. Err when its
    /// inbox is full (it stopped reading) or gone.
    fn tell(&self, out: Outbound) -> Result<(), ()> {
        match &self.session {
            Some(s) => s.try_send(out).map_err(|_| ()),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct RoomState {
    core: Room,
    members: HashMap<ParticipantId, Member>,
    /// The deadline registered for this room in `room_timers`.
    timer_at: Option<Instant>,
}

/// The least time between two `malloc_trim` calls of one shard.
const TRIM_INTERVAL: Duration = Duration::from_secs(2);

pub struct Shard {
    index: usize,
    /// A peer closed since freed memory was last handed back to the OS.
    trim_due: bool,
    last_trim: Instant,
    socket: UdpSocket,
    /// ICE-TCP: the listener and its connections (`ice_tcp.rs`), if enabled.
    tcp: Option<IceTcp>,
    /// The address given to the engine as the local side of every datagram:
    /// it must equal the advertised candidate.
    local_addr: SocketAddr,
    settings: PeerSettings,
    cfg: Arc<Config>,
    directory: Arc<Directory>,
    commands: mpsc::Receiver<ShardCommand>,
    room_count: Arc<AtomicUsize>,
    peers: Slab<Peer>,
    by_addr: HashMap<SocketAddr, usize>,
    by_ufrag: HashMap<String, usize>,
    rooms: Slab<RoomState>,
    rooms_by_name: HashMap<String, usize>,
    /// (deadline, peer) for every peer's next engine timeout.
    timers: BTreeSet<(Instant, usize)>,
    /// (deadline, room) for every room's next `Room::poll_timeout`.
    room_timers: BTreeSet<(Instant, usize)>,
    /// (deadline, peer) for every subscribe leg whose pacer holds packets
    /// (`Peer::pacer`).
    pace_timers: BTreeSet<(Instant, usize)>,
    dirty: Vec<usize>,
    /// Plain counters for metrics, published once a second to `published`.
    stats: ShardStats,
    published: Arc<Mutex<ShardStats>>,
    /// Counters of rooms already closed, so totals never go down.
    closed_rooms: prism_core::RoomCounters,
    /// Packets the shard dropped before or after the rooms' forwarders
    /// (unknown SSRC, sender gone, extension rewrite, engine refusal).
    drops: DropCounts,
    /// What the last rate-limited summary of dropped datagrams counted.
    drop_summary: stats::DropSummary,
    /// When the current batch of datagrams was read (forwarding latency).
    turn_at: Instant,
    /// Milliseconds since `epoch` at the last housekeeping tick (liveness).
    heartbeat: Arc<AtomicU64>,
    epoch: Instant,
    // Scratch buffers reused every turn (no allocation once warm).
    reads: Vec<TaggedRTCMessage>,
    events: Vec<RTCPeerConnectionEvent>,
    sends: Vec<(SinkId, rtp::Packet)>,
    recv_buf: Vec<u8>,
}

impl Shard {
    pub fn new(
        index: usize,
        socket: std::net::UdpSocket,
        tcp: Option<std::net::TcpListener>,
        cfg: Arc<Config>,
        directory: Arc<Directory>,
        commands: mpsc::Receiver<ShardCommand>,
        handle: &super::ShardHandle,
    ) -> std::io::Result<Shard> {
        let room_count = handle.rooms.clone();
        let published = handle.stats.clone();
        let heartbeat = handle.heartbeat.clone();
        let epoch = directory.epoch;
        let socket = UdpSocket::from_std(socket)?;
        let port = socket.local_addr()?.port();
        let advertised: Vec<SocketAddr> = cfg
            .candidate_ips()
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        let mut settings = PeerSettings::new(advertised.clone(), cfg.peer_timeout);
        let tcp = match tcp {
            Some(listener) => {
                let port = listener.local_addr()?.port();
                settings.advertised_tcp = cfg
                    .candidate_ips()
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                Some(IceTcp::new(listener, settings.advertised_tcp[0])?)
            }
            None => None,
        };
        Ok(Shard {
            index,
            socket,
            tcp,
            local_addr: advertised[0],
            settings,
            cfg,
            directory,
            commands,
            room_count,
            peers: Slab::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            rooms: Slab::new(),
            rooms_by_name: HashMap::new(),
            timers: BTreeSet::new(),
            room_timers: BTreeSet::new(),
            pace_timers: BTreeSet::new(),
            dirty: Vec::new(),
            stats: ShardStats::default(),
            published,
            closed_rooms: Default::default(),
            drops: DropCounts::default(),
            drop_summary: stats::DropSummary::new(Instant::now()),
            turn_at: Instant::now(),
            trim_due: false,
            last_trim: Instant::now(),
            heartbeat,
            epoch,
            reads: Vec::new(),
            events: Vec::new(),
            sends: Vec::new(),
            recv_buf: vec![0u8; 2048],
        })
    }

    pub async fn run(mut self) {
        tracing::info!(shard = self.index, addr = %self.local_addr, "media shard running");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let peer_next = self.timers.first().map(|(t, _)| *t);
            let room_next = self.room_timers.first().map(|(t, _)| *t);
            let pace_next = self.pace_timers.first().map(|(t, _)| *t);
            let deadline = [peer_next, room_next, pace_next]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                res = self.socket.readable() => {
                    if res.is_ok() {
                        self.on_readable();
                    }
                }
                input = tcp_next(&mut self.tcp) => match input {
                    TcpInput::Accepted(stream, remote) => {
                        if let Some(tcp) = self.tcp.as_mut() {
                            tcp.admit(Instant::now(), stream, remote);
                        }
                    }
                    TcpInput::Event(ev) => self.on_tcp_events(ev),
                },
                // The tick before the deadline: a deadline that keeps
                // coming due must not starve housekeeping.
                _ = tick.tick() => self.housekeeping(),
                _ = tokio::time::sleep_until(deadline.into()) => self.on_timers(),
            }
            self.flush();
        }
        tracing::info!(shard = self.index, "media shard stopped");
    }

    // ------------------------------------------------------------------
    // Network input
    // ------------------------------------------------------------------

    fn on_readable(&mut self) {
        let now = Instant::now();
        self.turn_at = now;
        for _ in 0..RECV_BATCH {
            let (n, from) = match self.socket.try_recv_from(&mut self.recv_buf) {
                Ok(v) => v,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors (port unreachable) surface here on some systems.
                    tracing::debug!(shard = self.index, "recv error: {e}");
                    continue;
                }
            };
            self.on_datagram(now, from, n);
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        // Paced packets first: each pacer re-arms its own deadline, always
        // in the future once polled now.
        while let Some(&(at, key)) = self.pace_timers.first() {
            if at > now {
                break;
            }
            self.pace_timers.pop_first();
            if let Some(p) = self.peers.get_mut(key) {
                p.pace_at = None;
            }
            self.pace(now, key);
        }
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(p) = self.peers.get_mut(key) {
                p.timer_at = None;
                if let Err(e) = p.pc.handle_timeout(now) {
                    tracing::debug!(shard = self.index, peer = key, "handle_timeout: {e}");
                }
                self.mark(key);
            }
        }
        // Take every due room deadline first: handling one re-arms the
        // room's timer, and a deadline re-armed inside this loop would be
        // taken again forever (an empty room's close deadline stays due
        // until the room is closed).
        let mut due = Vec::new();
        while let Some(&(at, room)) = self.room_timers.first() {
            if at > now {
                break;
            }
            self.room_timers.pop_first();
            if let Some(r) = self.rooms.get_mut(room) {
                r.timer_at = None;
            }
            due.push(room);
        }
        if due.is_empty() {
            return;
        }
        // An empty room's deadline is its close.
        self.close_expired_rooms(now);
        for room in due {
            // Deferred keyframe requests; re-arms what is left, all in the
            // future now.
            if let Some(r) = self.rooms.get_mut(room) {
                r.core.handle_timeout(now);
            }
            self.flush_keyframe_requests(now, room);
        }
    }

    /// Once a second: remove silent peers' participants and close expired rooms.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        if let Some(tcp) = self.tcp.as_mut() {
            for conn in tcp.unbound_expired(now) {
                tcp.close(conn);
                tcp.stats.unbound_closed += 1;
            }
        }
        let timeout = self.cfg.peer_timeout;
        let silent: Vec<(usize, ParticipantId)> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_rx_at) > timeout)
            .map(|(_, p)| (p.room, p.participant))
            .collect();
        for (_, p) in self.peers.iter() {
            if !p.connected && now.saturating_duration_since(p.last_rx_at) > timeout {
                if p.ice_connected {
                    self.stats.dtls_failures += 1;
                } else {
                    self.stats.ice_failures += 1;
                }
            }
        }
        for (room, pid) in silent {
            tracing::info!(shard = self.index, participant = %pid, "media silent past peer_timeout");
            self.remove_participant(now, room, pid, LeaveCause::Timeout);
        }
        for (_, r) in &self.rooms {
            let c = &r.core.counters;
            tracing::debug!(
                room = r.core.name(),
                forwarded = c.packets_forwarded,
                keyframe_requests_in = c.keyframe_requests_in,
                keyframe_requests_out = c.keyframe_requests_out,
                nacks_in = c.nacks_in,
                retransmits = c.retransmits,
                retransmits_rtx = self.stats.retransmits_rtx,
                nack_misses = c.nack_misses,
                nack_expired = c.nack_expired,
                nack_duplicates = c.nack_duplicates,
                drops = ?c.drops.iter().filter(|(_, n)| *n > 0).map(|(r, n)| (r.as_str(), n)).collect::<Vec<_>>(),
                "room counters"
            );
        }
        for (_, p) in self.peers.iter().filter(|(_, p)| p.leg == Leg::Subscribe) {
            tracing::debug!(
                participant = %p.participant,
                estimate_bps = p.available_bitrate(),
                "subscribe leg estimate"
            );
        }
        self.viewer_housekeeping(now);
        self.allocate(now);
        self.send_rembs(now);
        self.send_sender_reports(now);
        self.sample_engine_stats(now);
        self.close_expired_rooms(now);
        self.trim_heap(now);
        self.count_drops(now);
        self.heartbeat.store(
            now.saturating_duration_since(self.epoch).as_millis() as u64,
            Ordering::Relaxed,
        );
        self.publish_stats();
    }

    /// After peers closed, at most every few seconds: hand the allocator's
    /// free pages back to the OS. A closed connection frees hundreds of KiB
    /// in small blocks; glibc keeps them in the shard thread's arena, so
    /// without this a server's RSS stayed at its high-water mark after churn
    /// (the soak with a long-lived subscriber: +81% after everyone left).
    fn trim_heap(&mut self, now: Instant) {
        if !self.trim_due || now.saturating_duration_since(self.last_trim) < TRIM_INTERVAL {
            return;
        }
        self.trim_due = false;
        self.last_trim = now;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory; it takes the
        // allocator's own locks and touches no live allocation.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Closes every room that has been empty for `room_empty_timeout`.
    fn close_expired_rooms(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.core.is_expired(now))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            let r = self.rooms.remove(key);
            self.closed_rooms.absorb(&r.core.counters);
            if let Some(at) = r.timer_at {
                self.room_timers.remove(&(at, key));
            }
            self.rooms_by_name.remove(r.core.name());
            self.directory.release(r.core.name(), self.index);
            self.room_count.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(shard = self.index, room = r.core.name(), "room closed");
        }
    }

    // ------------------------------------------------------------------
    // Draining peers
    // ------------------------------------------------------------------

    fn mark(&mut self, key: usize) {
        if let Some(p) = self.peers.get_mut(key) {
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Drains every touched peer until nothing is left to do.
    fn flush(&mut self) {
        while let Some(key) = self.dirty.pop() {
            self.drain(key);
        }
    }

    fn drain(&mut self, key: usize) {
        let now = Instant::now();
        let mut reads = std::mem::take(&mut self.reads);
        let mut events = std::mem::take(&mut self.events);
        let congested;
        {
            let Some(peer) = self.peers.get_mut(key) else {
                return;
            };
            peer.dirty = false;
            while let Some(out) = peer.pc.poll_write() {
                if out.transport.transport_protocol == TransportProtocol::TCP {
                    // The connection the peer's checks came on (a peer has
                    // one per advertised address at most: a short scan).
                    let to = out.transport.peer_addr;
                    if let Some(tcp) = self.tcp.as_mut() {
                        match peer.tcp.iter().find(|(a, _)| *a == to) {
                            Some(&(_, conn)) => tcp.send(conn, out.message.freeze()),
                            // The connection closed under the engine's feet.
                            None => tcp.stats.send_drops += 1,
                        }
                    }
                    continue;
                }
                match self
                    .socket
                    .try_send_to(&out.message, out.transport.peer_addr)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // The socket buffer is full: the datagram is lost like
                        // on the network; RTCP recovers what matters.
                    }
                    Err(e) => tracing::trace!("send to {}: {e}", out.transport.peer_addr),
                }
            }
            while let Some(ev) = peer.pc.poll_event() {
                events.push(ev);
            }
            while let Some(m) = peer.pc.poll_read() {
                reads.push(m);
            }
            rearm(
                &mut self.timers,
                &mut peer.timer_at,
                peer.pc.poll_timeout(),
                key,
            );
            congested =
                peer.leg == Leg::Subscribe && peer.estimate.congestions() != peer.congestions_seen;
        }
        if congested {
            self.reallocate_congested(now, key);
        }
        for ev in events.drain(..) {
            self.on_peer_event(now, key, ev);
        }
        for m in reads.drain(..) {
            self.on_peer_message(now, key, m.message);
        }
        self.reads = reads;
        self.events = events;
    }

    fn on_peer_event(&mut self, now: Instant, key: usize, ev: RTCPeerConnectionEvent) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(p) = self.peers.get_mut(key) else {
                    return;
                };
                tracing::debug!(shard = self.index, participant = %p.participant, leg = p.leg.as_str(), "peer {state}");
                match state {
                    RTCPeerConnectionState::Connected if !p.connected => {
                        p.connected = true;
                        let (room, pid) = (p.room, p.participant);
                        if let Some(m) = self
                            .rooms
                            .get_mut(room)
                            .and_then(|r| r.members.get_mut(&pid))
                        {
                            if !m.media_connected {
                                m.media_connected = true;
                                let d = now.saturating_duration_since(m.joined_at);
                                self.stats.join_duration.observe(d.as_secs_f64());
                            }
                        }
                        let Some(p) = self.peers.get_mut(key) else {
                            return;
                        };
                        tracing::info!(
                            participant = %p.participant,
                            leg = p.leg.as_str(),
                            setup_ms = now.duration_since(p.created_at).as_millis() as u64,
                            "media connected"
                        );
                        if p.leg == Leg::Subscribe {
                            self.attach_connected_senders(key);
                        }
                    }
                    RTCPeerConnectionState::Failed => {
                        if p.ice_connected {
                            self.stats.dtls_failures += 1;
                        } else {
                            self.stats.ice_failures += 1;
                        }
                        let (room, pid) = (p.room, p.participant);
                        tracing::info!(participant = %pid, "media connection failed");
                        self.remove_participant(now, room, pid, LeaveCause::Timeout);
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected,
            ) => {
                let Some(p) = self.peers.get_mut(key) else {
                    return;
                };
                p.ice_connected = true;
                let early = p.setup.on_ice_connected();
                tracing::debug!(
                    participant = %p.participant,
                    leg = p.leg.as_str(),
                    ice_ms = now.saturating_duration_since(p.created_at).as_millis() as u64,
                    replayed = early.len(),
                    "ice connected"
                );
                // What arrived before the pair was selected (a ClientHello),
                // now that the engine can answer it.
                for (from, data) in early {
                    self.feed(now, key, from, data);
                }
                self.mark(key);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                // A stream of a published track (a simulcast layer each, by
                // its rid) started: its SSRC is that layer's.
                let Some(p) = self.peers.get_mut(key) else {
                    return;
                };
                let rid = init.receiver_id;
                if let Some(t) = p.pub_tracks.iter_mut().find(|t| t.receiver == rid) {
                    // After a renegotiation the engine re-announces a bound
                    // SSRC without its rid: it keeps the layer it had.
                    let known = t
                        .ssrcs
                        .iter()
                        .find(|(s, _)| *s == init.ssrc)
                        .map(|(_, l)| *l);
                    let layer = match (init.rid.as_deref(), known) {
                        (None, Some(l)) => l,
                        (rid, _) => t.layer_of(rid),
                    };
                    t.learn(init.ssrc, layer);
                }
            }
            _ => {}
        }
    }

    fn on_peer_message(&mut self, now: Instant, key: usize, msg: RTCMessage) {
        match msg {
            RTCMessage::RtpPacket(track_id, packet) => self.on_rtp(now, key, &track_id, packet),
            RTCMessage::RtcpPacket(_, packets) => self.on_rtcp(now, key, &packets),
            _ => {}
        }
    }

    /// Keeps the room's next deadline in the shard's timer set.
    fn arm_room_timer(&mut self, room: usize) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        rearm(
            &mut self.room_timers,
            &mut r.timer_at,
            r.core.poll_timeout(),
            room,
        );
    }

    fn candidate_lines(&self) -> Vec<String> {
        self.settings
            .advertised
            .iter()
            .enumerate()
            .map(|(i, a)| {
                // Host candidate priority (RFC 8445 §5.1.2.1), local preference
                // falling with the position in the advertised list.
                let prio: u32 = (126 << 24) | ((65535 - i as u32) << 8) | 255;
                format!(
                    "candidate:{} 1 udp {} {} {} typ host",
                    i + 1,
                    prio,
                    a.ip(),
                    a.port()
                )
            })
            .chain(
                self.settings
                    .advertised_tcp
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        // RFC 6544 §4.2: local preference (2^13 × direction
                        // preference (passive: 4) + other preference), below every
                        // UDP candidate's, so a client that can use UDP does.
                        let local = (4u32 << 13) | (8191 - i as u32);
                        let prio: u32 = (126 << 24) | (local << 8) | 255;
                        format!(
                            "candidate:{} 1 tcp {} {} {} typ host tcptype passive",
                            self.settings.advertised.len() + i + 1,
                            prio,
                            a.ip(),
                            a.port()
                        )
                    }),
            )
            .collect()
    }

    /// Sends one datagram the shard made itself (not the engine's).
    pub(super) fn send_datagram(&mut self, to: Remote, data: bytes::Bytes) {
        match to {
            Remote::Udp(addr) => {
                let _ = self.socket.try_send_to(&data, addr);
            }
            Remote::Tcp { conn, .. } => {
                if let Some(tcp) = self.tcp.as_mut() {
                    tcp.send(conn, data);
                }
            }
        }
    }

    /// Frames and closes from ICE-TCP connections: this one and whatever
    /// else is ready (a bounded batch, like UDP reads).
    fn on_tcp_events(&mut self, first: TcpEvent) {
        let now = Instant::now();
        self.turn_at = now;
        let mut next = Some(first);
        let mut n = 0;
        while let Some(ev) = next.take() {
            match ev {
                TcpEvent::Frame { conn, data } => self.on_tcp_frame(now, conn, data),
                TcpEvent::Closed { conn } => self.close_tcp(conn),
            }
            n += 1;
            if n < RECV_BATCH {
                next = self.tcp.as_mut().and_then(|t| t.try_event());
            }
        }
    }

    /// A connection ended or is closed: the peer forgets it. The peer's ICE
    /// notices if that was its path (consent), like a UDP path gone quiet.
    fn close_tcp(&mut self, conn: usize) {
        let Some(c) = self.tcp.as_mut().and_then(|t| t.close(conn)) else {
            return;
        };
        if let Some(p) = c.peer.and_then(|k| self.peers.get_mut(k)) {
            p.tcp.retain(|(_, k)| *k != conn);
        }
    }

    fn new_peer(
        &mut self,
        now: Instant,
        rk: usize,
        pid: ParticipantId,
        leg: Leg,
    ) -> Result<usize, SignalError> {
        let (peer, _) = Peer::new(now, &self.settings, rk, pid, leg).map_err(|e| {
            SignalError::new(
                ErrorCode::Internal,
                format!("cannot create peer connection: {e}"),
            )
        })?;
        let ufrag = peer.ufrag.clone();
        let key = self.peers.insert(peer);
        self.by_ufrag.insert(ufrag, key);
        Ok(key)
    }

    fn close_peer(&mut self, key: usize) {
        if !self.peers.contains(key) {
            return;
        }
        self.trim_due = true;
        let mut peer = self.peers.remove(key);
        let _ = peer.pc.close();
        // Send what closing queued (DTLS close_notify) while we still can.
        while let Some(out) = peer.pc.poll_write() {
            let to = out.transport.peer_addr;
            let remote = match peer.tcp.iter().find(|(a, _)| *a == to) {
                Some(&(addr, conn)) => Remote::Tcp { addr, conn },
                None => Remote::Udp(to),
            };
            self.send_datagram(remote, out.message.freeze());
        }
        // Its ICE-TCP connections served only it; the writer sends what is
        // queued before the socket closes only if it gets there first.
        if let Some(tcp) = self.tcp.as_mut() {
            for (_, conn) in &peer.tcp {
                tcp.close(*conn);
            }
        }
        self.by_ufrag.remove(&peer.ufrag);
        for a in &peer.addrs {
            if self.by_addr.get(a) == Some(&key) {
                self.by_addr.remove(a);
            }
        }
        if let Some(at) = peer.timer_at {
            self.timers.remove(&(at, key));
        }
        if let Some(at) = peer.pace_at {
            self.pace_timers.remove(&(at, key));
        }
        // A key queued in `dirty` is skipped by drain() once the slot is empty;
        // if the slot is reused first, draining the new peer is harmless.
    }
}

// ----------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------

/// Moves `key`'s entry in a deadline set from `armed` to `next` (the set
/// holds one (deadline, key) per peer, room or pacer; `armed` remembers it).
/// The next ICE-TCP connection, frame or close; never without ICE-TCP.
async fn tcp_next(tcp: &mut Option<IceTcp>) -> TcpInput {
    match tcp {
        Some(t) => t.next_input().await,
        None => std::future::pending().await,
    }
}

pub(super) fn rearm(
    set: &mut BTreeSet<(Instant, usize)>,
    armed: &mut Option<Instant>,
    next: Option<Instant>,
    key: usize,
) {
    if next == *armed {
        return;
    }
    if let Some(old) = armed.take() {
        set.remove(&(old, key));
    }
    if let Some(at) = next {
        set.insert((at, key));
    }
    *armed = next;
}

pub(super) fn pack_sink(peer: usize, slot: usize) -> SinkId {
    SinkId(((peer as u64) << 32) | slot as u64)
}

pub(super) fn unpack_sink(s: SinkId) -> (usize, usize) {
    ((s.0 >> 32) as usize, (s.0 & 0xFFFF_FFFF) as usize)
}

/// What a batch of queued sends is, for [`Shard::flush_sends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendKind {
    /// Forwarded live packets: written at once, unless their leg's pacer
    /// still holds packets (then behind those).
    Live,
    /// Answers to NACKs: written at once, as RTX where negotiated.
    Retransmission,
    /// A keyframe-cache start: through the leg's pacer.
    CacheStart,
}
