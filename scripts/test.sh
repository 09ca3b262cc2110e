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
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "== installing PyYAML"
  python3 -m pip install -q pyyaml
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
