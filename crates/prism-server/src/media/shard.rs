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

use bytes::BytesMut;
use prism_core::{
    DropCounts, DropReason, Forward, LeaveCause, MediaKind, PacketMeta, ParticipantId, Room,
    SinkId, TrackId,
};
use prism_signal::{ErrorCode, Leg, SignalError};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use slab::Slab;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::peer::{Peer, PeerSettings, SetupAction};
use super::stun::{self, DatagramDrop};
use super::{Directory, Outbound, SessionTx, ShardCommand};
use crate::config::{Config, PublishBitrate};
use crate::metrics::ShardStats;

mod control;
pub mod egress;
pub mod feedback;
mod http;
mod stats;

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
        let settings = PeerSettings::new(advertised.clone(), cfg.peer_timeout);
        Ok(Shard {
            index,
            socket,
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

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, n: usize) {
        let routed = match stun::classify(&self.recv_buf[..n]) {
            // DTLS and SRTP authenticate themselves inside the engine; they
            // only reach a peer from an address an authentic check proved.
            stun::Class::Dtls | stun::Class::Rtp => self
                .by_addr
                .get(&from)
                .map(|k| (*k, stun::Kind::NotStun))
                .ok_or(DatagramDrop::UnknownAddress),
            stun::Class::Empty => Err(DatagramDrop::Empty),
            // Whatever the engine would parse as STUN must be an authentic
            // binding request: the engine acts on a request's role
            // attributes before it checks integrity (see `stun`).
            stun::Class::Stun => self.authenticate_stun(from, n),
        };
        let (key, kind) = match routed {
            Ok(r) => r,
            Err(reason) => {
                // Counted, never logged: a flood must not reach the log.
                self.stats.datagram_drops[reason.index()] += 1;
                return;
            }
        };
        let Some(peer) = self.peers.get_mut(key) else {
            self.stats.datagram_drops[DatagramDrop::UnknownAddress.index()] += 1;
            return;
        };
        peer.last_rx_at = now;
        let data = BytesMut::from(&self.recv_buf[..n]);
        if !peer.ice_connected {
            self.on_setup_datagram(now, key, from, kind, data);
        } else {
            self.feed(now, key, from, data);
        }
        self.mark(key);
    }

    /// A datagram for a peer whose ICE is not connected yet: see
    /// [`super::peer::SetupHold`] for what the engine would lose and why.
    fn on_setup_datagram(
        &mut self,
        now: Instant,
        key: usize,
        from: SocketAddr,
        kind: stun::Kind,
        data: BytesMut,
    ) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        match peer.setup.on_datagram(from, kind, data) {
            SetupAction::Feed(datagrams) => {
                for (from, data) in datagrams {
                    self.feed(now, key, from, data);
                }
            }
            SetupAction::Held => {}
            SetupAction::HeldNominate(addr, check) => {
                match stun::nominating_copy(&check, &peer.ice_pwd) {
                    Ok(req) => {
                        let req = BytesMut::from(&req[..]);
                        peer.setup.nominated(addr, req.clone());
                        self.stats.forced_nominations += 1;
                        self.feed(now, key, addr, req);
                    }
                    // The check was authentic when it came: cannot happen.
                    Err(e) => tracing::debug!(peer = key, "nominating copy: {e}"),
                }
            }
            SetupAction::Overflow => {
                self.stats.datagram_drops[DatagramDrop::BeforeIce.index()] += 1;
            }
        }
    }

    /// Hands one datagram to a peer's engine.
    fn feed(&mut self, now: Instant, key: usize, from: SocketAddr, data: BytesMut) {
        let local_addr = self.local_addr;
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        if let Err(e) = peer.pc.handle_read(msg) {
            // Malformed or unexpected input for this peer: never fatal.
            tracing::trace!(shard = self.index, peer = key, "handle_read: {e}");
        }
    }

    /// The peer a STUN message in `recv_buf[..n]` is for. An authentic
    /// binding request names it by ufrag, and its
    /// source address is routed to that peer only once it proved to know
    /// the peer's ICE password. Anything else is a drop reason: forged or
    /// stray STUN never reaches an engine and never moves a route.
    fn authenticate_stun(
        &mut self,
        from: SocketAddr,
        n: usize,
    ) -> Result<(usize, stun::Kind), DatagramDrop> {
        let data = &self.recv_buf[..n];
        let req = match stun::parse(data)? {
            stun::Stun::Request(req) => req,
            // The engine checks a response's integrity (with the client's
            // password) before it acts on it; it may only come from an
            // address an authentic request already proved.
            stun::Stun::SuccessResponse => {
                return self
                    .by_addr
                    .get(&from)
                    .map(|k| (*k, stun::Kind::BindingSuccess))
                    .ok_or(DatagramDrop::UnknownAddress)
            }
        };
        let key = *self
            .by_ufrag
            .get(req.local_ufrag)
            .ok_or(DatagramDrop::StunUnknownUfrag)?;
        let peer = self
            .peers
            .get_mut(key)
            .ok_or(DatagramDrop::StunUnknownUfrag)?;
        req.verify(data, &mut peer.ice_pwd)?;
        if req.controlled {
            // Prism is ICE-lite, so always the controlled agent (RFC 8445
            // §6.1.1); a client that claims that role too is told so with a
            // 487 and keeps its checks coming as controlling (§7.2.5.1).
            // The engine would instead switch itself to controlling.
            if let Ok(resp) = stun::role_conflict_response(req.transaction_id, &peer.ice_pwd) {
                let _ = self.socket.try_send_to(&resp, from);
            }
            return Err(DatagramDrop::StunRoleControlled);
        }
        let nominates = req.use_candidate;
        if self.by_addr.get(&from) != Some(&key) {
            self.route_addr(from, key);
        }
        Ok((key, stun::Kind::BindingRequest { nominates }))
    }

    fn route_addr(&mut self, addr: SocketAddr, key: usize) {
        if let Some(old) = self.by_addr.insert(addr, key) {
            if let Some(p) = self.peers.get_mut(old) {
                p.addrs.retain(|a| *a != addr);
            }
        }
        if let Some(p) = self.peers.get_mut(key) {
            p.addrs.push(addr);
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
        {
            let Some(peer) = self.peers.get_mut(key) else {
                return;
            };
            peer.dirty = false;
            while let Some(out) = peer.pc.poll_write() {
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
            let next = peer.pc.poll_timeout();
            if next != peer.timer_at {
                if let Some(old) = peer.timer_at.take() {
                    self.timers.remove(&(old, key));
                }
                if let Some(at) = next {
                    self.timers.insert((at, key));
                }
                peer.timer_at = next;
            }
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
                let Some(p) = self.peers.get_mut(key) else {
                    return;
                };
                let rid = init.receiver_id;
                let ssrcs: Vec<u32> =
                    p.pc.rtp_receiver(rid)
                        .map(|r| r.track().ssrcs().collect())
                        .unwrap_or_default();
                if let Some(t) = p.pub_tracks.iter_mut().find(|t| t.receiver == rid) {
                    for s in ssrcs {
                        if !t.ssrcs.contains(&s) {
                            t.ssrcs.push(s);
                        }
                    }
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

    // ------------------------------------------------------------------
    // The packet path
    // ------------------------------------------------------------------

    fn on_rtp(&mut self, now: Instant, key: usize, engine_track: &str, packet: rtp::Packet) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let track = match peer.track_for_ssrc(ssrc) {
            Some(t) => t.track,
            None => {
                // First packet of a stream the engine did not announce yet:
                // find its m-section through the receiver's track id, once.
                let found = peer.pub_tracks.iter().position(|t| {
                    peer.pc
                        .rtp_receiver(t.receiver)
                        .is_some_and(|r| r.track().track_id() == engine_track)
                });
                match found {
                    Some(i) => {
                        peer.pub_tracks[i].ssrcs.push(ssrc);
                        peer.pub_tracks[i].track
                    }
                    None => {
                        self.drops.inc(DropReason::UnknownSsrc);
                        return;
                    }
                }
            }
        };
        let room_key = peer.room;
        self.stats.rtp_in_packets += 1;
        self.stats.rtp_in_bytes += packet.payload.len() as u64;
        let meta = PacketMeta::of(&packet);
        let Some(room) = self.rooms.get_mut(room_key) else {
            // The peer outlived its room for this turn (it closes next).
            self.drops.inc(DropReason::UnknownSsrc);
            return;
        };
        let sends = &mut self.sends;
        let drops = &mut self.drops;
        room.core.forward(
            now,
            track,
            &meta,
            &packet.payload,
            |sink, params, decision| {
                if let Forward::Send(sp) = decision {
                    queue_rewritten(sends, drops, sink, &packet, sp, &params.extensions);
                }
            },
        );
        // The packet itself moves into the track's shared retransmission history.
        room.core.store(now, track, packet);
        self.flush_sends(now, SendKind::Live);
        // New subscribers waiting for a keyframe may have asked for one.
        self.flush_keyframe_requests(now, room_key);
    }

    /// Writes every queued (sink, packet) to its subscriber's sender (see
    /// [`Shard::write_to_sender`]). A keyframe-cache start goes into its
    /// leg's pacer instead, and so does any live packet for a leg whose
    /// pacer still holds one: the leg then gets everything in order, the
    /// cached GOP first, at the pacer's rate. Retransmissions answer NACKs
    /// for packets already sent and never wait.
    fn flush_sends(&mut self, now: Instant, kind: SendKind) {
        let mut sends = std::mem::take(&mut self.sends);
        if kind == SendKind::Live && !sends.is_empty() {
            // One clock read per batch: every packet of it waited this long
            // since its datagram was read.
            let latency = Instant::now().saturating_duration_since(self.turn_at);
            self.stats
                .forwarding_latency
                .observe_n(latency.as_secs_f64(), sends.len() as u64);
        }
        // The batch leaves now: one abs-send-time value for all of it.
        let mut send_time = egress::SendTime::new(now.saturating_duration_since(self.epoch));
        let mut paced: Vec<usize> = Vec::new();
        for (sink, pkt) in sends.drain(..) {
            let (peer_key, slot) = unpack_sink(sink);
            let retransmission = kind == SendKind::Retransmission;
            if !retransmission {
                if let Some(sub) = self.peers.get_mut(peer_key) {
                    if kind == SendKind::CacheStart || !sub.pacer.is_empty() {
                        sub.pacer.push(now, (slot, pkt));
                        if !paced.contains(&peer_key) {
                            paced.push(peer_key);
                        }
                        continue;
                    }
                }
            }
            self.write_to_sender(now, peer_key, slot, pkt, retransmission, &mut send_time);
        }
        self.sends = sends;
        for key in paced {
            self.pace(now, key);
        }
    }

    /// Writes what a subscribe leg's pacer lets leave now and registers its
    /// next deadline.
    fn pace(&mut self, now: Instant, key: usize) {
        let mut send_time = egress::SendTime::new(now.saturating_duration_since(self.epoch));
        loop {
            let Some(p) = self.peers.get_mut(key) else {
                return;
            };
            let Some((slot, pkt)) = p.pacer.poll(now) else {
                break;
            };
            // The sender may have gone while its packets waited, and its
            // slot been given to another track: never send on that one.
            let same = matches!(p.senders.get(slot), Some(Some(s)) if s.ssrc == pkt.header.ssrc);
            if !same {
                self.drops.inc(DropReason::SenderGone);
                continue;
            }
            self.write_to_sender(now, key, slot, pkt, false, &mut send_time);
        }
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        let next = p.pacer.poll_timeout();
        if next != p.pace_at {
            if let Some(old) = p.pace_at.take() {
                self.pace_timers.remove(&(old, key));
            }
            if let Some(at) = next {
                self.pace_timers.insert((at, key));
            }
            p.pace_at = next;
        }
    }

    /// Writes one packet to its subscriber's sender, made ready by
    /// [`egress::prepare`] (mid and abs-send-time stamped; a retransmission
    /// as RTX where negotiated). Whatever cannot be sent is counted under a
    /// [`DropReason`].
    fn write_to_sender(
        &mut self,
        now: Instant,
        peer_key: usize,
        slot: usize,
        pkt: rtp::Packet,
        retransmission: bool,
        send_time: &mut egress::SendTime,
    ) {
        let Some(sub) = self.peers.get_mut(peer_key) else {
            self.drops.inc(DropReason::SenderGone);
            return;
        };
        let Some(Some(s)) = sub.senders.get_mut(slot) else {
            self.drops.inc(DropReason::SenderGone);
            return;
        };
        let out = match egress::prepare(pkt, s, retransmission, send_time) {
            Ok(out) => out,
            Err(reason) => {
                self.drops.inc(reason);
                return;
            }
        };
        let result = match out {
            egress::Outgoing::Rtx(pkt) => {
                self.stats.retransmits_rtx += 1;
                self.stats.rtp_out_packets += 1;
                self.stats.rtp_out_bytes += pkt.payload.len() as u64;
                // write_rtp takes only the sender's primary SSRC; the
                // connection's own write path routes by SSRC and knows the
                // RTX stream from negotiation.
                sub.pc.handle_write(TaggedRTCMessage {
                    now,
                    message: RTCMessage::RtpPacket(String::new(), pkt),
                })
            }
            egress::Outgoing::Media(pkt) => match sub.pc.rtp_sender(s.sender) {
                Some(mut sender) => {
                    self.stats.rtp_out_packets += 1;
                    self.stats.rtp_out_bytes += pkt.payload.len() as u64;
                    sender.write_rtp(now, pkt)
                }
                None => {
                    self.drops.inc(DropReason::SenderGone);
                    return;
                }
            },
        };
        if let Err(e) = result {
            // Counted; the reason is visible at trace level only (one line
            // per packet otherwise).
            self.drops.inc(DropReason::SendFailed);
            tracing::trace!("write_rtp: {e}");
        }
        self.mark(peer_key);
    }

    fn on_rtcp(&mut self, now: Instant, key: usize, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        let Some(peer) = self.peers.get(key) else {
            return;
        };
        if peer.leg == Leg::Publish {
            // The publisher's sender reports: keep each stream's NTP ↔ RTP
            // mapping to derive the subscribers' reports.
            let room = peer.room;
            let reports = feedback::read_publisher_reports(&peer.pub_tracks, packets);
            if let Some(r) = self.rooms.get_mut(room) {
                for (track, ssrc, ntp, rtp) in reports {
                    r.core.on_sender_report(now, track, ssrc, ntp, rtp);
                }
            }
            return;
        }
        let (room, pid) = (peer.room, peer.participant);
        let f = feedback::read_subscriber_rtcp(&peer.senders, packets);
        self.stats.plis_in += f.plis;
        self.stats.firs_in += f.firs;
        if let (Some(bps), Some(p)) = (f.remb, self.peers.get_mut(key)) {
            p.remb_in = Some(bps);
        }
        for t in f.keyframes {
            self.request_keyframe(now, room, t);
        }
        for (track, seqs) in f.nacks {
            let Some(r) = self.rooms.get_mut(room) else {
                return;
            };
            let (sends, drops) = (&mut self.sends, &mut self.drops);
            r.core
                .nack(now, track, pid, seqs, |sink, params, sp, original| {
                    queue_rewritten(sends, drops, sink, original, sp, &params.extensions);
                });
            self.flush_sends(now, SendKind::Retransmission);
        }
    }

    /// A subscribe leg just connected: its negotiated senders start receiving
    /// (video from the next keyframe, which the forwarders ask for).
    fn attach_connected_senders(&mut self, key: usize) {
        let Some(p) = self.peers.get(key) else {
            return;
        };
        let (room, pid) = (p.room, p.participant);
        let ready: Vec<(TrackId, usize, prism_core::SinkParams)> = p
            .senders
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .and_then(|s| s.params.clone().map(|pr| (s.track, i, pr)))
            })
            .collect();
        let now = Instant::now();
        for (track, slot, params) in ready {
            self.attach_sink(now, room, track, pid, key, slot, params);
        }
    }

    /// Gives a subscriber's sender its negotiated parameters. A video sender
    /// that waits for a keyframe starts at once from the track's keyframe
    /// cache when the whole GOP since the latest keyframe is there (keyframe
    /// to live edge, nothing missing, within its bounds); otherwise a fresh
    /// keyframe is requested now and the sender starts with that.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_sink(
        &mut self,
        now: Instant,
        room: usize,
        track: TrackId,
        pid: ParticipantId,
        key: usize,
        slot: usize,
        params: prism_core::SinkParams,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.core
            .attach(track, pid, pack_sink(key, slot), Some(params))
            .is_err()
        {
            return;
        }
        let (sends, drops) = (&mut self.sends, &mut self.drops);
        r.core
            .start_from_cache(now, track, pid, |sink, params, sp, original| {
                queue_rewritten(sends, drops, sink, original, sp, &params.extensions);
            });
        // The GOP leaves paced, live packets of this leg behind it.
        self.flush_sends(now, SendKind::CacheStart);
        self.flush_keyframe_requests(now, room);
    }

    /// Sends every subscriber leg a sender report per stream, derived from the
    /// publisher's latest report (once a second, from housekeeping).
    fn send_sender_reports(&mut self, now: Instant) {
        let mut out: Vec<(SinkId, prism_core::SenderReportValues)> = Vec::new();
        for (_, r) in &self.rooms {
            for t in r.core.tracks() {
                r.core
                    .sender_reports(now, t.id, |sink, sr| out.push((sink, sr)));
            }
        }
        for (sink, sr) in out {
            let (peer_key, slot) = unpack_sink(sink);
            let Some(peer) = self.peers.get_mut(peer_key) else {
                continue;
            };
            let Some(Some(s)) = peer.senders.get(slot) else {
                continue;
            };
            let report = SenderReport {
                ssrc: sr.ssrc,
                ntp_time: sr.ntp_time,
                rtp_time: sr.rtp_time,
                packet_count: sr.packet_count,
                octet_count: sr.octet_count,
                ..Default::default()
            };
            let sender_id = s.sender;
            if let Some(mut sender) = peer.pc.rtp_sender(sender_id) {
                if let Err(e) = sender.write_rtcp(now, vec![Box::new(report)]) {
                    tracing::debug!("SR write: {e}");
                }
            }
            self.mark(peer_key);
        }
    }

    /// Tells each publisher what its subscribers can take: one REMB per publish
    /// leg (sent from the once-a-second housekeeping, so at a bounded rate).
    /// Per video track, the weakest subscribe leg's estimate (without
    /// simulcast, the publisher's one stream must reach everyone), at least
    /// `PublishBitrate::MIN`, at most `max_publish_bitrate`; with no estimate
    /// yet, the cap.
    fn send_rembs(&mut self, now: Instant) {
        let cap = self.cfg.max_publish_bitrate.bps();
        let publish_peers: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, p)| p.leg == Leg::Publish && p.connected)
            .map(|(k, _)| k)
            .collect();
        for key in publish_peers {
            let p = &self.peers[key];
            let Some(r) = self.rooms.get(p.room) else {
                continue;
            };
            let mut total = 0u64;
            let mut ssrcs = Vec::new();
            for pt in &p.pub_tracks {
                let Some(t) = r.core.track(pt.track) else {
                    continue;
                };
                if t.spec.kind != MediaKind::Video || pt.ssrcs.is_empty() {
                    continue;
                }
                let weakest = t
                    .subscribers()
                    .filter_map(|sub| r.members.get(&sub).and_then(|m| m.subscribe))
                    .filter_map(|k| self.peers.get(k))
                    .map(|sp| sp.available_bitrate())
                    .filter(|bps| *bps > 0)
                    .min();
                // PublishBitrate guarantees MIN <= cap: clamp cannot panic.
                total += weakest.unwrap_or(cap).clamp(PublishBitrate::MIN.bps(), cap);
                ssrcs.extend(pt.ssrcs.iter().copied());
            }
            if ssrcs.is_empty() {
                continue;
            }
            let Some(rid) = p.pub_tracks.first().map(|t| t.receiver) else {
                continue;
            };
            let remb = ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 0,
                bitrate: total as f32,
                ssrcs,
            };
            let peer = &mut self.peers[key];
            self.stats.rembs_sent += 1;
            tracing::debug!(participant = %peer.participant, bps = total, "REMB to publisher");
            if let Some(mut receiver) = peer.pc.rtp_receiver(rid) {
                if let Err(e) = receiver.write_rtcp(now, vec![Box::new(remb)]) {
                    tracing::debug!("REMB write: {e}");
                }
            }
            self.mark(key);
        }
    }

    /// Someone needs a keyframe of `track`: the room merges and throttles.
    fn request_keyframe(&mut self, now: Instant, room: usize, track: TrackId) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.core.request_keyframe(now, track);
        }
        self.flush_keyframe_requests(now, room);
    }

    /// Sends a PLI upstream for every keyframe request the room let through,
    /// and re-arms the room's timer.
    fn flush_keyframe_requests(&mut self, now: Instant, room: usize) {
        loop {
            let Some(r) = self.rooms.get_mut(room) else {
                return;
            };
            let Some(track) = r.core.poll_keyframe_request() else {
                break;
            };
            let Some(owner) = r.core.track(track).map(|t| t.owner) else {
                continue;
            };
            let Some(pub_key) = r.members.get(&owner).and_then(|m| m.publish) else {
                continue;
            };
            let Some(peer) = self.peers.get_mut(pub_key) else {
                continue;
            };
            let Some(pt) = peer.pub_tracks.iter().find(|p| p.track == track) else {
                continue;
            };
            let Some(&media_ssrc) = pt.ssrcs.first() else {
                tracing::debug!(track = %track, "keyframe wanted, but no SSRC is known yet");
                continue;
            };
            tracing::debug!(track = %track, media_ssrc, "PLI upstream");
            let rid = pt.receiver;
            if let Some(mut receiver) = peer.pc.rtp_receiver(rid) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if let Err(e) = receiver.write_rtcp(now, vec![Box::new(pli)]) {
                    tracing::debug!("PLI write: {e}");
                }
                self.stats.plis_out += 1;
            }
            self.mark(pub_key);
        }
        self.arm_room_timer(room);
    }

    /// Keeps the room's next deadline in the shard's timer set.
    fn arm_room_timer(&mut self, room: usize) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let next = r.core.poll_timeout();
        if next != r.timer_at {
            if let Some(old) = r.timer_at.take() {
                self.room_timers.remove(&(old, room));
            }
            if let Some(at) = next {
                self.room_timers.insert((at, room));
            }
            r.timer_at = next;
        }
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
            .collect()
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
            let _ = self
                .socket
                .try_send_to(&out.message, out.transport.peer_addr);
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

