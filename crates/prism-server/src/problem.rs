//! Every error the HTTP server answers is `application/problem+json`
//! (RFC 9457), as `docs/broadcasting.md` and `docs/operations.md` promise:
//! not only the WHIP/WHEP handlers' own refusals but axum's extractor
//! rejections (text/plain), its body limit (413), unknown paths (404, empty),
//! wrong methods (405, empty), `/readyz`'s 503 and the web assets' 404.
//!
//! [`errors_as_problems`] wraps the whole router: a 4xx/5xx response that is
//! not problem+json already is rewritten with the same status, its reason
//! phrase as `title`, and its text body (if any) as `detail`. Before routing
//! it refuses over-long URIs (414) and header sections (431) itself, so the
//! HTTP library's own bare 414/431 are reached only far past these limits.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

/// Longest request URI served; longer is `414` (problem+json).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header section served (names and values); larger is `431`.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields in a request; more is `431`.
pub const MAX_HEADERS: usize = 64;
/// Longest error text carried over into a problem's `detail`.
const MAX_DETAIL_BYTES: usize = 1024;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem+json response (no CORS headers: the WHIP/WHEP handlers add
/// their own).
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    r
}

/// The middleware: refuses over-long URIs and header sections, then
/// rewrites any error that is not problem+json yet.
pub async fn errors_as_problems(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri_len = req.uri().to_string().len();
    if uri_len > MAX_URI_BYTES {
        return problem(
            StatusCode::URI_TOO_LONG,
            &format!("the request URI is {uri_len} bytes; at most {MAX_URI_BYTES}"),
        );
    }
    let headers = req.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return problem(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!(
                "{} header fields, {header_bytes} bytes; at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        );
    }
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Error bodies here are short texts (axum's rejections, ours); a longer
    // one is cut, never read past the bound.
    let text = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let mut detail: String = if text.is_empty() {
        default_detail(status).to_owned()
    } else {
        text
    };
    if detail.len() > MAX_DETAIL_BYTES {
        let mut cut = MAX_DETAIL_BYTES;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
    }
    let mut r = problem(status, &detail);
    // Keep what the original said besides its body (Retry-After, Allow, CORS).
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            r.headers_mut().append(k.clone(), v.clone());
        }
    }
    r
}

fn default_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no such resource",
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this resource",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported Content-Type",
        _ => "the request failed",
    }
}
