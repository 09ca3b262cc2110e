//! Errors as documented everywhere: every 4xx/5xx the HTTP server answers is
//! `application/problem+json` with the right status, whether a handler,
//! axum's extractors and body limit, the router (404, 405) or the server's
//! own URI and header limits (414, 431) produced it. A table of requests
//! against the real binary.

mod common;

use common::{problem, TestServer};
use reqwest::{Client, Method};

struct Row {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    status: u16,
}

fn row(name: &'static str, method: Method, path: &str, status: u16) -> Row {
    Row {
        name,
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body: None,
        status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_problem_json() {
    let mut srv = TestServer::start(&[]);
    let sdp = |r: Row, body: Vec<u8>| Row {
        headers: vec![("Content-Type".into(), "application/sdp".into())],
        body: Some(body),
        ..r
    };
    let mut rows = vec![
        row("unknown path", Method::GET, "/nope", 404),
        row("unknown nested path", Method::POST, "/whip/a/b/c", 404),
        row("unknown static asset", Method::GET, "/static/nope.js", 404),
        row("wrong method on /", Method::DELETE, "/", 405),
        row("wrong method on /metrics", Method::POST, "/metrics", 405),
        row("GET on a WHIP endpoint", Method::GET, "/whip/r", 405),
        row("WebSocket without upgrade", Method::GET, "/ws", 400),
        row(
            "bad percent-encoding in a path",
            Method::GET,
            "/room/%FF%FE",
            400,
        ),
        row(
            "unknown WHIP session",
            Method::DELETE,
            "/whip/r/nosuch",
            404,
        ),
        sdp(
            row("WHIP body over 64 KiB", Method::POST, "/whip/r", 413),
            vec![b'v'; 100_000],
        ),
        row("WHIP without a body type", Method::POST, "/whip/r", 415),
        sdp(
            row("bad query encoding", Method::POST, "/whip/r?name=%FF", 400),
            b"v=0\r\n".to_vec(),
        ),
        row(
            "URI over 8 KiB",
            Method::GET,
            &format!("/room/{}", "a".repeat(9000)),
            414,
        ),
    ];
    let mut many = row("70 header fields", Method::GET, "/", 431);
    many.headers = (0..70).map(|i| (format!("x-h{i}"), "v".into())).collect();
    rows.push(many);
    let mut big = row("a 40 KiB header", Method::GET, "/", 431);
    big.headers = vec![("x-big".into(), "b".repeat(40 * 1024))];
    rows.push(big);

    let client = Client::new();
    for r in rows {
        let mut req = client.request(r.method.clone(), format!("http://{}{}", srv.http, r.path));
        for (k, v) in &r.headers {
            req = req.header(k, v);
        }
        if let Some(b) = r.body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", r.name));
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            (status, ctype.as_deref()),
            (r.status, Some("application/problem+json")),
            "{}",
            r.name
        );
        let detail = problem(resp, r.status).await;
        assert!(!detail.is_empty(), "{}: a detail", r.name);
    }
    // Over axum's 2 MiB body limit. Sent by hand, reading while writing:
    // the server answers once it has read 2 MiB and closes, and a client
    // that reads only after writing all 3 MiB may lose the answer to the
    // connection reset.
    for path in ["/whip/r", "/whep/r"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(&srv.http).await.unwrap();
        let (mut rd, mut wr) = tcp.into_split();
        let total = 3 * 1024 * 1024;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: {total}\r\n\r\n"
        );
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(head.as_bytes()).await;
            let chunk = vec![b'v'; 64 * 1024];
            for _ in 0..total / chunk.len() {
                if wr.write_all(&chunk).await.is_err() {
                    break; // the server stopped reading: expected
                }
            }
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        for _ in 0..1000 {
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), rd.read(&mut buf));
            match read.await.expect("an answer") {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        writer.abort();
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 413"), "{path}: {text}");
        assert!(
            text.contains("content-type: application/problem+json"),
            "{path}: {text}"
        );
    }
    // Successes are untouched.
    let ok = client
        .get(format!("http://{}/healthz", srv.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok\n");
    srv.assert_alive();
}
