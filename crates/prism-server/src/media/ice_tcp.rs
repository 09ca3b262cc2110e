//! ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing) for one shard:
//! its listener and the table of its accepted connections. Each connection
//! runs as a task on the shard's own runtime: a reader that cuts the byte
//! stream into frames (a 2-byte length, then the datagram) and hands them to
//! the shard, and a writer that frames what the shard sends. The shard sees
//! frames as datagrams from a [`Remote::Tcp`] and demultiplexes them exactly
//! like UDP (`shard/demux.rs`): STUN by ufrag first, then by connection.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] per shard; a connection that has not
//! carried an authentic binding request within [`UNBOUND_TIMEOUT`] is
//! closed; each connection queues at most [`SEND_QUEUE`] frames for its
//! writer (beyond that a frame is dropped and counted, like a datagram lost
//! on the network: RTCP recovers what matters); frames from all connections
//! reach the shard through one bounded channel, so a shard that falls behind
//! slows its TCP readers down instead of growing a queue.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use slab::Slab;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::remote::Remote;

/// The most ICE-TCP connections one shard keeps open.
pub const MAX_CONNECTIONS: usize = 4096;
/// A connection that has not proved it belongs to a peer (an authentic
/// binding request) this long after it was accepted is closed.
pub const UNBOUND_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames one connection's writer may have queued.
pub const SEND_QUEUE: usize = 512;
/// Frames from all connections waiting for the shard.
const INBOUND_QUEUE: usize = 1024;
/// What one writer gathers into one `write` call.
const WRITE_BATCH: usize = 64 * 1024;

/// What a connection task tells its shard.
#[derive(Debug)]
pub enum TcpEvent {
    Frame { conn: usize, data: BytesMut },
    Closed { conn: usize },
}

/// What [`IceTcp::next_input`] brings.
#[derive(Debug)]
pub enum TcpInput {
    Accepted(TcpStream, SocketAddr),
    Event(TcpEvent),
}

/// One accepted connection.
#[derive(Debug)]
pub struct TcpConn {
    pub remote: SocketAddr,
    /// The peer an authentic binding request on it named.
    pub peer: Option<usize>,
    pub accepted_at: Instant,
    out: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
}

/// Counters of the shard's ICE-TCP side (plain integers, published with the
/// shard's other statistics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpStats {
    pub accepted: u64,
    /// Refused at [`MAX_CONNECTIONS`].
    pub refused: u64,
    /// Closed for not proving a peer within [`UNBOUND_TIMEOUT`].
    pub unbound_closed: u64,
    /// Datagrams not sent: the connection's queue was full, or the
    /// connection had closed.
    pub send_drops: u64,
    /// Open now.
    pub open: u64,
}

impl TcpStats {
    /// Sums another shard's numbers into these.
    pub fn add(&mut self, o: &TcpStats) {
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.unbound_closed += o.unbound_closed;
        self.send_drops += o.send_drops;
        self.open += o.open;
    }
}

/// A shard's ICE-TCP listener and connections.
pub struct IceTcp {
    listener: TcpListener,
    /// The candidate address the engine is told is the local side.
    pub local_addr: SocketAddr,
    pub conns: Slab<TcpConn>,
    events_tx: mpsc::Sender<TcpEvent>,
    events_rx: mpsc::Receiver<TcpEvent>,
    pub stats: TcpStats,
}

impl IceTcp {
    /// `local_addr` is the advertised candidate address (the listener may be
    /// bound to another, e.g. behind a 1:1 NAT).
    pub fn new(listener: std::net::TcpListener, local_addr: SocketAddr) -> std::io::Result<IceTcp> {
        listener.set_nonblocking(true)?;
        let (events_tx, events_rx) = mpsc::channel(INBOUND_QUEUE);
        Ok(IceTcp {
            listener: TcpListener::from_std(listener)?,
            local_addr,
            conns: Slab::new(),
            events_tx,
            events_rx,
            stats: TcpStats::default(),
        })
    }

