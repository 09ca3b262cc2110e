//! The HTTP surface: WebSocket signaling, health, and the landing page.

use std::sync::Arc;

use axum::extract::{State, WebSocketUpgrade};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::media::Directory;

/// Frames above this are refused by the WebSocket layer (connection closed);
/// up to it, the signaling layer answers `message_too_large` itself.
const WS_MAX_FRAME: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
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
