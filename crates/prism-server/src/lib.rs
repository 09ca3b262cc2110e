//! The `prism` server: configuration, the media engine (UDP shards driving
//! `rtc` peer connections), WebSocket signaling, and the HTTP surface.

pub mod config;
pub mod http;
pub mod media;
pub mod session;
pub mod whip;

use std::net::SocketAddr;
use std::sync::Arc;

use config::Config;

/// A started server: where it listens.
pub struct Running {
    pub http_addr: SocketAddr,
    pub media_addrs: Vec<SocketAddr>,
    pub serve: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds every socket and starts serving. Returns once all are bound.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let cfg = Arc::new(cfg);
    let directory = media::Directory::new();
    let shards = media::start_shards(cfg.clone(), directory.clone())?;
    let media_addrs = shards.iter().map(|s| s.media_addr).collect();
    directory.set_shards(shards);
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind HTTP {}: {e}", cfg.http_addr))?;
    let http_addr = listener.local_addr()?;
    let app = http::router(http::AppState {
        directory,
        cfg: cfg.clone(),
    });
    let serve = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Running {
        http_addr,
        media_addrs,
        serve,
    })
}
