//! The tokio driver: listeners, relay sockets, and the one task that owns
//! the sans-I/O core.
//!
//! # Tasks
//!
//! - **core task** ([`CoreTask::run`]): owns the [`TurnCore`], every relay
//!   socket (and the reader task of each), the UDP listener's send side and
//!   the send queue of each stream connection. It takes [`Input`]s from one
//!   bounded queue, applies the core's outputs with non-blocking sends only,
//!   and runs the core's timers. It ends on shutdown and then aborts the
//!   relay readers.
//! - **UDP listener** ([`udp::listen`]): reads datagrams into the core
//!   queue; drops (counted) when the queue is full. Ends on shutdown.
//! - **relay readers** ([`udp::relay_reader`]): one per allocation, the
//!   same for peer datagrams; aborted by the core task when the allocation
//!   goes.
//! - **accept loops** and **connection tasks** ([`stream`]): see there.
//!   End on shutdown.
//!
//! Shutdown is a `watch` channel every task selects on; [`TurnHandle`]
//! signals it from `shutdown()` or when dropped.

mod stream;
mod udp;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::TurnConfig;
use crate::core::{AllocId, ClientKey, ClientTransport, ConnId, Limits, Nonces, Output, TurnCore};
use crate::filter::PeerFilter;
use crate::rest::RestSecret;
use crate::stats::{bump, Counters, TurnStats};

