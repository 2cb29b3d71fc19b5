#!/usr/bin/env bash
# Runs every test: module tests (swift test: real Redis, ZeroMQ, SMTP on loopback), then the
# integration tests (pytest: the real service processes, real SMTP peers, real Redis).
# Extra arguments go to pytest (e.g. -k kill).
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh || exit 1

echo "== build"
swift build --build-tests 2>&1 | grep -vE "^\[[0-9]+/[0-9]+\] |prohibited flag"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "build failed" >&2; exit 1; }

echo "== swift test"
log=$(mktemp)
swift test --skip-build 2>&1 | grep -vE "^Test Case .* (started|passed)" | tee "$log"
swift_status=${PIPESTATUS[0]}
swift_line=$(grep -E "^\s*Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1)
swift_total=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$swift_line"); swift_total=${swift_total:-0}
swift_failed=$(sed -E 's/.*with ([0-9]+) failures?.*/\1/' <<<"$swift_line"); swift_failed=${swift_failed:-0}

echo "== integration tests (pytest)"
export SMG_BIN_DIR="$(swift build --show-bin-path)"
python3 -m pytest -q -p no:cacheprovider Tests/Integration "$@" 2>&1 | tee "$log"
pytest_status=${PIPESTATUS[0]}
py_passed=$(grep -oE "[0-9]+ passed" "$log" | tail -1 | cut -d' ' -f1); py_passed=${py_passed:-0}
py_failed=$(grep -oE "[0-9]+ (failed|error)" "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"

passed=$((swift_total - swift_failed + py_passed))
failed=$((swift_failed + py_failed))
if [ "$swift_status" -ne 0 ] || [ "$pytest_status" -ne 0 ]; then
  failed=$((failed > 0 ? failed : 1))
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
