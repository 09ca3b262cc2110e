//! WHIP (RFC 9725) ingest and WHEP playback over HTTP.
//!
//! ```text
//! POST    /whip/{room}              application/sdp offer → 201 answer, Location, ETag
//! POST    /whep/{room}[?participant=PA_n]     recvonly offer → 201 answer
//! PATCH   /{whip|whep}/{room}/{id}  application/trickle-ice-sdpfrag → 204, or 200 (ICE restart)
//! DELETE  /{whip|whep}/{room}/{id}  → 200; then 404
//! POST    /whep/{room}/{id}/sse     JSON list of events → 201, Location of the stream
//! GET     /whep/{room}/{id}/sse/events  text/event-stream: active, inactive, viewercount, ended
//! OPTIONS any of them               → 204, CORS, Accept-Post
//! HEAD    /whep/{room}              → 200, Content-Type: application/sdp
//! ```
//!
//! Each handler validates the request, then hands it to the room's shard and
//! waits for its answer. Errors are `application/problem+json` (RFC 9457).
//! Session ids come from a cryptographically secure generator. Bearer tokens
//! are accepted on every request but the preflight; in dev mode any token
//! (or none) is accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::oneshot;

use crate::auth::AuthError;
use crate::config::Config;
use crate::media::viewer::{self, EventSet, Phase, Status};
use crate::media::{
    Directory, HttpAnswer, HttpFailure, HttpKind, HttpSessionEntry, PatchOutcome, ShardCommand,
    ViewWant,
};

/// Largest SDP or sdpfrag body accepted.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// The WHEP draft's server-sent events extension (its `Link` relation).
pub const SSE_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
/// Largest event-list body a viewer may POST.
const MAX_EVENT_LIST_BYTES: usize = 4096;
/// How long a request may wait for its shard.
const SHARD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct WhipState {
    pub directory: Arc<Directory>,
    pub cfg: Arc<Config>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub keys: Arc<crate::auth::Keys>,
    /// WHIP/WHEP requests per client IP address.
    pub limiter: Arc<governor::DefaultKeyedRateLimiter<IpAddr>>,
}

/// `per_minute` requests per minute per address, all of them at once if the
/// client likes. Idle addresses are forgotten every minute.
pub fn address_limiter(per_minute: u32) -> Arc<governor::DefaultKeyedRateLimiter<IpAddr>> {
    let n = std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN);
    let limiter = Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(n)));
    let weak = Arc::downgrade(&limiter);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(l) = weak.upgrade() else { break };
            l.retain_recent();
            l.shrink_to_fit();
        }
    });
    limiter
}

/// Refuses a client address over `max_http_rate` with 429 and `Retry-After`.
/// CORS preflights are not counted.
pub async fn rate_limit(
    State(s): State<WhipState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() != axum::http::Method::OPTIONS {
        let addr = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = addr {
            if let Err(not_until) = s.limiter.check_key(&ip) {
                s.metrics.limit_hits.with_label_values(&["http_rate"]).inc();
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                let mut r = problem(&HttpFailure::new(
                    429,
                    "Too many requests",
                    format!(
                        "more than {} WHIP/WHEP requests per minute from {ip}; retry later",
                        s.cfg.max_http_rate
                    ),
                ));
                if let Ok(v) = HeaderValue::from_str(&(wait.as_secs() + 1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
        }
    }
    next.run(req).await
}

/// Counts every WHIP/WHEP request by endpoint, method and status code.
pub async fn count_requests(
    State(s): State<WhipState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = if req.uri().path().starts_with("/whep") {
        "whep"
    } else {
        "whip"
    };
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    s.metrics
        .http
        .with_label_values(&[endpoint, &method, resp.status().as_str()])
        .inc();
    resp
}

/// New sessions are refused while the server drains.
fn refuse_if_draining(d: &Directory) -> Result<(), HttpFailure> {
    if d.is_draining() {
        return Err(HttpFailure::new(
            503,
            "Draining",
            "the server is shutting down; connect to another instance",
        ));
    }
    Ok(())
}

fn problem(f: &HttpFailure) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({
        "type": "about:blank",
        "title": f.title,
        "status": f.status,
        "detail": f.detail,
    });
    let mut r = respond(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/problem+json"),
        Body::from(body.to_string()),
    );
    if f.status == 503 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn fail(status: u16, title: &'static str, detail: impl Into<String>) -> Response {
    problem(&HttpFailure::new(status, title, detail))
}

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Accept-Patch"),
    );
}

/// `Link: <url>; rel="ice-server"; ...` headers for the configured servers.
fn ice_server_links(cfg: &Config, h: &mut HeaderMap) {
    for s in &cfg.ice_servers {
        for url in &s.urls {
            let mut v = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                v.push_str(&format!(
                    "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                ));
            }
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.append(header::LINK, v);
            }
        }
    }
}

/// The media type of a request, without parameters, lowercased.
fn media_type(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_ascii_lowercase())
}

