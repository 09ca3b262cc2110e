//! The sans-I/O TURN server: every protocol decision, no sockets, no
//! clock. Time comes in as arguments (`Instant` for lifetimes, `SystemTime`
//! for the REST credentials' expiry).
//!
//! # Order of calls
//!
//! A driver owns one [`TurnCore`] and, in a loop:
//!
//! - feeds input: [`TurnCore::handle_client`] for each packet from a
//!   client (a datagram, or one frame cut from a stream),
//!   [`TurnCore::handle_peer`] for each datagram a relay socket received,
//!   [`TurnCore::handle_conn_closed`] when a stream client goes away,
//!   [`TurnCore::relay_bound`] to finish an Allocate (see below);
//! - calls [`TurnCore::handle_timeout`] when [`TurnCore::poll_timeout`]
//!   passes (allocations expire there);
//! - drains [`TurnCore::poll_output`] after each of these and applies
//!   every [`Output`]: bytes to a client, bytes out of a relay socket,
//!   a relay socket to bind, a relay socket to close.
//!
//! Allocate is split in two because binding a socket is I/O: the core
//! answers an authenticated, admitted Allocate with
//! [`Output::BindRelay`]; the driver binds a UDP socket and reports the
//! port (or the failure) with [`TurnCore::relay_bound`], which sends the
//! response. The allocation counts against the quotas from the first step.

mod allocation;
mod auth;
mod bucket;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use stun::attributes::{ATTR_DATA, ATTR_FINGERPRINT, ATTR_REQUESTED_ADDRESS_FAMILY};
use stun::fingerprint::FINGERPRINT;
use stun::message::{
    Getter, Message, MessageType, CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND,
};
use stun::xoraddr::XorMappedAddress;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

use crate::config::DEFAULT_LIFETIME;
use crate::filter::PeerFilter;
use crate::rest::RestSecret;
use crate::stats::{add, bump, Counters};
use allocation::{Allocation, Permissions};
pub(crate) use auth::Nonces;
use auth::{authenticate, AuthReject, Authed};
use bucket::TokenBucket;
use wire::{channel_data, classify, decode, xor_peer_addrs, Frame, Reply};

/// An allocation's id, chosen by the core.
pub(crate) type AllocId = u64;
/// A stream (TCP or TLS) connection's id, chosen by the driver.
pub(crate) type ConnId = u64;

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClientTransport {
    /// The UDP listener.
    Udp,
    /// A TCP or TLS connection.
    Stream(ConnId),
}

/// A client 5-tuple: the allocation key of RFC 8656 §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    pub transport: ClientTransport,
    pub remote: SocketAddr,
}

impl ClientKey {
    fn is_stream(&self) -> bool {
        matches!(self.transport, ClientTransport::Stream(_))
    }
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Send `bytes` (one STUN message or ChannelData) to a client.
    ToClient { client: ClientKey, bytes: Vec<u8> },
    /// Send `bytes` from allocation `alloc`'s relay socket to `peer`.
    ToPeer {
        alloc: AllocId,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Bind a relay socket for `alloc`, then call [`TurnCore::relay_bound`].
    BindRelay { alloc: AllocId },
    /// Close `alloc`'s relay socket: the allocation is gone.
    CloseRelay { alloc: AllocId },
}

/// The limits and names the core works with (from the config).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub realm: String,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    pub max_lifetime: Duration,
    pub max_bitrate_bps: Option<u64>,
    /// The IP written in XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
}

/// An Allocate admitted and waiting for its relay socket.
struct Pending {
    client: ClientKey,
    request: Message,
    auth: Authed,
    lifetime: Duration,
}

/// The TURN server's state; see the module docs for the order of calls.
pub(crate) struct TurnCore {
    limits: Limits,
    secret: RestSecret,
    filter: PeerFilter,
    stats: Arc<Counters>,
    nonces: Nonces,
    allocations: HashMap<AllocId, Allocation>,
    pending: HashMap<AllocId, Pending>,
    /// Live and pending allocations by client 5-tuple.
    by_client: HashMap<ClientKey, AllocId>,
    /// Live and pending allocations per user identity.
    per_user: HashMap<String, usize>,
    next_id: AllocId,
    out: VecDeque<Output>,
}

