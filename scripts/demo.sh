#!/usr/bin/env bash
# make demo: real nodes, real client, real mail, on loopback. Builds in release mode, then
# walks through Sealpost step by step and ends with what each node stored. Cleans up its
# processes and temporary directory on exit, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
profile=${SEALPOST_DEMO_PROFILE:-release}

if [ "$profile" = release ]; then
  echo "Building (release) ..."
  cargo build --release --locked --workspace --bins 2>&1 | grep -E "^(error|warning: unused)" || true
  bin=$repo/target/release
else
  bin=$repo/target/$profile
fi
[ -x "$bin/sealpost-node" ] && [ -x "$bin/sealpost" ] || { echo "demo: binaries missing in $bin" >&2; exit 1; }

work=$(mktemp -d /tmp/sealpost-demo.XXXXXX)
pids=()
postfix_dir=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$postfix_dir" ] && "$repo/scripts/postfix-private.sh" stop "$postfix_dir" || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted, cleaning up"; exit 130' INT TERM

bold=$(tput bold 2>/dev/null || true); dim=$(tput dim 2>/dev/null || true); reset=$(tput sgr0 2>/dev/null || true)
step() { echo; echo "${bold}== $*${reset}"; }
say() { echo "   $*"; }
run() { echo "${dim}\$ $*${reset}"; "$@"; }

# start_node NAME DOMAIN [extra run args...]: init + run on a free port; sets URL_<NAME>, PID_<NAME>
start_node() {
  local name=$1 domain=$2; shift 2
  local dir=$work/$name
  "$bin/sealpost-node" init --dir "$dir" --listen 127.0.0.1:0 >/dev/null
  "$bin/sealpost-node" run --config "$dir/node.toml" --set 'log.filter="warn"' --set relay.retry_base=0.5 --set relay.retry_max=2 \
    --set limits.anonymous_exempt_loopback=true "$@" \
    >"$dir/stdout" 2>"$dir/node.log" &
  local pid=$!
  pids+=("$pid")
  local url=""
  for _ in $(seq 1 200); do
    url=$(sed -n 's/^sealpost-node listening on //p' "$dir/stdout" 2>/dev/null | head -1)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/node.log" >&2; exit 1; }
    sleep 0.05
  done
  [ -n "$url" ] || { echo "demo: node $name did not start" >&2; exit 1; }
  printf -v "URL_$name" '%s' "$url"
  printf -v "PID_$name" '%s' "$pid"
  printf -v "DOMAIN_$name" '%s' "$domain"
  say "node ${bold}$name${reset} serves ${domain} at $url"
}

step "1. Three nodes on loopback, run by different operators"
say "Nodes store and forward encrypted envelopes. Anyone can run one."
start_node alpha alpha.test
start_node beta beta.test
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
gw_port=$(free_port)
pf_port=$(free_port)
start_node gamma gamma.test --set gateway.enabled=true --set gateway.verify=false --set 'gateway.domain="gamma.test"' \
  --set "gateway.listen=\"127.0.0.1:$gw_port\"" --set "gateway.smarthost=\"127.0.0.1:$pf_port\""
say "gamma also runs the SMTP gateway for gamma.test on 127.0.0.1:$gw_port"
gateway_note=" and the SMTP gateway for gamma.test"
resolve=(--resolve "alpha.test=$URL_alpha" --resolve "beta.test=$URL_beta" --resolve "gamma.test=$URL_gamma")
# Show commands as a user would type them (profile and --resolve entries are set per user).
quoted() { local a out=""; for a in "$@"; do [[ $a == *" "* ]] && a="\"$a\""; out+="$a "; done; echo "${out% }"; }
as_user() { local who=$1; shift; echo "${dim}$who\$ sealpost $(quoted "$@")${reset}"; "$bin/sealpost" --profile "$work/$who" "${resolve[@]}" "$@"; }
# The users' secret keys are locked with a passphrase; the demo gives it through the
# environment so that `init` and later commands do not stop to ask at the terminal.
export SEALPOST_PASSPHRASE="demo passphrase"
alice() { as_user alice "$@"; }
# Fetches quietly until USER has new mail (relaying between nodes takes a moment), 10 s at most.
wait_for_mail() {
  local who=$1
  for _ in $(seq 1 100); do
    "$bin/sealpost" --profile "$work/$who" "${resolve[@]}" --json fetch 2>/dev/null \
      | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("new") else 1)' 2>/dev/null && return 0
    sleep 0.1
  done
}
bob() { as_user bob "$@"; }

step "2. Alice is homed on two nodes (alpha and beta); Bob on gamma"
say "init makes an OpenPGP key, registers on every node and publishes one signed record"
say "listing all homes. A user's mail does not depend on any single node."
alice init alice@alpha.test --node "$URL_alpha" --node "$URL_beta"
bob init bob@gamma.test --node "$URL_gamma"
alice_fpr=$("$bin/sealpost" --profile "$work/alice" fingerprint)
bob_fpr=$("$bin/sealpost" --profile "$work/bob" fingerprint)

