#!/usr/bin/env bash
# Connection-setup benchmark: p50/p95 of POST -> ICE connected -> DTLS
# connected -> first RTP, per client, against a Prism it starts on loopback.
#
#   benches/setup/run.sh [N]            # N connections per client (default 20)
#
# Needs: PRISM_BIN (default target/release/prism), python3 with aiortc
# (`pip install aiortc`), /usr/bin/chromium and web/tests' node_modules
# (`npm ci` there). A benchmark: it prints numbers and asserts nothing.
# Firefox pairs only non-loopback addresses: run browser_setup.mjs
# --browser firefox against a Prism on a network-namespace address.
set -euo pipefail
N=${1:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${PRISM_BIN:-$ROOT/target/release/prism}
PORT=${PRISM_BENCH_PORT:-18480}
LOG=$(mktemp /tmp/prism-setup-bench.XXXXXX.log)
RUST_LOG="info,prism_server=debug" "$BIN" --http-addr "127.0.0.1:$PORT" --udp-port 0 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
URL="http://127.0.0.1:$PORT"
echo "# aiortc WHIP (publisher)"
python3 "$HERE/aiortc_setup.py" --url "$URL" --room bench-aiortc-whip --mode whip -n "$N" | tail -1
echo "# aiortc WHEP (viewer; an aiortc WHIP publisher in the room)"
python3 "$HERE/aiortc_setup.py" --url "$URL" --room bench-aiortc-whep --mode whep -n "$N" | tail -1
echo "# Chromium WHIP"
PRISM_WEB_TESTS="$ROOT/web/tests" node "$HERE/browser_setup.mjs" --url "$URL" --room bench-chromium-whip --mode whip -n "$N" | tail -1
echo "# Chromium WHEP (a Chromium WHIP publisher in the room)"
PRISM_WEB_TESTS="$ROOT/web/tests" node "$HERE/browser_setup.mjs" --url "$URL" --room bench-chromium-whep --mode whep -n "$N" | tail -1
echo "# Rust client (prism-load: 1 WHIP publisher, N WHEP viewers); server-side ice_ms/setup_ms below"
LOAD=${PRISM_LOAD_BIN:-$(dirname "$BIN")/prism-load}
"$LOAD" broadcast --url "$URL" --viewers "$N" --whep --whip --ramp "$((N / 4 + 1))s" --settle 1s --hold 2s \
  --server-pid "$SERVER" 2>/dev/null | grep -E "join → first media|receiving"
echo "# floors: each client connected to itself (no server)"
python3 "$HERE/aiortc_setup.py" --mode loopback -n "$N" | tail -1
PRISM_WEB_TESTS="$ROOT/web/tests" node "$HERE/browser_setup.mjs" --mode loopback -n "$N" | tail -1
echo "# server's view (created at POST -> ICE connected -> DTLS connected), all legs"
python3 "$HERE/server_log.py" "$LOG"
