#!/usr/bin/env bash
# Installs what building, running and testing the gateway needs on Debian 12, if missing.
# Idempotent and quiet when everything is there. Needs root (or sudo) only when it installs.
#
#   scripts/install-deps.sh           what the build and the tests need
#   scripts/install-deps.sh --bench   that, plus what only bench/relay_compare.py needs (see the end)
set -euo pipefail

BENCH=0
[ "${1:-}" = "--bench" ] && BENCH=1

APT_PACKAGES=(
  pkg-config libzmq3-dev libhiredis-dev libssl-dev zlib1g-dev   # C libraries the gateway links
  openssl                                            # certificates for tests and the local run
  libclamav-dev libyara-dev                          # the scanner's two virus engines (ClamAV 1.4, YARA 4.2)
  clamav-testfiles                                   # real test samples for the scanner tests
  redis-server                                       # the system of record
  swaks libnet-ssleay-perl                           # a real SMTP client for tests (Net::SSLeay: its TLS)
  knot knot-dnsutils unbound ldnsutils bind9-dnsutils # the DNS test fixture (authoritative + validating resolver)
  python3 python3-pip                                # test peers (smtplib, aiosmtpd) and the local sink
  opendkim-tools                                     # opendkim-testmsg: an independent DKIM verifier for tests
  postfix                                            # smtp-sink / smtp-source: real SMTP peers for tests and bench/
  rspamd                                             # the classifier's optional backend, started by its tests
  chromium chromium-driver fonts-liberation          # headless browser tests of smg-admin (selenium drives chromedriver)
  prometheus prometheus-redis-exporter               # promtool checks deploy/prometheus; redis_exporter's metrics for its rules
  supervisor                                         # its own parser reads deploy/supervisord/smg.conf (test_deploy.py)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install-deps: installing apt packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Postfix is wanted only for its smtp-sink and smtp-source tools: install it unconfigured, so no
  # MTA starts on port 25 of this machine.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # rspamd is wanted only as a program the tests start on a private port (Tests/Fixtures/rspamd):
  # its system service stays off.
  if [[ " ${missing[*]} " == *" rspamd "* ]] && command -v systemctl >/dev/null; then
    $SUDO systemctl disable --now rspamd >/dev/null 2>&1 || true
  fi
  # The same for Prometheus and redis_exporter: the tests run promtool and start the exporter themselves.
  # supervisor likewise: only its configuration parser is used (test_deploy.py), no supervisord.
  for svc in prometheus prometheus-redis-exporter supervisor; do
    if [[ " ${missing[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null; then
      $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi

# Python test peers: aiosmtpd (SMTP sink), redis (inspecting the store), pytest (integration tests),
# dkimpy + pynacl (an independent DKIM verifier, RSA and Ed25519), jsonschema + pyyaml (smg-admin's
# answers checked against its openapi.yaml), requests (smg-admin's JSON API over HTTPS), selenium
# (drives the chromium-driver above; never lets Selenium Manager fetch a driver: the tests name it).
PY_PACKAGES=(aiosmtpd redis pytest dkimpy pynacl jsonschema pyyaml requests selenium)
if ! python3 -c "import aiosmtpd, redis, pytest, dkim, nacl, jsonschema, yaml, requests, selenium" 2>/dev/null; then
  echo "install-deps: installing Python packages ${PY_PACKAGES[*]}" >&2
  python3 -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${PY_PACKAGES[@]}"
fi

# ---- optional: benchmark-only tools (bench/relay_compare.py), with --bench -------------------------
# opendkim: the OpenDKIM milter, the signing peer next to Postfix (only its binary is used: the bench
# writes its own configuration to a temporary folder and runs it in the foreground; the package's
# service is not needed). matplotlib: the bench's plot.
if ((BENCH)); then
  if ! dpkg-query -W -f='${Status}' opendkim 2>/dev/null | grep -q "install ok installed"; then
    echo "install-deps: installing apt package opendkim (bench)" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends opendkim >/dev/null
  fi
  if ! python3 -c "import matplotlib" 2>/dev/null; then
    echo "install-deps: installing Python package matplotlib (bench)" >&2
    python3 -m pip install --quiet --disable-pip-version-check matplotlib 2>/dev/null \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages matplotlib
  fi
fi

command -v swift >/dev/null || { echo "install-deps: swift is not on PATH (Swift 6.1 or newer is needed)" >&2; exit 1; }
