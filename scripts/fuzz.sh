#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 90; 10 targets ≈ 15 minutes), seeding
# the corpora from spec/vectors (and, for `config`, from the node.toml that `sealpost-node
# init` writes), and prints one summary line per target: runs, coverage, crashes. Crashes
# stop the run; keep each crasher as a regression test: copy it to
# proto/tests/fuzz_regressions/TARGET/ (server/tests/fuzz_regressions/config/ for config),
# where `make test` replays it through the same check (proto/tests/fuzz_checks/mod.rs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); runs on stable Rust with
# `--sanitizer none` (coverage-guided libFuzzer, no ASan: the code has no `unsafe`).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-90}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope hop record descriptor letter smtp names httpsig payload batch oblivious config bridge_imap bridge_smtp)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

seed() { # target dir
  local t=$1 d=$2
  mkdir -p "$d"
  python3 - "$t" "$d" <<'PY'
import json, sys, pathlib
t, d = sys.argv[1], pathlib.Path(sys.argv[2])
v = json.load(open("spec/vectors/vectors.json"))
seeds = []
if t == "envelope": seeds = [v["envelope"]["encoded"]]
elif t == "hop": seeds = [v["hop"]["encoded"]]
elif t == "record": seeds = [v["record"]["signed"], v["record"]["body"]]
elif t == "descriptor": seeds = [v["descriptor"]["signed"]]
seeds += [b["hex"] for b in v["bad_inputs"] if b["what"] == t]
for i, h in enumerate(seeds):
    (d / f"vector-{i}").write_bytes(bytes.fromhex(h))
if t == "httpsig":
    s = v["httpsig"]
    fields = [s["method"], s["authority"], s["path"], s["content_digest"], s["signature_input"], s["signature"]]
    body = bytes.fromhex(s["body"])
    (d / "vector").write_bytes("\n".join(fields).encode() + b"\n" + body)
    # The checker's clock is 1800000000: the same request, created "now".
    fields[4] = fields[4].replace(str(s["created"]), "1800000000")
    (d / "vector-now").write_bytes("\n".join(fields).encode() + b"\n" + body)
if t == "payload":
    # The hop vector's payload (encrypted to spec/vectors/node-b) and the sealed letter.
    hop = bytes.fromhex(v["hop"]["encoded"])
    n = int.from_bytes(hop[2:4], "big")
    (d / "hop-payload").write_bytes(hop[4 + n + 4:])
    (d / "sealed-letter").write_bytes(open("spec/vectors/sealed-letter.pgp", "rb").read())
if t == "config":
    (d / "overrides").write_bytes(b'listen = "127.0.0.1:0"\n[limits]\nbody_timeout = 0.5\n\0relay.give_up_after=2\nregistration.policy=closed\ngateway.listen="127.0.0.1:0"\n')
if t == "smtp":
    (d / "session").write_bytes(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
if t == "letter":
    (d / "letter").write_bytes(b"From: a@b.test\r\nTo: c@d.test\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream; name=a.bin\r\nContent-Disposition: attachment; filename=a.bin\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b--\r\n")
if t == "names":
    (d / "addr").write_bytes(b"alice@alpha.test")
    (d / "url").write_bytes(b"https://node.example:8443/sealpost")
PY
}

if [[ " ${targets[*]} " == *" config "* ]]; then
  # The commented default node.toml, as `init` writes it.
  node=target/debug/sealpost-node
  [ -x "$node" ] || cargo build -q -p sealpost-server --bin sealpost-node
  tmp=$(mktemp -d)
  "$node" init --dir "$tmp" --registration invite >/dev/null
  mkdir -p fuzz/corpus/config
  cp "$tmp/node.toml" fuzz/corpus/config/init-node.toml
  rm -rf "$tmp"
fi

summary=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  seed "$t" "$corpus"
  log=$(mktemp)
  echo "fuzz: $t for ${secs}s ..."
  if ! (cd fuzz && cargo fuzz run "$t" -s none "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1) >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t CRASHED; the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  corp=$(ls "$corpus" | wc -l)
  summary+=("$t: ${secs}s, $runs runs, coverage $cov edges, corpus $corp, 0 crashes")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
