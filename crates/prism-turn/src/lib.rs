//! Prism's embedded TURN server (RFC 8656, the parts WebRTC clients use)
//! and the TURN REST credentials it shares with coturn (`use-auth-secret`).
//!
//! - [`TurnServer::start`] runs the server on the current tokio runtime
//!   with a checked [`TurnConfig`], the REST [`RestSecret`] and a
//!   [`PeerFilter`]: relays reach only the peers the filter allows (Prism
//!   passes its own media sockets), never an open relay.
//! - [`TurnHandle`] reads the counters ([`TurnStats`]) and stops it.
//!
//! Inside, `core` is a sans-I/O state machine (no sockets, no clock) and
//! `driver` moves bytes for it with tokio; see the README for what is and
//! is not implemented.

#![warn(missing_docs)]

mod config;
mod core;
mod driver;
mod filter;
pub mod rest;
mod stats;
mod tls;

pub use config::{ConfigError, TlsListener, TurnConfig, TurnSettings, DEFAULT_LIFETIME};
pub use driver::{BoundAddrs, StartError, TurnHandle, TurnServer};
pub use filter::{IpPrefix, PeerFilter, PrefixError};
pub use rest::{AuthFailure, RestCredentials, RestSecret};
pub use stats::TurnStats;
pub use tls::TlsError;
