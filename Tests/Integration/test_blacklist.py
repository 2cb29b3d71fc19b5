"""The blacklist monitor (issue 15, R19) with the real processes: egress announces its pools, two
monitor instances share one daily run, a fake DNS blocklist (zones-blacklist/dnsbl.test, served by
the knot + unbound fixture) lists one good and one bad address, another zone refuses every query.

Addresses: the good pool is 127.0.0.2 (listed) and 127.0.0.4 (clean), the bad pool 127.0.0.3
(listed). Every mail leaves through the harness's static route to the sink, so notices to the
operators arrive there."""
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from harness import wait_until

DNS_EXTRA_ZONES = Path(__file__).resolve().parent / "zones-blacklist"

GOOD_POOL = "127.0.0.2=good-a.test;127.0.0.4=good-b.test"
BAD_POOL = "127.0.0.3=bad-a.test"
OPS = "ops@gateway.test"
MONITOR = "smg-blacklist-monitor"


def events(redis_server, gateway, *types):
    out = []
    for _, fields in redis_server.client().xrange(f"{gateway.prefix}events"):
        e = json.loads(fields[b"e"])
        if not types or e["type"] in types:
            out.append(e)
    return out


def monitor_env(dns, **more):
    env = {"SMG_DNS_SERVERS": dns, "SMG_DNS_TIMEOUT": "1s", "SMG_BLACKLIST_RUN_AT": "00:00", "SMG_BLACKLIST_TIME_ZONE": "UTC",
           "SMG_BLACKLIST_ZONES": "dnsbl.test|https://dnsbl.test/remove,refusing.test", "SMG_BLACKLIST_NOTIFY": OPS}
    env.update(more)
    return env


def start_pipeline(gateway):
    for service in gateway.SERVICES:
        extra = {}
        if service == "smg-egress-good":
            extra["SMG_EGRESS_POOL"] = GOOD_POOL
        if service == "smg-egress-bad":
            extra["SMG_EGRESS_POOL"] = BAD_POOL
        gateway.start(service, **extra)
    gateway.wait_ready()
    # The monitor checks what the egress processes announce.
    client = gateway.redis.client()
    wait_until(lambda: client.hlen(f"{gateway.prefix}pool:members") == 3, 20, what="the pools announced")


def notices(sink, word):
    return [raw for mail_from, rcpts, raw in sink.snapshot() if OPS in rcpts and word.encode() in raw]


