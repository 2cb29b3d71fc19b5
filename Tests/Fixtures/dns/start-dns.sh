#!/usr/bin/env bash
# start-dns.sh <workdir> <auth-port> <resolver-port>
#
# Starts the DNS test fixture on 127.0.0.1 only:
#   knotd   authoritative for the zones in zones/zones.list (+ $SMG_DNS_EXTRA_ZONES), on <auth-port>
#   unbound validating recursive resolver on <resolver-port>, stub zones pointing at knotd,
#           a local trust anchor for every signed/bogus zone, everything else forwarded to
#           knotd (which refuses it), so nothing ever leaves 127.0.0.1.
# Writes all state under <workdir> (created if missing; zone files are regenerated from the
# templates on every start, keys are new each time). Waits (at most 30 s) until knotd answers
# and unbound gives AD for signed.test, then prints "ready auth=<port> resolver=<port>".
# Exit status non-zero (and both daemons stopped) on any failure; logs are in <workdir>.
# Stop with stop-dns.sh <workdir>.
set -euo pipefail

if [[ $# -ne 3 ]]; then echo "usage: $0 <workdir> <auth-port> <resolver-port>" >&2; exit 2; fi
W=$1; AUTH=$2; RES=$3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for p in "$AUTH" "$RES"; do
  [[ $p =~ ^[0-9]+$ ]] && (( p >= 1024 && p <= 65535 )) || { echo "bad port $p (need 1024..65535)" >&2; exit 2; }
done
[[ $AUTH != "$RES" ]] || { echo "ports must differ" >&2; exit 2; }
for tool in knotd knotc unbound unbound-checkconf ldns-keygen ldns-signzone dig; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 3; }
done

mkdir -p "$W"
W=$(cd "$W" && pwd)
"$HERE/stop-dns.sh" "$W" >/dev/null 2>&1 || true
rm -rf "$W/zones" "$W/keys" "$W/db" "$W/run"
mkdir -p "$W/zones" "$W/keys" "$W/db" "$W/run"
: > "$W/trust-anchors.ds"

fail() {
  echo "start-dns: $*" >&2
  "$HERE/stop-dns.sh" "$W" >/dev/null 2>&1 || true
  for f in knot.log unbound.log; do [[ -f $W/$f ]] && { echo "--- $f" >&2; tail -20 "$W/$f" >&2; }; done
  exit 1
}

# Collect zone list: built-in, then extra (same name replaces).
declare -A MODE SRC
ORDER=()
read_list() {
  local dir=$1 name mode
  [[ -f $dir/zones.list ]] || return 0
  while read -r name mode _; do
    [[ -z ${name:-} || $name == \#* ]] && continue
    name=${name%.}
    case $mode in unsigned|signed|bogus) ;; *) fail "bad mode '$mode' for $name in $dir/zones.list";; esac
    [[ -f $dir/$name.zone ]] || fail "missing $dir/$name.zone"
    [[ -n ${MODE[$name]:-} ]] || ORDER+=("$name")
    MODE[$name]=$mode; SRC[$name]=$dir/$name.zone
  done < "$dir/zones.list"
}
read_list "$HERE/zones"
[[ -n ${SMG_DNS_EXTRA_ZONES:-} ]] && read_list "$SMG_DNS_EXTRA_ZONES"

# Zone files: copy, sign, tamper.
for z in "${ORDER[@]}"; do
  cp "${SRC[$z]}" "$W/zones/$z.zone"
  if [[ ${MODE[$z]} != unsigned ]]; then
    ( cd "$W/keys"
      ksk=$(ldns-keygen -a ECDSAP256SHA256 -k "$z")
      zsk=$(ldns-keygen -a ECDSAP256SHA256 "$z")
      ldns-signzone -o "$z" -f "$W/zones/$z.zone.signed" "$W/zones/$z.zone" "$zsk" "$ksk"
      cat "$ksk.ds" >> "$W/trust-anchors.ds"
    ) || fail "signing $z failed"
    if [[ ${MODE[$z]} == bogus ]]; then
      sed -i -e 's/smg-fixture-tamper-me/smg-fixture-TAMPERED/' \
             -e '/TLSA/s/ aaaaaaaa/ bbbbbbbb/' "$W/zones/$z.zone.signed"
      grep -q TAMPERED "$W/zones/$z.zone.signed" || grep -q ' bbbbbbbb' "$W/zones/$z.zone.signed" \
        || fail "bogus zone $z has nothing to tamper with"
    fi
    mv "$W/zones/$z.zone.signed" "$W/zones/$z.zone"
  fi
done

# knotd: serves the (pre-signed) files as they are; never writes them back.
{
  echo "server:"
  echo "    rundir: \"$W/run\""
  echo "    listen: 127.0.0.1@$AUTH"
  echo "database:"
  echo "    storage: \"$W/db\""
  echo "log:"
  echo "  - target: \"$W/knot.log\""
  echo "    any: info"
  echo "template:"
  echo "  - id: default"
  echo "    storage: \"$W/zones\""
  echo "    zonefile-sync: -1"
  echo "    zonefile-load: whole"
  echo "    journal-content: none"
  echo "zone:"
  for z in "${ORDER[@]}"; do
    echo "  - domain: $z"
    echo "    file: \"$z.zone\""
  done
} > "$W/knot.conf"
knotc -c "$W/knot.conf" conf-check >/dev/null || fail "knot.conf invalid"
knotd -c "$W/knot.conf" -d </dev/null >>"$W/knot.stdout" 2>&1 || fail "knotd did not start"

# unbound: validating, only loopback, only our zones.
{
  echo "server:"
  echo "    interface: 127.0.0.1@$RES"
  echo "    port: $RES"
  echo "    outgoing-interface: 127.0.0.1"
  echo "    do-ip6: no"
  echo "    do-ip4: yes"
  echo "    do-udp: yes"
  echo "    do-tcp: yes"
  echo "    num-threads: 1"
  echo "    so-reuseport: no"
  echo "    access-control: 127.0.0.0/8 allow"
  echo "    username: \"\""
  echo "    chroot: \"\""
  echo "    directory: \"$W\""
  echo "    pidfile: \"$W/unbound.pid\""
  echo "    use-syslog: no"
  echo "    logfile: \"$W/unbound.log\""
  echo "    verbosity: 1"
  echo "    val-log-level: 2"
  echo "    module-config: \"validator iterator\""
  echo "    do-not-query-localhost: no"
  echo "    qname-minimisation: no"
  echo "    harden-dnssec-stripped: yes"
  echo "    aggressive-nsec: no"
  echo "    prefetch: no"
  echo "    trust-anchor-signaling: no"
  echo "    root-key-sentinel: no"
  echo "    local-zone: \"test.\" nodefault"
  for z in "${ORDER[@]}"; do echo "    local-zone: \"$z.\" nodefault"; done
  [[ -s $W/trust-anchors.ds ]] && echo "    trust-anchor-file: \"$W/trust-anchors.ds\""
  echo "remote-control:"
  echo "    control-enable: no"
  for z in "${ORDER[@]}"; do
    echo "stub-zone:"
    echo "    name: \"$z.\""
    echo "    stub-addr: 127.0.0.1@$AUTH"
  done
  echo "forward-zone:"
  echo "    name: \".\""
  echo "    forward-addr: 127.0.0.1@$AUTH"
} > "$W/unbound.conf"
unbound-checkconf "$W/unbound.conf" >/dev/null || fail "unbound.conf invalid: $(unbound-checkconf "$W/unbound.conf" 2>&1 | tail -2)"
unbound -c "$W/unbound.conf" </dev/null >>"$W/unbound.stdout" 2>&1 || fail "unbound did not start"

# Wait for both (bounded).
deadline=$((SECONDS + 30))
until dig +time=1 +tries=1 +norec @127.0.0.1 -p "$AUTH" plain.test SOA 2>/dev/null | grep -q 'status: NOERROR'; do
  (( SECONDS < deadline )) || fail "knotd not answering on 127.0.0.1:$AUTH"
  sleep 0.1
done
until dig +time=1 +tries=1 +dnssec @127.0.0.1 -p "$RES" signed.test SOA 2>/dev/null | grep -Eq 'flags:[ a-z]* ad[ ;]'; do
  (( SECONDS < deadline )) || fail "unbound not answering with AD on 127.0.0.1:$RES"
  sleep 0.1
done
echo "ready auth=$AUTH resolver=$RES"
