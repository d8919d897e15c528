#!/usr/bin/env bash
# Hostile load, the full-size run (issue 21): each attack of server/tests/hostile.rs at the
# size of the original report, against a real node, with a well-behaved client measured
# meanwhile. `make test` runs the same tests small (seconds each). Prints one `ABUSE` line
# per attack (peak RSS of the node process, the well-behaved client's p99) for
# BENCHMARKS.md; exits non-zero when a protection fails.
#
#   scripts/abuse.sh            # every attack
#   scripts/abuse.sh FILTER     # only tests whose name contains FILTER
#
# The test profile of `make test` by default (our code unoptimised, dependencies
# optimised); SEALPOST_ABUSE_RELEASE=1 builds and runs in release (several minutes of
# building the first time). The attacks run one at a time; the slot flood opens 1,024
# connections (raise `ulimit -n` if the test process cannot).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 8192 2>/dev/null || true
release=()
if [ "${SEALPOST_ABUSE_RELEASE:-0}" = 1 ]; then release=(--release); fi
cargo build -p sealpost-server --bins --locked "${release[@]}"
SEALPOST_ABUSE_SCALE=full cargo test -p sealpost-server "${release[@]}" --locked --test hostile \
  -- --nocapture --test-threads=1 ${1:+"$1"} 2>&1 |
  grep -E '^(ABUSE|test |test result)|panicked|FAILED|assertion'
