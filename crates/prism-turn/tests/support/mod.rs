//! A real TURN client for the loopback tests: rtc-turn's sans-I/O
//! `Client` driven over a UDP socket, a TCP stream or a TLS stream.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sansio::Protocol;
use shared::{TransportContext, TransportMessage, TransportProtocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn::client::{Client, ClientConfig, Event};

/// A byte stream to the server (TCP or TLS).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Wire {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>, Vec<u8>),
}

/// An rtc-turn client and its socket.
pub struct TurnClient {
    pub client: Client,
    wire: Wire,
    local: SocketAddr,
    server: SocketAddr,
    events: VecDeque<Event>,
    /// ChannelData frames the client sent (proof the channel was used).
    pub channel_data_sent: usize,
}

fn config(
    local: SocketAddr,
    server: SocketAddr,
    proto: TransportProtocol,
    user: &str,
    pass: &str,
) -> ClientConfig {
    ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: server.to_string(),
        local_addr: local,
        transport_protocol: proto,
        username: user.to_owned(),
        password: pass.to_owned(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        allocation_refresh_interval_cap: None,
    }
}

impl TurnClient {
    pub async fn udp(server: SocketAddr, user: &str, pass: &str) -> TurnClient {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        TurnClient::new(
            Wire::Udp(sock),
            local,
            server,
            TransportProtocol::UDP,
            user,
            pass,
        )
    }

    pub async fn tcp(server: SocketAddr, user: &str, pass: &str) -> TurnClient {
        let s = TcpStream::connect(server).await.unwrap();
        let local = s.local_addr().unwrap();
        TurnClient::new(
            Wire::Stream(Box::new(s), Vec::new()),
            local,
            server,
            TransportProtocol::TCP,
            user,
            pass,
        )
    }

    pub fn over_stream(
        stream: Box<dyn Stream>,
        local: SocketAddr,
        server: SocketAddr,
        user: &str,
        pass: &str,
    ) -> TurnClient {
        TurnClient::new(
            Wire::Stream(stream, Vec::new()),
            local,
            server,
            TransportProtocol::TCP,
            user,
            pass,
        )
    }

    fn new(
        wire: Wire,
        local: SocketAddr,
        server: SocketAddr,
        proto: TransportProtocol,
        user: &str,
        pass: &str,
    ) -> TurnClient {
        let provider = turn::crypto::default_provider().unwrap();
        let client = Client::new(config(local, server, proto, user, pass), provider).unwrap();
        TurnClient {
            client,
            wire,
            local,
            server,
            events: VecDeque::new(),
            channel_data_sent: 0,
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.client.poll_write() {
            if t.message.first().is_some_and(|b| b >> 6 == 1) {
                self.channel_data_sent += 1;
            }
            match &mut self.wire {
                Wire::Udp(s) => {
                    s.send_to(&t.message, self.server).await.unwrap();
                }
                Wire::Stream(s, _) => {
                    s.write_all(&t.message).await.unwrap();
                    s.flush().await.unwrap();
                }
            }
        }
    }

    fn deliver(&mut self, bytes: &[u8]) {
        let msg = TransportMessage {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.server,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(bytes),
        };
        // A packet the client cannot use (e.g. a response it already
        // timed out) is not this test's concern.
        let _ = self.client.handle_read(msg);
    }

    /// Reads for at most `wait` and hands whatever came to the client.
    async fn read_once(&mut self, wait: Duration) {
        let mut buf = vec![0u8; 70_000];
        match &mut self.wire {
            Wire::Udp(s) => {
                if let Ok(Ok((n, _))) = tokio::time::timeout(wait, s.recv_from(&mut buf)).await {
                    let b = buf[..n].to_vec();
                    self.deliver(&b);
                }
            }
            Wire::Stream(s, pending) => {
                if let Ok(Ok(n)) = tokio::time::timeout(wait, s.read(&mut buf)).await {
                    assert!(n > 0, "server closed the stream");
                    pending.extend_from_slice(&buf[..n]);
                }
                let mut frames = Vec::new();
                loop {
                    if pending.len() < 4 {
                        break;
                    }
                    let len = usize::from(u16::from_be_bytes([pending[2], pending[3]]));
                    let total = if pending[0] >> 6 == 0 {
                        20 + len
                    } else {
                        4 + len.div_ceil(4) * 4
                    };
                    if pending.len() < total {
                        break;
                    }
                    frames.push(pending.drain(..total).collect::<Vec<u8>>());
                }
                for f in frames {
                    self.deliver(&f);
                }
            }
        }
    }

    /// Drives the client until an event matching `want` (others are
    /// kept), panicking after 5 s.
    pub async fn until(&mut self, what: &str, want: impl Fn(&Event) -> bool) -> Event {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            self.flush().await;
            while let Some(e) = self.client.poll_event() {
                self.events.push_back(e);
            }
            if let Some(i) = self.events.iter().position(&want) {
                return self.events.remove(i).unwrap();
            }
            assert!(
                Instant::now() < give_up,
                "no {what}; events: {:?}",
                self.events
            );
            let wait = self
                .client
                .poll_timeout()
                .map_or(Duration::from_millis(20), |t| {
                    t.saturating_duration_since(Instant::now())
                })
                .clamp(Duration::from_millis(1), Duration::from_millis(20));
            self.read_once(wait).await;
            let _ = self.client.handle_timeout(Instant::now());
        }
    }

