#!/usr/bin/env bash
# Firefox's connection setup against Prism (browser_setup.mjs --browser
# firefox). Firefox pairs only its interfaces' addresses, never loopback, so
# Prism runs in a network namespace this script creates (veth 10.78.0.1 ↔
# 10.78.0.2, with keys and tokens as in production) and the pages load
# through a loopback proxy (socat), a secure context for the camera.
#
#   sudo PRISM_BIN=target/release/prism benches/setup/firefox.sh [N] [whep|whip]
#
# Needs root (ip netns), socat, /usr/bin/firefox-esr and web/tests'
# node_modules. A benchmark: it prints numbers and asserts nothing.
set -euo pipefail
N=${1:-10}
MODE=${2:-whep}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${PRISM_BIN:-$ROOT/target/release/prism}
NS=prismbench$$
HOSTIF=pbh$$
NSIF=pbn$$
PORT=${PRISM_BENCH_PORT:-18490}
LOG=$(mktemp /tmp/prism-firefox-bench.XXXXXX.log)
SERVER=""
PROXY=""
cleanup() {
  [ -n "$PROXY" ] && kill "$PROXY" 2>/dev/null || true
  [ -n "$SERVER" ] && kill -INT "$SERVER" 2>/dev/null || true
  for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$HOSTIF" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
ip link add "$HOSTIF" type veth peer name "$NSIF"
ip link set "$NSIF" netns "$NS"
ip addr add 10.78.0.1/24 dev "$HOSTIF"
ip link set "$HOSTIF" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add 10.78.0.2/24 dev "$NSIF"
ip -n "$NS" link set "$NSIF" up
ip -n "$NS" route add default via 10.78.0.1
KEYS=$(head -c 48 /dev/urandom | base64 -w0)
PRISM_KEYS=$KEYS RUST_LOG="info,prism_server=debug" ip netns exec "$NS" "$BIN" \
  --http-addr 10.78.0.2:8080 --media-ip 10.78.0.2 --udp-port 0 >"$LOG" 2>&1 &
SERVER=$!
socat "TCP-LISTEN:$PORT,bind=127.0.0.1,fork,reuseaddr" TCP:10.78.0.2:8080 &
PROXY=$!
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
token() { PRISM_KEYS=$KEYS "$BIN" token --room bench-firefox --identity "$1" --ttl 1h; }
echo "# Firefox $MODE (Prism on 10.78.0.2 in a namespace)"
PRISM_WEB_TESTS="$ROOT/web/tests" node "$HERE/browser_setup.mjs" --browser firefox \
  --url "http://127.0.0.1:$PORT" --room bench-firefox --mode "$MODE" -n "$N" \
  --token "$(token viewer)" --pub-token "$(token publisher)" | tail -1
echo "# server's view"
python3 "$HERE/server_log.py" "$LOG"
