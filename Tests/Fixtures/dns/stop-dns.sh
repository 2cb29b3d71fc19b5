#!/usr/bin/env bash
# stop-dns.sh <workdir>: stops the knotd and unbound started by start-dns.sh in <workdir>
# (by their pidfiles only), waiting at most 5 s each before SIGKILL. Leaves <workdir> in place.
set -uo pipefail
if [[ $# -ne 1 ]]; then echo "usage: $0 <workdir>" >&2; exit 2; fi
W=$1
stop() {
  local pidfile=$1 name=$2 pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile" 2>/dev/null)
  [[ $pid =~ ^[0-9]+$ ]] || { rm -f "$pidfile"; return 0; }
  # Only signal the process if it is really ours (same binary name).
  if [[ -r /proc/$pid/comm ]] && [[ $(cat /proc/$pid/comm) == "$name"* ]]; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}
stop "$W/unbound.pid" unbound
stop "$W/run/knot.pid" knotd
exit 0
