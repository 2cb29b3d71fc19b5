#!/usr/bin/env bash
# Runs a whole gateway on this machine: a private Redis (AOF, fsync always; data in var/local/redis),
# every service, and a catch-all SMTP sink that stores delivered mail as .eml files in var/local/sink.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VAR=$ROOT/var/local
mkdir -p "$VAR/redis" "$VAR/sink" "$VAR/log"

scripts/install-deps.sh
echo "run-local: building (first build takes a few minutes)…"
swift build -c release 2>&1 | grep -vE "^\[[0-9]+/[0-9]+\] |prohibited flag"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "run-local: build failed" >&2; exit 1; }
BIN=$(swift build -c release --show-bin-path)

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "run-local: stopping…"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

redis-server "$ROOT/deploy/redis/redis-gateway.conf" --port 6390 --bind 127.0.0.1 --dir "$VAR/redis" \
  --daemonize no --logfile "$VAR/log/redis.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p 6390 ping >/dev/null 2>&1 && break; sleep 0.1; done

python3 "$ROOT/deploy/local/sink.py" --port 2526 --dir "$VAR/sink" >>"$VAR/log/sink.log" 2>&1 &
pids+=($!)

for svc in ingress scanner classifier signer egress-good egress-bad; do
  "$BIN/smg-$svc" --config "$ROOT/deploy/local/$svc.yaml" >>"$VAR/log/$svc.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null && break; sleep 0.1; done

cat <<INFO

The Secure Mail Gateway runs locally.
  Send mail to:        127.0.0.1:2525   e.g.  swaks --server 127.0.0.1:2525 --to someone@example.org
  Delivered mail:      $VAR/sink/*.eml
  Watch events live:   $BIN/smgctl tap --redis redis://127.0.0.1:6390/0
  One message's story: $BIN/smgctl trace <id from the 250 reply> --redis redis://127.0.0.1:6390/0
  Queues:              $BIN/smgctl queue --redis redis://127.0.0.1:6390/0
  Logs:                $VAR/log/
  Health/metrics:      http://127.0.0.1:9101/healthz … :9106/metrics
Press Ctrl-C to stop.
INFO
wait -n "${pids[@]}" || true
echo "run-local: a process exited; see $VAR/log/" >&2
