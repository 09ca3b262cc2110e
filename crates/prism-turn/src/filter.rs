//! Which peers a relay may reach. TURN's permissions say which peers a
//! client *asked* for; this filter says which peers the *operator* allows
//! at all, so that Prism's TURN server can never be used as an open relay
//! into its own network (loopback, private ranges, metadata services).
//!
//! The default is to allow nothing. The embedding application adds the
//! socket addresses it serves media on (Prism: its shards' UDP sockets),
//! and configuration may add whole prefixes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IP prefix in CIDR notation (`192.0.2.0/24`, `2001:db8::/32`). The
/// host bits of the address are cleared when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    network: IpAddr,
    len: u8,
}

/// Why a prefix could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrefixError {
    /// The length is longer than the address (over 32 for IPv4, 128 for IPv6).
    #[error("prefix length {0} is too long for the address family")]
    TooLong(u8),
    /// The text is not `<ip>/<len>` or a bare IP.
    #[error("not an IP prefix: {0:?}")]
    Syntax(String),
}

impl IpPrefix {
    /// The prefix of `len` bits of `addr`.
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::TooLong(len));
        }
        Ok(IpPrefix {
            network: mask(addr, len),
            len,
        })
    }

    /// Whether `ip` lies in this prefix (an IPv4 address never lies in an
    /// IPv6 prefix, apart from IPv4-mapped IPv6 addresses, which are
    /// compared as the IPv4 address they carry).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.len) == self.network
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is a zero-length prefix (the whole address family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    /// `<ip>/<len>`, or a bare IP for a single host.
    fn from_str(s: &str) -> Result<IpPrefix, PrefixError> {
        let syntax = || PrefixError::Syntax(s.to_owned());
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip.trim().parse().map_err(|_| syntax())?;
        let len = match len {
            Some(l) => l.trim().parse::<u8>().map_err(|_| syntax())?,
            None if ip.is_ipv4() => 32,
            None => 128,
        };
        IpPrefix::new(ip, len)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// The peers a relay may send to and receive from: an explicit list of
/// socket addresses plus optional prefixes. Empty (nothing allowed) by
/// default. Unspecified, multicast and broadcast addresses and port 0 are
/// refused even when a prefix covers them.
#[derive(Debug, Clone, Default)]
pub struct PeerFilter {
    addrs: Vec<SocketAddr>,
    prefixes: Vec<IpPrefix>,
}

impl PeerFilter {
    /// A filter that allows no peer.
    pub fn deny_all() -> PeerFilter {
        PeerFilter::default()
    }

    /// Allows exactly `addr` (that IP and that port).
    pub fn allow_addr(mut self, addr: SocketAddr) -> PeerFilter {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
        self
    }

    /// Allows each of `addrs` exactly.
    pub fn allow_addrs(self, addrs: impl IntoIterator<Item = SocketAddr>) -> PeerFilter {
        addrs.into_iter().fold(self, PeerFilter::allow_addr)
    }

    /// Allows every port of every address in `prefix`.
    pub fn allow_prefix(mut self, prefix: IpPrefix) -> PeerFilter {
        if !self.prefixes.contains(&prefix) {
            self.prefixes.push(prefix);
        }
        self
    }

    /// Whether a relay may exchange packets with `peer`.
    pub fn allows(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        // Never a destination whatever the configuration says: these are
        // not one host, or not a host at all.
        let never = peer.port() == 0
            || ip.is_unspecified()
            || ip.is_multicast()
            || ip == IpAddr::V4(Ipv4Addr::BROADCAST);
        if never {
            return false;
        }
        let peer = SocketAddr::new(ip, peer.port());
        self.addrs.contains(&peer) || self.prefixes.iter().any(|p| p.contains(ip))
    }

    /// Whether the filter allows no peer at all.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.prefixes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_and_mask() {
        let rows: &[(&str, Option<&str>)] = &[
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("192.0.2.7", Some("192.0.2.7/32")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("2001:db8::1/32", Some("2001:db8::/32")),
            ("10.0.0.0/33", None),
            ("10.0.0.0/", None),
            ("nope/8", None),
            ("", None),
        ];
        for (text, want) in rows {
            let got = text.parse::<IpPrefix>().ok().map(|p| p.to_string());
            assert_eq!(got.as_deref(), *want, "{text}");
        }
    }

    #[test]
    fn filter_allows_only_what_was_listed() {
        let f = PeerFilter::deny_all()
            .allow_addr(sa("203.0.113.5:40000"))
            .allow_prefix("198.51.100.0/24".parse().unwrap());
        let rows = [
            ("203.0.113.5:40000", true),
            ("203.0.113.5:40001", false), // another port of a listed address
            ("198.51.100.77:9", true),
            ("198.51.101.1:9", false),
            ("127.0.0.1:40000", false),
            ("10.0.0.1:40000", false),
            ("[::ffff:203.0.113.5]:40000", true), // IPv4-mapped: the same host
            ("198.51.100.0:0", false),            // port 0
        ];
        for (peer, want) in rows {
            assert_eq!(f.allows(sa(peer)), want, "{peer}");
        }
        assert!(!PeerFilter::deny_all().allows(sa("127.0.0.1:1")));
    }

    #[test]
    fn never_destinations_win_over_prefixes() {
        let f = PeerFilter::deny_all().allow_prefix("0.0.0.0/0".parse().unwrap());
        assert!(f.allows(sa("192.0.2.1:5")));
        assert!(!f.allows(sa("0.0.0.0:5")));
        assert!(!f.allows(sa("224.0.0.1:5")));
        assert!(!f.allows(sa("255.255.255.255:5")));
    }
}