/// Inputs waiting for the core task.
const CORE_QUEUE: usize = 4096;
/// Inputs the core task takes in one round before it looks at its timers
/// and the shutdown signal again.
const BATCH: usize = 256;
/// The longest the core task goes without housekeeping (expired
/// permissions and channels are forgotten then).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// What the I/O tasks hand the core task.
pub(crate) enum Input {
    /// A datagram or stream frame from a client.
    Client { client: ClientKey, bytes: Vec<u8> },
    /// A datagram an allocation's relay socket received.
    Peer {
        alloc: AllocId,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A stream connection is up; `tx` is its send queue.
    ConnOpened {
        conn: ConnId,
        tx: mpsc::Sender<Vec<u8>>,
    },
    /// A stream connection is gone.
    ConnClosed { conn: ConnId },
}

/// The addresses the listeners are bound to (useful with port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// The UDP listener, if configured.
    pub udp: Option<SocketAddr>,
    /// The TCP listener, if configured.
    pub tcp: Option<SocketAddr>,
    /// The TLS listener, if configured.
    pub tls: Option<SocketAddr>,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot bind the {listener} listener on {addr}: {source}")]
    Bind {
        /// `"udp"`, `"tcp"` or `"tls"`.
        listener: &'static str,
        /// The address it tried.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// Prism's embedded TURN server.
pub struct TurnServer;

impl TurnServer {
    /// Binds the configured listeners and starts the server's tasks on the
    /// current tokio runtime. Relays may reach only the peers `filter`
    /// allows plus the config's `allow_peers` prefixes; clients
    /// authenticate with TURN REST credentials made from `secret`.
    pub async fn start(
        config: TurnConfig,
        secret: RestSecret,
        filter: PeerFilter,
    ) -> Result<TurnHandle, StartError> {
        let s = config.settings();
        let filter = s.allow_peers.iter().fold(filter, |f, p| f.allow_prefix(*p));
        let stats = Arc::new(Counters::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(CORE_QUEUE);
        let mut tasks = Vec::new();
        let mut addrs = BoundAddrs {
            udp: None,
            tcp: None,
            tls: None,
        };

        let bind_err = |listener, addr| {
            move |source| StartError::Bind {
                listener,
                addr,
                source,
            }
        };
        let udp = match s.udp_port {
            Some(port) => {
                let addr = SocketAddr::new(s.listen_ip, port);
                let sock = UdpSocket::bind(addr).await.map_err(bind_err("udp", addr))?;
                addrs.udp = Some(sock.local_addr().map_err(bind_err("udp", addr))?);
                Some(Arc::new(sock))
            }
            None => None,
        };
        let mut listeners = Vec::new();
        if let Some(port) = s.tcp_port {
            let addr = SocketAddr::new(s.listen_ip, port);
            let l = TcpListener::bind(addr)
                .await
                .map_err(bind_err("tcp", addr))?;
            addrs.tcp = Some(l.local_addr().map_err(bind_err("tcp", addr))?);
            listeners.push((l, None));
        }
        if let Some(tls) = &s.tls {
            let addr = SocketAddr::new(s.listen_ip, tls.port);
            let l = TcpListener::bind(addr)
                .await
                .map_err(bind_err("tls", addr))?;
            addrs.tls = Some(l.local_addr().map_err(bind_err("tls", addr))?);
            listeners.push((l, config.tls_acceptor()));
        }

        let ctx = stream::StreamCtx {
            tx: tx.clone(),
            stats: stats.clone(),
            shutdown: shutdown_rx.clone(),
            next_conn: Arc::new(AtomicU64::new(1)),
            // Room for every allocation on its own connection, plus
            // connections that only ask for a Binding or are being refused.
            slots: Arc::new(Semaphore::new(s.max_allocations.saturating_mul(2) + 64)),
        };
        for (listener, tls) in listeners {
            tasks.push(tokio::spawn(stream::accept_loop(
                listener,
                tls,
                ctx.clone(),
            )));
        }
        if let Some(sock) = &udp {
            tasks.push(tokio::spawn(udp::listen(
                sock.clone(),
                tx.clone(),
                stats.clone(),
                shutdown_rx.clone(),
            )));
        }

        let limits = Limits {
            realm: s.realm.clone(),
            max_allocations: s.max_allocations,
            max_allocations_per_user: s.max_allocations_per_user,
            max_lifetime: s.max_lifetime,
            max_bitrate_bps: s.max_bitrate_bps,
            relay_ip: config.relay_public_ip(),
        };
        let nonces = Nonces::new(rand::random(), Instant::now(), s.nonce_lifetime);
        let core = TurnCore::new(limits, secret, filter, stats.clone(), nonces);
        let task = CoreTask {
            core,
            tx,
            udp,
            conns: HashMap::new(),
            relays: HashMap::new(),
            ports: udp::RelayPorts::new(s.relay_ip, s.relay_ports.clone()),
            stats: stats.clone(),
        };
        tasks.push(tokio::spawn(task.run(rx, shutdown_rx)));

        Ok(TurnHandle {
            addrs,
            stats,
            shutdown: shutdown_tx,
            tasks,
        })
    }
}

/// A running TURN server. Dropping it stops the server too (without
/// waiting for the tasks).
pub struct TurnHandle {
    addrs: BoundAddrs,
    stats: Arc<Counters>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl TurnHandle {
    /// Where the listeners are bound.
    pub fn local_addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// The counters now.
    pub fn stats(&self) -> TurnStats {
        self.stats.snapshot()
    }

    /// Stops every task (listeners, connections, relays) and waits for the
    /// listeners and the core task to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for TurnHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// One allocation's relay socket and the task reading it.
struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// The core task's state (see the module docs).
struct CoreTask {
    core: TurnCore,
    /// Handed to relay readers.
    tx: mpsc::Sender<Input>,
    udp: Option<Arc<UdpSocket>>,
    conns: HashMap<ConnId, mpsc::Sender<Vec<u8>>>,
    relays: HashMap<AllocId, Relay>,
    ports: udp::RelayPorts,
    stats: Arc<Counters>,
}

impl CoreTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let now = Instant::now();
            let deadline = self
                .core
                .poll_timeout()
                .map_or(now + HOUSEKEEPING, |t| t.min(now + HOUSEKEEPING));
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    self.handle(input);
                    for _ in 1..BATCH {
                        match rx.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.core.handle_timeout(Instant::now());
                    self.apply();
                }
            }
        }
        for (_, relay) in self.relays.drain() {
            relay.reader.abort();
        }
    }

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Client { client, bytes } => {
                self.core
                    .handle_client(now, SystemTime::now(), client, &bytes)
            }
            Input::Peer { alloc, from, bytes } => self.core.handle_peer(now, alloc, from, &bytes),
            Input::ConnOpened { conn, tx } => {
                self.conns.insert(conn, tx);
            }
            Input::ConnClosed { conn } => {
                self.conns.remove(&conn);
                self.core.handle_conn_closed(conn);
            }
        }
        self.apply();
    }

    /// Applies every output of the core; never waits.
    fn apply(&mut self) {
        // Bounded: each output is applied once; relay_bound adds one reply.
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::ToClient { client, bytes } => self.send_to_client(client, bytes),
                Output::ToPeer { alloc, peer, bytes } => {
                    let sent = self
                        .relays
                        .get(&alloc)
                        .is_some_and(|r| r.socket.try_send_to(&bytes, peer).is_ok());
                    if !sent {
                        bump(&self.stats.queue_drops);
                    }
                }
                Output::BindRelay { alloc } => {
                    let port = self.bind_relay(alloc);
                    self.core.relay_bound(Instant::now(), alloc, port);
                }
                Output::CloseRelay { alloc } => {
                    if let Some(relay) = self.relays.remove(&alloc) {
                        relay.reader.abort();
                    }
                }
            }
        }
    }

    fn send_to_client(&mut self, client: ClientKey, bytes: Vec<u8>) {
        let sent = match client.transport {
            ClientTransport::Udp => self
                .udp
                .as_ref()
                .is_some_and(|u| u.try_send_to(&bytes, client.remote).is_ok()),
            // A full queue: a slow client loses this packet.
            ClientTransport::Stream(conn) => self
                .conns
                .get(&conn)
                .is_some_and(|tx| tx.try_send(bytes).is_ok()),
        };
        if !sent {
            bump(&self.stats.queue_drops);
        }
    }

    fn bind_relay(&mut self, alloc: AllocId) -> Result<u16, ()> {
        let socket = self.ports.bind().map_err(|e| {
            tracing::warn!(error = %e, "TURN: cannot bind a relay socket");
        })?;
        let port = socket.local_addr().map_err(|_| ())?.port();
        let socket = Arc::new(socket);
        let reader = tokio::spawn(udp::relay_reader(
            alloc,
            socket.clone(),
            self.tx.clone(),
            self.stats.clone(),
        ));
        self.relays.insert(alloc, Relay { socket, reader });
        Ok(port)
    }
}
