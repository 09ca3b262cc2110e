#!/usr/bin/env bash
# Two prism binaries under the same load, interleaved, in one run: what a
# change to the packet path bought.
#
#   benches/ab.sh OLD_BINARY NEW_BINARY [RUNS] [-- prism-load shape args]
#
#   e.g. benches/ab.sh /tmp/prism-old target/release/prism 3 -- broadcast --viewers 50
#
# The server runs on SERVER_CPU (default 0), prism-load on LOAD_CPU (default
# 1), both on loopback. Prints each run's key figures, then the medians side
# by side with ratios; JSON reports go to target/ab/.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="$(realpath "$1")"
NEW="$(realpath "$2")"
RUNS="${3:-3}"
shift 3 || shift $#
[ "${1:-}" = "--" ] && shift
SHAPE=("$@")
[ ${#SHAPE[@]} -eq 0 ] && SHAPE=(broadcast --viewers 50)
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
HOLD="${HOLD:-20s}"

if [ -d "$HOME/.cache" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR="$HOME/.cache/prism-target"
fi
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
OUT="$TARGET/ab"
mkdir -p "$OUT"
rm -f "$OUT"/*.json
cargo build --release --locked -q -p prism-load
LOAD="$TARGET/release/prism-load"

PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null || true' EXIT
for run in $(seq "$RUNS"); do
    for which in old new; do
        bin="$OLD"
        [ "$which" = new ] && bin="$NEW"
        taskset -c "$SERVER_CPU" "$bin" --http-addr 127.0.0.1:18080 --udp-port 51000 --shards 1 \
            --max-http-rate 1000000 --max-signal-rate 10000 --max-ws-per-address 1000000 >"$OUT/$which.log" 2>&1 &
        PID=$!
        for _ in $(seq 100); do
            curl -fsS http://127.0.0.1:18080/readyz >/dev/null 2>&1 && break
            sleep 0.1
        done
        echo "== run $run/$RUNS: $which"
        taskset -c "$LOAD_CPU" "$LOAD" "${SHAPE[@]}" --url http://127.0.0.1:18080 \
            --server-pid "$PID" --hold "$HOLD" --label "$which" \
            --json "$OUT/$which-$run.json" 2>/dev/null |
            grep -E "egress packets/s|delivered|server CPU per egress|latency p99|RSS per"
        kill "$PID"
        wait "$PID" 2>/dev/null || true
        PID=""
    done
done
"$LOAD" median "$OUT"/old-*.json >"$OUT/old.json"
"$LOAD" median "$OUT"/new-*.json >"$OUT/new.json"
echo
"$LOAD" compare "$OUT/old.json" "$OUT/new.json"