def test_daily_run_once_across_two_instances_lists_drains_notifies_and_clears(gateway, redis_server, sink, dns):
    start_pipeline(gateway)
    members = {k.decode(): json.loads(v) for k, v in redis_server.client().hgetall(f"{gateway.prefix}pool:members").items()}
    assert {a: m["lane"] for a, m in members.items()} == {"127.0.0.2": "good", "127.0.0.4": "good", "127.0.0.3": "bad"}
    # Two instances (two sites, say); 00:00 UTC has passed today: the missed run happens at once.
    env = monitor_env(dns, SMG_BLACKLIST_RECHECK="2s")
    gateway.start(MONITOR, name="monitor-a", **env)
    gateway.start(MONITOR, name="monitor-b", **env)
    wait_until(lambda: events(redis_server, gateway, "blacklist.run"), 30, what="a blacklist run")
    time.sleep(6)  # both instances have polled again meanwhile
    daily = [e for e in events(redis_server, gateway, "blacklist.run") if e["facts"]["kind"] == "daily"]
    assert len(daily) == 1, daily
    assert daily[0]["facts"]["addresses"] == 3 and daily[0]["facts"]["failures"] == 3, daily

    listed = {e["facts"]["address"]: e["facts"] for e in events(redis_server, gateway, "blacklist.listed")}
    assert set(listed) == {"127.0.0.2", "127.0.0.3"}, listed
    assert listed["127.0.0.2"]["zone"] == "dnsbl.test" and listed["127.0.0.2"]["code"] == "127.0.0.2"
    assert "spam trap hits" in listed["127.0.0.2"]["reason"]
    assert listed["127.0.0.2"]["delist_url"] == "https://dnsbl.test/remove"
    # The refusing zone is an error of the check for every address, never a listing.
    failed = events(redis_server, gateway, "blacklist.check_failed")
    assert {e["facts"]["zone"] for e in failed} == {"refusing.test"}
    assert {e["facts"]["address"] for e in failed} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}

    # Monitoring sees it: the listed gauges per pool, the failed checks, the time of the last run.
    def monitor_metrics():
        texts = [urllib.request.urlopen(e.decode() + "/metrics", timeout=5).read().decode()
                 for e in redis_server.client().hkeys(f"{gateway.prefix}registry:http")]
        return [t for t in texts if "smg_blacklist_last_run_timestamp_seconds" in t]
    texts = wait_until(monitor_metrics, 10, what="the monitor's metrics")
    assert any('smg_blacklist_listed{pool="good"} 1' in t and 'smg_blacklist_listed{pool="bad"} 1' in t for t in texts), texts
    assert any(re.search(r"smg_blacklist_check_failures_total [1-9]", t) for t in texts), texts
    # The gauges come from Redis: both instances report the listed addresses and the time of the
    # daily run, also the one that did not run it.
    assert len(texts) == 2
    for t in texts:
        assert 'smg_blacklist_listed_addresses{lane="good"} 1' in t and 'smg_blacklist_listed_addresses{lane="bad"} 1' in t, t
        ran = re.search(r'smg_blacklist_last_run_timestamp_seconds\{kind="daily"\} (\S+)', t)
        assert ran and abs(float(ran.group(1)) - time.time()) < 60, t

    # The listed good address is drained, the bad one keeps sending.
    drained = {json.loads(line)["address"]: json.loads(line) for line in gateway.smgctl("pool", "list").stdout.splitlines()}
    assert set(drained) == {"127.0.0.2"} and drained["127.0.0.2"]["by"] == "blacklist-monitor", drained
    # The operators hear of it (through the pipeline, from the good address that is still clean).
    wait_until(lambda: notices(sink, "Blacklisted"), 40, what="the listing notice at the sink")
    [notice] = notices(sink, "Blacklisted")
    assert b"127.0.0.2 (good pool) on dnsbl.test" in notice and b"https://dnsbl.test/remove" in notice

    status = gateway.smgctl("blacklist", "status")
    assert status.returncode == 0, status.stderr
    assert "127.0.0.2 (good) on dnsbl.test: open" in status.stdout and "https://dnsbl.test/remove" in status.stdout
    out = gateway.smgctl("blacklist", "requested", "127.0.0.2", "dnsbl.test", "--note", "ticket 4711", "--operator", "alice")
    assert out.returncode == 0, out.stderr
    status = json.loads([l for l in gateway.smgctl("blacklist", "status", "--json").stdout.splitlines()
                         if '"127.0.0.2"' in l][0])
    assert (status["state"], status["requestedBy"], status["note"]) == ("requested", "alice", "ticket 4711")
    bad = gateway.smgctl("blacklist", "requested", "127.0.0.4", "dnsbl.test")
    assert bad.returncode != 0 and "127.0.0.4" in bad.stderr

    # 127.0.0.4 had been listed (and drained by the monitor); the list has lifted it since: the
    # hourly recheck (2 s here) clears it, undrains it and says so.
    client = redis_server.client()
    client.hset(f"{gateway.prefix}blacklist:listings", "127.0.0.4 dnsbl.test", json.dumps({
        "address": "127.0.0.4", "lane": "good", "zone": "dnsbl.test", "code": "127.0.0.2", "meaning": "listed",
        "delistURL": "", "state": "open", "since": int(time.time()) - 86400, "checked": int(time.time()) - 3600}))
    client.hset(f"{gateway.prefix}pool:drained", "127.0.0.4",
                json.dumps({"reason": "listed on dnsbl.test", "by": "blacklist-monitor", "at": int(time.time() * 1000)}))
    wait_until(lambda: events(redis_server, gateway, "blacklist.cleared"), 30, what="the cleared listing")
    [cleared] = events(redis_server, gateway, "blacklist.cleared")
    assert cleared["facts"]["address"] == "127.0.0.4"
    wait_until(lambda: "127.0.0.4" not in gateway.smgctl("pool", "list").stdout, 10, what="127.0.0.4 undrained")
    assert "127.0.0.2" in gateway.smgctl("pool", "list").stdout, "still listed, still drained"
    wait_until(lambda: notices(sink, "lifted"), 40, what="the 'lifted' notice")
    assert len(notices(sink, "Blacklisted")) == 1, "no second listing notice for the same listings"


def test_on_demand_check_and_ipv6_nibbles(gateway, redis_server, dns):
    out = subprocess.run([str(gateway.bins / "smgctl"), "blacklist", "check", "--address", "127.0.0.3",
                          "--dns-server", dns, "--zones", "dnsbl.test", "--redis", gateway.redis.url, "--prefix", gateway.prefix],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "127.0.0.3 (good) dnsbl.test: LISTED 127.0.0.2" in out.stdout, out.stdout
    listed = events(redis_server, gateway, "blacklist.listed")
    assert [e["facts"]["address"] for e in listed] == ["127.0.0.3"]
    v6 = subprocess.run([str(gateway.bins / "smgctl"), "blacklist", "check", "--address", "2001:db8::25",
                         "--dns-server", dns, "--zones", "dnsbl.test", "--redis", gateway.redis.url, "--prefix", gateway.prefix],
                        capture_output=True, text=True, timeout=60)
    assert v6.returncode == 0 and "2001:db8::25 (good) dnsbl.test: clean" in v6.stdout, v6.stdout + v6.stderr
    bad = subprocess.run([str(gateway.bins / "smgctl"), "blacklist", "check", "--address", "not-an-ip",
                          "--redis", gateway.redis.url], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "--address" in bad.stderr


def test_configuration_errors_name_the_key(gateway, dns):
    for key, value in [("SMG_BLACKLIST_TIME_ZONE", "Mars/Olympus"), ("SMG_BLACKLIST_RUN_AT", "25:00"),
                       ("SMG_BLACKLIST_ZONES", "not a zone"), ("SMG_BLACKLIST_ADDRESSES", "green:127.0.0.2")]:
        env = gateway.env(monitor_env(dns, **{key: value}))
        out = subprocess.run([str(gateway.bins / MONITOR)], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 78, (key, out.returncode, out.stderr[-500:])
        name = key.removeprefix("SMG_").lower().replace("blacklist_", "blacklist.")
        assert name in out.stderr, (name, out.stderr[-500:])
