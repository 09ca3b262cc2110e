//! Starts the real `prism` binary on loopback (HTTP and media on free ports)
//! and stops it when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// For [`TestServer::start_with_log`]: run with no `RUST_LOG` at all, i.e.
/// the server's own default filter (what an operator gets).
pub const SERVER_DEFAULT_LOG: &str = "<the server's default filter>";

pub struct TestServer {
    child: Child,
    pub http: String,
    pub media: Vec<String>,
    /// Each shard's ICE-TCP address (empty with `--ice-tcp false`).
    pub tcp: Vec<String>,
    pub log_path: std::path::PathBuf,
}

impl TestServer {
    /// Starts prism with test-friendly timeouts plus `extra` flags.
    pub fn start(extra: &[&str]) -> TestServer {
        Self::start_with_log(extra, None)
    }

    /// Like [`TestServer::start`] with a given `RUST_LOG` filter (e.g. to read
    /// the shard's debug counter lines).
    pub fn start_with_log(extra: &[&str], filter: Option<&str>) -> TestServer {
        let dir = std::env::temp_dir().join("prism-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let log_path = dir.join(format!(
            "prism-{}-{}.log",
            std::process::id(),
            rand_suffix()
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism"));
        cmd.args(["--http-addr", "127.0.0.1:0", "--udp-port", "0"]);
        // Test-friendly timeouts, unless the test sets its own.
        for (flag, v) in [("--peer-timeout", "3s"), ("--room-empty-timeout", "2s")] {
            if !extra.contains(&flag) {
                cmd.args([flag, v]);
            }
        }
        if filter == Some(SERVER_DEFAULT_LOG) {
            cmd.env_remove("RUST_LOG");
        } else {
            cmd.env(
                "RUST_LOG",
                // PRISM_TEST_LOG overrides the server's filter when debugging a test.
                filter.map(str::to_owned).unwrap_or_else(|| {
                    std::env::var("PRISM_TEST_LOG").unwrap_or_else(|_| {
                        "info,rtc=warn,ice=warn,dtls=warn,srtp=warn,sctp=warn,interceptor=warn"
                            .into()
                    })
                }),
            );
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start prism");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("PRISM_READY ") {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("prism did not report ready; log: {}", log_path.display()));
        let mut http = String::new();
        let mut media = Vec::new();
        let mut tcp = Vec::new();
        for kv in ready.split_whitespace() {
            if let Some(v) = kv.strip_prefix("http=") {
                http = v.to_owned();
            } else if let Some(v) = kv.strip_prefix("media=") {
                media = v.split(',').map(str::to_owned).collect();
            } else if let Some(v) = kv.strip_prefix("tcp=") {
                tcp = v.split(',').map(str::to_owned).collect();
            }
        }
        TestServer {
            child,
            http,
            media,
            tcp,
            log_path,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// The server is still running (did not crash or panic).
    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "prism exited; log: {}",
            self.log_path.display()
        );
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        assert!(!log.contains("panicked"), "prism panicked:\n{log}");
    }

    /// Sends a signal (`TERM`, `INT`) to the server process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The value of `name=` in the last shard "room counters" debug line
    /// (needs a debug filter for `prism_server`).
    pub fn counter(&self, name: &str) -> Option<u64> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("room counters"))?;
        let plain: String = strip_ansi(line);
        let at = plain.find(&format!("{name}="))? + name.len() + 1;
        plain[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .ok()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET /metrics` of the server.
pub async fn scrape(srv: &TestServer) -> String {
    let get = async {
        reqwest::get(format!("http://{}/metrics", srv.http))
            .await?
            .text()
            .await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(20), get).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => panic!("GET /metrics: {e}\n{}", srv.log()),
        Err(_) => panic!("GET /metrics: no answer in 20 s\n{}", srv.log()),
    }
}

/// Asserts a problem+json error with this status; returns its detail.
pub async fn problem(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["status"], status);
    assert!(v["title"].is_string());
    v["detail"].as_str().unwrap().to_owned()
}

/// The value of a sample line (`name{labels} value`), if present.
pub fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Malformed datagrams of every kind the media port demultiplexes.
pub fn garbage(i: u32) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let len = 1 + (i as usize * 37) % 1200;
    let mut b = rnd(len);
    match i % 6 {
        // RTP-looking: version 2, random PT, SSRC and payload.
        0 => b[0] = 0x80 | (b[0] & 0x3f),
        // RTCP-looking: SR..XR packet types with nonsense lengths.
        1 if len >= 2 => {
            b[0] = 0x80 | (b[0] & 0x1f);
            b[1] = 200 + (i % 8) as u8;
        }
        // STUN binding request with the magic cookie and garbage attributes.
        2 if len >= 20 => {
            b[0] = 0;
            b[1] = 1;
            b[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        }
        // DTLS-looking: handshake/alert/application-data records.
        3 if len >= 3 => {
            b[0] = [20u8, 21, 22, 23][(i / 6 % 4) as usize];
            b[1] = 0xfe;
            b[2] = 0xfd;
        }
        // Empty and tiny datagrams.
        4 => b.truncate(i as usize % 3),
        _ => {}
    }
    b
}
