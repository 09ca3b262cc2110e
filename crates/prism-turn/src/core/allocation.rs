//! One allocation's state: its lifetime, permissions (per peer IP, 300 s)
//! and channel bindings (per peer transport address, 600 s), and the
//! rebinding rules of RFC 8656 §12.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun::message::TransactionId;

use super::bucket::TokenBucket;
use super::ClientKey;

/// Permission lifetime (RFC 8656 §9).
pub(crate) const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
pub(crate) const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// The channel numbers a client may bind (RFC 8656 §12: 0x4000–0x4FFF;
/// 0x5000–0x7FFF are reserved).
pub(crate) const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;
/// Most permissions (peer IPs) per allocation: bounds memory per client.
pub(crate) const MAX_PERMISSIONS: usize = 64;

/// Why a ChannelBind was refused (all answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindRefusal {
    /// The number is outside 0x4000–0x4FFF.
    BadNumber,
    /// The number is bound to another peer.
    NumberTaken,
    /// The peer is bound to another number.
    PeerTaken,
}

#[derive(Debug, Default)]
pub(crate) struct Channels {
    by_number: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
}

impl Channels {
    /// Binds `number` to `peer` until `now + 600 s`, or refreshes the same
    /// binding. An expired binding does not block anything.
    pub fn bind(&mut self, now: Instant, number: u16, peer: SocketAddr) -> Result<(), BindRefusal> {
        if !CHANNELS.contains(&number) {
            return Err(BindRefusal::BadNumber);
        }
        self.purge(now);
        if let Some((bound, _)) = self.by_number.get(&number) {
            if *bound != peer {
                return Err(BindRefusal::NumberTaken);
            }
        }
        if let Some(n) = self.by_peer.get(&peer) {
            if *n != number {
                return Err(BindRefusal::PeerTaken);
            }
        }
        self.by_number
            .insert(number, (peer, now + CHANNEL_LIFETIME));
        self.by_peer.insert(peer, number);
        Ok(())
    }

    /// The peer of a live channel.
    pub fn peer(&self, now: Instant, number: u16) -> Option<SocketAddr> {
        let (peer, until) = self.by_number.get(&number)?;
        (now < *until).then_some(*peer)
    }

    /// The live channel bound to `peer`.
    pub fn number(&self, now: Instant, peer: SocketAddr) -> Option<u16> {
        let n = *self.by_peer.get(&peer)?;
        self.peer(now, n).map(|_| n)
    }

    /// Removes expired bindings.
    pub fn purge(&mut self, now: Instant) {
        self.by_number.retain(|_, (_, until)| now < *until);
        let by_number = &self.by_number;
        self.by_peer.retain(|_, n| by_number.contains_key(n));
    }
}

#[derive(Debug, Default)]
pub(crate) struct Permissions {
    until: HashMap<IpAddr, Instant>,
}

impl Permissions {
    /// Installs or refreshes permissions for `ips`: all or none (RFC 8656
    /// §9.2). `false` if that would exceed [`MAX_PERMISSIONS`].
    pub fn permit(&mut self, now: Instant, ips: &[IpAddr]) -> bool {
        self.purge(now);
        let new = ips.iter().filter(|ip| !self.until.contains_key(ip)).count();
        if self.until.len() + new > MAX_PERMISSIONS {
            return false;
        }
        for ip in ips {
            self.until.insert(*ip, now + PERMISSION_LIFETIME);
        }
        true
    }

    /// Whether `ip` has a live permission.
    pub fn allows(&self, now: Instant, ip: IpAddr) -> bool {
        self.until.get(&ip).is_some_and(|until| now < *until)
    }

    /// Removes expired permissions.
    pub fn purge(&mut self, now: Instant) {
        self.until.retain(|_, until| now < *until);
    }
}

/// An allocation: a relayed transport address held for one client 5-tuple.
pub(crate) struct Allocation {
    /// The client's 5-tuple (transport, connection and address).
    pub client: ClientKey,
    /// The REST username that created it; later requests must use it.
    pub username: String,
    /// The user identity its quota counts against.
    pub identity: String,
    /// When it goes unless refreshed.
    pub expires_at: Instant,
    pub permissions: Permissions,
    pub channels: Channels,
    /// `None` when unlimited.
    pub bucket: Option<TokenBucket>,
    /// The Allocate that created it and the success sent back: a
    /// retransmission of that request gets the same answer, not a 437.
    pub allocate_tid: TransactionId,
    pub allocate_reply: Vec<u8>,
}

impl Allocation {
    /// Whether the bandwidth limit lets `bytes` through now.
    pub fn take(&mut self, now: Instant, bytes: usize) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.take(now, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn channel_rebinding_table() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let a = sa("192.0.2.1:1000");
        let b = sa("192.0.2.1:1001"); // same IP, other port: another peer
        let mut ch = Channels::default();
        let rows: &[(u64, u16, SocketAddr, Result<(), BindRefusal>)] = &[
            (0, 0x4000, a, Ok(())),
            (1, 0x4000, a, Ok(())), // refresh of the same binding
            (1, 0x4000, b, Err(BindRefusal::NumberTaken)),
            (1, 0x4001, a, Err(BindRefusal::PeerTaken)),
            (2, 0x4001, b, Ok(())), // b bound at 2 s: until 602 s
            (1, 0x3FFF, b, Err(BindRefusal::BadNumber)),
            (1, 0x5000, b, Err(BindRefusal::BadNumber)), // reserved since RFC 8656
            (1, 0x4FFF, sa("192.0.2.9:1"), Ok(())),
            // 0x4000 was refreshed at 1 s: expires at 601 s. Then both the
            // number and the peer are free again.
            (600, 0x4002, a, Err(BindRefusal::PeerTaken)),
            (601, 0x4002, a, Ok(())),
            (601, 0x4000, b, Err(BindRefusal::PeerTaken)), // b still holds 0x4001
            (601, 0x4000, sa("192.0.2.7:7"), Ok(())),
        ];
        for (i, (at, n, peer, want)) in rows.iter().enumerate() {
            assert_eq!(ch.bind(s(*at), *n, *peer), *want, "row {i}");
        }
        assert_eq!(ch.peer(s(601), 0x4002), Some(a));
        assert_eq!(ch.number(s(601), a), Some(0x4002));
        assert_eq!(ch.peer(s(1300), 0x4002), None); // expired
        assert_eq!(ch.number(s(1300), a), None);
    }

    #[test]
    fn permission_expiry_table() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut p = Permissions::default();
        assert!(!p.allows(s(0), ip));
        assert!(p.permit(s(0), &[ip]));
        let rows = [
            (0, ip, true),
            (299, ip, true),
            (300, ip, false),
            (1, other, false),
        ];
        for (at, who, want) in rows {
            assert_eq!(p.allows(s(at), who), want, "{at} {who}");
        }
        // A refresh at 200 s extends to 500 s.
        assert!(p.permit(s(200), &[ip]));
        assert!(p.allows(s(499), ip));
        assert!(!p.allows(s(500), ip));
        // The cap: all or nothing.
        let many: Vec<IpAddr> = (0..MAX_PERMISSIONS as u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        assert!(!p.permit(s(200), &many)); // 1 live + 64 new
        assert!(p.allows(s(201), ip));
        assert!(!p.allows(s(201), many[0]));
        assert!(p.permit(s(600), &many)); // the old one expired
    }
}
