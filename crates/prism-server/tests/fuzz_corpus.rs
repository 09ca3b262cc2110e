//! Replays every committed fuzz input (`fuzz/corpus/<target>/*`, seeds and
//! whatever `scripts/fuzz.sh` found worth keeping) through the same entry
//! points the cargo-fuzz targets call. Runs on stable in the normal test
//! command; a panic here is a crash the fuzzer once found, come back.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn replay(target: &str, min_seeds: usize, f: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(
        inputs.len() >= min_seeds,
        "{target}: only {} inputs",
        inputs.len()
    );
    for (path, data) in inputs {
        if let Err(e) = std::panic::catch_unwind(|| f(&data)) {
            panic!("{target}: {} crashes: {e:?}", path.display());
        }
    }
}

#[test]
fn signaling_corpus() {
    replay("signaling", 10, prism_server::fuzz::signaling);
}

#[test]
fn sdp_offer_corpus() {
    replay("sdp_offer", 3, prism_server::fuzz::sdp_offer);
}

#[test]
fn packet_path_corpus() {
    replay("packet_path", 5, prism_server::fuzz::packet_path);
    // The seeds reach forwarding and retransmission, not just the parsers.
    let seed = |name: &str| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/packet_path")
            .join(name);
        prism_server::fuzz::run_program(&std::fs::read(path).unwrap())
    };
    let r = seed("video-nack.bin");
    assert!(r.sent > 60 && r.resent > 0, "video-nack: {r:?}");
    assert!(r.rtx > 0, "video-nack reaches RTX encapsulation: {r:?}");
    let r = seed("control-churn.bin");
    assert!(r.sent > 0, "control-churn forwards nothing: {r:?}");
}

/// Writes the SDP seeds from real engine offers (run once with
/// `cargo test -p prism-server --test fuzz_corpus -- --ignored`).
#[tokio::test]
#[ignore]
async fn write_sdp_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sdp_offer");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, viewer, tracks) in [
        ("publish-av", false, 2),
        ("publish-4", false, 4),
        ("publish-audio", false, 1),
        ("viewer", true, 0),
    ] {
        let sdp = prism_client::sample_offer(viewer, tracks).await.unwrap();
        std::fs::write(dir.join(format!("{name}.sdp")), sdp).unwrap();
    }
}
