#!/usr/bin/env bash
# start-rspamd.sh <workdir> <port> [<controller-port> [<proxy-port>]]
#
# Starts a real rspamd (Debian package "rspamd", 3.4) for tests, on 127.0.0.1 only:
#   normal worker (HTTP scanning: /checkv2, /ping, /symbols ...) on 127.0.0.1:<port>;
#   controller worker (web UI / learn / stat, password "q1") only if <controller-port> is given
#     (pass "" to skip it and still give a proxy port);
#   proxy worker (milter mode, upstream = the normal worker) only if <proxy-port> is given.
# Stock rules from /etc/rspamd plus the overrides in conf/ next to this script (copied to
# <workdir>/conf and used as $LOCAL_CONFDIR): no Redis, every module that needs DNS, Redis or
# the Internet switched off, rspamd's resolver pointed at 127.0.0.1:1 (nothing there).
# Everything lives under <workdir> (created if missing): conf/, db/, run/, rspamd.conf
# (generated), rspamd.log, rspamd.stdout, rspamd.pid -- except the Hyperscan cache (below).
# Waits (at most $SMG_RSPAMD_TIMEOUT s, default 30) until GET /ping answers "pong", then prints
# "ready pid=<pid> port=<port> ... startup_ms=<ms>". Non-zero exit (daemon stopped, log tail on
# stderr) on any failure. Stop with stop-rspamd.sh <workdir>.
#
# Environment (all optional):
#   SMG_RSPAMD_EXTRA_CONF  directory whose contents (local.d/, override.d/, rspamd.conf.local,
#                          rspamd.conf.local.override, maps ...) are copied over conf/ -- per-test
#                          settings, actions, multimap rules ...
#   SMG_RSPAMD_ENABLE      module names (space/comma separated) to take out of our
#                          rspamd.conf.local.override, i.e. back to stock + local.d/override.d
#                          (e.g. "multimap" with your own override.d/multimap.conf).
#   SMG_RSPAMD_DNS         resolver for rspamd, ip:port (default 127.0.0.1:1: nothing there, each
#                          lookup fails after 0.3 s), e.g. the DNS fixture's resolver port.
#   SMG_RSPAMD_CACHE       Hyperscan cache directory shared between runs (default
#                          /var/tmp/smg-rspamd-cache-<user>; "none" = <workdir>/db). A cold cache
#                          costs ~14 s of startup (TLD matcher compile, before /ping answers) plus
#                          ~5 s of background CPU (regexp DB); warm, startup is < 1 s.
#   SMG_RSPAMD_USER        when run as root: user for the workers (e.g. _rspamd; its primary group
#                          too). Default: stay root with --insecure, because test temp dirs (0700)
#                          are usually not reachable by another user.
#   SMG_RSPAMD_TIMEOUT     seconds to wait for /ping (default 30; 90 when the cache is cold).
set -euo pipefail

