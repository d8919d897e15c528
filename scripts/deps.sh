#!/usr/bin/env bash
# Installs the system packages Sealpost's build, tests and demo need, when they are missing.
# Idempotent and quiet when everything is present. As root on Debian it installs with
# apt-get; otherwise it prints the exact command to run and fails.
set -euo pipefail

# libclang-dev: bindgen for librocksdb-sys. gnupg: OpenPGP interop tests.
# postfix + swaks: the legacy-mail world of the gateway tests and the Postfix benchmark peer.
# openssl: test certificates for the TLS tests. python3: small helpers in the demo script.
# dnsmasq-base: a private DNS server for test zones (the binary only, no system service).
# python3-dkim: dkimpy, the independent DKIM verifier that checks the gateway's signatures;
# python3-nacl: what dkimpy needs to verify Ed25519 (RFC 8463) signatures.
# Round 2's real peers, each started by the tests as a private instance on loopback, never as
# the system service: dovecot-imapd (the IMAP reference for the bridge), isync (mbsync, a real
# IMAP client), pebble (an ACME test CA), postgresql (the [scale] store backend).
pkgs=(libclang-dev gnupg postfix swaks pkg-config libssl-dev openssl python3 dnsmasq-base python3-dkim python3-nacl
      dovecot-imapd isync pebble postgresql)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo is not on PATH; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

[ ${#missing[@]} -eq 0 ] && exit 0

preseed='postfix postfix/main_mailer_type select No configuration'
cmd="apt-get update && echo '$preseed' | debconf-set-selections && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run as root:  $cmd" >&2
  exit 1
fi

echo "deps: installing ${missing[*]} ..."
log=$(mktemp)
if ! { apt-get update -qq && echo "$preseed" | debconf-set-selections \
       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "deps: apt-get failed; the command was:  $cmd" >&2
  exit 1
fi
rm -f "$log"
echo "deps: installed ${missing[*]}"
