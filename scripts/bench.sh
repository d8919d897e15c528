#!/usr/bin/env bash
# make bench: builds in release mode, runs every benchmark against its peer in the same run
# (Postfix on loopback, gpg, raw sequoia), prints the table and writes BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --bins
json=$(mktemp)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# A failed section is a row of the table: the file is written, then the status is returned.
status=0
./target/release/sealpost-bench --repo . --json "$json" "$@" | tee /tmp/sealpost-bench-table.md || status=$?
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`make bench\` (\`scripts/bench.sh\`) on $(date -u +%Y-%m-%d): release build,"
  echo "every peer measured in the same run on the same machine. Ratios are Sealpost ÷ peer"
  echo "(higher is better for rates). Rates are measured in rounds (\`--repeats\`, 3 by default),"
  echo "ours and the peer's interleaved in each round: the table shows the median and, in"
  echo "brackets, the range over the rounds; a ratio is the median of the rounds' own ratios."
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
  echo "$(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(. /etc/os-release; echo "$PRETTY_NAME"),"
  echo "load averages (1, 5, 15 min) $load_before before the run, $(cut -d' ' -f1-3 /proc/loadavg) after;"
  echo "$(rustc --version), Postfix $(postconf -d mail_version 2>/dev/null | cut -d' ' -f3), $(gpg --version | head -1)."
  echo
  cat /tmp/sealpost-bench-table.md
  if [ -f bench/NOTES.md ]; then echo; cat bench/NOTES.md; fi
} > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
exit "$status"