/// What a request needs its token to grant.
#[derive(Clone, Copy)]
enum Need {
    Publish,
    Subscribe,
    /// PATCH/DELETE of an existing session: any valid token for the room.
    Room,
}

/// Checks `Authorization: Bearer <token>`: with keys configured, a valid
/// token for `room` granting `need` (401 when missing or invalid, 403 when
/// for another room or without the grant); in dev mode any token or none.
/// A malformed header is refused either way.
fn authorize(
    s: &WhipState,
    h: &HeaderMap,
    room: &str,
    need: Need,
) -> Result<Option<crate::auth::Claims>, HttpFailure> {
    let token = match h.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) if !t.trim().is_empty() => Some(t.trim()),
            _ => {
                return Err(HttpFailure::new(
                    401,
                    "Unauthorized",
                    "the Authorization header must be `Bearer <token>`",
                ))
            }
        },
    };
    if s.keys.dev_mode() {
        return Ok(None);
    }
    let checked = s.keys.verify(token, room).and_then(|c| match need {
        Need::Publish if !c.grants.publish => Err(AuthError::MissingGrant("publish")),
        Need::Subscribe if !c.grants.subscribe => Err(AuthError::MissingGrant("subscribe")),
        _ => Ok(c),
    });
    checked.map(Some).map_err(|e| {
        s.metrics
            .auth_failures
            .with_label_values(&[e.reason()])
            .inc();
        if e.is_forbidden() {
            HttpFailure::new(403, "Forbidden", e.to_string())
        } else {
            HttpFailure::new(401, "Unauthorized", e.to_string())
        }
    })
}

fn valid_room(room: &str) -> Result<(), HttpFailure> {
    let ok = !room.is_empty()
        && room.len() <= prism_signal::MAX_ROOM_NAME_BYTES
        && room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(HttpFailure::new(
            400,
            "Invalid room",
            "room names are 1–128 ASCII letters, digits and - _ . ~",
        ))
    }
}

