//! TCP and TLS clients: the accept loop, one task per connection, and the
//! framing of STUN and ChannelData on a byte stream (RFC 8656 §12.5).
//!
//! A connection task owns its stream. It cuts frames from what it reads
//! and hands each to the core task (waiting for room in the core queue:
//! a stream may be slowed down, unlike UDP), and writes what the core sends
//! it through a bounded queue. The core never waits for a connection: when
//! that queue is full the packet is dropped and counted, so a slow client
//! loses its own packets and nobody else's. The task ends on EOF, a read or
//! write error, a write stalled past [`WRITE_TIMEOUT`], a malformed frame,
//! or shutdown, and always tells the core, which then deletes the
//! connection's allocation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::Input;
use crate::core::{ClientKey, ClientTransport, ConnId};
use crate::stats::{bump, Counters};

/// Frames the core has not taken yet, per connection.
pub(crate) const OUT_QUEUE: usize = 256;
/// A write that takes longer closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A TLS handshake that takes longer closes the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a stream cannot be framed any further.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadFrame;

/// The length of the frame at the start of `buf` (padding included), or
/// `None` if more bytes are needed to know. At most 4 + 65536 bytes.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, BadFrame> {
    let (Some(first), Some(l0), Some(l1)) = (buf.first(), buf.get(2), buf.get(3)) else {
        return match buf.first() {
            Some(b) if b >> 6 > 1 => Err(BadFrame),
            _ => Ok(None),
        };
    };
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    match first >> 6 {
        0 => Ok(Some(20 + len)),
        1 => Ok(Some(4 + len.div_ceil(4) * 4)),
        _ => Err(BadFrame),
    }
}

/// What every connection task needs.
#[derive(Clone)]
pub(crate) struct StreamCtx {
    pub tx: mpsc::Sender<Input>,
    pub stats: Arc<Counters>,
    pub shutdown: watch::Receiver<bool>,
    pub next_conn: Arc<AtomicU64>,
    /// Bounds the number of open connections.
    pub slots: Arc<Semaphore>,
}

/// Accepts connections until shutdown; each runs in its own task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut ctx: StreamCtx,
) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            // Out of file descriptors and the like: back off instead of
            // spinning on the error.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
            bump(&ctx.stats.queue_drops);
            continue; // too many connections: this one is closed at once
        };
        let _ = stream.set_nodelay(true);
        let conn = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
        let task_ctx = ctx.clone();
        match &tls {
            None => {
                tokio::spawn(run(stream, conn, remote, task_ctx, permit));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    if let Ok(Ok(tls_stream)) = hs {
                        run(tls_stream, conn, remote, task_ctx, permit).await;
                    }
                });
            }
        }
    }
}

/// One connection, until it ends (see the module docs).
async fn run<S>(
    stream: S,
    conn: ConnId,
    remote: SocketAddr,
    mut ctx: StreamCtx,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    if ctx
        .tx
        .send(Input::ConnOpened { conn, tx: out_tx })
        .await
        .is_err()
    {
        return;
    }
    let client = ClientKey {
        transport: ClientTransport::Stream(conn),
        remote,
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    'conn: loop {
        tokio::select! {
            _ = ctx.shutdown.changed() => break,
            read = rd.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                // Bounded: each round removes a frame of at least 4 bytes.
                loop {
                    let len = match frame_len(&buf) {
                        Err(BadFrame) => {
                            // Lost framing cannot be recovered on a stream.
                            bump(&ctx.stats.malformed_input);
                            break 'conn;
                        }
                        Ok(Some(len)) if len <= buf.len() => len,
                        Ok(_) => break,
                    };
                    let bytes: Vec<u8> = buf.drain(..len).collect();
                    if ctx.tx.send(Input::Client { client, bytes }).await.is_err() {
                        break 'conn;
                    }
                }
            }
            out = out_rx.recv() => {
                let Some(bytes) = out else { break };
                let write = async {
                    wr.write_all(&bytes).await?;
                    wr.flush().await
                };
                match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
        }
    }
    let _ = ctx.tx.send(Input::ConnClosed { conn }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_table() {
        type Row = (&'static [u8], Result<Option<usize>, BadFrame>);
        let rows: &[Row] = &[
            (&[], Ok(None)),
            (&[0x00], Ok(None)),
            (&[0x00, 0x01, 0x00], Ok(None)),
            (&[0x00, 0x01, 0x00, 0x08], Ok(Some(28))), // STUN: header + 8
            (&[0x40, 0x00, 0x00, 0x05], Ok(Some(12))), // ChannelData: 4 + 5 padded to 8
            (&[0x40, 0x00, 0x00, 0x08], Ok(Some(12))),
            (&[0x40, 0x00, 0x00, 0x00], Ok(Some(4))),
            (&[0x80], Err(BadFrame)),
            (&[0xC0, 0, 0, 0], Err(BadFrame)),
            (&[0x7F, 0xFF, 0xFF, 0xFF], Ok(Some(4 + 65536))),
        ];
        for (buf, want) in rows {
            assert_eq!(frame_len(buf), *want, "{buf:02x?}");
        }
    }
}
