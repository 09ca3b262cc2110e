//! The TURN server's counters: plain atomics that the core and the driver
//! bump with relaxed ordering, and a [`TurnStats`] snapshot the embedding
//! application reads (and exports) whenever it likes.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::rest::AuthFailure;

/// A snapshot of the server's counters. Every field but
/// `allocations_active` only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnStats {
    /// Allocations alive now.
    pub allocations_active: u64,
    /// Allocations ever created.
    pub allocations_created: u64,
    /// Allocations removed because their lifetime ran out (not refreshed).
    pub allocations_expired: u64,
    /// Packets relayed from clients to peers.
    pub packets_to_peer: u64,
    /// Payload bytes relayed from clients to peers.
    pub bytes_to_peer: u64,
    /// Packets relayed from peers to clients.
    pub packets_to_client: u64,
    /// Payload bytes relayed from peers to clients.
    pub bytes_to_client: u64,
    /// Requests answered with the 401 challenge because they carried no
    /// credentials (every client's first Allocate does: not an attack).
    pub auth_challenges: u64,
    /// Refused: REST username whose expiry has passed.
    pub auth_expired: u64,
    /// Refused: username not `<expiry>:<identity>`, or credential
    /// attributes missing next to a MESSAGE-INTEGRITY.
    pub auth_malformed: u64,
    /// Refused: MESSAGE-INTEGRITY does not match (forged or other secret).
    pub auth_bad_integrity: u64,
    /// Refused with 438: nonce expired or not ours.
    pub auth_stale_nonce: u64,
    /// CreatePermission / ChannelBind refused with 403: peer not allowed by
    /// the peer filter.
    pub forbidden_peers: u64,
    /// Send / ChannelData dropped: no permission for that peer.
    pub dropped_no_permission_to_peer: u64,
    /// Peer packets dropped: no permission for the sender.
    pub dropped_no_permission_from_peer: u64,
    /// Allocate refused with 486: the user identity has its quota.
    pub quota_user_refusals: u64,
    /// Allocate refused with 508: the server has its total.
    pub quota_total_refusals: u64,
    /// Packets dropped by an allocation's bandwidth limit.
    pub bandwidth_drops: u64,
    /// Input that is neither valid STUN nor ChannelData, or a request
    /// missing attributes it needs.
    pub malformed_input: u64,
    /// Packets dropped because a queue or a socket buffer was full (a slow
    /// stream client, a flooded server).
    pub queue_drops: u64,
    /// Allocations refused because no relay socket could be bound.
    pub relay_bind_failures: u64,
}

impl TurnStats {
    /// Authentication failures by [`AuthFailure::label`], plus
    /// `stale_nonce`: the rows an exporter writes under one metric name.
    pub fn auth_failures(&self) -> [(&'static str, u64); 4] {
        [
            (AuthFailure::Expired.label(), self.auth_expired),
            (AuthFailure::Malformed.label(), self.auth_malformed),
            (AuthFailure::BadIntegrity.label(), self.auth_bad_integrity),
            ("stale_nonce", self.auth_stale_nonce),
        ]
    }
}

/// The live counters behind [`TurnStats`]. Shared (in an `Arc`) between the
/// core task and the I/O tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub allocations_active: AtomicU64,
    pub allocations_created: AtomicU64,
    pub allocations_expired: AtomicU64,
    pub packets_to_peer: AtomicU64,
    pub bytes_to_peer: AtomicU64,
    pub packets_to_client: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub auth_challenges: AtomicU64,
    pub auth_expired: AtomicU64,
    pub auth_malformed: AtomicU64,
    pub auth_bad_integrity: AtomicU64,
    pub auth_stale_nonce: AtomicU64,
    pub forbidden_peers: AtomicU64,
    pub dropped_no_permission_to_peer: AtomicU64,
    pub dropped_no_permission_from_peer: AtomicU64,
    pub quota_user_refusals: AtomicU64,
    pub quota_total_refusals: AtomicU64,
    pub bandwidth_drops: AtomicU64,
    pub malformed_input: AtomicU64,
    pub queue_drops: AtomicU64,
    pub relay_bind_failures: AtomicU64,
}

/// Adds one.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// Counts one refused credential.
    pub fn auth_failure(&self, f: AuthFailure) {
        bump(match f {
            AuthFailure::Expired => &self.auth_expired,
            AuthFailure::Malformed => &self.auth_malformed,
            AuthFailure::BadIntegrity => &self.auth_bad_integrity,
        });
    }

    /// The values now.
    pub fn snapshot(&self) -> TurnStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TurnStats {
            allocations_active: r(&self.allocations_active),
            allocations_created: r(&self.allocations_created),
            allocations_expired: r(&self.allocations_expired),
            packets_to_peer: r(&self.packets_to_peer),
            bytes_to_peer: r(&self.bytes_to_peer),
            packets_to_client: r(&self.packets_to_client),
            bytes_to_client: r(&self.bytes_to_client),
            auth_challenges: r(&self.auth_challenges),
            auth_expired: r(&self.auth_expired),
            auth_malformed: r(&self.auth_malformed),
            auth_bad_integrity: r(&self.auth_bad_integrity),
            auth_stale_nonce: r(&self.auth_stale_nonce),
            forbidden_peers: r(&self.forbidden_peers),
            dropped_no_permission_to_peer: r(&self.dropped_no_permission_to_peer),
            dropped_no_permission_from_peer: r(&self.dropped_no_permission_from_peer),
            quota_user_refusals: r(&self.quota_user_refusals),
            quota_total_refusals: r(&self.quota_total_refusals),
            bandwidth_drops: r(&self.bandwidth_drops),
            malformed_input: r(&self.malformed_input),
            queue_drops: r(&self.queue_drops),
            relay_bind_failures: r(&self.relay_bind_failures),
        }
    }
}