fn sdp_body(h: &HeaderMap, body: &Bytes, want: &str) -> Result<String, HttpFailure> {
    if media_type(h).as_deref() != Some(want) {
        return Err(HttpFailure::new(
            415,
            "Unsupported media type",
            format!("the body must be {want}"),
        ));
    }
    if body.len() > MAX_SDP_BYTES {
        return Err(HttpFailure::new(
            413,
            "Body too large",
            format!("at most {MAX_SDP_BYTES} bytes"),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| HttpFailure::new(400, "Invalid SDP", "the body is not UTF-8"))?;
    Ok(text.to_owned())
}

/// The offer checks the WebSocket shares (`prism_signal::check_offer`), before
/// the shard or the engine sees the offer.
fn check_offer(s: &WhipState, offer: &str) -> Result<(), HttpFailure> {
    prism_signal::check_offer(offer, s.cfg.max_tracks_per_participant).map_err(|e| {
        if let Some(limit) = e.limit() {
            s.metrics.limit_hits.with_label_values(&[limit]).inc();
        }
        HttpFailure::new(e.http_status(), e.title(), e.to_string())
    })
}

async fn ask<T>(
    directory: &Directory,
    room: &str,
    make: impl FnOnce(oneshot::Sender<T>) -> ShardCommand,
) -> Result<T, HttpFailure> {
    let shard = directory
        .shard_for(room)
        .ok_or_else(|| HttpFailure::new(503, "Unavailable", "no media shard is running"))?;
    let (tx, rx) = oneshot::channel();
    if !shard.try_send(make(tx)) {
        return Err(HttpFailure::new(
            503,
            "Over capacity",
            "the media shard is busy; retry shortly",
        ));
    }
    match tokio::time::timeout(SHARD_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(HttpFailure::new(
            503,
            "Over capacity",
            "the media shard did not answer in time",
        )),
    }
}

/// A POST's outcome: on success the session URL starts working and the
/// answer goes back as `201 Created` with `Location` and `ETag`.
fn created(
    s: &WhipState,
    kind: HttpKind,
    room: String,
    id: String,
    res: Result<HttpAnswer, HttpFailure>,
) -> Response {
    let a = match res {
        Ok(a) => a,
        Err(f) => return problem(&f),
    };
    let prefix = match kind {
        HttpKind::Whip => "whip",
        HttpKind::Whep => "whep",
    };
    tracing::info!(room, participant = %a.participant, "{prefix} session created");
    let location = format!("/{prefix}/{room}/{id}");
    // WHEP: the server-sent events extension, on the session's URL.
    let events_link = (kind == HttpKind::Whep).then(|| {
        format!(
            "<{location}/sse>; rel=\"{SSE_REL}\"; events=\"{}\"",
            viewer::SUPPORTED_EVENTS
        )
    });
    s.directory.http_sessions.insert(
        id,
        HttpSessionEntry {
            kind,
            room,
            participant: a.participant,
            status: a.status,
            events: None,
        },
    );
    let mut r = respond(
        Response::builder()
            .status(StatusCode::CREATED)
            .header(header::CONTENT_TYPE, "application/sdp")
            .header(header::LOCATION, location)
            .header(header::ETAG, a.etag)
            .header("Accept-Patch", "application/trickle-ice-sdpfrag"),
        Body::from(a.sdp),
    );
    ice_server_links(&s.cfg, r.headers_mut());
    if let Some(v) = events_link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().append(header::LINK, v);
    }
    r
}

/// Builds a response (header values are built from ASCII) with CORS headers.
fn respond(b: axum::http::response::Builder, body: Body) -> Response {
    let mut r = b.body(body).expect("header values built from ASCII");
    cors(r.headers_mut());
    r
}

pub async fn whip_post(
    State(s): State<WhipState>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prep = (|| {
        valid_room(&room)?;
        let claims = authorize(&s, &headers, &room, Need::Publish)?;
        refuse_if_draining(&s.directory)?;
        let offer = sdp_body(&headers, &body, "application/sdp")?;
        check_offer(&s, &offer)?;
        Ok::<_, HttpFailure>((claims, offer))
    })();
    let (claims, offer) = match prep {
        Ok(o) => o,
        Err(f) => return problem(&f),
    };
    let id = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let name = claims
        .and_then(|c| c.name)
        .or_else(|| q.get("name").cloned())
        .unwrap_or_else(|| "WHIP".to_owned());
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    let res = ask(&s.directory, &room, |reply| ShardCommand::HttpPublish {
        room: room.clone(),
        name,
        session_id: id.clone(),
        offer,
        reply,
    })
    .await;
    created(&s, HttpKind::Whip, room, id, res.and_then(|r| r))
}

pub async fn whep_post(
    State(s): State<WhipState>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prep = (|| {
        valid_room(&room)?;
        authorize(&s, &headers, &room, Need::Subscribe)?;
        refuse_if_draining(&s.directory)?;
        let offer = sdp_body(&headers, &body, "application/sdp")?;
        check_offer(&s, &offer)?;
        Ok::<_, HttpFailure>(offer)
    })();
    let (offer, want) = match prep.and_then(|o| Ok((o, view_want(&q)?))) {
        Ok(v) => v,
        Err(f) => return problem(&f),
    };
    let id = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let res = ask(&s.directory, &room, |reply| ShardCommand::HttpView {
        room: room.clone(),
        source: q.get("participant").cloned(),
        want,
        session_id: id.clone(),
        offer,
        reply,
    })
    .await;
    created(&s, HttpKind::Whep, room, id, res.and_then(|r| r))
}

/// A WHEP viewer's simulcast wish from its query (`docs/simulcast.md`).
fn view_want(q: &HashMap<String, String>) -> Result<ViewWant, HttpFailure> {
    let bad = |what: &str| {
        HttpFailure::new(
            400,
            "Invalid query",
            format!("{what}: quality is low, medium or high; max_width and max_height are 0–16384"),
        )
    };
    let quality = match q.get("quality").map(String::as_str) {
        None => None,
        Some("low") => Some(prism_signal::Quality::Low),
        Some("medium") => Some(prism_signal::Quality::Medium),
        Some("high") => Some(prism_signal::Quality::High),
        Some(other) => return Err(bad(&format!("quality={other}"))),
    };
    let size = |k: &str| -> Result<u32, HttpFailure> {
        match q.get(k) {
            None => Ok(0),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= 16_384)
                .ok_or_else(|| bad(&format!("{k}={v}"))),
        }
    };
    Ok(ViewWant {
        quality,
        max_width: size("max_width")?,
        max_height: size("max_height")?,
    })
}

