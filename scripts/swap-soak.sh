#!/usr/bin/env bash
# Soak test of retention against a folder swapper: thousands of cleanup and restore runs,
# each raced by a thread exchanging a SPEC folder with a symlink to a look-alike outside
# the evidence root (plugins/retention/tests/swap_race.rs). Usage:
#   scripts/swap-soak.sh [ROUNDS]     (default 2500 of each kind: 5000 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2500}
SWAP_RACE_ROUNDS=$rounds cargo test --release -p speckit-retention --test swap_race -- --nocapture --test-threads 2 2>&1 |
    grep -E "swap race|panicked|test result|FAILED"
