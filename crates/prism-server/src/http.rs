//! The HTTP surface: WebSocket signaling, health, and the landing page.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;

use crate::media::Directory;

/// Frames above this are refused by the WebSocket layer (connection closed);
/// up to it, the signaling layer answers `message_too_large` itself.
const WS_MAX_FRAME: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub cfg: Arc<crate::config::Config>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub keys: Arc<crate::auth::Keys>,
    /// Open WebSockets per client IP address (`max_ws_per_address`).
    pub ws_per_address: Arc<dashmap::DashMap<std::net::IpAddr, usize>>,
}

/// One open WebSocket of an address, counted in
/// [`AppState::ws_per_address`] until dropped (the session task ends, or
/// the upgrade never completes).
struct AddressSlot {
    map: Arc<dashmap::DashMap<std::net::IpAddr, usize>>,
    ip: std::net::IpAddr,
}

impl AddressSlot {
    /// Takes a slot for `ip`, or `None` when it has `max` open already.
    fn take(
        map: &Arc<dashmap::DashMap<std::net::IpAddr, usize>>,
        ip: std::net::IpAddr,
        max: usize,
    ) -> Option<AddressSlot> {
        let mut n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        // The last socket of an address removes its entry: the map holds
        // only addresses with open sockets.
        self.map.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

pub fn router(state: AppState) -> Router {
    use crate::whip::{self, WhipState};
    let whip_state = WhipState {
        directory: state.directory.clone(),
        cfg: state.cfg.clone(),
        metrics: state.metrics.clone(),
        keys: state.keys.clone(),
        limiter: whip::address_limiter(state.cfg.max_http_rate),
    };
    let whip_routes = Router::new()
        .route(
            "/whip/{room}",
            post(whip::whip_post).options(whip::endpoint_options),
        )
        .route(
            "/whip/{room}/{id}",
            patch(whip::whip_patch)
                .delete(whip::whip_delete)
                .options(whip::session_options),
        )
        .route(
            "/whep/{room}",
            post(whip::whep_post)
                .head(whip::whep_head)
                .options(whip::endpoint_options),
        )
        .route(
            "/whep/{room}/{id}",
            patch(whip::whep_patch)
                .delete(whip::whep_delete)
                .options(whip::session_options),
        )
        .route(
            "/whep/{room}/{id}/sse",
            post(whip::whep_sse_post).options(whip::session_options),
        )
        .route("/whep/{room}/{id}/sse/events", get(whip::whep_sse_events))
        .layer(axum::middleware::from_fn_with_state(
            whip_state.clone(),
            whip::rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            whip_state.clone(),
            whip::count_requests,
        ))
        .with_state(whip_state);
    Router::new()
        .route("/", get(crate::web::index))
        .route("/room/{room}", get(crate::web::room))
        .route("/broadcast/{room}", get(crate::web::broadcast))
        .route("/watch/{room}", get(crate::web::watch))
        .route("/static/{file}", get(crate::web::asset))
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(whip_routes)
        .fallback(|| async { crate::problem::problem(StatusCode::NOT_FOUND, "no such resource") })
        // Unknown paths, wrong methods, extractor rejections and body limits
        // become problem+json like every other error.
        .layer(axum::middleware::from_fn(
            crate::problem::errors_as_problems,
        ))
}

async fn ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let max = state.cfg.max_ws_per_address;
    let Some(slot) = AddressSlot::take(&state.ws_per_address, peer.ip(), max) else {
        state
            .metrics
            .limit_hits
            .with_label_values(&["ws_per_address"])
            .inc();
        return crate::problem::problem(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "{} already has {max} WebSockets open (max_ws_per_address); close one first",
                peer.ip()
            ),
        );
    };
    upgrade
        .max_message_size(WS_MAX_FRAME)
        .max_frame_size(WS_MAX_FRAME)
        .on_upgrade(move |socket| async move {
            crate::session::run(socket, state).await;
            drop(slot);
        })
}

/// Ready for new work: not draining, and every media shard ticking.
async fn readyz(State(state): State<AppState>) -> Response {
    let (code, body) = if state.directory.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !state
        .directory
        .shards_alive(std::time::Duration::from_secs(5))
    {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a media shard is not responding\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    };
    (code, body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    m.http_sessions
        .set(state.directory.http_sessions.len() as i64);
    m.room_directory.set(state.directory.room_count() as i64);
    m.tasks.set(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as i64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