/// The session a URL names, if it is of this kind and room.
fn session(
    s: &WhipState,
    kind: HttpKind,
    room: &str,
    id: &str,
) -> Result<HttpSessionEntry, HttpFailure> {
    match s.directory.http_sessions.get(id) {
        Some(e) if e.kind == kind && e.room == room => Ok(e.clone()),
        _ => Err(HttpFailure::new(404, "Not found", "no such session")),
    }
}

async fn patch(
    s: WhipState,
    kind: HttpKind,
    room: String,
    id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prep = (|| {
        authorize(&s, &headers, &room, Need::Room)?;
        let e = session(&s, kind, &room, &id)?;
        let frag = sdp_body(&headers, &body, "application/trickle-ice-sdpfrag")?;
        Ok::<_, HttpFailure>((e, frag))
    })();
    let (entry, fragment) = match prep {
        Ok(v) => v,
        Err(f) => return problem(&f),
    };
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let res = ask(&s.directory, &room, |reply| ShardCommand::HttpPatch {
        room: entry.room.clone(),
        participant: entry.participant,
        fragment,
        if_match,
        reply,
    })
    .await;
    match res {
        Err(f) => problem(&f),
        Ok(Err(f)) => problem(&f),
        Ok(Ok(PatchOutcome::Trickled)) => respond(
            Response::builder().status(StatusCode::NO_CONTENT),
            Body::empty(),
        ),
        Ok(Ok(PatchOutcome::Restarted { fragment, etag })) => respond(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")
                .header(header::ETAG, etag),
            Body::from(fragment),
        ),
    }
}

async fn delete(
    s: WhipState,
    kind: HttpKind,
    room: String,
    id: String,
    headers: HeaderMap,
) -> Response {
    if let Err(f) = authorize(&s, &headers, &room, Need::Room) {
        return problem(&f);
    }
    let entry = match session(&s, kind, &room, &id) {
        Ok(e) => e,
        Err(f) => return problem(&f),
    };
    s.directory.http_sessions.remove(&id);
    let res = ask(&s.directory, &room, |reply| ShardCommand::HttpDelete {
        room: entry.room.clone(),
        participant: entry.participant,
        reply,
    })
    .await;
    match res {
        Err(f) => problem(&f),
        Ok(false) => fail(404, "Not found", "no such session"),
        Ok(true) => respond(Response::builder().status(StatusCode::OK), Body::empty()),
    }
}

pub async fn whip_patch(
    State(s): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(s, HttpKind::Whip, room, id, headers, body).await
}

pub async fn whep_patch(
    State(s): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(s, HttpKind::Whep, room, id, headers, body).await
}

pub async fn whip_delete(
    State(s): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete(s, HttpKind::Whip, room, id, headers).await
}

