#!/usr/bin/env bash
# The soak test at full size: 1000 join → publish → leave cycles (WebSocket
# and WHIP, rooms opening and closing) through the real server, then checks
# that nothing is left behind and RSS is within 10% of its warm-up level.
#
#   scripts/soak.sh [CYCLES]      default 1000 (the test command runs 60)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d "$HOME/.cache" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR="$HOME/.cache/prism-target"
fi
PRISM_SOAK_CYCLES="${1:-1000}" cargo test --release -p prism-server --test soak -- --nocapture
