#!/usr/bin/env bash
# Runs every test of the workspace: formatting, lints, unit tests, and the
# integration tests that start the real `prism` binary with real WebRTC
# clients on loopback. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse a build cache outside the checkout when one exists (CI clones fresh).
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/prism-target"
fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  echo "cargo is required: install Rust from your distribution or rustup" >&2
  exit 1
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if need rustup; then rustup component add rustfmt clippy; fi
fi

# promtool (Debian's prometheus package) checks /metrics and the Prometheus
# config; PyYAML parses the Compose and Kubernetes files.
if ! need promtool; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "== installing promtool (Debian package prometheus)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package may start a Prometheus server; the tests do not need it.
    (command -v service >/dev/null && service prometheus stop >/dev/null 2>&1) || true
  else
    echo "promtool is missing: install Debian's prometheus package (or run as root)" >&2
    exit 1
  fi
fi
# curl: scripts/readme-run.sh polls the demo's pages with it.
if ! need curl; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
  else
    echo "curl is missing: install it (or run as root)" >&2
    exit 1
  fi
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "== installing PyYAML"
  python3 -m pip install -q pyyaml
fi

# Browser tests: Debian's Chromium driven by npm playwright-core (a browser
# download would fail here), Node's built-in test runner.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "== installing chromium (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  else
    echo "Chromium is missing: install Debian's chromium package (or run as root)" >&2
    exit 1
  fi
fi
# Firefox ESR (Debian's firefox-esr, driven over WebDriver BiDi by npm
# puppeteer-core) talks to a prism in a network namespace the test creates:
# it needs root and iproute2 (web/tests/firefox.js).
if [ ! -x /usr/bin/firefox-esr ] || ! need ip; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "== installing firefox-esr and iproute2 (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends firefox-esr iproute2 fonts-dejavu-core >/dev/null
  else
    echo "Firefox ESR is missing: install Debian's firefox-esr and iproute2 packages (or run as root)" >&2
    exit 1
  fi
fi
# Reach tests (issue 14): nftables drops UDP in a test namespace
# (web/tests/reach.test.js); coturn is the external TURN server both the Rust
# client's tests and the browser tests relay through.
if ! need nft || ! need turnserver; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "== installing nftables and coturn (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables coturn >/dev/null
    # The package starts nothing by default (TURNSERVER_ENABLED); tests run
    # their own turnserver with their own config and stop it by PID.
  else
    echo "nft or turnserver is missing: install Debian's nftables and coturn packages (or run as root)" >&2
    exit 1
  fi
fi
if ! need node || ! need npm; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
fi
(cd web/tests && npm ci --no-audit --no-fund --silent)

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== the README's run command"
./scripts/readme-run.sh
echo "== browser tests (headless Chromium)"
cargo build --locked -p prism-server --bin prism
PRISM_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/prism"
export PRISM_BIN
(cd web/tests && node --test --test-concurrency=1 .)