step "3. Alice sends Bob a signed, encrypted letter with an attachment"
say "The letter is signed by Alice, padded to a size bucket and encrypted to Bob's key,"
say "then wrapped for Bob's node and handed to one of Alice's own nodes, which forwards it"
say "without being able to open it. Alice's node never learns Bob's mailbox."
head -c 200000 /dev/urandom >"$work/holiday.jpg"
printf 'Hi Bob,\n\nphotos from the trip attached. See you Thursday!\n\nAlice\n' >"$work/body.txt"
alice send --to bob@gamma.test --subject "Photos from the trip" --attach "$work/holiday.jpg" <"$work/body.txt"

step "4. Bob fetches and reads it"
say "Bob's client fetches from his home node, checks Alice's signature against the key it"
say "pinned on first contact, and decrypts. Only Bob's client ever sees the plaintext."
wait_for_mail bob
bob list
id=$("$bin/sealpost" --profile "$work/bob" --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
bob read "$id"

step "5. One of Alice's nodes goes down; mail to her still flows"
kill "$PID_alpha"; wait "$PID_alpha" 2>/dev/null || true
say "node alpha stopped. Bob replies; his client delivers to every home in Alice's record,"
say "so the copy for beta gets through."
printf 'Thanks Alice, they are lovely.\n' | bob reply "$id"
# Wait until the reply sits in Alice's mailbox on beta, then fetch for all to see.
for _ in $(seq 1 100); do
  "$bin/sealpost-node" inspect --config "$work/beta/node.toml" | grep -q '^envelope size' && break
  sleep 0.1
done
alice fetch || true
alice list

step "6. Legacy e-mail comes in through the gateway"
if command -v swaks >/dev/null && [ -x /usr/sbin/postfix ]; then
  postfix_dir=$work/postfix
  "$repo/scripts/postfix-private.sh" start "$postfix_dir" "$pf_port" gamma.test "$gw_port"
  for _ in $(seq 1 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $pf_port), 1)" 2>/dev/null && break
    sleep 0.05
  done
  say "A private Postfix on 127.0.0.1:$pf_port plays the legacy world; it relays gamma.test"
  say "to the gateway. Carol, a plain e-mail user, writes to Bob with swaks:"
  echo "${dim}carol\$ swaks --to bob@gamma.test --server 127.0.0.1:$pf_port ...${reset}"
  swaks --server 127.0.0.1 --port "$pf_port" --from carol@legacy.test --to bob@gamma.test \
    --header "Subject: Lunch on Friday?" --body "Hi Bob, lunch on Friday? -- Carol" >"$work/swaks.log" 2>&1 \
    || { cat "$work/swaks.log" >&2; exit 1; }
  grep -E '^<- +250 .*queued' "$work/swaks.log" | sed 's/^/   postfix: /' || true
  say "The gateway sealed it to Bob's key on arrival and stored it before answering 250."
  wait_for_mail bob
  bob list
  lid=$("$bin/sealpost" --profile "$work/bob" --json list | python3 -c 'import json,sys; print([m["id"] for m in json.load(sys.stdin) if m.get("legacy")][0])')
  bob read "$lid"
  say "Bob's client says plainly that this letter was not end-to-end encrypted."
else
  say "(skipped: install postfix and swaks to see it: make deps does, as root)"
fi

step "7. What each node stored about this exchange"
say "Every node's database is read back in full and searched for the things a node must"
say "not learn. A home node necessarily knows its own users' addresses (it serves their"
say "records); it must never learn who writes to them, or what."
yesno() { grep -F "$2:" <<<"$1" | sed -e 's/.*: not stored$/no/' -e 's/.*: stored in \(.*\)$/YES (\1)/'; }
for n in alpha beta gamma; do
  case $n in
    alpha) role="one of Alice's homes (down since step 5)";;
    beta) role="Alice's other home";;
    gamma) role="Bob's home${gateway_note:-}";;
  esac
  report=$("$bin/sealpost-node" inspect --config "$work/$n/node.toml" \
    --find alice@alpha.test --find bob@gamma.test --find "Photos from the trip" --find "photos from the trip attached" --find-hex "$alice_fpr" --find-hex "$bob_fpr")
  echo "   ${bold}node $n${reset}: $role"
  echo "      knows alice@alpha.test:       $(yesno "$report" '"alice@alpha.test"')"
  echo "      knows bob@gamma.test:         $(yesno "$report" '"bob@gamma.test"')"
  echo "      holds Alice's key:            $(yesno "$report" "hex $alice_fpr")"
  echo "      holds Bob's key:              $(yesno "$report" "hex $bob_fpr")"
  echo "      knows the subject:            $(yesno "$report" '"Photos from the trip"')"
  echo "      knows the body:               $(yesno "$report" '"photos from the trip attached"')"
  echo "      $(grep '^envelopes' <<<"$report" | awk '{ if ($2 == 0) print "envelopes waiting: none (fetched, then deleted on the node)"; else print "envelopes waiting: " $2 " (" $4 " bytes; each padded to a size bucket)" }')"
done
say ""
say "What the users saw: Bob read Alice's letter and its attachment, signed and verified;"
say "Alice read Bob's reply, verified, although one of her nodes was down."

step "Done"
say "Alice and Bob exchanged signed, end-to-end encrypted mail across three nodes, and it"
say "kept flowing with one of Alice's nodes down. Everything is cleaned up on exit."
