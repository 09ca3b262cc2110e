#!/usr/bin/env bash
# Prism and Janus 1.1.2 (VideoRoom) under the same load, in one run.
#
#   benches/side-by-side.sh [RUNS]        default 3 runs of each shape
#
# Environment (all optional):
#   VIEWERS=50 ROOMS=2 PARTICIPANTS=4 HOLD=20s SHAPES="broadcast conference"
#   SERVER_CPU=0 LOAD_CPU=1    the cores the servers and the load run on
#
# Janus never gathers loopback candidates, and load may only go to loopback
# or to namespaces we create: both servers run inside a network namespace
# (`prismbench`, 10.77.0.2) joined to this one (10.77.0.1) by a veth pair,
# and take turns on SERVER_CPU while prism-load runs on LOAD_CPU. Needs root
# (namespaces, and apt-get to install Janus if missing).
#
# Prints each run's table, then the medians side by side with ratios, and
# writes the JSON reports to target/side-by-side/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
VIEWERS="${VIEWERS:-50}"
ROOMS="${ROOMS:-2}"
PARTICIPANTS="${PARTICIPANTS:-4}"
HOLD="${HOLD:-20s}"
SHAPES="${SHAPES:-broadcast conference}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
NS=prismbench
HOST_IP=10.77.0.1
NS_IP=10.77.0.2

if [ -d "$HOME/.cache" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR="$HOME/.cache/prism-target"
fi
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
OUT="$TARGET/side-by-side"
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.err

if [ "$(id -u)" != 0 ]; then
    echo "side-by-side.sh needs root (network namespaces)" >&2
    exit 1
fi
if ! command -v janus >/dev/null; then
    echo "== installing janus (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends janus >/dev/null
fi

if [ -z "${NO_BUILD:-}" ]; then
    echo "== building prism and prism-load (release)"
    cargo build --release --locked -q -p prism-server --bin prism -p prism-load
fi
PRISM="$TARGET/release/prism"
LOAD="$TARGET/release/prism-load"

# The namespace and the veth pair; removed on exit.
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    ip link del pb-host 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add "$NS"
ip link add pb-host type veth peer name pb-ns
ip link set pb-ns netns "$NS"
ip addr add "$HOST_IP/24" dev pb-host
ip link set pb-host up
ip netns exec "$NS" ip addr add "$NS_IP/24" dev pb-ns
ip netns exec "$NS" ip link set pb-ns up
ip netns exec "$NS" ip link set lo up

# Janus: only the VideoRoom plugin and the HTTP transport, ICE on the veth.
JCFG="$OUT/janus-config"
rm -rf "$JCFG" && mkdir -p "$JCFG"/{plugins,transports,events,loggers}
LIB=$(dirname "$(dpkg -L janus | grep -m1 'plugins/libjanus_videoroom.so$')")/..
ln -s "$LIB/plugins/libjanus_videoroom.so" "$JCFG/plugins/"
ln -s "$LIB/transports/libjanus_http.so" "$JCFG/transports/"
cat >"$JCFG/janus.jcfg" <<EOF
general: {
    configs_folder = "$JCFG"
    plugins_folder = "$JCFG/plugins"
    transports_folder = "$JCFG/transports"
    events_folder = "$JCFG/events"
    loggers_folder = "$JCFG/loggers"
    debug_level = 3
    session_timeout = 120
}
media: {
    rtp_port_range = "20000-40000"
}
nat: {
    nice_debug = false
    ice_enforce_list = "pb-ns"
}
EOF
cat >"$JCFG/janus.transport.http.jcfg" <<EOF
general: {
    json = "plain"
    base_path = "/janus"
    http = true
    port = 8088
    ip = "$NS_IP"
    https = false
}
admin: {
    admin_http = false
}
EOF
cat >"$JCFG/janus.plugin.videoroom.jcfg" <<EOF
general: {
}
EOF

# Prism refuses to listen beyond loopback without token keys.
PRISM_KEYS="$(head -c 48 /dev/urandom | base64 -w0)"
export PRISM_KEYS PRISM_LOAD_KEY="$PRISM_KEYS"

start_server() { # prism|janus
    local log="$OUT/$1.log"
    if [ "$1" = prism ]; then
        ip netns exec "$NS" taskset -c "$SERVER_CPU" "$PRISM" \
            --http-addr "$NS_IP:8080" --media-ip "$NS_IP" --advertised-ips "$NS_IP" \
            --udp-port 50000 --shards 1 --max-http-rate 1000000 --max-signal-rate 10000 --max-ws-per-address 1000000 \
            >"$log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 100); do
            curl -fsS "http://$NS_IP:8080/readyz" >/dev/null 2>&1 && return 0
            sleep 0.1
        done
    else
        ip netns exec "$NS" taskset -c "$SERVER_CPU" janus -F "$JCFG" -C "$JCFG/janus.jcfg" \
            >"$log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 100); do
            curl -fsS -X POST -d '{"janus":"info","transaction":"x"}' "http://$NS_IP:8088/janus" >/dev/null 2>&1 && return 0
            sleep 0.1
        done
    fi
    echo "$1 did not start; its log:" >&2
    tail -30 "$log" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

shape_args() {
    case "$1" in
    broadcast) echo "broadcast --viewers $VIEWERS" ;;
    conference) echo "conference --rooms $ROOMS --participants $PARTICIPANTS" ;;
    audio) echo "audio --speakers 4 --listeners $VIEWERS" ;;
    esac
}

for shape in $SHAPES; do
    for run in $(seq "$RUNS"); do
        for server in prism janus; do
            url="http://$NS_IP:8080"
            [ "$server" = janus ] && url="http://$NS_IP:8088/janus"
            start_server "$server"
            echo "== $shape, run $run/$RUNS: $server (pid $SERVER_PID)"
            # shellcheck disable=SC2046
            taskset -c "$LOAD_CPU" "$LOAD" $(shape_args "$shape") --target "$server" \
                --url "$url" --bind-ip "$HOST_IP" --server-pid "$SERVER_PID" \
                --hold "$HOLD" --label "$server" --json "$OUT/$shape-$server-$run.json" \
                2>"$OUT/$shape-$server-$run.err" || { tail -5 "$OUT/$shape-$server-$run.err" >&2; exit 1; }
            grep -h "failed" "$OUT/$shape-$server-$run.err" >&2 || true
            stop_server
        done
    done
    "$LOAD" median "$OUT/$shape"-prism-*.json >"$OUT/$shape-prism.json"
    "$LOAD" median "$OUT/$shape"-janus-*.json >"$OUT/$shape-janus.json"
    echo
    echo "== $shape: medians of $RUNS runs"
    "$LOAD" compare "$OUT/$shape-prism.json" "$OUT/$shape-janus.json"
done
