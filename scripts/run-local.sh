#!/usr/bin/env bash
# Runs a whole gateway on this machine: a private Redis (AOF, fsync always; data in var/local/redis),
# a local DNS (knot + validating unbound on loopback) that makes the demo domain shop.test resolvable,
# a self-signed TLS certificate, a demo customer with a login, every service, and a catch-all SMTP
# sink that stores delivered mail as .eml files in var/local/sink. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VAR=$ROOT/var/local
mkdir -p "$VAR/redis" "$VAR/sink" "$VAR/log" "$VAR/tls" "$VAR/dkim"

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
  "$ROOT/Tests/Fixtures/dns/stop-dns.sh" "$VAR/dns" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

redis-server "$ROOT/deploy/redis/redis-gateway.conf" --port 6390 --bind 127.0.0.1 --dir "$VAR/redis" \
  --daemonize no --logfile "$VAR/log/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
# Ready means PONG: while Redis loads its AOF it answers LOADING (seconds, or minutes for a large
# queue), and nothing may start before. Bounded by SMG_REDIS_START_TIMEOUT seconds (default 600).
redis_wait=${SMG_REDIS_START_TIMEOUT:-600}
redis_start=$SECONDS
told=""
while :; do
  reply=$(redis-cli -p 6390 ping 2>&1 || true)
  [ "$reply" = "PONG" ] && break
  if ! kill -0 "$redis_pid" 2>/dev/null; then
    echo "run-local: redis-server exited; see $VAR/log/redis.log" >&2
    tail -5 "$VAR/log/redis.log" >&2 || true
    exit 1
  fi
  waited=$((SECONDS - redis_start))
  if [ "$waited" -ge "$redis_wait" ]; then
    echo "run-local: Redis not ready after ${redis_wait}s (last reply: $reply); see $VAR/log/redis.log" >&2
    exit 1
  fi
  if [[ "$reply" == LOADING* ]] && { [ -z "$told" ] || [ $((waited % 10)) -eq 0 -a "$told" != "$waited" ]; }; then
    echo "run-local: Redis is loading its dataset (${waited}s so far, up to ${redis_wait}s)…"
    told=$waited
  fi
  sleep 0.2
done

# TLS certificate for STARTTLS / implicit TLS (self-signed; production uses a real one).
if [ ! -s "$VAR/tls/cert.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$VAR/tls/key.pem" -out "$VAR/tls/cert.pem" -days 365 \
    -subj "/CN=smg.local.test" -addext "subjectAltName=DNS:smg.local.test,IP:127.0.0.1" 2>/dev/null
fi

# Local DNS: the fixture's zones plus shop.test, answered by a validating unbound on 127.0.0.1:5354.
SMG_DNS_EXTRA_ZONES="$ROOT/deploy/local/dns" "$ROOT/Tests/Fixtures/dns/start-dns.sh" "$VAR/dns" 5353 5354 \
  >>"$VAR/log/dns.log" 2>&1 || { echo "run-local: DNS failed to start, see $VAR/log/dns.log" >&2; exit 1; }

# A demo customer and login (idempotent).
CTL=("$BIN/smgctl")
if ! "${CTL[@]}" customer show demo --redis redis://127.0.0.1:6390/0 >/dev/null 2>&1; then
  "${CTL[@]}" customer add demo --name "Demo shop" --network 127.0.0.0/8 --network ::1/128 --domain shop.test \
    --redis redis://127.0.0.1:6390/0 >/dev/null
  "${CTL[@]}" account add demo --customer demo --password demo-password-123 --redis redis://127.0.0.1:6390/0 >/dev/null
fi
# The first operator of the web interface: its password is made once and kept in var/local.
if ! "${CTL[@]}" operator list --redis redis://127.0.0.1:6390/0 2>/dev/null | grep -q '"name":"admin"'; then
  "${CTL[@]}" operator add admin --role admin --redis redis://127.0.0.1:6390/0 | sed -n 's/^password: \([^ ]*\).*/\1/p' \
    >"$VAR/admin-password.txt"
  chmod 600 "$VAR/admin-password.txt"
fi

# DKIM for the demo domain: a master key (mode 0600) and one RSA + one Ed25519 key, made once.
[ -s "$VAR/dkim/master.key" ] || "${CTL[@]}" dkim init-master-key --master-key-file "$VAR/dkim/master.key" >/dev/null
if ! "${CTL[@]}" dkim list shop.test --redis redis://127.0.0.1:6390/0 2>/dev/null | grep -q local; then
  for alg in rsa ed25519; do
    "${CTL[@]}" dkim keygen shop.test --selector "local-$alg" --alg "$alg" --master-key-file "$VAR/dkim/master.key" \
      --redis redis://127.0.0.1:6390/0 >>"$VAR/log/dkim-keys.txt"
  done
fi
# The gateway's own domain signs its NDRs (dkim.own_domain in deploy/local/signer.yaml).
if ! "${CTL[@]}" dkim list gateway.local --redis redis://127.0.0.1:6390/0 2>/dev/null | grep -q local; then
  "${CTL[@]}" dkim keygen gateway.local --selector local-ed25519 --alg ed25519 --master-key-file "$VAR/dkim/master.key" \
    --redis redis://127.0.0.1:6390/0 >>"$VAR/log/dkim-keys.txt"
fi

python3 "$ROOT/deploy/local/sink.py" --port 2526 --dir "$VAR/sink" >>"$VAR/log/sink.log" 2>&1 &
pids+=($!)

for svc in ingress scanner classifier signer egress-good egress-bad blacklist-monitor admin; do
  (cd "$ROOT" && exec "$BIN/smg-$svc" --config "$ROOT/deploy/local/$svc.yaml") >>"$VAR/log/$svc.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null && break; sleep 0.1; done

cat <<INFO

The Secure Mail Gateway runs locally.
  Submission:          127.0.0.1:2525 (STARTTLS) and 127.0.0.1:4650 (implicit TLS); login demo / demo-password-123
  Send a message:      swaks --server 127.0.0.1:2525 --tls --auth-user demo --auth-password demo-password-123 \\
                             --from you@shop.test --to someone@example.org
  Delivered mail:      $VAR/sink/*.eml
  Watch events live:   $BIN/smgctl tap --redis redis://127.0.0.1:6390/0
  One message's story: $BIN/smgctl trace <id from the 250 reply> --redis redis://127.0.0.1:6390/0
  Queues:              $BIN/smgctl queue --redis redis://127.0.0.1:6390/0
  Logs:                $VAR/log/
  Health/metrics:      http://127.0.0.1:9101/healthz … :9108/metrics
  DKIM records:        $VAR/log/dkim-keys.txt (shop.test, and gateway.local for NDRs)
  TLSA for the cert:   $BIN/smgctl tlsa --certificate $VAR/tls/cert.pem --host smg.local.test
  TLS policy:          $BIN/smgctl tls check signed.test --dns-server 127.0.0.1:5354 --dns-trusted --redis redis://127.0.0.1:6390/0
  Blocklist listings:  $BIN/smgctl blacklist status --redis redis://127.0.0.1:6390/0
  Web interface:       https://127.0.0.1:8443/ (self-signed certificate) — operator admin,
                       password $(cat "$VAR/admin-password.txt" 2>/dev/null || echo "see smgctl operator passwd admin")
Press Ctrl-C to stop.
INFO
wait -n "${pids[@]}" || true
echo "run-local: a process exited; see $VAR/log/" >&2