    /// Drives the client for `d` without waiting for anything.
    pub async fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.flush().await;
            while let Some(e) = self.client.poll_event() {
                self.events.push_back(e);
            }
            self.read_once(Duration::from_millis(10)).await;
            let _ = self.client.handle_timeout(Instant::now());
        }
        self.flush().await;
    }

    /// Allocates; the relayed address, or the error text.
    pub async fn allocate(&mut self) -> Result<SocketAddr, String> {
        self.client.allocate(Instant::now()).unwrap();
        match self
            .until("allocate result", |e| {
                matches!(e, Event::AllocateResponse(..) | Event::AllocateError(..))
            })
            .await
        {
            Event::AllocateResponse(_, addr) => Ok(addr),
            Event::AllocateError(_, e) => Err(e.to_string()),
            _ => unreachable!(),
        }
    }

    /// Creates a permission; `Err` with the error text if refused.
    pub async fn permit(&mut self, relayed: SocketAddr, peer: SocketAddr) -> Result<(), String> {
        self.client
            .relay(relayed)
            .unwrap()
            .create_permission(Instant::now(), peer)
            .unwrap();
        match self
            .until("permission result", |e| {
                matches!(
                    e,
                    Event::CreatePermissionResponse(..) | Event::CreatePermissionError(..)
                )
            })
            .await
        {
            Event::CreatePermissionResponse(..) => Ok(()),
            Event::CreatePermissionError(_, e) => Err(e.to_string()),
            _ => unreachable!(),
        }
    }

    pub fn send(&mut self, relayed: SocketAddr, peer: SocketAddr, data: &[u8]) {
        self.client
            .relay(relayed)
            .unwrap()
            .send_to(Instant::now(), data, peer)
            .unwrap();
    }

    /// Waits for data from `peer`; returns it and whether it came as
    /// ChannelData.
    pub async fn recv_from_peer(&mut self, peer: SocketAddr) -> (Vec<u8>, bool) {
        match self
            .until(
                "data from the peer",
                |e| matches!(e, Event::DataIndicationOrChannelData(_, from, _) if *from == peer),
            )
            .await
        {
            Event::DataIndicationOrChannelData(ch, _, data) => (data.to_vec(), ch.is_some()),
            _ => unreachable!(),
        }
    }
}

/// A peer: a UDP socket on loopback.
pub async fn peer() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Receives one datagram within 5 s.
pub async fn peer_recv(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
        .await
        .expect("the peer got nothing")
        .unwrap();
    (buf[..n].to_vec(), from)
}