pub async fn whep_delete(
    State(s): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete(s, HttpKind::Whep, room, id, headers).await
}

/// OPTIONS on an endpoint: CORS preflight and `Accept-Post`; the ICE servers.
pub async fn endpoint_options(State(s): State<WhipState>) -> Response {
    let mut r = respond(
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header("Accept-Post", "application/sdp"),
        Body::empty(),
    );
    ice_server_links(&s.cfg, r.headers_mut());
    r
}

/// OPTIONS on a session URL: CORS preflight and `Accept-Patch`.
pub async fn session_options() -> Response {
    respond(
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header("Accept-Patch", "application/trickle-ice-sdpfrag"),
        Body::empty(),
    )
}

/// HEAD on a WHEP endpoint: what POST takes.
pub async fn whep_head() -> Response {
    respond(
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/sdp"),
        Body::empty(),
    )
}

/// POST on a WHEP session's `/sse`: the JSON list of events the viewer wants
/// (names this server does not send are ignored) → `201 Created` with the
/// event stream's URL in `Location`. Posting again replaces the list.
pub async fn whep_sse_post(
    State(s): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prep = (|| {
        authorize(&s, &headers, &room, Need::Room)?;
        session(&s, HttpKind::Whep, &room, &id)?;
        if media_type(&headers).as_deref() != Some("application/json") {
            return Err(HttpFailure::new(
                415,
                "Unsupported media type",
                "the body must be application/json: a list of event names",
            ));
        }
        if body.len() > MAX_EVENT_LIST_BYTES {
            return Err(HttpFailure::new(
                413,
                "Body too large",
                format!("at most {MAX_EVENT_LIST_BYTES} bytes"),
            ));
        }
        let names: Vec<String> = serde_json::from_slice(&body).map_err(|e| {
            HttpFailure::new(
                400,
                "Invalid event list",
                format!(
                    "expected a JSON list of event names such as [\"active\",\"inactive\"]: {e}"
                ),
            )
        })?;
        Ok(EventSet::from_names(names.iter().map(String::as_str)))
    })();
    let set = match prep {
        Ok(v) => v,
        Err(f) => return problem(&f),
    };
    match s.directory.http_sessions.get_mut(&id) {
        Some(mut e) => e.events = Some(set),
        None => return fail(404, "Not found", "no such session"),
    }
    respond(
        Response::builder()
            .status(StatusCode::CREATED)
            .header(header::LOCATION, format!("/whep/{room}/{id}/sse/events")),
        Body::empty(),
    )
}

/// GET of a WHEP session's event stream (`text/event-stream`). The session
/// id in the URL is the credential (an `EventSource` cannot send a token).
/// A new stream first reports the current state, then each change; it ends
/// when the session ends (after `ended`, or at DELETE). Without a POSTed
/// list every event is sent.
pub async fn whep_sse_events(
    State(s): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    let (rx, set) = match session(&s, HttpKind::Whep, &room, &id) {
        Ok(HttpSessionEntry {
            status: Some(rx),
            events,
            ..
        }) => (
            rx,
            events.unwrap_or(EventSet::from_names(viewer::SUPPORTED_EVENTS.split(','))),
        ),
        Ok(_) => return fail(404, "Not found", "this session has no events"),
        Err(f) => return problem(&f),
    };
    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::response::IntoResponse;
    use futures::StreamExt;
    let stream = futures::stream::unfold(Some((rx, None::<Status>)), move |state| async move {
        let (mut rx, before) = state?;
        // The first turn reports the state as it is; later ones wait for
        // a change (Err: the session is gone).
        if before.is_some() && rx.changed().await.is_err() {
            return None;
        }
        let now = *rx.borrow_and_update();
        let batch: Vec<Result<Event, std::convert::Infallible>> = viewer::events(set, before, now)
            .map(|(name, data)| Ok(Event::default().event(name).data(data)))
            .collect();
        let next = (now.phase != Phase::Ended).then_some((rx, Some(now)));
        Some((futures::stream::iter(batch), next))
    })
    .flatten();
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    cors(r.headers_mut());
    r
}