if [[ $# -lt 2 || $# -gt 4 ]]; then
  echo "usage: $0 <workdir> <port> [<controller-port> [<proxy-port>]]" >&2; exit 2
fi
W=$1; PORT=$2; CPORT=${3:-}; PPORT=${4:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ports=("$PORT")
[[ -n $CPORT ]] && ports+=("$CPORT")
[[ -n $PPORT ]] && ports+=("$PPORT")
for p in "${ports[@]}"; do
  [[ $p =~ ^[0-9]+$ ]] && (( p >= 1024 && p <= 65535 )) || { echo "bad port $p (need 1024..65535)" >&2; exit 2; }
done
[[ $(printf '%s\n' "${ports[@]}" | sort -u | wc -l) -eq ${#ports[@]} ]] || { echo "ports must differ" >&2; exit 2; }
for tool in rspamd curl setsid; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install rspamd curl)" >&2; exit 3; }
done
TIMEOUT=${SMG_RSPAMD_TIMEOUT:-30}
DNS=${SMG_RSPAMD_DNS:-127.0.0.1:1}
[[ $DNS =~ ^[0-9.]+:[0-9]+$ ]] || { echo "SMG_RSPAMD_DNS must be ip:port" >&2; exit 2; }

mkdir -p "$W"
W=$(cd "$W" && pwd)
"$HERE/stop-rspamd.sh" "$W" >/dev/null 2>&1 || true
rm -rf "$W/conf" "$W/run"
mkdir -p "$W/db" "$W/run"
cp -R "$HERE/conf" "$W/conf"
if [[ -n ${SMG_RSPAMD_EXTRA_CONF:-} ]]; then
  [[ -d $SMG_RSPAMD_EXTRA_CONF ]] || { echo "SMG_RSPAMD_EXTRA_CONF=$SMG_RSPAMD_EXTRA_CONF is not a directory" >&2; exit 2; }
  cp -R "$SMG_RSPAMD_EXTRA_CONF/." "$W/conf/"
fi
ENABLE=${SMG_RSPAMD_ENABLE:-}
for mod in ${ENABLE//,/ }; do
  [[ $mod =~ ^[a-z0-9_]+$ ]] || { echo "bad module name '$mod' in SMG_RSPAMD_ENABLE" >&2; exit 2; }
  grep -q "^$mod { enabled = false; }" "$W/conf/rspamd.conf.local.override" \
    || { echo "SMG_RSPAMD_ENABLE: $mod is not disabled by the fixture" >&2; exit 2; }
  sed -i "/^$mod { enabled = false; }/d" "$W/conf/rspamd.conf.local.override"
done
: > "$W/rspamd.log"
: > "$W/rspamd.stdout"

fail() {
  echo "start-rspamd: $*" >&2
  "$HERE/stop-rspamd.sh" "$W" >/dev/null 2>&1 || true
  for f in rspamd.stdout rspamd.log; do
    [[ -s $W/$f ]] && { echo "--- $W/$f" >&2; tail -25 "$W/$f" >&2; }
  done
  exit 1
}

# Somebody else on our port would make the /ping check below lie.
if curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/ping"; then
  fail "something already answers on 127.0.0.1:$PORT"
fi

# Top-level config: the stock common rules, our own worker list (the stock rspamd.conf would
# bind 11332-11334 on localhost).
{
  echo '.include "$CONFDIR/common.conf"'
  echo 'options {'
  echo '  pidfile = "$RUNDIR/rspamd.pid";'
  echo '  .include "$CONFDIR/options.inc"'
  echo '  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"'
  echo '  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"'
  echo '}'
  echo 'logging {'
  echo '  type = "file";'
  echo '  filename = "$LOGDIR/rspamd.log";'
  echo '  .include "$CONFDIR/logging.inc"'
  echo '  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/logging.inc"'
  echo '  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/logging.inc"'
  echo '}'
  echo 'worker "normal" {'
  echo "  bind_socket = \"127.0.0.1:$PORT\";"
  echo '  .include "$CONFDIR/worker-normal.inc"'
  echo '  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/worker-normal.inc"'
  echo '  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/worker-normal.inc"'
  echo '}'
  if [[ -n $CPORT ]]; then
    echo 'worker "controller" {'
    echo "  bind_socket = \"127.0.0.1:$CPORT\";"
    echo '  .include "$CONFDIR/worker-controller.inc"'
    echo '  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/worker-controller.inc"'
    echo '  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/worker-controller.inc"'
    echo '}'
  fi
  if [[ -n $PPORT ]]; then
    # Not the stock worker-proxy.inc: its upstream is "localhost" (= port 11333).
    echo 'worker "rspamd_proxy" {'
    echo "  bind_socket = \"127.0.0.1:$PPORT\";"
    echo '  milter = yes;'
    echo '  timeout = 120s;'
    echo '  count = 1;'
    echo '  max_retries = 5;'
    echo '  discard_on_reject = false;'
    echo '  quarantine_on_reject = false;'
    echo '  spam_header = "X-Spam";'
    echo '  reject_message = "Spam message rejected";'
    echo "  upstream \"local\" { default = yes; hosts = \"127.0.0.1:$PORT\"; }"
    echo '  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/worker-proxy.inc"'
    echo '  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/worker-proxy.inc"'
    echo '}'
  fi
} > "$W/rspamd.conf"

# Who runs the workers (they write db/ and the Hyperscan cache).
PRIV=()
RUNAS=$(id -un)
if [[ $(id -u) == 0 ]]; then
  if [[ -n ${SMG_RSPAMD_USER:-} ]]; then
    grp=$(id -gn "$SMG_RSPAMD_USER") || fail "no user $SMG_RSPAMD_USER"
    chown -R "$SMG_RSPAMD_USER:$grp" "$W"
    PRIV=(-u "$SMG_RSPAMD_USER" -g "$grp")
    RUNAS=$SMG_RSPAMD_USER
  else
    PRIV=(--insecure)   # rspamd refuses to run as root otherwise
  fi
fi

# Shared Hyperscan cache (file names are content hashes; rspamd writes temp file + rename).
CACHE=${SMG_RSPAMD_CACHE:-/var/tmp/smg-rspamd-cache-$RUNAS}
if [[ $CACHE == none ]]; then
  CACHE=$W/db
else
  if [[ ! -e $CACHE ]]; then
    mkdir -p -m 0700 "$CACHE" 2>/dev/null || true
    [[ $RUNAS != $(id -un) ]] && chown "$RUNAS:" "$CACHE" 2>/dev/null
  fi
  if [[ -L $CACHE || ! -d $CACHE || $(stat -c %U "$CACHE") != "$RUNAS" ]]; then
    echo "start-rspamd: cache $CACHE unusable (need a directory owned by $RUNAS); using $W/db" >&2
    CACHE=$W/db
  fi
fi

# Cold cache: the TLD matcher compile alone takes ~14 s on an idle core (more under load).
if [[ -z ${SMG_RSPAMD_TIMEOUT:-} ]] && ! compgen -G "$CACHE/*.hsmp" >/dev/null; then
  TIMEOUT=90
  echo "start-rspamd: Hyperscan cache $CACHE is cold; first start takes ~15 s or more" >&2
fi

VARS=(--var "LOCAL_CONFDIR=$W/conf" --var "DBDIR=$W/db" --var "RUNDIR=$W/run" --var "LOGDIR=$W"
      --var "SMG_RSPAMD_DNS=$DNS" --var "SMG_RSPAMD_HS_CACHE=$CACHE")

# Foreground mode (-f) in its own session: $! is the rspamd main process (stop-rspamd.sh
# recognises it by its stdout being our rspamd.stdout); errors before logging is set up land
# in rspamd.stdout.
t0=$(date +%s%N)
setsid rspamd -f -c "$W/rspamd.conf" "${PRIV[@]}" "${VARS[@]}" </dev/null >>"$W/rspamd.stdout" 2>&1 &
PID=$!
echo "$PID" > "$W/rspamd.pid"

deadline=$((SECONDS + TIMEOUT))
until [[ $(curl -s --max-time 1 "http://127.0.0.1:$PORT/ping" 2>/dev/null) == pong* ]]; do
  kill -0 "$PID" 2>/dev/null || fail "rspamd exited during startup"
  (( SECONDS < deadline )) || fail "no pong from 127.0.0.1:$PORT within ${TIMEOUT}s"
  sleep 0.1
done
if [[ -n $CPORT ]]; then
  until [[ $(curl -s --max-time 1 "http://127.0.0.1:$CPORT/ping" 2>/dev/null) == pong* ]]; do
    (( SECONDS < deadline )) || fail "controller not answering on 127.0.0.1:$CPORT"
    sleep 0.1
  done
fi
if [[ -n $PPORT ]]; then
  until (exec 3<>"/dev/tcp/127.0.0.1/$PPORT") 2>/dev/null; do
    (( SECONDS < deadline )) || fail "proxy not listening on 127.0.0.1:$PPORT"
    sleep 0.1
  done
fi
kill -0 "$PID" 2>/dev/null || fail "rspamd exited during startup"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "ready pid=$PID port=$PORT${CPORT:+ controller=$CPORT}${PPORT:+ proxy=$PPORT} startup_ms=$ms"
