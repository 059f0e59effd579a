#!/usr/bin/env bash
# Soak test of cleanup's crash safety: the SIGKILL test of tests/cleanup_crash.rs with
# thousands of kills instead of CI's 50, on a release build (each kill is cheaper there).
#
#   scripts/soak-cleanup.sh            # 2000 kills
#   scripts/soak-cleanup.sh 10000      # more
#   SPECKIT_CRASH_SEED=42 scripts/soak-cleanup.sh 500   # replay a sequence of kill times
#
# After every kill the test checks that each original file is in place or in a verified
# archive and each database row is in the database or an archive, then reruns cleanup and
# compares the end state with an uninterrupted run's. It prints the seed; a failure names
# the kill, its delay and the file or row that was lost.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-2000}"
echo "soak: ${iterations} SIGKILLs of a running cleanup (release build)"
SPECKIT_CRASH_ITERATIONS="$iterations" \
    cargo test --release --test cleanup_crash -- --nocapture --test-threads=1
