"""deploy/ works as shipped (issue 17 item 4).

- Every site × every service: the real binary with exactly the files smg-run passes
  (/etc/smg/site.yaml, /etc/smg/<service>.yaml, installed the way deploy/README.md says) passes
  --check-config; the only overrides are the CURVE key files this test makes.
- smg-run's port plan: every instance on one host gets its own fixed /metrics port, the plan's.
- smg@.service and smg.target pass `systemd-analyze verify`; deploy/supervisord/smg.conf is
  read by supervisord's own parser and runs smg-run for every service.
- The Redis and Sentinel files of the three sites, moved to loopback (only addresses, ports and
  paths rewritten), make a primary with two replicas and three Sentinels that know each other;
  the gateway's client reaches the primary through them as user smg, a real service started by
  smg-run is healthy, and killing the primary promotes a replica that the client follows.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import redis as redislib

from harness import ROOT, bin_dir, free_port, wait_until

DEPLOY = ROOT / "deploy"
LAUNCHER = DEPLOY / "bin" / "smg-run"
SITES = {"eu-de-01": "10.0.1.10", "eu-de-02": "10.0.2.10", "eu-de-03": "10.0.3.10"}
SERVICES = ["ingress", "scanner", "classifier", "signer", "egress-good", "egress-bad", "blacklist-monitor", "admin"]
SLOT = {service: i + 1 for i, service in enumerate(SERVICES)}
MASTER = "smg"


def plan_port(service: str, n: int) -> int:
    """The port plan of deploy/README.md and deploy/bin/smg-run."""
    return 9100 + 10 * (n - 1) + SLOT[service]


def service_file(site: str, service: str) -> Path:
    """The one file that becomes /etc/smg/<service>.yaml on `site`: the site's own if the site
    differs, else the generic one — never both."""
    own, generic = DEPLOY / "sites" / site / f"{service}.yaml", DEPLOY / "services" / f"{service}.yaml"
    assert own.exists() != generic.exists(), (service, site, "exactly one of", own, generic)
    return own if own.exists() else generic


def install_etc(target: Path, site: str) -> Path:
    """/etc/smg as deploy/README.md installs it: deploy/services/*.yaml, then the site's *.yaml."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted((DEPLOY / "services").glob("*.yaml")) + sorted((DEPLOY / "sites" / site).glob("*.yaml")):
        shutil.copy(path, target / path.name)
    return target


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    """A CurveZMQ keypair and authorized list, made as deploy/README.md says, for the
    bus.curve_* files site.yaml names (the only paths --check-config opens)."""
    d = tmp_path_factory.mktemp("curve")
    out = subprocess.run([str(bin_dir() / "smgctl"), "bus", "keygen", "--out", str(d / "bus.key")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    (d / "bus-authorized.keys").write_text("# test\n" + out.stdout)
    return {"SMG_BUS_CURVE_KEY_FILE": str(d / "bus.key"),
            "SMG_BUS_CURVE_AUTHORIZED_KEYS": str(d / "bus-authorized.keys")}


def check_config(service: str, etc: Path, env: dict) -> dict:
    out = subprocess.run([str(bin_dir() / f"smg-{service}"), "--config", str(etc / "site.yaml"),
                          "--config", str(etc / f"{service}.yaml"), "--check-config"],
                         capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env})
    assert out.returncode == 0, (service, etc, out.stderr)
    return dict(line.split(" = ", 1) for line in out.stdout.splitlines() if " = " in line)


def dry_run(instance: str, etc: Path, env: dict) -> tuple[dict, str]:
    out = subprocess.run(["sh", str(LAUNCHER), instance], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "SMG_RUN_DRY": "1", "SMG_RUN_CONFIG_DIR": str(etc),
                              "SMG_RUN_BIN_DIR": str(bin_dir()), **env})
    assert out.returncode == 0, (instance, out.stderr)
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("exec "), out.stdout
    return dict(line.split("=", 1) for line in lines[:-1]), lines[-1]


# ---- configuration: every site, every service -----------------------------------------------

def test_every_service_of_every_site_passes_check_config(tmp_path, curve):
    pools = {"egress-good": set(), "egress-bad": set()}
    for site, address in SITES.items():
        etc = install_etc(tmp_path / site, site)
        for service in SERVICES:
            assert (etc / f"{service}.yaml").read_text() == service_file(site, service).read_text()
            values = check_config(service, etc, curve)
            assert values["site"] == site
            assert values["store.accept_replicas"] == "1"
            assert values["redis.url"].startswith("redis+sentinel://smg:***@" + address + ":26379,"), values["redis.url"]
            assert values["bus.bind"] == f"tcp://{address}:*" and values["events.bind"] == f"tcp://{address}:*"
            assert values["http.listen"] == f"{address}:0"
            if service in pools:
                addresses = {entry.split("=")[0] for entry in values["egress.pool"].split(";")}
                assert addresses and not addresses & pools[service], (site, service, addresses)
                pools[service] |= addresses
            if service == "admin":
                assert values["admin.listen"] == f"{address}:8443"
    # Each site sends from its own addresses, and the two lanes never share one (R17).
    assert len(pools["egress-good"]) == 9 and len(pools["egress-bad"]) == 3
    assert not pools["egress-good"] & pools["egress-bad"]
    # Nothing in deploy/services or deploy/sites is left over (a file no service reads).
    names = {p.stem for p in (DEPLOY / "services").glob("*.yaml")}
    for site in SITES:
        names |= {p.stem for p in (DEPLOY / "sites" / site).glob("*.yaml")}
    assert names == set(SERVICES) | {"site"}, names
    assert sorted(p.name for p in (DEPLOY / "sites").iterdir()) == sorted(SITES)


def test_the_readme_covers_every_file_the_configs_name():
    """Every /etc/smg path a shipped config uses is one the walkthrough tells the operator to make."""
    readme = (DEPLOY / "README.md").read_text()
    files = list((DEPLOY / "services").glob("*.yaml")) + list((DEPLOY / "sites").glob("*/*.yaml"))
    paths = set()
    for path in files:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            paths |= set(re.findall(r"/etc/smg/[\w./-]+", line))
    assert len(paths) >= 8, paths
    missing = sorted(p for p in paths if p not in readme)
    assert not missing, missing


