#!/usr/bin/env bash
# Runs the cargo-fuzz targets (nightly) for a chosen time each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 600 s, every target
#
# Seeds are read from fuzz/corpus/<target> (committed; replayed on stable by
# `cargo test -p prism-server --test fuzz_corpus`). What the fuzzer finds
# goes to fuzz/target/corpus/<target>; a crash lands in fuzz/artifacts/<target>/
# and the script exits non-zero. To keep a crash as a regression test, fix it
# and copy the input into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(signaling sdp_offer packet_path)

command -v rustup >/dev/null || { echo "fuzz.sh: rustup is needed" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/target/corpus/$t"
    echo "== $t for ${secs}s"
    # -rss_limit_mb: the SDP target builds a peer connection per input.
    if ! cargo +nightly fuzz run "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
        2>&1 | tee "fuzz/target/$t.log" | grep -E '^(#[0-9]+ +(DONE|INITED)|stat::|==|SUMMARY|artifact)'; then
        status=1
    fi
    if grep -q 'SUMMARY\|deadly signal\|panicked' "fuzz/target/$t.log"; then
        echo "fuzz.sh: $t crashed; see fuzz/target/$t.log and fuzz/artifacts/$t/" >&2
        status=1
    fi
done
exit $status