impl TurnCore {
    pub fn new(
        limits: Limits,
        secret: RestSecret,
        filter: PeerFilter,
        stats: Arc<Counters>,
        nonces: Nonces,
    ) -> TurnCore {
        TurnCore {
            limits,
            secret,
            filter,
            stats,
            nonces,
            allocations: HashMap::new(),
            pending: HashMap::new(),
            by_client: HashMap::new(),
            per_user: HashMap::new(),
            next_id: 1,
            out: VecDeque::new(),
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the earliest allocation expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.allocations.values().map(|a| a.expires_at).min()
    }

    /// Live allocations.
    #[cfg(test)]
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Expires allocations whose lifetime ran out and forgets expired
    /// permissions and channels.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<AllocId> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            bump(&self.stats.allocations_expired);
            self.remove(id);
        }
        for a in self.allocations.values_mut() {
            a.permissions.purge(now);
            a.channels.purge(now);
        }
    }

    /// A stream connection closed: its allocations go with it (RFC 8656
    /// §3.1: a TCP/TLS allocation lives as long as its connection).
    pub fn handle_conn_closed(&mut self, conn: ConnId) {
        let ids: Vec<AllocId> = self
            .by_client
            .iter()
            .filter(|(k, _)| k.transport == ClientTransport::Stream(conn))
            .map(|(_, id)| *id)
            .collect();
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                // Its relay socket, if it gets bound, is closed in relay_bound.
                self.release(p.client, &p.auth.identity);
            } else {
                self.remove(id);
            }
        }
    }

    /// One packet from a client: a datagram, or one stream frame.
    pub fn handle_client(&mut self, now: Instant, wall: SystemTime, client: ClientKey, b: &[u8]) {
        match classify(b) {
            None => bump(&self.stats.malformed_input),
            Some(Frame::ChannelData { number, data }) => {
                let Some(id) = self.by_client.get(&client).copied() else {
                    bump(&self.stats.dropped_no_permission_to_peer);
                    return;
                };
                let peer = self
                    .allocations
                    .get(&id)
                    .and_then(|a| a.channels.peer(now, number));
                match peer {
                    Some(peer) => self.relay_to_peer(now, id, peer, data),
                    // No live binding for that number: like a Send without
                    // a permission.
                    None => bump(&self.stats.dropped_no_permission_to_peer),
                }
            }
            Some(Frame::Stun(raw)) => {
                let Some(m) = decode(raw) else {
                    bump(&self.stats.malformed_input);
                    return;
                };
                if m.contains(ATTR_FINGERPRINT) && FINGERPRINT.check(&m).is_err() {
                    bump(&self.stats.malformed_input);
                    return;
                }
                match m.typ.class {
                    CLASS_REQUEST => self.request(now, wall, client, &m),
                    CLASS_INDICATION if m.typ.method == METHOD_SEND => {
                        self.send_indication(now, client, &m)
                    }
                    // Responses and other indications: a server expects none.
                    _ => bump(&self.stats.malformed_input),
                }
            }
        }
    }

    /// One datagram received by allocation `alloc`'s relay socket from `from`.
    pub fn handle_peer(&mut self, now: Instant, alloc: AllocId, from: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocations.get_mut(&alloc) else {
            return;
        };
        // A peer reaches the client only if the client asked for it and the
        // operator allows it.
        if !a.permissions.allows(now, from.ip()) || !self.filter.allows(from) {
            bump(&self.stats.dropped_no_permission_from_peer);
            return;
        }
        if !a.take(now, data.len()) {
            bump(&self.stats.bandwidth_drops);
            return;
        }
        let bytes = match a.channels.number(now, from) {
            Some(n) => channel_data(n, data, a.client.is_stream()),
            None => {
                let mut m = Message::new();
                let built = m.build(&[
                    Box::new(MessageType::new(METHOD_DATA, CLASS_INDICATION)),
                    Box::new(stun::message::TransactionId::new()),
                    Box::new(PeerAddress {
                        ip: from.ip(),
                        port: from.port(),
                    }),
                    Box::new(Data(data.to_vec())),
                ]);
                if built.is_err() {
                    bump(&self.stats.malformed_input);
                    return;
                }
                m.raw
            }
        };
        bump(&self.stats.packets_to_client);
        add(&self.stats.bytes_to_client, data.len() as u64);
        self.out.push_back(Output::ToClient {
            client: a.client,
            bytes,
        });
    }

    /// The driver bound (`Ok(port)`) or failed to bind (`Err(())`) the relay
    /// socket of a pending Allocate.
    pub fn relay_bound(&mut self, now: Instant, alloc: AllocId, port: Result<u16, ()>) {
        let Some(p) = self.pending.remove(&alloc) else {
            // The client left while the socket was being bound.
            if port.is_ok() {
                self.out.push_back(Output::CloseRelay { alloc });
            }
            return;
        };
        let Ok(port) = port else {
            bump(&self.stats.relay_bind_failures);
            self.release(p.client, &p.auth.identity);
            let reply = Reply::error(&p.request, 508, Some(&p.auth.key));
            self.send(p.client, reply);
            return;
        };
        let reply = Reply::success(&p.request, Some(&p.auth.key))
            .with(RelayedAddress {
                ip: self.limits.relay_ip,
                port,
            })
            .with(Lifetime(p.lifetime))
            .with(XorMappedAddress {
                ip: p.client.remote.ip(),
                port: p.client.remote.port(),
            })
            .encode()
            .unwrap_or_default();
        let allocation = Allocation {
            client: p.client,
            username: p.auth.username,
            identity: p.auth.identity,
            expires_at: now + p.lifetime,
            permissions: Permissions::default(),
            channels: Default::default(),
            bucket: self
                .limits
                .max_bitrate_bps
                .map(|r| TokenBucket::new(r, now)),
            allocate_tid: p.request.transaction_id,
            allocate_reply: reply.clone(),
        };
        self.allocations.insert(alloc, allocation);
        bump(&self.stats.allocations_created);
        bump(&self.stats.allocations_active);
        self.out.push_back(Output::ToClient {
            client: p.client,
            bytes: reply,
        });
    }

    fn request(&mut self, now: Instant, wall: SystemTime, client: ClientKey, m: &Message) {
        let method = m.typ.method;
        if method == METHOD_BINDING {
            let reply = Reply::success(m, None).with(XorMappedAddress {
                ip: client.remote.ip(),
                port: client.remote.port(),
            });
            self.send(client, reply);
            return;
        }
        let known = [
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ];
        if !known.contains(&method) {
            bump(&self.stats.malformed_input);
            self.send(client, Reply::error(m, 400, None));
            return;
        }
        let Some(auth) = self.auth(now, wall, client, m) else {
            return;
        };
        if method == METHOD_ALLOCATE {
            self.allocate(client, m, auth);
            return;
        }
        // The other methods act on the client's allocation, with the
        // credentials that created it.
        let Some(id) = self.by_client.get(&client).copied() else {
            self.send(client, Reply::error(m, 437, Some(&auth.key)));
            return;
        };
        let Some(a) = self.allocations.get(&id) else {
            // Still pending: the client has no allocation to act on yet.
            self.send(client, Reply::error(m, 437, Some(&auth.key)));
            return;
        };
        if a.username != auth.username {
            self.send(client, Reply::error(m, 441, Some(&auth.key)));
            return;
        }
        match method {
            METHOD_REFRESH => self.refresh(now, client, id, m, &auth),
            METHOD_CREATE_PERMISSION => self.create_permission(now, client, id, m, &auth),
            _ => self.channel_bind(now, client, id, m, &auth),
        }
    }

    /// Checks credentials; on refusal sends the response and counts why.
    fn auth(
        &mut self,
        now: Instant,
        wall: SystemTime,
        client: ClientKey,
        m: &Message,
    ) -> Option<Authed> {
        let checked = authenticate(m, &self.secret, &self.limits.realm, &self.nonces, now, wall);
        let reject = match checked {
            Ok(a) => return Some(a),
            Err(r) => r,
        };
        let realm = self.limits.realm.clone();
        let reply = match reject {
            AuthReject::Challenge => {
                bump(&self.stats.auth_challenges);
                Reply::challenge(m, 401, &realm, self.nonces.issue(now))
            }
            AuthReject::Incomplete => {
                bump(&self.stats.auth_malformed);
                Reply::error(m, 400, None)
            }
            AuthReject::StaleNonce => {
                bump(&self.stats.auth_stale_nonce);
                Reply::challenge(m, 438, &realm, self.nonces.issue(now))
            }
            AuthReject::Refused(f) => {
                self.stats.auth_failure(f);
                Reply::challenge(m, 401, &realm, self.nonces.issue(now))
            }
        };
        self.send(client, reply);
        None
    }

    fn allocate(&mut self, client: ClientKey, m: &Message, auth: Authed) {
        if let Some(id) = self.by_client.get(&client).copied() {
            // A retransmission of the request that created the allocation
            // gets the same answer (RFC 8656 §7.2); anything else is 437.
            if let Some(a) = self.allocations.get(&id) {
                if a.allocate_tid == m.transaction_id {
                    let bytes = a.allocate_reply.clone();
                    self.out.push_back(Output::ToClient { client, bytes });
                    return;
                }
            } else if self
                .pending
                .get(&id)
                .is_some_and(|p| p.request.transaction_id == m.transaction_id)
            {
                return; // answered once the relay is bound
            }
            self.send(client, Reply::error(m, 437, Some(&auth.key)));
            return;
        }
        let mut transport = RequestedTransport::default();
        if transport.get_from(m).is_err() {
            bump(&self.stats.malformed_input);
            self.send(client, Reply::error(m, 400, Some(&auth.key)));
            return;
        }
        if transport.protocol != PROTO_UDP {
            self.send(client, Reply::error(m, 442, Some(&auth.key)));
            return;
        }
        // Only IPv4 relays: an IPv6 request gets 440.
        if let Ok(family) = m.get(ATTR_REQUESTED_ADDRESS_FAMILY) {
            if family.first() != Some(&0x01) {
                self.send(client, Reply::error(m, 440, Some(&auth.key)));
                return;
            }
        }
        let user_count = self.per_user.get(&auth.identity).copied().unwrap_or(0);
        if user_count >= self.limits.max_allocations_per_user {
            bump(&self.stats.quota_user_refusals);
            self.send(client, Reply::error(m, 486, Some(&auth.key)));
            return;
        }
        if self.allocations.len() + self.pending.len() >= self.limits.max_allocations {
            bump(&self.stats.quota_total_refusals);
            self.send(client, Reply::error(m, 508, Some(&auth.key)));
            return;
        }
        let lifetime = self.grant(m);
        let id = self.next_id;
        self.next_id += 1;
        *self.per_user.entry(auth.identity.clone()).or_default() += 1;
        self.by_client.insert(client, id);
        self.pending.insert(
            id,
            Pending {
                client,
                request: m.clone(),
                auth,
                lifetime,
            },
        );
        self.out.push_back(Output::BindRelay { alloc: id });
    }

    /// The lifetime granted for a request's LIFETIME (RFC 8656 §7.2):
    /// between the default (600 s, or the maximum if lower) and the maximum.
    fn grant(&self, m: &Message) -> Duration {
        let max = self.limits.max_lifetime;
        let default = DEFAULT_LIFETIME.min(max);
        let mut asked = Lifetime::default();
        match asked.get_from(m) {
            Ok(()) => asked.0.clamp(default, max),
            Err(_) => default,
        }
    }

    fn refresh(
        &mut self,
        now: Instant,
        client: ClientKey,
        id: AllocId,
        m: &Message,
        auth: &Authed,
    ) {
        let mut asked = Lifetime::default();
        let delete = asked.get_from(m).is_ok() && asked.0.is_zero();
        let lifetime = if delete {
            Duration::ZERO
        } else {
            self.grant(m)
        };
        if delete {
            self.remove(id);
        } else if let Some(a) = self.allocations.get_mut(&id) {
            a.expires_at = now + lifetime;
        }
        let reply = Reply::success(m, Some(&auth.key)).with(Lifetime(lifetime));
        self.send(client, reply);
    }

    /// The peers of a CreatePermission / ChannelBind, or the error code
    /// refusing them (400 malformed, 443 IPv6, 403 not allowed).
    fn peers(&self, m: &Message) -> Result<Vec<SocketAddr>, u16> {
        let peers = xor_peer_addrs(m);
        if peers.is_empty() || peers.iter().any(Option::is_none) {
            bump(&self.stats.malformed_input);
            return Err(400);
        }
        let peers: Vec<SocketAddr> = peers.into_iter().flatten().collect();
        if peers.iter().any(|p| !p.is_ipv4()) {
            return Err(443);
        }
        if peers.iter().any(|p| !self.filter.allows(*p)) {
            bump(&self.stats.forbidden_peers);
            return Err(403);
        }
        Ok(peers)
    }

    fn create_permission(
        &mut self,
        now: Instant,
        client: ClientKey,
        id: AllocId,
        m: &Message,
        auth: &Authed,
    ) {
        let peers = match self.peers(m) {
            Ok(p) => p,
            Err(code) => return self.send(client, Reply::error(m, code, Some(&auth.key))),
        };
        let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
        let installed = self
            .allocations
            .get_mut(&id)
            .is_some_and(|a| a.permissions.permit(now, &ips));
        let reply = if installed {
            Reply::success(m, Some(&auth.key))
        } else {
            Reply::error(m, 508, Some(&auth.key))
        };
        self.send(client, reply);
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        client: ClientKey,
        id: AllocId,
        m: &Message,
        auth: &Authed,
    ) {
        let mut number = ChannelNumber::default();
        if number.get_from(m).is_err() {
            bump(&self.stats.malformed_input);
            return self.send(client, Reply::error(m, 400, Some(&auth.key)));
        }
        let peer = match self.peers(m) {
            Ok(p) if p.len() == 1 => p[0],
            Ok(_) => return self.send(client, Reply::error(m, 400, Some(&auth.key))),
            Err(code) => return self.send(client, Reply::error(m, code, Some(&auth.key))),
        };
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        // The binding also installs or refreshes the peer's permission.
        let code = match a.channels.bind(now, number.0, peer) {
            Err(_) => Some(400),
            Ok(()) if !a.permissions.permit(now, &[peer.ip()]) => Some(508),
            Ok(()) => None,
        };
        let reply = match code {
            Some(code) => Reply::error(m, code, Some(&auth.key)),
            None => Reply::success(m, Some(&auth.key)),
        };
        self.send(client, reply);
    }

    fn send_indication(&mut self, now: Instant, client: ClientKey, m: &Message) {
        let Some(id) = self.by_client.get(&client).copied() else {
            bump(&self.stats.dropped_no_permission_to_peer);
            return;
        };
        let peer = xor_peer_addrs(m).into_iter().next().flatten();
        let (Some(peer), Ok(data)) = (peer, m.get(ATTR_DATA)) else {
            bump(&self.stats.malformed_input);
            return;
        };
        self.relay_to_peer(now, id, peer, &data);
    }

    fn relay_to_peer(&mut self, now: Instant, id: AllocId, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocations.get_mut(&id) else {
            bump(&self.stats.dropped_no_permission_to_peer);
            return;
        };
        // The permission is per IP (RFC 8656 §9); the filter is per
        // address, so another port of a permitted IP is still refused.
        if !a.permissions.allows(now, peer.ip()) || !self.filter.allows(peer) {
            bump(&self.stats.dropped_no_permission_to_peer);
            return;
        }
        if !a.take(now, data.len()) {
            bump(&self.stats.bandwidth_drops);
            return;
        }
        bump(&self.stats.packets_to_peer);
        add(&self.stats.bytes_to_peer, data.len() as u64);
        self.out.push_back(Output::ToPeer {
            alloc: id,
            peer,
            bytes: data.to_vec(),
        });
    }

    fn send(&mut self, client: ClientKey, reply: Reply<'_>) {
        if let Some(bytes) = reply.encode() {
            self.out.push_back(Output::ToClient { client, bytes });
        }
    }

    /// Removes a live allocation and closes its relay.
    fn remove(&mut self, id: AllocId) {
        if let Some(a) = self.allocations.remove(&id) {
            self.stats
                .allocations_active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.release(a.client, &a.identity);
            self.out.push_back(Output::CloseRelay { alloc: id });
        }
    }

    /// Gives back a client's slot and its user's quota.
    fn release(&mut self, client: ClientKey, identity: &str) {
        self.by_client.remove(&client);
        if let Some(n) = self.per_user.get_mut(identity) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(identity);
            }
        }
    }
}
