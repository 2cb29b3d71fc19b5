#!/usr/bin/env bash
# bench/redis/run.sh [rounds] — per-command cost of Redis over TLS (the hiredis ↔ socketpair ↔ NIOSSL
# relay) against plain TCP, on loopback. Makes a throwaway CA and server certificate with openssl,
# starts two private redis-servers (no persistence; one plain, one TLS-only), builds
# smg-redis-bench in release mode and runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-20000}
DIR=$(mktemp -d)
trap 'kill $P1 $P2 2>/dev/null || true; rm -rf "$DIR"' EXIT
(
  cd "$DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 \
    -subj '/CN=bench CA' -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign' 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj '/CN=localhost' 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile ext.cnf 2>/dev/null
)
PLAIN=$((20000 + RANDOM % 10000)); TLS=$((PLAIN + 1))
common=(--bind 127.0.0.1 --save "" --appendonly no --daemonize no --logfile "$DIR/redis.log")
redis-server --port "$PLAIN" "${common[@]}" & P1=$!
redis-server --port 0 --tls-port "$TLS" --tls-cert-file "$DIR/server.pem" --tls-key-file "$DIR/server.key" \
  --tls-ca-cert-file "$DIR/ca.pem" --tls-auth-clients no "${common[@]}" & P2=$!
swift build -c release --product smg-redis-bench 2>&1 | grep -E "error|Compiling|Build" | tail -1 >&2
sleep 0.5
"$(swift build -c release --show-bin-path)/smg-redis-bench" "redis://127.0.0.1:$PLAIN/0" "rediss://127.0.0.1:$TLS/0" \
  "$DIR/ca.pem" "$ROUNDS"