# ---- smg-run and the port plan ---------------------------------------------------------------

def test_launcher_gives_every_instance_its_own_planned_port(tmp_path, curve):
    for site, address in SITES.items():
        etc = install_etc(tmp_path / site, site)
        # A full host on one site (every slot of the plan); a busy host on the others.
        instances = [f"{s}-{n}" for s in SERVICES for n in range(1, 10)] if site == "eu-de-01" else \
            ["ingress-1", "scanner-1", "scanner-2", "scanner-3", "scanner-4", "classifier-1", "classifier-2",
             "signer-1", "signer-2", "egress-good-1", "egress-good-2", "egress-bad-1", "blacklist-monitor-1", "admin-1"]
        ports = {}
        for instance in instances:
            service, n = instance.rsplit("-", 1)
            env, command = dry_run(instance, etc, curve)
            assert command == f"exec {bin_dir()}/smg-{service} --config {etc}/site.yaml --config {etc}/{service}.yaml"
            assert env["SMG_HTTP_LISTEN"] == f"{address}:{plan_port(service, int(n))}", (instance, env)
            assert env["SMG_INSTANCE"].startswith(instance + "@")
            ports[instance] = env["SMG_HTTP_LISTEN"]
        assert len(set(ports.values())) == len(ports), ports
        # Not the node exporter's port, nor anything beyond the plan's block.
        assert all(9101 <= int(p.rsplit(":", 1)[1]) <= 9188 for p in ports.values())


def test_launcher_takes_the_instance_env_and_refuses_what_it_does_not_know(tmp_path, curve):
    etc = install_etc(tmp_path / "etc", "eu-de-02")
    (etc / "scanner-3.env").write_text("# this scanner only\nSMG_STAGE_CONCURRENCY=4\nSMG_HTTP_LISTEN=127.0.0.1:9999\n")
    env, _ = dry_run("scanner-3", etc, curve)
    assert env["SMG_STAGE_CONCURRENCY"] == "4" and env["SMG_HTTP_LISTEN"] == "127.0.0.1:9999"
    env, _ = dry_run("scanner-4", etc, {**curve, "SMG_INSTANCE": "mine"})
    assert env["SMG_INSTANCE"] == "mine" and env["SMG_HTTP_LISTEN"] == "10.0.2.10:9132"
    for bad in ["scanner", "scanner-0", "scanner-x", "mailer-1", "scanner-10"]:
        out = subprocess.run(["sh", str(LAUNCHER), bad], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", "SMG_RUN_DRY": "1", "SMG_RUN_CONFIG_DIR": str(etc),
                                  "SMG_RUN_BIN_DIR": str(bin_dir()), **curve})
        assert out.returncode == 78 and out.stderr.startswith("smg-run: "), (bad, out.stderr)
    # A broken configuration: smg-run still starts the service, which names the problem.
    (etc / "signer.yaml").write_text("dkim:\n  master_key_fiel: /etc/smg/dkim-master.key\n")
    out = subprocess.run(["sh", str(LAUNCHER), "signer-1"], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "SMG_RUN_CONFIG_DIR": str(etc),
                              "SMG_RUN_BIN_DIR": str(bin_dir()), **curve})
    assert out.returncode == 78 and "dkim.master_key_fiel" in out.stderr and "signer.yaml" in out.stderr