pub(super) fn pack_sink(peer: usize, slot: usize) -> SinkId {
    SinkId(((peer as u64) << 32) | slot as u64)
}

fn unpack_sink(s: SinkId) -> (usize, usize) {
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

/// Queues `original` rewritten for `sink`, or counts why it cannot be.
fn queue_rewritten(
    sends: &mut Vec<(SinkId, rtp::Packet)>,
    drops: &mut DropCounts,
    sink: SinkId,
    original: &rtp::Packet,
    sp: prism_core::SendParams,
    ext: &prism_core::ExtensionMap,
) {
    match rewrite(original, sp, ext) {
        Ok(p) => sends.push((sink, p)),
        Err(reason) => drops.inc(reason),
    }
}

/// The packet a subscriber gets: the publisher's payload with this leg's
/// SSRC, payload type, sequence number and timestamp, and the extensions it
/// negotiated under its own ids. Rebuilt through `set_extension` so the
/// header's padding bookkeeping stays right.
///
/// The header's extension profile is chosen up front from every id and
/// payload it will carry (the mapped ones and the ones the shard stamps
/// later: `mid`, `abs-send-time`): RFC 8285's one-byte form holds ids 1–14
/// and payloads of 1–16 bytes, anything else needs the two-byte form. Chosen
/// by the first extension instead, a later one would fail to fit. Err: an
/// extension still could not be written (counted as a drop).
pub fn rewrite(
    src: &rtp::Packet,
    sp: prism_core::SendParams,
    ext: &prism_core::ExtensionMap,
) -> Result<rtp::Packet, DropReason> {
    let mut header = rtp::header::Header {
        version: 2,
        marker: src.header.marker,
        payload_type: sp.payload_type,
        sequence_number: sp.seq,
        timestamp: sp.timestamp,
        ssrc: sp.ssrc,
        csrc: src.header.csrc.clone(),
        ..Default::default()
    };
    let mapped = || {
        src.header
            .extensions
            .iter()
            .filter_map(|e| ext.map(e.id).map(|id| (id, e.payload.len())))
    };
    let stamped = [ext.mid_id, ext.abs_send_time_id];
    if mapped().next().is_some() || stamped.iter().any(Option::is_some) {
        let two_byte = mapped().any(|(id, len)| id > 14 || len == 0 || len > 16)
            || stamped.iter().flatten().any(|id| *id > 14);
        header.extension = true;
        header.extension_profile = if two_byte {
            rtp::header::EXTENSION_PROFILE_TWO_BYTE
        } else {
            rtp::header::EXTENSION_PROFILE_ONE_BYTE
        };
    }
    for e in &src.header.extensions {
        if let Some(id) = ext.map(e.id) {
            header
                .set_extension(id, e.payload.clone())
                .map_err(|_| DropReason::ExtensionRewrite)?;
        }
    }
    Ok(rtp::Packet {
        header,
        payload: src.payload.clone(),
    })
}
