//! The socket side of a shard: a datagram to the peer it is for. STUN is
//! authenticated here before any engine sees it (see `media/stun.rs`); DTLS
//! and SRTP go by the source address an authentic check proved; before ICE
//! connects, the peer's setup hold decides (`media/peer.rs`, `SetupHold`).
//! Every datagram dropped is counted under a `DatagramDrop` reason.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::super::peer::SetupAction;
use super::super::stun::{self, DatagramDrop};
use super::Shard;

impl Shard {
    pub(super) fn on_datagram(&mut self, now: Instant, from: SocketAddr, n: usize) {
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
                self.stats.datagram_drops.inc(reason);
                return;
            }
        };
        let Some(peer) = self.peers.get_mut(key) else {
            self.stats.datagram_drops.inc(DatagramDrop::UnknownAddress);
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
    pub(super) fn on_setup_datagram(
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
                self.stats.datagram_drops.inc(DatagramDrop::BeforeIce);
            }
        }
    }

    /// Hands one datagram to a peer's engine.
    pub(super) fn feed(&mut self, now: Instant, key: usize, from: SocketAddr, data: BytesMut) {
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
    pub(super) fn authenticate_stun(
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
