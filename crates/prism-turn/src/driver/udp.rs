//! The UDP listener and the relay sockets: each read loop hands datagrams
//! to the core task without waiting (a full core queue drops and counts),
//! and the core task sends with `try_send_to` (a full socket buffer drops
//! and counts), so no UDP path ever blocks another.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::Input;
use crate::core::{AllocId, ClientKey, ClientTransport};
use crate::stats::{bump, Counters};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// Reads the client-facing UDP socket until shutdown.
pub(crate) async fn listen(
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Input>,
    stats: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let got = tokio::select! {
            _ = shutdown.changed() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        match got {
            Ok((n, remote)) => {
                let client = ClientKey {
                    transport: ClientTransport::Udp,
                    remote,
                };
                let input = Input::Client {
                    client,
                    bytes: buf[..n].to_vec(),
                };
                if tx.try_send(input).is_err() {
                    bump(&stats.queue_drops);
                }
            }
            // An ICMP error reported on the socket: not fatal for a
            // listener; the pause keeps a persistent error from spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// Reads one allocation's relay socket until the core task aborts it.
pub(crate) async fn relay_reader(
    alloc: AllocId,
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Input>,
    stats: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let input = Input::Peer {
                    alloc,
                    from,
                    bytes: buf[..n].to_vec(),
                };
                if tx.try_send(input).is_err() {
                    bump(&stats.queue_drops);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => break,
        }
    }
}

/// Picks relay ports: ephemeral, or the next free one of a range.
pub(crate) struct RelayPorts {
    ip: IpAddr,
    range: Option<RangeInclusive<u16>>,
    next: u16,
}

impl RelayPorts {
    pub fn new(ip: IpAddr, range: Option<RangeInclusive<u16>>) -> RelayPorts {
        let next = range.as_ref().map_or(0, |r| *r.start());
        RelayPorts { ip, range, next }
    }

    /// A bound, non-blocking relay socket. Tries each port of the range at
    /// most once.
    pub fn bind(&mut self) -> io::Result<UdpSocket> {
        let Some(range) = self.range.clone() else {
            return open(SocketAddr::new(self.ip, 0));
        };
        let (lo, hi) = (*range.start(), *range.end());
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "relay port range exhausted");
        for _ in 0..=(u32::from(hi - lo)) {
            let port = self.next;
            self.next = if port >= hi { lo } else { port + 1 };
            match open(SocketAddr::new(self.ip, port)) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}
