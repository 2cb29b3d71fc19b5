#!/usr/bin/env bash
# opendkim-verify.sh <records-file> <message-file>...
#
# Verifies each message with OpenDKIM's opendkim-testmsg (libopendkim). libopendkim looks keys up
# with the system resolver (port 53 of /etc/resolv.conf), so the script runs itself in a private
# mount + network namespace (unshare, root): there it serves the records with knotd (the DNS
# server of the project's DNS fixture) on 127.0.0.1:53, bind-mounts a resolv.conf naming it, and
# runs opendkim-testmsg per message. Nothing is visible outside the namespace.
# <records-file>: lines "<selector>._domainkey.<domain> <TXT record text>".
# Output: one line per message, "PASS <file>" or "FAIL <file> <opendkim message>"; exit 0 if
# the script itself worked (check the lines), non-zero on setup failure.
set -euo pipefail
if [[ ${1:-} != --inside ]]; then
  exec unshare -m -n "$BASH" "$0" --inside "$@"
fi
shift
RECORDS=$1; shift
for tool in knotd opendkim-testmsg dig ip; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 3; }; done
W=$(mktemp -d /tmp/smg-opendkim.XXXXXX)
cleanup() {
  local status=$?
  if [[ -f $W/knot.pid ]]; then
    local pid; pid=$(cat "$W/knot.pid")
    kill "$pid" 2>/dev/null || true
    # knotd flushes its timer database on exit: wait for it before removing the folder.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -rf "$W" 2>/dev/null || true
  exit "$status"
}
trap cleanup EXIT
ip link set lo up
mkdir -p "$W/db" "$W/zones"

declare -A ZONES
while read -r name text; do
  [[ -z ${name:-} || $name == \#* ]] && continue
  name=${name%.}
  zone=${name#*._domainkey.}
  f="$W/zones/$zone.zone"
  if [[ -z ${ZONES[$zone]:-} ]]; then
    ZONES[$zone]=1
    printf '$ORIGIN %s.\n$TTL 60\n@ SOA ns.%s. hostmaster.%s. 1 60 60 600 60\n@ NS ns.%s.\nns A 127.0.0.1\n' \
      "$zone" "$zone" "$zone" "$zone" > "$f"
  fi
  # Split into character-strings of at most 255 octets.
  strings=""
  while [[ -n $text ]]; do strings+="\"${text:0:255}\" "; text=${text:255}; done
  printf '%s. TXT %s\n' "$name" "$strings" >> "$f"
done < "$RECORDS"

{
  echo "server:"; echo "  listen: 127.0.0.1@53"; echo "  rundir: $W"; echo "  pidfile: $W/knot.pid"
  echo "database:"; echo "  storage: $W/db"
  echo "log:"; echo "  - target: $W/knot.log"; echo "    any: info"
  echo "zone:"
  for z in "${!ZONES[@]}"; do echo "  - domain: $z"; echo "    file: $W/zones/$z.zone"; done
} > "$W/knot.conf"
knotd -d -c "$W/knot.conf" || { cat "$W/knot.log" >&2 2>/dev/null; exit 1; }
for z in "${!ZONES[@]}"; do
  for _ in $(seq 100); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p 53 "$z" SOA 2>/dev/null | grep -q . && break
    sleep 0.05
  done
done
echo "nameserver 127.0.0.1" > "$W/resolv.conf"
mount --bind "$W/resolv.conf" /etc/resolv.conf

for msg in "$@"; do
  if out=$(opendkim-testmsg < "$msg" 2>&1); then
    echo "PASS $msg"
  else
    echo "FAIL $msg ${out//$'\n'/ }"
  fi
done
