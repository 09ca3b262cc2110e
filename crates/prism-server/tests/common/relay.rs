//! A UDP relay on loopback that drops a seeded fraction of RTP/RTCP datagrams
//! in each direction (STUN and DTLS always pass, so connections come up).
//! Each client address gets its own upstream socket, so the server sees one
//! distinct address per client socket, as with a NAT.

#![allow(dead_code)] // each test file uses a different part

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub struct LossyRelay {
    pub addr: SocketAddr,
    pub dropped_down: Arc<AtomicU64>,
    pub dropped_up: Arc<AtomicU64>,
    /// STUN error responses (e.g. 487 Role Conflict) the server sent to
    /// the client, all passed on.
    pub stun_errors_down: Arc<AtomicU64>,
    /// While set, every datagram in both directions is dropped (STUN and
    /// DTLS too): a network cut. Counted in `dropped_*`.
    pub cut: Arc<AtomicBool>,
    /// The relay's server-side sockets, one per client socket: what the
    /// server sees as that client's address (for injecting datagrams).
    uplinks: Arc<std::sync::Mutex<Vec<Arc<UdpSocket>>>>,
    task: JoinHandle<()>,
}

fn is_media(b: &[u8]) -> bool {
    matches!(b.first(), Some(128..=191))
}

/// xorshift64*: seeded, so a run drops the same packets each time.
fn chance(state: &mut u64, p: f64) -> bool {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let x = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
    (x % 1_000_000) as f64 / 1_000_000.0 < p
}

impl LossyRelay {
    /// `down_loss`: server → client; `up_loss`: client → server.
    pub async fn start(server: SocketAddr, down_loss: f64, up_loss: f64, seed: u64) -> LossyRelay {
        Self::start_with(server, down_loss, up_loss, 0.0, seed).await
    }

    /// Like [`LossyRelay::start`], and in both directions a `reorder`
    /// fraction of the media datagrams that pass is held back and sent
    /// after the next one (a swap, as on a multipath link).
    pub async fn start_with(
        server: SocketAddr,
        down_loss: f64,
        up_loss: f64,
        reorder: f64,
        seed: u64,
    ) -> LossyRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let dropped_down = Arc::new(AtomicU64::new(0));
        let dropped_up = Arc::new(AtomicU64::new(0));
        let stun_errors_down = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let (dd, du) = (dropped_down.clone(), dropped_up.clone());
        let cut_up = cut.clone();
        let errors = stun_errors_down.clone();
        let uplinks_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = uplinks_seen.clone();
        let task = tokio::spawn(async move {
            let mut uplinks: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            // Aborted with this task (a JoinSet aborts its tasks on drop).
            let mut tasks = tokio::task::JoinSet::new();
            // A held-back uplink datagram and the uplink socket it belongs to.
            let mut held_up: Option<(Arc<UdpSocket>, Vec<u8>)> = None;
            let mut rng = seed | 1;
            let mut buf = vec![0u8; 2048];
            // Bounded: the relay lives as long as the test holds it.
            while let Ok((n, client)) = front.recv_from(&mut buf).await {
                let up = match uplinks.get(&client) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        uplinks.insert(client, s.clone());
                        seen.lock().unwrap().push(s.clone());
                        let (front, s2, dd) = (front.clone(), s.clone(), dd.clone());
                        let errors = errors.clone();
                        let cut_down = cut_up.clone();
                        let mut rng2 = rng.rotate_left(17) | 1;
                        tasks.spawn(async move {
                            let mut b = vec![0u8; 2048];
                            let mut held: Option<Vec<u8>> = None;
                            while let Ok((n, _)) = s2.recv_from(&mut b).await {
                                if b[..n].starts_with(&[0x01, 0x11]) {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                                if cut_down.load(Ordering::Relaxed) {
                                    dd.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                let media = is_media(&b[..n]);
                                if media && chance(&mut rng2, down_loss) {
                                    dd.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                if media && held.is_none() && chance(&mut rng2, reorder) {
                                    held = Some(b[..n].to_vec());
                                    continue;
                                }
                                let _ = front.send_to(&b[..n], client).await;
                                if let Some(h) = held.take() {
                                    let _ = front.send_to(&h, client).await;
                                }
                            }
                        });
                        s
                    }
                };
                if cut_up.load(Ordering::Relaxed) {
                    du.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let media = is_media(&buf[..n]);
                if media && chance(&mut rng, up_loss) {
                    du.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if media && held_up.is_none() && chance(&mut rng, reorder) {
                    held_up = Some((up.clone(), buf[..n].to_vec()));
                    continue;
                }
                let _ = up.send_to(&buf[..n], server).await;
                if let Some((s, h)) = held_up.take() {
                    let _ = s.send_to(&h, server).await;
                }
            }
            tasks.abort_all();
        });
        LossyRelay {
            addr,
            dropped_down,
            dropped_up,
            stun_errors_down,
            cut,
            uplinks: uplinks_seen,
            task,
        }
    }
}

impl LossyRelay {
    /// Sockets the server knows as this relay's clients.
    pub fn uplinks(&self) -> Vec<Arc<UdpSocket>> {
        self.uplinks.lock().unwrap().clone()
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
