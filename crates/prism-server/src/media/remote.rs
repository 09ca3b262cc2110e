//! Where a datagram came from and goes back to: a UDP address, or an
//! ICE-TCP connection (`ice_tcp.rs`) and the address at its other end.

use std::net::SocketAddr;

use rtc::shared::TransportProtocol;

/// The far side of one path to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// A datagram on the shard's UDP socket from this address.
    Udp(SocketAddr),
    /// A frame on ICE-TCP connection `conn` (a key of the shard's
    /// connection table), whose client end is `addr`.
    Tcp { addr: SocketAddr, conn: usize },
}

impl Remote {
    /// The client's address, as the engine sees it.
    pub fn addr(self) -> SocketAddr {
        match self {
            Remote::Udp(a) | Remote::Tcp { addr: a, .. } => a,
        }
    }

    pub fn protocol(self) -> TransportProtocol {
        match self {
            Remote::Udp(_) => TransportProtocol::UDP,
            Remote::Tcp { .. } => TransportProtocol::TCP,
        }
    }
}
