//! The TURN server's configuration. [`TurnSettings`] is the plain bag of
//! fields (what a config file fills in); [`TurnConfig::new`] checks it, and
//! only a checked [`TurnConfig`] starts a server, so an invalid one (no
//! listener, a TLS port with unreadable certificate files, an IPv6 relay)
//! is refused before any socket is bound.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use crate::filter::IpPrefix;
use crate::tls;

/// TURN's default allocation lifetime (RFC 8656 §3.2), and the default
/// maximum here.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// The TLS listener: port and PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// The TCP port to accept TURN-over-TLS on (443 in production; 0 for
    /// an ephemeral port in tests).
    pub port: u16,
    /// A PEM file with the certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// A PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// The fields of a TURN configuration, unchecked. Build one with
/// [`TurnSettings::new`] (which fills the defaults), change fields, then
/// check it with [`TurnConfig::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSettings {
    /// The IP the client-facing listeners bind.
    pub listen_ip: IpAddr,
    /// UDP listener port (`Some(0)` = ephemeral). Default `Some(3478)`.
    pub udp_port: Option<u16>,
    /// TCP listener port (`Some(0)` = ephemeral). Default `Some(3478)`.
    pub tcp_port: Option<u16>,
    /// TLS listener. Default none.
    pub tls: Option<TlsListener>,
    /// The IP relay sockets bind (IPv4 only).
    pub relay_ip: IpAddr,
    /// The IP written in XOR-RELAYED-ADDRESS when it differs from
    /// `relay_ip` (a host behind 1:1 NAT). Default: `relay_ip`.
    pub relay_public_ip: Option<IpAddr>,
    /// Relay ports to pick from; `None` = an ephemeral port per allocation.
    pub relay_ports: Option<RangeInclusive<u16>>,
    /// The long-term credential realm. Default `"prism"`.
    pub realm: String,
    /// Most allocations alive at once (508 past it). Default 1000.
    pub max_allocations: usize,
    /// Most allocations per user identity (486 past it). Default 10.
    pub max_allocations_per_user: usize,
    /// The longest lifetime granted (LIFETIME is clamped to it). Default
    /// 600 s; at least 60 s.
    pub max_lifetime: Duration,
    /// Per-allocation bandwidth limit over both directions, bits per
    /// second; `None` = unlimited. Default 10 Mbit/s.
    pub max_bitrate_bps: Option<u64>,
    /// Prefixes relays may reach besides the addresses the application
    /// passes in its [`PeerFilter`](crate::PeerFilter). Default none.
    pub allow_peers: Vec<IpPrefix>,
    /// How long a nonce stays valid before a request gets 438 Stale
    /// Nonce. Default 1 hour.
    pub nonce_lifetime: Duration,
}

