//! The HTTP surface: WebSocket signaling, health, and the landing page.

use std::sync::Arc;

use axum::extract::{State, WebSocketUpgrade};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
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
}

pub fn router(state: AppState) -> Router {
    use crate::whip::{self, WhipState};
    let whip_state = WhipState {
        directory: state.directory.clone(),
        cfg: state.cfg.clone(),
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
        .with_state(whip_state);
    Router::new()
        .route("/", get(index))
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
        .merge(whip_routes)
}

async fn ws(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(WS_MAX_FRAME)
        .max_frame_size(WS_MAX_FRAME)
        .on_upgrade(move |socket| crate::session::run(socket, state.directory))
}

async fn index(State(state): State<AppState>) -> impl IntoResponse {
    let shards: Vec<String> = state
        .directory
        .shards()
        .iter()
        .map(|s| s.media_addr.to_string())
        .collect();
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Prism</title>\
         <h1>Prism SFU</h1><p>Signaling: <code>ws://HOST/ws</code> (see docs/signaling.md). \
         Media UDP: <code>{}</code>. Rooms open: {}.</p>",
        shards.join(", "),
        state.directory.room_count()
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(body))
}
