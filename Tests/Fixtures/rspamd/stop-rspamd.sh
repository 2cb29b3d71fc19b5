#!/usr/bin/env bash
# stop-rspamd.sh <workdir>: stops the rspamd started by start-rspamd.sh in <workdir>, found by
# its pidfile only (SIGTERM to the main process, which stops its workers), waiting at most 5 s
# before SIGKILL to the main process and to any of its workers still alive.
# Leaves <workdir> (logs, db) in place.
set -uo pipefail
if [[ $# -ne 1 ]]; then echo "usage: $0 <workdir>" >&2; exit 2; fi
W=$(cd "$1" 2>/dev/null && pwd) || exit 0
pidfile=$W/rspamd.pid
[[ -f $pidfile ]] || exit 0
pid=$(cat "$pidfile" 2>/dev/null)
[[ $pid =~ ^[0-9]+$ ]] || { rm -f "$pidfile"; exit 0; }
# Only signal the process if it is really ours: rspamd rewrites its command line
# ("rspamd: main process"), so check that its stdout is this workdir's rspamd.stdout.
if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == rspamd && \
      $(readlink "/proc/$pid/fd/1" 2>/dev/null) == "$W/rspamd.stdout" ]]; then
  kids=$(pgrep -P "$pid" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  for k in $kids; do
    [[ $(cat "/proc/$k/comm" 2>/dev/null) == rspamd ]] && kill -KILL "$k" 2>/dev/null
  done
fi
rm -f "$pidfile"
exit 0
