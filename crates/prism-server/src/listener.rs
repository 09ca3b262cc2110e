//! The HTTP port's listener: every accepted TCP connection must send its
//! first byte within `http_first_byte_timeout`, or it is closed and counted
//! (`prism_http_idle_closes_total`). Without it, a client that connects and
//! says nothing holds a socket and a task forever (hyper waits for a request
//! line indefinitely). Once a byte arrived, hyper and the WebSocket session
//! (with its own `ws_join_timeout`) take over.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// A [`TcpListener`] whose connections time out until their first byte.
pub struct FirstByteListener {
    inner: TcpListener,
    timeout: Duration,
    closed: IntCounter,
}

impl FirstByteListener {
    pub fn new(inner: TcpListener, timeout: Duration, closed: IntCounter) -> Self {
        FirstByteListener {
            inner,
            timeout,
            closed,
        }
    }
}

impl axum::serve::Listener for FirstByteListener {
    type Io = FirstByteConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        // Signaling is small messages both ways: no Nagle delay.
        let _ = io.set_nodelay(true);
        let conn = FirstByteConn {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(self.timeout))),
            closed: self.closed.clone(),
        };
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One accepted connection; its reads fail with `TimedOut` if no byte came
/// before the deadline (hyper then closes it).
pub struct FirstByteConn {
    io: TcpStream,
    /// None once a byte arrived.
    deadline: Option<Pin<Box<Sleep>>>,
    closed: IntCounter,
}

impl AsyncRead for FirstByteConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                this.deadline = None;
                this.closed.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within http_first_byte_timeout",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for FirstByteConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
