#!/usr/bin/env bash
# Runs the README's run command exactly as written (the first ```sh block
# under "## Run it"), waits for the demo's home page on
# http://localhost:8080, checks it, and stops the command's process group.
# scripts/test.sh calls this so a newcomer's first command cannot break
# unnoticed. A cold release build takes ~10 minutes on 2 cores; the wait
# covers it (PRISM_README_TIMEOUT seconds, default 1800).
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=$(awk '/^## Run it/{f=1; next} f && /^```sh/{b=1; next} b && /^```/{exit} b{print}' README.md)
if [ -z "$cmd" ]; then
  echo "readme-run: no \`\`\`sh block under '## Run it' in README.md" >&2
  exit 1
fi
url=http://localhost:8080
if curl -s -o /dev/null --max-time 2 "$url/healthz"; then
  echo "readme-run: something already answers on $url; stop it first" >&2
  exit 1
fi

log=$(mktemp)
echo "== README run command: $cmd"
# Its own session and process group, so stopping it stops cargo and prism.
setsid bash -c "$cmd" >"$log" 2>&1 &
pid=$!
stop() {
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
trap stop EXIT

deadline=$((SECONDS + ${PRISM_README_TIMEOUT:-1800}))
page=""
while [ $SECONDS -lt $deadline ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "readme-run: the command exited before serving $url:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  if page=$(curl -sf --max-time 2 "$url/" 2>/dev/null); then break; fi
  sleep 1
done
if [ -z "$page" ]; then
  echo "readme-run: $url did not answer within the timeout:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
fail=0
check() { # what, command...
  if "${@:2}"; then echo "ok: $1"; else echo "FAILED: $1" >&2; fail=1; fi
}
check "home page is Prism's" grep -q "<title>Prism" <<<"$page"
check "the room page is served" curl -sf --max-time 5 -o /dev/null "$url/room/demo"
check "the web client library is served" curl -sf --max-time 5 -o /dev/null "$url/static/prism.js"
check "/readyz answers 200" curl -sf --max-time 5 -o /dev/null "$url/readyz"
check "/metrics exports prism_ families" bash -c "curl -s --max-time 5 '$url/metrics' | grep -q '^prism_'"
if [ $fail -ne 0 ]; then tail -n 40 "$log" >&2; exit 1; fi
echo "readme-run: the README's run command serves the demo on $url"
