#!/usr/bin/env bash
# Crash consistency, the long run: the real sealpost-node under concurrent deliveries,
# submissions (relay queue) and legacy SMTP mail is SIGKILLed at a random moment, checked on
# disk, restarted and checked through the API, ROUNDS times (default 20). `make test` runs
# the same test with 5 rounds. Prints one line per round and a summary; exits non-zero on
# the first lost, doubled or damaged acknowledged write.
#
#   scripts/crashloop.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
SEALPOST_CRASH_ROUNDS="$rounds" cargo test -p sealpost-server --locked --test crashloop -- --nocapture 2>&1 |
  grep -E '^(crash|test result|thread|  left|  right|assertion)|panicked|FAILED'