# ---- systemd and supervisord -------------------------------------------------------------------

def test_systemd_units_verify(tmp_path):
    unit = (DEPLOY / "systemd" / "smg@.service").read_text()
    assert re.search(r"^ExecStart=/usr/local/bin/smg-run %i$", unit, re.M)
    assert re.search(r"^RestartPreventExitStatus=78$", unit, re.M)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # The launcher where the unit expects it is the only change (a path).
    (tmp_path / "smg-run").write_text(LAUNCHER.read_text())
    (tmp_path / "smg-run").chmod(0o755)
    (tmp_path / "smg.target").write_text((DEPLOY / "systemd" / "smg.target").read_text())
    for instance in ["ingress-1", "scanner-2", "egress-good-1", "blacklist-monitor-1", "admin-1"]:
        (tmp_path / f"smg@{instance}.service").write_text(unit.replace("/usr/local/bin/smg-run", str(tmp_path / "smg-run")))
    units = [str(p) for p in sorted(tmp_path.glob("smg*")) if p.name != "smg-run"]
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), out.stdout + out.stderr


def supervisord_programs(tmp_path: Path) -> list[dict]:
    """deploy/supervisord/smg.conf read by supervisord's own parser (Debian package supervisor),
    included from a main file as /etc/supervisor/supervisord.conf does; only its user (smg does not
    exist here) and log folder are changed."""
    supervisord = shutil.which("supervisord") or "/usr/bin/supervisord"
    assert Path(supervisord).exists(), "supervisord is missing: scripts/install-deps.sh installs it (package supervisor)"
    python = Path(supervisord).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    conf = (DEPLOY / "supervisord" / "smg.conf").read_text()
    assert conf.count("\nuser=smg\n") == len(SERVICES)
    (tmp_path / "smg.conf").write_text(
        conf.replace("\nuser=smg\n", f"\nuser={subprocess.check_output(['id', '-un'], text=True).strip()}\n")
            .replace("/var/log/smg/", f"{tmp_path}/"))
    (tmp_path / "supervisord.conf").write_text(
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/supervisord.pid\n"
        f"[include]\nfiles={tmp_path}/smg.conf\n")
    script = (
        "import json, sys\n"
        "from supervisor.options import ServerOptions\n"
        "o = ServerOptions(); o.realize(args=['-c', sys.argv[1]])\n"
        "print(json.dumps([dict(group=g.name, name=p.name, command=p.command, stopsignal=int(p.stopsignal),\n"
        "    stopwaitsecs=p.stopwaitsecs, exitcodes=list(p.exitcodes), log=p.stdout_logfile)\n"
        "    for g in o.process_group_configs for p in g.process_configs]))\n")
    out = subprocess.run([*python, "-c", script, str(tmp_path / "supervisord.conf")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_supervisord_runs_every_service_through_the_launcher(tmp_path, curve):
    (tmp_path / "supervisor").mkdir()
    programs = supervisord_programs(tmp_path / "supervisor")
    assert {p["group"] for p in programs} == {"smg"}
    assert {p["name"].rsplit("-", 1)[0] for p in programs} == set(SERVICES)
    etc = install_etc(tmp_path / "etc", "eu-de-03")
    ports = set()
    for p in programs:
        assert p["command"] == f"/usr/local/bin/smg-run {p['name']}", p
        assert p["stopsignal"] == signal.SIGTERM and 78 in p["exitcodes"] and p["log"].endswith(f"smg-{p['name']}.log")
        assert p["stopwaitsecs"] >= (60 if p["name"].startswith("egress") else 15) + 10, p
        env, _ = dry_run(p["name"], etc, curve)
        ports.add(env["SMG_HTTP_LISTEN"])
    assert len(ports) == len(programs)


# ---- Redis primary/replicas and Sentinels ------------------------------------------------------

def acl_passwords() -> dict:
    """user name → password, from deploy/redis/users.acl (the placeholders work as passwords)."""
    users = {}
    for line in (DEPLOY / "redis" / "users.acl").read_text().splitlines():
        m = re.match(r"user (\S+) on >(\S+)", line)
        if m:
            users[m.group(1)] = m.group(2)
    return users


REWRITABLE = re.compile(r"^(bind|port|replicaof|replica-announce-ip|sentinel monitor|sentinel announce-ip|include|"
                        r"aclfile|dir|logfile|pidfile) ")


def to_loopback(text: str, site: str, redis_ports: dict, sentinel_ports: dict, folder: Path, acl: Path) -> str:
    """The site's file with the site addresses, ports and paths of this machine; nothing else."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            out.append(line)
            continue
        new = line
        for other, address in SITES.items():
            new = new.replace(f"{address} 6379", f"127.0.0.1 {redis_ports[other]}")
        new = re.sub(r"^bind .*", "bind 127.0.0.1", new)
        new = re.sub(r"^port 6379$", f"port {redis_ports[site]}", new)
        new = re.sub(r"^port 26379$", f"port {sentinel_ports[site]}", new)
        for address in SITES.values():
            new = new.replace(address, "127.0.0.1")
        new = new.replace("/etc/redis/redis-gateway.conf", str(DEPLOY / "redis" / "redis-gateway.conf"))
        new = new.replace("/etc/redis/users.acl", str(acl))
        for path in ["/var/lib/redis", "/var/log/redis", "/run/redis", "/run/sentinel"]:
            new = new.replace(path, str(folder))
        assert new == line or REWRITABLE.match(line), (site, line)
        out.append(new)
    return "\n".join(out) + "\n"


def site_redis_url(site: str, sentinel_ports: dict) -> str:
    text = (DEPLOY / "sites" / site / "site.yaml").read_text()
    url = re.search(r"^\s*url: (\S+)", text, re.M).group(1)
    for other, address in SITES.items():
        url = url.replace(f"{address}:26379", f"127.0.0.1:{sentinel_ports[other]}")
    return url


def test_redis_and_sentinel_configs_replicate_and_fail_over(tmp_path, curve):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    users = acl_passwords()
    assert set(users) == {"smg", "replica", "sentinel", "monitor", "admin"}, users
    redis_ports = {site: free_port() for site in SITES}
    sentinel_ports = {site: free_port() for site in SITES}
    acl = tmp_path / "users.acl"
    shutil.copy(DEPLOY / "redis" / "users.acl", acl)
    procs = {}

    def admin(site):
        return redislib.Redis(port=redis_ports[site], username="admin", password=users["admin"], socket_timeout=2,
                              decode_responses=True)

    def sentinel(site):
        # requirepass of sentinel.conf, as the gateway gives it (?sentinel_password=).
        password = re.search(r"sentinel_password=(\S+)", site_redis_url(site, sentinel_ports)).group(1)
        return redislib.Redis(port=sentinel_ports[site], password=password, socket_timeout=2, decode_responses=True)

    def answers(client):
        try:
            return client.ping()
        except redislib.RedisError:
            return False

    def start(name, conf, *args):
        procs[name] = subprocess.Popen(["redis-server", str(conf), *args], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)

    service = None
    try:
        for site in SITES:
            folder = tmp_path / site
            folder.mkdir()
            for name in ["redis.conf", "sentinel.conf"]:
                (folder / name).write_text(to_loopback((DEPLOY / "sites" / site / name).read_text(), site,
                                                       redis_ports, sentinel_ports, folder, acl))
            start(f"redis-{site}", folder / "redis.conf")
        for site in SITES:
            wait_until(lambda: answers(admin(site)), 10, what=f"Redis of {site}")

        # eu-de-01 is the primary with two replicas; writes need one (min-replicas-to-write 1).
        def replicated():
            info = admin("eu-de-01").info("replication")
            return info["role"] == "master" and info["connected_slaves"] == 2 and all(
                admin(s).info("replication").get("master_link_status") == "up" for s in ["eu-de-02", "eu-de-03"])
        wait_until(replicated, 20, interval=0.2, what="two replicas in sync")
        assert admin("eu-de-01").config_get("min-replicas-to-write")["min-replicas-to-write"] == "1"
        assert admin("eu-de-01").config_get("appendfsync")["appendfsync"] == "always"  # the include
        with pytest.raises(redislib.AuthenticationError):
            redislib.Redis(port=redis_ports["eu-de-01"], socket_timeout=2).set("x", "1")  # no anonymous user

        for site in SITES:
            start(f"sentinel-{site}", tmp_path / site / "sentinel.conf", "--sentinel")

        def sentinels_agree():
            for site in SITES:
                try:
                    master = sentinel(site).sentinel_master(MASTER)
                except redislib.RedisError:
                    return False
                if not (master["num-slaves"] == 2 and master["num-other-sentinels"] == 2
                        and master["port"] == redis_ports["eu-de-01"] and "s_down" not in master["flags"]):
                    return False
            return True
        wait_until(sentinels_agree, 20, interval=0.2, what="three Sentinels that see each other and two replicas")
        for site in SITES:
            assert sentinel(site).execute_command("SENTINEL", "get-master-addr-by-name", MASTER) == \
                ["127.0.0.1", str(redis_ports["eu-de-01"])]

        # The gateway's client, with site.yaml's URL: through the Sentinels to the primary, as user smg.
        url = site_redis_url("eu-de-02", sentinel_ports)
        ctl = subprocess.run([str(bin_dir() / "smgctl"), "customer", "add", "deploy-test", "--name", "Deploy test",
                              "--network", "192.0.2.0/24", "--domain", "deploy.test", "--redis", url],
                             capture_output=True, text=True, timeout=60)
        assert ctl.returncode == 0, ctl.stderr
        wait_until(lambda: admin("eu-de-03").keys("smg:customer:deploy-test*"), 5, what="the write on a replica")

        # A real stage started by smg-run with eu-de-02's files: healthy against this Redis (the ACL
        # user's rights suffice). Only what points at this machine is overridden.
        etc = install_etc(tmp_path / "etc", "eu-de-02")
        http = free_port()
        service = subprocess.Popen(
            ["sh", str(LAUNCHER), "classifier-1"], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "classifier.log", "w"),
            env={"PATH": "/usr/bin:/bin", "SMG_RUN_CONFIG_DIR": str(etc), "SMG_RUN_BIN_DIR": str(bin_dir()), **curve,
                 "SMG_REDIS_URL": url, "SMG_BUS_BIND": "tcp://127.0.0.1:*", "SMG_BUS_ADVERTISE_HOST": "127.0.0.1",
                 "SMG_EVENTS_BIND": "tcp://127.0.0.1:*", "SMG_HTTP_LISTEN": f"127.0.0.1:{http}",
                 "SMG_CLASSIFIER_MODEL_FILE": str(DEPLOY / "spam" / "model.txt")})

        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False
        wait_until(healthy, 30, interval=0.2, what="the classifier's /healthz (log: classifier.log)")

        # eu-de-01 dies: the Sentinels promote a replica, reconfigure the other, rewrite their files.
        procs["redis-eu-de-01"].send_signal(signal.SIGKILL)
        procs["redis-eu-de-01"].wait(10)

        def promoted():
            try:
                host, port = sentinel("eu-de-02").execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            except redislib.RedisError:
                return None
            site = next((s for s, p in redis_ports.items() if str(p) == port and s != "eu-de-01"), None)
            if site is None:
                return None
            info = admin(site).info("replication")
            return site if info["role"] == "master" and info["connected_slaves"] >= 1 else None
        new = wait_until(promoted, 25, interval=0.2, what="a replica promoted, with the other one following it")
        other = next(s for s in ["eu-de-02", "eu-de-03"] if s != new)
        assert re.search(rf"^replicaof 127\.0\.0\.1 {redis_ports[new]}$", (tmp_path / other / "redis.conf").read_text(), re.M)
        assert not re.search(r"^replicaof ", (tmp_path / new / "redis.conf").read_text(), re.M)
        assert (tmp_path / other / "redis.conf").read_text().startswith("# Redis on " + other)  # rewritten in place
        ctl = subprocess.run([str(bin_dir() / "smgctl"), "customer", "add", "deploy-test-2", "--name", "After failover",
                              "--network", "192.0.2.0/24", "--domain", "deploy2.test", "--redis", url],
                             capture_output=True, text=True, timeout=60)
        assert ctl.returncode == 0, ctl.stderr
        assert admin(new).keys("smg:customer:deploy-test-2*")
        wait_until(healthy, 20, interval=0.2, what="the classifier healthy on the new primary")
    finally:
        if service and service.poll() is None:
            service.terminate()
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