    /// Waits for a connection, a frame or a close (cancel-safe). A failed
    /// accept (e.g. out of file descriptors) is retried after a pause.
    pub async fn next_input(&mut self) -> TcpInput {
        loop {
            tokio::select! {
                ev = self.events_rx.recv() => {
                    // The shard holds a sender itself: never closed.
                    if let Some(ev) = ev {
                        return TcpInput::Event(ev);
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, remote)) => return TcpInput::Accepted(stream, remote),
                    Err(e) => {
                        tracing::debug!("ICE-TCP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Another event if one is ready, without waiting.
    pub fn try_event(&mut self) -> Option<TcpEvent> {
        self.events_rx.try_recv().ok()
    }

    /// Takes an accepted connection into the table and starts its task.
    pub fn admit(&mut self, now: Instant, stream: TcpStream, remote: SocketAddr) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.stats.refused += 1;
            return; // dropping the stream closes it
        }
        let _ = stream.set_nodelay(true);
        let (out, out_rx) = mpsc::channel(SEND_QUEUE);
        let entry = self.conns.vacant_entry();
        let conn = entry.key();
        let task = tokio::spawn(run_connection(stream, conn, self.events_tx.clone(), out_rx));
        entry.insert(TcpConn {
            remote,
            peer: None,
            accepted_at: now,
            out,
            task,
        });
        self.stats.accepted += 1;
        self.stats.open = self.conns.len() as u64;
    }

    /// Queues one datagram for connection `conn`; a full queue drops it.
    pub fn send(&mut self, conn: usize, data: Bytes) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        if c.out.try_send(data).is_err() {
            self.stats.send_drops += 1;
        }
    }

    /// Closes a connection (its task stops, the socket closes). Returns the
    /// peer it was bound to.
    pub fn close(&mut self, conn: usize) -> Option<TcpConn> {
        let c = self.conns.try_remove(conn)?;
        c.task.abort();
        self.stats.open = self.conns.len() as u64;
        Some(c)
    }

    /// Connections that did not prove a peer in time.
    pub fn unbound_expired(&self, now: Instant) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| {
                c.peer.is_none() && now.duration_since(c.accepted_at) >= UNBOUND_TIMEOUT
            })
            .map(|(k, _)| k)
            .collect()
    }

    /// The [`Remote`] of a connection's frames.
    pub fn remote(&self, conn: usize) -> Option<Remote> {
        self.conns.get(conn).map(|c| Remote::Tcp {
            addr: c.remote,
            conn,
        })
    }
}

impl Drop for IceTcp {
    fn drop(&mut self) {
        for c in self.conns.drain() {
            c.task.abort();
        }
    }
}

/// One connection: frames in to the shard, frames out from its queue. Ends
/// when either side of the stream ends or the shard drops the queue.
async fn run_connection(
    stream: TcpStream,
    conn: usize,
    events: mpsc::Sender<TcpEvent>,
    mut out: mpsc::Receiver<Bytes>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let reader = async {
        loop {
            let mut len = [0u8; 2];
            if rd.read_exact(&mut len).await.is_err() {
                return;
            }
            let len = u16::from_be_bytes(len) as usize;
            let mut data = BytesMut::zeroed(len);
            if rd.read_exact(&mut data).await.is_err() {
                return;
            }
            if events.send(TcpEvent::Frame { conn, data }).await.is_err() {
                return; // the shard is gone
            }
        }
    };
    let writer = async {
        let mut buf = Vec::with_capacity(WRITE_BATCH);
        while let Some(first) = out.recv().await {
            buf.clear();
            frame_into(&mut buf, &first);
            while buf.len() < WRITE_BATCH {
                match out.try_recv() {
                    Ok(next) => frame_into(&mut buf, &next),
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
    let _ = events.send(TcpEvent::Closed { conn }).await;
}

/// RFC 4571: a 2-byte length, then the datagram.
fn frame_into(buf: &mut Vec<u8>, data: &[u8]) {
    let len = data.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(len as u16).to_be_bytes());
    buf.extend_from_slice(&data[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_length_prefixed() {
        let mut buf = Vec::new();
        frame_into(&mut buf, &[1, 2, 3]);
        frame_into(&mut buf, &[]);
        assert_eq!(buf, vec![0, 3, 1, 2, 3, 0, 0]);
    }

    #[tokio::test]
    async fn a_connection_carries_frames_both_ways_and_reports_its_close() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mut tcp = IceTcp::new(std_listener, addr).unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let TcpInput::Accepted(stream, remote) = tcp.next_input().await else {
            panic!("expected the connection");
        };
        tcp.admit(Instant::now(), stream, remote);
        // Two frames in one write, and one split across writes.
        client.write_all(&[0, 2, 9, 8, 0, 1, 7, 0]).await.unwrap();
        client.write_all(&[3, 1, 2, 3]).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            match tcp.next_input().await {
                TcpInput::Event(TcpEvent::Frame { conn, data }) => {
                    assert_eq!(conn, 0);
                    got.push(data.to_vec());
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(got, vec![vec![9, 8], vec![7], vec![1, 2, 3]]);
        tcp.send(0, Bytes::from_static(&[5, 6]));
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [0, 2, 5, 6]);
        drop(client);
        assert!(matches!(
            tcp.next_input().await,
            TcpInput::Event(TcpEvent::Closed { conn: 0 })
        ));
        assert!(tcp.close(0).is_some());
        assert_eq!(tcp.stats.open, 0);
    }
}
