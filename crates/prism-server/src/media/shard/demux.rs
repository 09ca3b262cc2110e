//! The socket side of a shard: a datagram to the peer it is for. STUN is
//! authenticated here before any engine sees it (see `media/stun.rs`); DTLS
//! and SRTP go by the source address (UDP) or the connection (ICE-TCP) an
//! authentic check proved; before ICE
//! connects, the peer's setup hold decides (`media/peer.rs`, `SetupHold`).
//! Every datagram dropped is counted under a `DatagramDrop` reason.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext};

use super::super::peer::SetupAction;
use super::super::remote::Remote;
use super::super::stun::{self, DatagramDrop};
use super::Shard;

impl Shard {
    /// A datagram read from the UDP socket into `recv_buf[..n]`.
    pub(super) fn on_datagram(&mut self, now: Instant, from: SocketAddr, n: usize) {
        let buf = std::mem::take(&mut self.recv_buf);
        let routed = self.route(Remote::Udp(from), &buf[..n]);
        if let Some((key, kind)) = routed {
            self.deliver(now, key, Remote::Udp(from), kind, BytesMut::from(&buf[..n]));
        }
        self.recv_buf = buf;
    }

    /// A frame from ICE-TCP connection `conn`.
    pub(super) fn on_tcp_frame(&mut self, now: Instant, conn: usize, data: BytesMut) {
        let Some(remote) = self.tcp.as_ref().and_then(|t| t.remote(conn)) else {
            return; // closed meanwhile
        };
        if let Some((key, kind)) = self.route(remote, &data) {
            self.deliver(now, key, remote, kind, data);
        }
    }

    /// The peer a datagram is for, or `None` (counted under its reason).
    fn route(&mut self, remote: Remote, data: &[u8]) -> Option<(usize, stun::Kind)> {
        let routed = match stun::classify(data) {
            // DTLS and SRTP authenticate themselves inside the engine; they
            // only reach a peer from an address (UDP) or a connection (TCP)
            // an authentic check proved.
            stun::Class::Dtls | stun::Class::Rtp => self
                .proven_peer(remote)
                .map(|k| (k, stun::Kind::NotStun))
                .ok_or(DatagramDrop::UnknownAddress),
            stun::Class::Empty => Err(DatagramDrop::Empty),
            // Whatever the engine would parse as STUN must be an authentic
            // binding request: the engine acts on a request's role
            // attributes before it checks integrity (see `stun`).
            stun::Class::Stun => self.authenticate_stun(remote, data),
        };
        match routed {
            Ok(r) => Some(r),
            Err(reason) => {
                // Counted, never logged: a flood must not reach the log.
                self.stats.datagram_drops.inc(reason);
                None
            }
        }
    }

    /// The peer an authentic check proved `remote` belongs to.
    fn proven_peer(&self, remote: Remote) -> Option<usize> {
        match remote {
            Remote::Udp(addr) => self.by_addr.get(&addr).copied(),
            Remote::Tcp { conn, .. } => self.tcp.as_ref()?.conns.get(conn)?.peer,
        }
    }

    fn deliver(
        &mut self,
        now: Instant,
        key: usize,
        remote: Remote,
        kind: stun::Kind,
        data: BytesMut,
    ) {
        let Some(peer) = self.peers.get_mut(key) else {
            self.stats.datagram_drops.inc(DatagramDrop::UnknownAddress);
            return;
        };
        peer.last_rx_at = now;
        if !peer.ice_connected {
            self.on_setup_datagram(now, key, remote, kind, data);
        } else {
            self.feed(now, key, remote, data);
        }
        self.mark(key);
    }

    /// A datagram for a peer whose ICE is not connected yet: see
    /// [`super::peer::SetupHold`] for what the engine would lose and why.
    pub(super) fn on_setup_datagram(
        &mut self,
        now: Instant,
        key: usize,
        from: Remote,
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
                self.stats.datagram_drops.inc(DatagramDrop::BeforeIce);
            }
        }
    }

    /// Hands one datagram to a peer's engine.
    pub(super) fn feed(&mut self, now: Instant, key: usize, from: Remote, data: BytesMut) {
        let local_addr = match from {
            Remote::Udp(_) => self.local_addr,
            Remote::Tcp { .. } => match &self.tcp {
                Some(t) => t.local_addr,
                None => return,
            },
        };
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from.addr(),
                ecn: None,
                transport_protocol: from.protocol(),
            },
            message: data,
        };
        if let Err(e) = peer.pc.handle_read(msg) {
            // Malformed or unexpected input for this peer: never fatal.
            tracing::trace!(shard = self.index, peer = key, "handle_read: {e}");
        }
    }

    /// The peer a STUN message is for. An authentic
    /// binding request names it by ufrag, and its
    /// source address is routed to that peer only once it proved to know
    /// the peer's ICE password. Anything else is a drop reason: forged or
    /// stray STUN never reaches an engine and never moves a route.
    pub(super) fn authenticate_stun(
        &mut self,
        from: Remote,
        data: &[u8],
    ) -> Result<(usize, stun::Kind), DatagramDrop> {
        let req = match stun::parse(data)? {
            stun::Stun::Request(req) => req,
            // The engine checks a response's integrity (with the client's
            // password) before it acts on it; it may only come from an
            // address an authentic request already proved.
            stun::Stun::SuccessResponse => {
                return self
                    .proven_peer(from)
                    .map(|k| (k, stun::Kind::BindingSuccess))
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
                self.send_datagram(from, Bytes::from(resp));
            }
            return Err(DatagramDrop::StunRoleControlled);
        }
        let nominates = req.use_candidate;
        match from {
            Remote::Udp(addr) => {
                if self.by_addr.get(&addr) != Some(&key) {
                    self.route_addr(addr, key);
                }
            }
            Remote::Tcp { addr, conn } => self.bind_tcp(addr, conn, key)?,
        }
        Ok((key, stun::Kind::BindingRequest { nominates }))
    }

    /// An authentic check on an ICE-TCP connection binds it to its peer; a
    /// connection stays with the first peer it proved (another peer's check
    /// on it is dropped).
    fn bind_tcp(&mut self, addr: SocketAddr, conn: usize, key: usize) -> Result<(), DatagramDrop> {
        let c = self
            .tcp
            .as_mut()
            .and_then(|t| t.conns.get_mut(conn))
            .ok_or(DatagramDrop::UnknownAddress)?;
        match c.peer {
            Some(k) if k == key => Ok(()),
            Some(_) => Err(DatagramDrop::TcpOtherPeer),
            None => {
                c.peer = Some(key);
                if let Some(p) = self.peers.get_mut(key) {
                    p.tcp.push((addr, conn));
                }
                Ok(())
            }
        }
    }

    pub(super) fn route_addr(&mut self, addr: SocketAddr, key: usize) {
        if let Some(old) = self.by_addr.insert(addr, key) {
            if let Some(p) = self.peers.get_mut(old) {
                p.addrs.retain(|a| *a != addr);
            }
        }
        if let Some(p) = self.peers.get_mut(key) {
            p.addrs.push(addr);
        }
    }
}
