//! The `prism` server: configuration, the media engine (UDP shards driving
//! `rtc` peer connections), WebSocket signaling, and the HTTP surface.

pub mod auth;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod listener;
pub mod media;
pub mod metrics;
pub mod problem;
pub mod session;
pub mod web;
pub mod whip;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;

use config::Config;

/// A started server: where it listens, and what drain needs.
pub struct Running {
    pub http_addr: SocketAddr,
    pub media_addrs: Vec<SocketAddr>,
    /// Each shard's ICE-TCP listener (empty when ICE-TCP is off).
    pub tcp_addrs: Vec<SocketAddr>,
    pub serve: tokio::task::JoinHandle<std::io::Result<()>>,
    pub directory: Arc<media::Directory>,
    pub metrics: Arc<metrics::Metrics>,
}

impl Running {
    /// Stops taking new work and tells every connected client; then the
    /// caller waits for [`media::Directory::participant_count`] to reach 0.
    /// The end of a drain: every shard removes the participants still
    /// there, telling each `left {reason: "server_shutdown"}`. Waits up to
    /// `wait` for the shards, then for the sessions to write it out.
    pub async fn shutdown(&self, wait: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        for s in self.directory.shards() {
            let (reply, done) = tokio::sync::oneshot::channel();
            if s.send(media::ShardCommand::Shutdown { reply })
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout_at(deadline, done).await;
            }
        }
        // Each session task writes `left` and a close frame, then ends.
        while self.metrics.ws_sessions.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn start_drain(&self, deadline: std::time::Duration) {
        self.directory
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.metrics.draining.set(1);
        for s in self.directory.shards() {
            let _ = s
                .send(media::ShardCommand::Drain {
                    deadline_secs: deadline.as_secs(),
                })
                .await;
        }
    }
}

/// Binds every socket and starts serving. Returns once all are bound.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let cfg = Arc::new(cfg);
    let directory = media::Directory::new();
    let shards = media::start_shards(cfg.clone(), directory.clone())?;
    let media_addrs = shards.iter().map(|s| s.media_addr).collect();
    let tcp_addrs = shards.iter().filter_map(|s| s.tcp_addr).collect();
    let metrics = metrics::Metrics::new(
        shards.iter().map(|s| s.stats.clone()).collect(),
        directory.limit_hits.clone(),
    );
    directory.set_shards(shards);
    let keys = Arc::new(auth::Keys::new(&cfg.secrets()).map_err(|e| anyhow::anyhow!(e))?);
    if keys.dev_mode() {
        tracing::warn!("dev mode: no access-token keys configured; anyone who reaches this server may join (loopback only)");
    }
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind HTTP {}: {e}", cfg.http_addr))?;
    let http_addr = listener.local_addr()?;
    let app = http::router(http::AppState {
        directory: directory.clone(),
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        keys,
        ws_per_address: Arc::default(),
    });
    // tap_io: axum gives the peer address (ConnectInfo) to any listener
    // wrapped this way; the listener itself sets what each connection needs.
    let listener = listener::FirstByteListener::new(
        listener,
        cfg.http_first_byte_timeout,
        metrics.http_idle_closes.clone(),
    )
    .tap_io(|_| {});
    let serve = tokio::spawn(async move {
        {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        }
    });
    Ok(Running {
        http_addr,
        media_addrs,
        tcp_addrs,
        serve,
        directory,
        metrics,
    })
}
