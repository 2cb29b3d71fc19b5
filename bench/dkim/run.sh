#!/usr/bin/env bash
# bench/dkim/run.sh [seconds] — DKIM signatures/s of one signer thread vs `openssl speed` on the
# same machine (both single-threaded). Builds smg-dkim-bench in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${1:-3}
swift build -c release --product smg-dkim-bench 2>&1 | grep -E "error|Compiling|Build" | tail -1 >&2
BIN=$(swift build -c release --show-bin-path)/smg-dkim-bench
"$BIN" "$S"
ours=$("$BIN" "$S" --json)
ossl=$(openssl speed -seconds "$S" rsa2048 ed25519 2>/dev/null)
rsa=$(awk '/^rsa 2048 bits/ {print $6}' <<<"$ossl")
ed=$(awk '/^ *253 bits EdDSA/ {print $7}' <<<"$ossl")
python3 - "$ours" "$rsa" "$ed" <<'PY'
import json, sys
ours = json.loads(sys.argv[1]); rsa = float(sys.argv[2]); ed = float(sys.argv[3])
print(f"openssl speed: rsa2048 sign {rsa:,.0f}/s, ed25519 sign {ed:,.0f}/s ({__import__('subprocess').run(['openssl','version'],capture_output=True,text=True).stdout.strip()})")
for name, base in [("sign_rsa2048", rsa), ("sign_ed25519", ed), ("min_rsa2048", rsa), ("min_ed25519", ed)]:
    print(f"{name:<16} {ours[name]:>10,.0f}/s  = {ours[name] / base:5.2f} x openssl")
PY
