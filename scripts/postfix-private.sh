#!/usr/bin/env bash
# Runs a private Postfix on loopback, for the gateway tests, the demo and the benchmark.
# Nothing outside DIR changes; the system Postfix (if any) is not touched.
#
#   postfix-private.sh start DIR SMTP_PORT [RELAY_DOMAIN RELAY_PORT]
#       Postfix listens on 127.0.0.1:SMTP_PORT, receives mail for every user of
#       legacy.test into the Maildir DIR/mail/maildir/, and relays RELAY_DOMAIN to 127.0.0.1:RELAY_PORT.
#   postfix-private.sh stop DIR
#
# Environment: PF_LISTEN, the loopback address to listen on (default 127.0.0.1; e.g.
# 127.0.0.2 with SMTP_PORT 25 for Postfix as the MX of legacy.test); PF_MAIN_EXTRA, lines
# appended to main.cf (e.g. STARTTLS keys, recipient access maps).
set -euo pipefail

cmd=${1:?usage: postfix-private.sh start|stop DIR ...}
dir=$(realpath -m "${2:?DIR}")

case "$cmd" in
start)
  port=${3:?SMTP_PORT}
  listen=${PF_LISTEN:-127.0.0.1}
  relay_domain=${4:-}
  relay_port=${5:-}
  mkdir -p "$dir/conf" "$dir/queue" "$dir/data" "$dir/mail"
  # Postfix's daemons run as user postfix: every parent must be traversable (temporary
  # directories are often 0700). Add only the search bit.
  p=$dir
  while [ "$p" != "/" ]; do
    if ! su -s /bin/sh postfix -c "test -x '$p'" 2>/dev/null; then chmod o+x "$p"; fi
    p=$(dirname "$p")
  done
  uid=$(id -u postfix)
  gid=$(id -g postfix)
  chown postfix:postfix "$dir/data" "$dir/mail"
  transport=""
  relay=""
  if [ -n "$relay_domain" ]; then
    transport="transport_maps = inline:{ $relay_domain=smtp:[127.0.0.1]:$relay_port }"
    relay="relay_domains = $relay_domain"
  fi
  cat >"$dir/conf/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.legacy.test
mydomain = legacy.test
myorigin = legacy.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = legacy.test
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
virtual_mailbox_limit = 0
message_size_limit = 52428800
$relay
$transport
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 100
in_flow_delay = 0
${PF_MAIN_EXTRA:-}
CONF
  # master.cf: the system one, chroot off, smtpd on our port only.
  awk -v port="$port" -v listen="$listen" '
    /^smtp[ \t]+inet/ { print listen ":" port " inet n - n - - smtpd"; next }
    /^#?submission[ \t]+inet|^#?smtps[ \t]+inet/ { next }
    /^[a-z]/ && NF >= 8 { $5 = "n"; print; next }
    { print }
  ' /etc/postfix/master.cf >"$dir/conf/master.cf"
  if ! grep -q '^postlog' "$dir/conf/master.cf"; then
    echo 'postlog unix-dgram n - n - 1 postlogd' >>"$dir/conf/master.cf"
  fi
  script -qc "postfix -c '$dir/conf' start" /dev/null >"$dir/start.log" 2>&1 || {
    cat "$dir/start.log" >&2; [ -f "$dir/maillog" ] && tail -20 "$dir/maillog" >&2; exit 1; }
  ;;
stop)
  [ -f "$dir/conf/main.cf" ] && script -qc "postfix -c '$dir/conf' stop" /dev/null >/dev/null 2>&1 || true
  ;;
*)
  echo "usage: postfix-private.sh start|stop DIR ..." >&2
  exit 2
  ;;
esac