impl TurnSettings {
    /// Defaults: UDP and TCP on 3478, no TLS, realm "prism", 1000
    /// allocations, 10 per user, 600 s max lifetime, 10 Mbit/s.
    pub fn new(listen_ip: IpAddr, relay_ip: IpAddr) -> TurnSettings {
        TurnSettings {
            listen_ip,
            udp_port: Some(3478),
            tcp_port: Some(3478),
            tls: None,
            relay_ip,
            relay_public_ip: None,
            relay_ports: None,
            realm: "prism".to_owned(),
            max_allocations: 1000,
            max_allocations_per_user: 10,
            max_lifetime: DEFAULT_LIFETIME,
            max_bitrate_bps: Some(10_000_000),
            allow_peers: Vec::new(),
            nonce_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Why a [`TurnSettings`] was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No UDP, TCP or TLS port is configured.
    #[error("no listener configured (udp_port, tcp_port and tls are all unset)")]
    NoListener,
    /// TCP and TLS are configured on the same non-zero port.
    #[error("tcp_port and the TLS port are both {0}")]
    PortClash(u16),
    /// The relay IP is IPv6 (only IPv4 relays are implemented).
    #[error("relay IP {0} is not IPv4")]
    RelayNotIpv4(IpAddr),
    /// The relay IP is 0.0.0.0 and no public relay IP says what to advertise.
    #[error("relay IP is unspecified and relay_public_ip is unset")]
    RelayUnspecified,
    /// The relay port range is empty or includes port 0.
    #[error("relay port range {0:?} is empty or includes 0")]
    RelayPorts(RangeInclusive<u16>),
    /// The realm is empty or longer than STUN allows (763 bytes).
    #[error("realm must be 1..=763 bytes")]
    Realm,
    /// A limit is zero, or the per-user limit exceeds the total.
    #[error("limit {0} is out of range")]
    Limit(&'static str),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// A checked TURN configuration; see [`TurnSettings`] for the fields.
#[derive(Clone)]
pub struct TurnConfig {
    settings: TurnSettings,
    tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TurnConfig {
    /// Checks `settings` and loads the TLS certificate and key if a TLS
    /// listener is configured.
    pub fn new(settings: TurnSettings) -> Result<TurnConfig, ConfigError> {
        let s = &settings;
        if s.udp_port.is_none() && s.tcp_port.is_none() && s.tls.is_none() {
            return Err(ConfigError::NoListener);
        }
        if let (Some(tcp), Some(tls)) = (s.tcp_port, &s.tls) {
            if tcp != 0 && tcp == tls.port {
                return Err(ConfigError::PortClash(tcp));
            }
        }
        if !s.relay_ip.is_ipv4() {
            return Err(ConfigError::RelayNotIpv4(s.relay_ip));
        }
        if let Some(public) = s.relay_public_ip {
            if !public.is_ipv4() || public.is_unspecified() {
                return Err(ConfigError::RelayNotIpv4(public));
            }
        } else if s.relay_ip.is_unspecified() {
            return Err(ConfigError::RelayUnspecified);
        }
        if let Some(r) = &s.relay_ports {
            if r.is_empty() || *r.start() == 0 {
                return Err(ConfigError::RelayPorts(r.clone()));
            }
        }
        if s.realm.is_empty() || s.realm.len() > 763 {
            return Err(ConfigError::Realm);
        }
        if s.max_allocations == 0 {
            return Err(ConfigError::Limit("max_allocations"));
        }
        if s.max_allocations_per_user == 0 || s.max_allocations_per_user > s.max_allocations {
            return Err(ConfigError::Limit("max_allocations_per_user"));
        }
        // Below a minute the clients' refresh (at half the lifetime) and
        // the 300 s permissions stop making sense.
        if s.max_lifetime < Duration::from_secs(60) || s.max_lifetime > Duration::from_secs(86_400)
        {
            return Err(ConfigError::Limit("max_lifetime"));
        }
        if s.max_bitrate_bps == Some(0) {
            return Err(ConfigError::Limit("max_bitrate_bps"));
        }
        if s.nonce_lifetime < Duration::from_secs(10) {
            return Err(ConfigError::Limit("nonce_lifetime"));
        }
        let tls_acceptor = match &s.tls {
            Some(t) => Some(tls::acceptor(&t.cert_path, &t.key_path)?),
            None => None,
        };
        Ok(TurnConfig {
            settings,
            tls_acceptor,
        })
    }

    /// The checked settings.
    pub fn settings(&self) -> &TurnSettings {
        &self.settings
    }

    /// The IP written in XOR-RELAYED-ADDRESS.
    pub(crate) fn relay_public_ip(&self) -> IpAddr {
        self.settings
            .relay_public_ip
            .unwrap_or(self.settings.relay_ip)
    }

    pub(crate) fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls_acceptor.clone()
    }
}

/// For tests and examples: loopback listeners on ephemeral ports.
impl Default for TurnSettings {
    fn default() -> TurnSettings {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        TurnSettings {
            udp_port: Some(0),
            tcp_port: Some(0),
            ..TurnSettings::new(lo, lo)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_are_refused() {
        type Edit = fn(&mut TurnSettings);
        let rows: &[(&str, Edit, bool)] = &[
            ("defaults", |_| {}, true),
            (
                "no listener",
                |s| {
                    s.udp_port = None;
                    s.tcp_port = None;
                },
                false,
            ),
            (
                "only tls, missing files",
                |s| {
                    s.udp_port = None;
                    s.tcp_port = None;
                    s.tls = Some(TlsListener {
                        port: 0,
                        cert_path: "/nonexistent/c.pem".into(),
                        key_path: "/nonexistent/k.pem".into(),
                    });
                },
                false,
            ),
            (
                "tls with empty paths",
                |s| {
                    s.tls = Some(TlsListener {
                        port: 0,
                        cert_path: PathBuf::new(),
                        key_path: PathBuf::new(),
                    });
                },
                false,
            ),
            ("ipv6 relay", |s| s.relay_ip = "::1".parse().unwrap(), false),
            (
                "unspecified relay",
                |s| s.relay_ip = "0.0.0.0".parse().unwrap(),
                false,
            ),
            (
                "unspecified relay with public ip",
                |s| {
                    s.relay_ip = "0.0.0.0".parse().unwrap();
                    s.relay_public_ip = Some("192.0.2.1".parse().unwrap());
                },
                true,
            ),
            ("port range with 0", |s| s.relay_ports = Some(0..=10), false),
            ("empty realm", |s| s.realm.clear(), false),
            ("zero allocations", |s| s.max_allocations = 0, false),
            (
                "per user over total",
                |s| {
                    s.max_allocations = 2;
                    s.max_allocations_per_user = 3;
                },
                false,
            ),
            (
                "lifetime 10 s",
                |s| s.max_lifetime = Duration::from_secs(10),
                false,
            ),
            ("zero bitrate", |s| s.max_bitrate_bps = Some(0), false),
            ("unlimited bitrate", |s| s.max_bitrate_bps = None, true),
        ];
        for (name, edit, ok) in rows {
            let mut s = TurnSettings::default();
            edit(&mut s);
            assert_eq!(TurnConfig::new(s).is_ok(), *ok, "{name}");
        }
    }
}
