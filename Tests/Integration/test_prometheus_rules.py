"""Monitoring (issue 17): deploy/prometheus/ is valid for promtool, its alert rules fire on
synthetic series (smg-alerts.test.yml), and every metric and label value the rules read really
exists — in the /metrics of the real processes (smg_*) and of the real redis_exporter (redis_*)
scraping a real primary with a real replica."""
import re
import shutil
import subprocess
import time

import pytest
import yaml

from harness import ROOT, RedisServer, free_port, scrape, send, make_message, wait_until

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "smg-alerts.yml"
# Labels Prometheus adds to every target (scrape config), not the exporters.
TARGET_LABELS = {"job", "instance", "site"}


def promtool(*args):
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/install-deps.sh installs it (Debian package prometheus)"
    out = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", "smg-alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "smg-alerts.test.yml")


def rules():
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


SELECTOR = re.compile(r"(?<![\w:.])((?:smg|redis)_[A-Za-z0-9_]+)(?![\w:])\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def referenced(prefix: str):
    """{metric name: [(label, op, value), …]} of every `prefix…` metric the rules' expressions read
    (recording rules' own names, level:metric:operation, are not metrics of a process), and the
    names the annotations tell operators to look at."""
    out = {}
    for rule in rules():
        for m in SELECTOR.finditer(rule["expr"]):
            if m.group(1).startswith(prefix):
                out.setdefault(m.group(1), []).extend(MATCHER.findall(m.group(2) or ""))
        for text in rule.get("annotations", {}).values():
            for m in SELECTOR.finditer(text):
                if m.group(1).startswith(prefix):
                    out.setdefault(m.group(1), [])
    return out


def assert_exposed(wanted: dict, samples: list):
    """Every name in `wanted` has a sample, and for every `=` / `=~` matcher on a label the
    exporter sets, a sample with a matching value."""
    names = {n for n, _, _ in samples}
    missing = sorted(set(wanted) - names)
    assert not missing, f"metrics the rules read that no process exposes: {missing}"
    for name, matchers in wanted.items():
        for label, op, value in matchers:
            if label in TARGET_LABELS or op not in ("=", "=~"):
                continue
            values = {l.get(label) for n, l, _ in samples if n == name}
            ok = value in values if op == "=" else any(v is not None and re.fullmatch(value, v) for v in values)
            assert ok, f'{name}{{{label}{op}"{value}"}}: the exposed values of {label} are {sorted(map(str, values))}'


def test_every_smg_metric_in_the_rules_exists_in_the_processes_and_delivery_outcomes_are_counted(gateway, sink):
    gateway.start_all()
    gateway.start("smg-blacklist-monitor")
    wanted = referenced("smg_")
    assert {"smg_pending_overdue_seconds", "smg_stage_redriven_total", "smg_delivery_recipients_total",
            "smg_blacklist_listed_addresses", "smg_braked_accounts"} <= set(wanted), wanted

    # Before any mail: every metric the rules read is there already (counters at 0), so rates and
    # ratios are defined from the first scrape and a missing series never hides an alert.
    wait_until(lambda: len(gateway.http_endpoints()) == 7, 20, what="seven processes serving /metrics")
    before = gateway.metrics()
    assert_exposed(wanted, before)
    for lane in ("good", "bad"):
        for outcome in ("delivered", "deferred", "postponed", "bounced"):
            assert any(n == "smg_delivery_recipients_total" and l == {"lane": lane, "outcome": outcome} and v == 0
                       for n, l, v in before), (lane, outcome)
    assert gateway.metric("smg_braked_accounts") == 0
    assert gateway.metric("smg_blacklist_listed_addresses", lane="good") == 0

    # One message, three recipients: the sink takes one, refuses one (550) and defers one (451,
    # every time; retried on the 1s,2s schedule). Counted once their outcome is recorded: one
    # delivered, one bounced (its NDR waits until the message is done), a deferral per attempt.
    send(gateway.ingress_port, make_message("outcomes"), rcpts=("ok@dest.example", "reject-me@dest.example",
                                                                 "later-me@dest.example"))
    wait_until(lambda: gateway.metric("smg_delivery_recipients_total", lane="good", outcome="deferred") >= 2, 30,
               interval=0.2, what="two deferred attempts counted")
    assert gateway.metric("smg_delivery_recipients_total", lane="good", outcome="delivered") == 1
    assert gateway.metric("smg_delivery_recipients_total", lane="good", outcome="bounced") == 1
    assert gateway.metric("smg_delivery_recipients_total", lane="bad") == 0
    assert gateway.metric("smg_delivery_recipients_total", outcome="postponed") == 0
    assert_exposed(wanted, gateway.metrics())


class RedisExporter:
    """prometheus-redis-exporter (Debian) for one Redis, on a free loopback port."""

    def __init__(self, workdir, redis_port):
        exe = shutil.which("prometheus-redis-exporter")
        assert exe, "prometheus-redis-exporter is missing: scripts/install-deps.sh installs it"
        self.port = free_port()
        self.log = open(workdir / f"redis-exporter-{redis_port}.log", "ab")
        self.proc = subprocess.Popen([exe, "-redis.addr", f"redis://127.0.0.1:{redis_port}",
                                      "-web.listen-address", f"127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)

    def samples(self):
        try:
            return scrape(f"http://127.0.0.1:{self.port}")
        except OSError:
            return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def exporters(workdir):
    started = []

    def start(redis_port):
        e = RedisExporter(workdir, redis_port)
        started.append(e)
        return e
    yield start
    for e in started:
        e.stop()


def test_every_redis_metric_in_the_rules_exists_in_redis_exporter(workdir, redis_server, exporters):
    replica = RedisServer(workdir / "replica")
    try:
        replica.client().replicaof("127.0.0.1", redis_server.port)
        primary_exporter, replica_exporter = exporters(redis_server.port), exporters(replica.port)

        def value(samples, name):
            return next((v for n, _, v in samples or [] if n == name), None)

        def replicating():
            p, r = primary_exporter.samples(), replica_exporter.samples()
            return (p, r) if value(p, "redis_connected_slaves") == 1 and value(r, "redis_master_link_up") == 1 else None
        primary, replicated = wait_until(replicating, 30, interval=0.5, what="the replica linked, seen by both exporters")
        wanted = referenced("redis_")
        assert {"redis_up", "redis_instance_info", "redis_connected_slaves", "redis_master_link_up",
                "redis_connected_slave_lag_seconds"} <= set(wanted), wanted
        assert_exposed(wanted, primary + replicated)
        roles = {l["role"] for n, l, _ in primary + replicated if n == "redis_instance_info"}
        assert roles == {"master", "slave"}, roles

        # The replica goes away: the primary's exporter sees no replica, the replica's no Redis.
        replica.kill()
        time.sleep(0.5)
        wait_until(lambda: value(primary_exporter.samples(), "redis_connected_slaves") == 0, 30, interval=0.5,
                   what="the primary without its replica")
        assert value(replica_exporter.samples(), "redis_up") == 0
    finally:
        replica.stop()
