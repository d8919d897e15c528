#!/usr/bin/env bash
# Crash consistency, the long run: the real sealpost-node under concurrent deliveries,
# submissions (relay queue) and legacy SMTP mail is SIGKILLed at a random moment, checked on
# disk, restarted and checked through the API, ROUNDS times (default 20); then the same for
# outbound legacy mail to a scripted SMTP server (crashloop_smtp). `make test` runs them
# with 5 and 4 rounds. Prints one line per round and a summary; exits non-zero on
# the first lost, doubled or damaged acknowledged write.
#
#   scripts/crashloop.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
SEALPOST_CRASH_ROUNDS="$rounds" cargo test -p sealpost-server --locked --test crashloop --test crashloop_smtp -- --nocapture 2>&1 |
  grep -E '^(crash|smtp crash|test result|thread|  left|  right|assertion)|panicked|FAILED'
