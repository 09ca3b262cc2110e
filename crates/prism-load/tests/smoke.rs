//! prism-load against the real prism binary on loopback: each shape runs
//! briefly and its report says what happened (everyone received, nearly
//! everything arrived, the server's CPU was read).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn prism_binary() -> PathBuf {
    let load = Path::new(env!("CARGO_BIN_EXE_prism-load"));
    let prism = load.with_file_name("prism");
    if !prism.exists() {
        // `cargo test -p prism-load` alone does not build other packages'
        // binaries: build it the same way.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "prism-server", "--bin", "prism"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building prism failed");
    }
    prism
}

struct Server {
    child: Child,
    http: String,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(prism_binary())
            .args(["--http-addr", "127.0.0.1:0", "--udp-port", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prism");
        let out = child.stdout.take().expect("stdout");
        let http = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("PRISM_READY http=")
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
            })
            .expect("prism printed PRISM_READY");
        Server {
            child,
            http: format!("http://{http}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(shape: &[&str]) -> serde_json::Value {
    let srv = Server::start();
    let dir = std::env::temp_dir().join(format!("prism-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(format!("{}.json", shape.join("-")));
    let out = Command::new(env!("CARGO_BIN_EXE_prism-load"))
        .args(shape)
        .args([
            "--url",
            &srv.http,
            "--server-pid",
            &srv.child.id().to_string(),
        ])
        .args(["--ramp", "1s", "--settle", "2s", "--hold", "3s", "--json"])
        .arg(&json)
        .output()
        .expect("running prism-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "prism-load {shape:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| server CPU per egress packet (µs) |"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    report
}

fn check(r: &serde_json::Value, receivers: u64) {
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("no {k} in {r}"));
    assert_eq!(f("receivers") as u64, receivers, "{r}");
    assert_eq!(f("receiving") as u64, receivers, "{r}");
    assert_eq!(f("join_failures"), 0.0, "{r}");
    // Debug builds of both ends share two cores: allow a little loss.
    assert!(
        f("delivered_ratio") > 0.9 && f("delivered_ratio") < 1.05,
        "{r}"
    );
    assert!(f("egress_packets") > 0.0, "{r}");
    assert!(
        f("latency_us_p50") > 0.0 && f("latency_us_p99") >= f("latency_us_p50"),
        "{r}"
    );
    assert!(f("server_rss_hold_mib") > 1.0, "{r}");
    assert!(f("server_cpu_secs") > 0.0, "{r}");
    assert!(f("load_cpu_us_per_packet") > 0.0, "{r}");
}

#[test]
fn broadcast_over_websocket_and_whep() {
    let r = run(&["broadcast", "--viewers", "3"]);
    check(&r, 3);
    assert_eq!(r["subscriber_legs"], 3);
    let r = run(&["broadcast", "--viewers", "2", "--whep", "--whip"]);
    check(&r, 2);
}

#[test]
fn conference_and_audio() {
    let r = run(&["conference", "--rooms", "2", "--participants", "2"]);
    check(&r, 4);
    let r = run(&["audio", "--speakers", "2", "--listeners", "3"]);
    check(&r, 5);
}
