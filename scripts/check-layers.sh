#!/usr/bin/env bash
# The client library builds without the CLI's crates (clap, indicatif, anyhow), so a bridge
# or another front end can embed it (`sealpost-client` with `default-features = false`).
# Fails if the library alone does not build, if clap or indicatif is anywhere in its
# dependency tree, or if anyhow is one of its own dependencies. (anyhow itself stays in
# the tree: sequoia-openpgp's API returns anyhow errors, which the library turns into its
# typed `Error`.) Uses the workspace's target directory, like every other cargo command.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

$CARGO build -p sealpost-client --lib --no-default-features --locked

tree=$($CARGO tree -p sealpost-client --no-default-features -e normal --locked --prefix depth)
# Depth 1: the library's own dependencies.
if grep -E '^1(clap|indicatif|anyhow) ' <<<"$tree"; then
  echo "check-layers: sealpost-client without the cli feature depends on the crates above" >&2
  exit 1
fi
if grep -E '^[0-9]+(clap|indicatif)' <<<"$tree"; then
  echo "check-layers: sealpost-client without the cli feature pulls in the crates above" >&2
  exit 1
fi
echo "check-layers: sealpost-client builds without clap, indicatif and anyhow"
