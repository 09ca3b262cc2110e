//! The browser client (`web/`): embedded into the binary at compile time and
//! served at stable URLs. With `web_dir` set, files are read from that folder
//! on each request instead (for working on the client without rebuilding).
//!
//! | URL | file |
//! |---|---|
//! | `/` | index.html: pick a room and a name |
//! | `/room/{room}` | room.html: the conference room (`?name=` joins at once) |
//! | `/broadcast/{room}` | broadcast.html: go live over WHIP |
//! | `/watch/{room}` | watch.html: watch over WHEP |
//! | `/static/{file}` | prism.js (with encodings.js), room.js, style.css |

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::AppState;

macro_rules! embed {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../web/", $name)))),*]
    };
}

/// Every file the pages use, embedded.
const FILES: &[(&str, &str)] = embed!(
    "index.html",
    "room.html",
    "room.js",
    "broadcast.html",
    "watch.html",
    "prism.js",
    "encodings.js",
    "style.css",
);

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve(state: &AppState, name: &str) -> Response {
    let Some(&(_, embedded)) = FILES.iter().find(|(n, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let body = match &state.cfg.web_dir {
        // Only names from the list above reach here, so no path traversal.
        Some(dir) => match std::fs::read_to_string(dir.join(name)) {
            Ok(s) => s,
            Err(e) => {
                return (StatusCode::NOT_FOUND, format!("{name}: {e}\n")).into_response();
            }
        },
        None => embedded.to_owned(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type(name)),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index(State(s): State<AppState>) -> Response {
    serve(&s, "index.html")
}

pub async fn room(State(s): State<AppState>, Path(_room): Path<String>) -> Response {
    serve(&s, "room.html")
}

pub async fn broadcast(State(s): State<AppState>, Path(_room): Path<String>) -> Response {
    serve(&s, "broadcast.html")
}

pub async fn watch(State(s): State<AppState>, Path(_room): Path<String>) -> Response {
    serve(&s, "watch.html")
}

pub async fn asset(State(s): State<AppState>, Path(file): Path<String>) -> Response {
    serve(&s, &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_asset_is_embedded() {
        for (name, body) in FILES {
            assert!(!body.is_empty(), "{name}");
        }
        // The pages load only embedded assets.
        for (name, body) in FILES
            .iter()
            .filter(|(n, _)| n.ends_with(".html") || n.ends_with(".js"))
        {
            for part in body.split("/static/").skip(1) {
                let file: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                    .collect();
                assert!(
                    FILES.iter().any(|(n, _)| *n == file),
                    "{name} loads /static/{file}, which is not embedded"
                );
            }
        }
    }
}
