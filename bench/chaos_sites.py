#!/usr/bin/env python3
"""Three sites under chaos (issue 17): the gateway on three "sites" of one machine, each in a network
namespace of its own, with its own ingress, scanner, classifier, signer and egress processes, its own
Redis node and its own Sentinel. Redis: a primary and two replicas (one per site) that the three
Sentinels watch; every service finds the primary through the Sentinels and ingress answers 250 only
once a replica has the message (`store.accept_replicas: 1`).

A fourth namespace is "the Internet": an SMTP sink (the destination of every message) and the
clients, which submit steadily to the three sites' ingresses (a client whose site does not answer,
or answers 4xx, tries the next site, as a customer's MTA with several smarthosts does). Two bridges
in a fifth namespace join them: the backbone between the sites (10.77.0.0/24: Redis, Sentinel, the
bus; the Internet namespace is on it only to watch Redis) and the Internet side (10.78.0.0/24:
customers, ingress, the destination). Nothing here touches the machine's own network: every address
exists only inside namespaces this script creates and deletes.

Chaos, while the load runs:
- `service`: kill -9 a random service of a live site; restarted 2 s later (systemd's RestartSec).
- `primary`: kill -9 the Redis primary; the node is started again 10 s later (it rejoins as a replica).
- `site`: kill -9 everything of a random site (its services, its Redis node, its Sentinel); the site
  is started again 20 s later.
- `partition`: cut the site of the Redis primary off from the other sites for 20 s (its backbone
  port goes down); customers and destinations still reach it, and it them — the harder case: its
  egress could deliver what the majority side delivers too.

After the load stops, every message that got a 250 must be delivered (once) or bounced with an NDR.
The report: accepted / delivered / bounced / duplicates / lost, and per event the failover time
(a new primary named), the takeover time (every message leased by the dead or cut-off site is owned by
another site's process or finished) and the rejoin time (the site's ingress accepts again and all its
services are registered).

    python3 bench/chaos_sites.py --duration 600           # the long form (bench/README.md)
    python3 bench/chaos_sites.py --short --json out.json  # the form CI runs (test_three_sites.py)

Needs root (network namespaces) and the built services (SMG_BIN_DIR or `swift build --show-bin-path`).
"""
import argparse
import asyncio
import ctypes
import json
import os
import random
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from email.parser import BytesParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "Integration"))

import redis as redislib  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402

from harness import bin_dir, shipped_assets_env, stop_processes  # noqa: E402

NET = "10.77.0"          # the backbone between the sites: Redis, Sentinel, the bus
PUBLIC = "10.78.0"       # the Internet side: customers, destinations
INTERNET = f"{PUBLIC}.100"
SINK_PORT = 2525
INGRESS_PORT = 2525
REDIS_PORT = 6379
SENTINEL_PORT = 26379
MASTER = "smg"
PREFIX = "smg:"
SERVICES = ["ingress", "scanner", "classifier", "signer", "egress-good", "egress-bad"]
TOPICS = ["mail.accepted", "mail.scanned", "mail.classified", "mail.outbound.good", "mail.outbound.bad"]
SITES = [1, 2, 3]
STAGE_LEASE_S, EGRESS_LEASE_S = 5, 10


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(*args, check=True):
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out


def wait_until(predicate, timeout, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# MARK: - Network namespaces


class Network:
    """Namespaces `<tag>s1..s3` (sites), `<tag>in` (the Internet: sink and clients) and `<tag>br`
    (the bridge joining them). Site i is 10.77.0.i, the Internet 10.77.0.100."""

    def __init__(self):
        self.tag = f"smgc{os.getpid()}"
        self.bridge_ns = f"{self.tag}br"
        self.members = {i: f"{self.tag}s{i}" for i in SITES}
        self.members["in"] = f"{self.tag}in"
        self.created = []
        try:
            self._create()
        except BaseException:
            self.delete()
            raise

    def ns(self, site) -> str:
        return self.members[site]

    @staticmethod
    def address(site) -> str:
        """The backbone address (Redis, Sentinel, bus; the Internet namespace's is for monitoring)."""
        return f"{NET}.100" if site == "in" else f"{NET}.{site}"

    @staticmethod
    def public(site) -> str:
        """The Internet-side address: a site's ingress, the sink."""
        return INTERNET if site == "in" else f"{PUBLIC}.{site}"

    def _create(self):
        run("ip", "netns", "add", self.bridge_ns)
        self.created.append(self.bridge_ns)
        for bridge in ("br0", "br1"):  # br0: the backbone, br1: the Internet
            run("ip", "-n", self.bridge_ns, "link", "add", bridge, "type", "bridge")
            run("ip", "-n", self.bridge_ns, "link", "set", bridge, "up")
        for member, name in self.members.items():
            run("ip", "netns", "add", name)
            self.created.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
            for bridge, port, dev, address in (("br0", f"b{member}", "eth0", self.address(member)),
                                               ("br1", f"i{member}", "eth1", self.public(member))):
                run("ip", "-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", name)
                run("ip", "-n", self.bridge_ns, "link", "set", port, "master", bridge, "up")
                run("ip", "-n", name, "addr", "add", f"{address}/24", "dev", dev)
                run("ip", "-n", name, "link", "set", dev, "up")

    def partition(self, site):
        """Cuts the site off from the other sites (and their Redis nodes and Sentinels); its
        customers and the destinations still reach it, and it them."""
        run("ip", "-n", self.bridge_ns, "link", "set", f"b{site}", "down")

    def heal(self, site):
        run("ip", "-n", self.bridge_ns, "link", "set", f"b{site}", "up")

    def enter(self, member):
        """Moves this thread (and the threads it starts later) into a member's namespace."""
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(f"/run/netns/{self.ns(member)}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)

    def delete(self):
        for name in reversed(self.created):
            run("ip", "netns", "del", name, check=False)
        self.created = []


# MARK: - Processes of one site


class Site:
    def __init__(self, number: int, net: Network, workdir: Path, bins: Path, curve=None):
        self.n = number
        self.curve = curve
        self.net = net
        self.ns = net.ns(number)
        self.ip = Network.address(number)
        self.public_ip = Network.public(number)
        self.dir = workdir / f"site-{number}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bins = bins
        self.procs = {}
        self.redis_proc = None
        self.sentinel_proc = None
        self.alive = True
        self._write_configs()

    @property
    def name(self) -> str:
        return f"eu-de-0{self.n}"

    def _write_configs(self):
        sentinels = ",".join(f"{NET}.{i}:{SENTINEL_PORT}" for i in SITES)
        # The deploy layout: a site-wide file, then each service's own file (--config twice).
        (self.dir / "site.yaml").write_text(
            f"site: {self.name}\n"
            f"redis:\n  url: redis+sentinel://{sentinels}/{MASTER}/0\n  timeout: 1s\n"
            + ("" if self.curve else f"bus:\n  bind: tcp://{self.ip}:*\n") +
            f"events:\n  bind: tcp://{self.ip}:*\n"
            f"http:\n  listen: {self.ip}:0\n"
            f"store:\n  accept_replicas: 1\n  accept_replicas_timeout: 500ms\n")
        if self.curve:
            # CurveZMQ between sites: each site its own keypair; every site accepts the three.
            key_file, authorized = self.curve
            with open(self.dir / "site.yaml", "a") as f:
                f.write(f"bus:\n  bind: tcp://{self.ip}:*\n  curve_key_file: {key_file}\n"
                        f"  curve_authorized_keys: {authorized}\n")

        (self.dir / "ingress.yaml").write_text(
            f"ingress:\n  listen: {self.public_ip}:{INGRESS_PORT}\n  require_auth: false\n  check_sender_domain: false\n"
            f"  allow_networks: {PUBLIC}.0/24\n"
            f"  dedupe_window: 30m\n")
        for service in SERVICES[1:]:
            (self.dir / f"{service}.yaml").write_text(f"# {service} on {self.name}: the shared keys come from site.yaml\n")
        node = self.dir / "redis"
        node.mkdir(exist_ok=True)
        conf = node / "redis.conf"
        if not conf.exists():  # Sentinel rewrites it (replicaof) — keep its changes across restarts
            text = (f"port {REDIS_PORT}\nbind {self.ip} 127.0.0.1\nprotected-mode no\ndir {node}\ndaemonize no\n"
                    f"logfile {node}/redis.log\nappendonly yes\nappendfsync always\nsave \"\"\n"
                    f"min-replicas-to-write 1\nmin-replicas-max-lag 10\n")
            if self.n != 1:
                text += f"replicaof {NET}.1 {REDIS_PORT}\n"
            conf.write_text(text)
        sentinel = self.dir / "sentinel"
        sentinel.mkdir(exist_ok=True)
        sconf = sentinel / "sentinel.conf"
        if not sconf.exists():
            sconf.write_text(
                f"port {SENTINEL_PORT}\nbind {self.ip}\nprotected-mode no\ndaemonize no\ndir {sentinel}\n"
                f"logfile {sentinel}/sentinel.log\n"
                f"sentinel monitor {MASTER} {NET}.1 {REDIS_PORT} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n")

    def _spawn(self, argv, logfile):
        out = open(logfile, "ab")
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, env=self.env())

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMG_")}
        env.update({
            "SMG_LOG_LEVEL": "info",
            **shipped_assets_env(),
            "SMG_STAGE_LEASE": f"{STAGE_LEASE_S}s",
            "SMG_EGRESS_LEASE": f"{EGRESS_LEASE_S}s",
            "SMG_EGRESS_ROUTES": f"*={INTERNET}:{SINK_PORT}",
            "SMG_EGRESS_RETRY_SCHEDULE": "1s,2s,5s",
            "SMG_SHUTDOWN_DRAIN_TIMEOUT": "3s",
            "SMG_DNS_SERVERS": "127.0.0.1:9",
            "SMG_DNS_TIMEOUT": "200ms",
        })
        return env

    def start_redis(self):
        self.redis_proc = self._spawn(["redis-server", str(self.dir / "redis" / "redis.conf")], self.dir / "redis.out")

    def start_sentinel(self):
        self.sentinel_proc = self._spawn(["redis-server", str(self.dir / "sentinel" / "sentinel.conf"), "--sentinel"],
                                         self.dir / "sentinel.out")

    def start_service(self, service):
        argv = [str(self.bins / f"smg-{service}"), "--config", str(self.dir / "site.yaml"),
                "--config", str(self.dir / f"{service}.yaml")]
        env_name = f"s{self.n}-{service}"
        out = open(self.dir / f"{service}.log", "ab")
        env = self.env()
        env["SMG_INSTANCE"] = env_name
        self.procs[service] = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdout=out, stderr=out,
                                               stdin=subprocess.DEVNULL, env=env)

    def start_services(self):
        for service in SERVICES:
            self.start_service(service)

    @staticmethod
    def _kill(proc):
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def kill_service(self, service):
        self._kill(self.procs.get(service))

    def kill_redis(self):
        self._kill(self.redis_proc)

    def kill_all(self):
        for proc in self.procs.values():
            self._kill(proc)
        self._kill(self.redis_proc)
        self._kill(self.sentinel_proc)

    def stop(self):
        stop_processes(self.procs.values())
        self._kill(self.redis_proc)
        self._kill(self.sentinel_proc)


# MARK: - The Internet: sink and clients (run in the "in" namespace)


class Sink:
    """The destination of every message; records subjects of originals and of NDRs."""

    class Handler:
        def __init__(self, sink):
            self.sink = sink

        async def handle_DATA(self, server, session, envelope):
            # A destination that takes `delay` seconds to answer DATA: deliveries are in flight long
            # enough for a fault to hit them. A message counts as delivered only if the gateway could
            # still get the 250: a client that went away (killed: its socket closed) gets nothing
            # recorded.
            if self.sink.delay:
                await asyncio.sleep(self.sink.delay)
            if server.transport is None or server.transport.is_closing() or server._reader.at_eof():
                return "451 4.4.2 the client went away"
            raw = bytes(envelope.content)
            message = BytesParser().parsebytes(raw, headersonly=True)
            subject = message.get("Subject", "")
            with self.sink.lock:
                if subject.startswith("chaos-"):
                    self.sink.delivered.append(subject)
                else:  # an NDR: the original's subject is in the returned headers
                    marker = raw.find(b"Subject: chaos-")
                    if marker >= 0:
                        self.sink.bounced.append(raw[marker + 9:].split(b"\r\n", 1)[0].decode())
                    else:
                        self.sink.other += 1
            return "250 2.0.0 accepted"

    def __init__(self, delay: float):
        self.delay = delay
        self.lock = threading.Lock()
        self.delivered, self.bounced, self.other = [], [], 0
        self.controller = Controller(Sink.Handler(self), hostname=INTERNET, port=SINK_PORT,
                                     data_size_limit=50 * 1024 * 1024)
        self.controller.start()

    def snapshot(self):
        with self.lock:
            return list(self.delivered), list(self.bounced)

    def stop(self):
        self.controller.stop()


class Clients:
    """`threads` clients, together about `rate` messages per second, spread over the sites. A
    message is retried (next site, then again after a pause) until some site answers 250."""

    def __init__(self, rate: float, threads: int = 3):
        self.rate = rate
        self.lock = threading.Lock()
        self.accepted = {}       # subject → (site, time)
        self.last_accept = {}    # site → time of the latest 250
        self.temporary = 0
        self.given_up = []
        self.stopping = False
        self.threads = [threading.Thread(target=self._run, args=(t, threads), daemon=True) for t in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, number, threads):
        interval = threads / self.rate
        n = 0
        while not self.stopping:
            started = time.monotonic()
            subject = f"chaos-{number}-{n}"
            body = (f"From: sender@customer.example\r\nTo: user@dest.example\r\nSubject: {subject}\r\n"
                    f"Message-ID: <{subject}@customer.example>\r\n\r\nmessage {n} of client {number}\r\n").encode()
            deadline = time.monotonic() + 300
            attempt = 0
            while time.monotonic() < deadline:
                site = SITES[(n + number + attempt) % 3]
                attempt += 1
                if submit(site, body):
                    now = time.monotonic()
                    with self.lock:
                        self.accepted[subject] = (site, now)
                        self.last_accept[site] = now
                    break
                with self.lock:
                    self.temporary += 1
                if attempt % 3 == 0:
                    time.sleep(0.5)
            else:
                with self.lock:
                    self.given_up.append(subject)
            n += 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def count(self):
        with self.lock:
            return len(self.accepted)

    def last(self, site):
        with self.lock:
            return self.last_accept.get(site, 0)

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(400)


def submit(site, body, timeout=5) -> bool:
    try:
        with smtplib.SMTP(Network.public(site), INGRESS_PORT, timeout=timeout) as s:
            s.ehlo("app1.customer.example")
            if s.mail("sender@customer.example")[0] != 250 or s.rcpt("user@dest.example")[0] != 250:
                return False
            code, _ = s.data(body)
            return code == 250
    except (smtplib.SMTPException, OSError):
        return False


# MARK: - Redis as seen from the Internet namespace


def sentinel_primary(live_sites):
    """The primary's (ip, port) as the Sentinels of `live_sites` name it (the majority answer)."""
    votes = {}
    for n in live_sites:
        try:
            c = redislib.Redis(host=Network.address(n), port=SENTINEL_PORT, socket_timeout=1, decode_responses=True)
            ip, port = c.sentinel_get_master_addr_by_name(MASTER)
            votes[(ip, int(port))] = votes.get((ip, int(port)), 0) + 1
        except Exception:
            continue
    if not votes:
        return None
    return max(votes.items(), key=lambda kv: kv[1])[0]


def primary_client(live_sites):
    where = sentinel_primary(live_sites)
    if where is None:
        return None
    return redislib.Redis(host=where[0], port=where[1], socket_timeout=2, decode_responses=True)


def leases_of(owner_prefix, live_sites):
    """{(topic, id): owner} of messages whose lease is held by owners starting with `owner_prefix`
    (`s2-` = every process of site 2, `s2-signer/` = one process: owner tokens start with the
    instance name)."""
    client = primary_client(live_sites)
    out = {}
    for topic in TOPICS:
        for message_id, owner in client.hgetall(f"{PREFIX}owner:{topic}").items():
            if owner.startswith(owner_prefix):
                out[(topic, message_id)] = owner
    return out


def in_delivery(snapshot):
    """How many of the leases are egress leases: deliveries possibly in flight."""
    return sum(1 for topic, _ in snapshot if topic.startswith("mail.outbound."))


def still_held(snapshot, live_sites):
    client = primary_client(live_sites)
    if client is None:
        return len(snapshot)
    held = 0
    for (topic, message_id), owner in snapshot.items():
        if client.hget(f"{PREFIX}owner:{topic}", message_id) == owner:
            held += 1
    return held


def registered(site, live_sites):
    """Whether every data topic has a producer endpoint of `site` registered (all its stages run)."""
    client = primary_client(live_sites)
    if client is None:
        return False
    ip = Network.address(site)
    mine = [any(ip in endpoint for endpoint in client.hkeys(f"{PREFIX}registry:{t}")) for t in TOPICS]
    return all(mine)


# MARK: - The run


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="smg-chaos-"))
        self.bins = Path(os.environ.get("SMG_BIN_DIR") or bin_dir())
        self.events = []
        self.net = None
        self.sites = {}
        self.sink = None
        self.clients = None

    def live(self):
        return [n for n, s in self.sites.items() if s.alive]

    def start(self):
        self.net = Network()
        self.net.enter("in")
        curve = {n: None for n in SITES}
        if not self.args.no_curve:
            keys = self.workdir / "keys"
            keys.mkdir()
            public = []
            for n in SITES:
                out = run(str(self.bins / "smgctl"), "bus", "keygen", "--out", str(keys / f"site-{n}.key"))
                public.append(out.stdout.strip().split()[-1])
            (keys / "authorized.keys").write_text("# the three sites' bus keys\n" + "\n".join(public) + "\n")
            curve = {n: (keys / f"site-{n}.key", keys / "authorized.keys") for n in SITES}
        self.sites = {n: Site(n, self.net, self.workdir, self.bins, curve[n]) for n in SITES}
        for site in self.sites.values():
            site.start_redis()
        wait_until(lambda: all(redislib.Redis(host=Network.address(n), port=REDIS_PORT, socket_timeout=1).ping()
                               for n in SITES), 20, what="the Redis nodes")
        primary = redislib.Redis(host=Network.address(1), port=REDIS_PORT, socket_timeout=1, decode_responses=True)
        wait_until(lambda: all(redislib.Redis(host=Network.address(n), port=REDIS_PORT, socket_timeout=1,
                                              decode_responses=True).info("replication").get("master_link_status") == "up"
                               for n in SITES[1:]) and primary.info("replication").get("connected_slaves") == 2,
                   30, what="both replicas in sync")
        for site in self.sites.values():
            site.start_sentinel()

        def sentinels_ready():
            for n in SITES:
                c = redislib.Redis(host=Network.address(n), port=SENTINEL_PORT, socket_timeout=1)
                if len(c.sentinel_slaves(MASTER)) != 2 or len(c.sentinel_sentinels(MASTER)) != 2:
                    return False
            return True

        wait_until(sentinels_ready, 40, what="Sentinels that know each other and both replicas")
        self.sink = Sink(self.args.sink_delay)
        for site in self.sites.values():
            site.start_services()
        for n in SITES:
            wait_until(lambda n=n: registered(n, SITES) and submit(n, probe(f"start-{n}")), 90,
                       interval=0.5, what=f"site {n} to register and accept")
        log(f"three sites up (workdir {self.workdir})")

    # Each action records what it measured in self.events.

    def act_service(self, service=None):
        site = self.sites[self.rng.choice(self.live())]
        service = service or self.rng.choice(SERVICES)
        snapshot = leases_of(f"s{site.n}-{service}/", self.live())
        t0 = time.monotonic()
        site.kill_service(service)
        log(f"kill -9 s{site.n}-{service} ({len(snapshot)} leases held)")
        time.sleep(2)
        site.start_service(service)
        takeover = self._wait_takeover(snapshot, t0, f"s{site.n}-{service}")
        self.events.append({"action": "kill service", "target": f"s{site.n}-{service}", "restarted_after_s": 2,
                            "at_s": round(t0 - self.t_start, 1), "leases_held": len(snapshot),
                            "in_delivery": in_delivery(snapshot), "takeover_s": takeover})

    def act_primary(self):
        where = sentinel_primary(self.live())
        site = self.sites[int(where[0].rsplit(".", 1)[1])]
        t0 = time.monotonic()
        site.kill_redis()
        log(f"kill -9 the Redis primary (site {site.n})")
        failover = self._wait_failover(where, t0)
        accepting = self._wait_accepting(t0)
        time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
        site.start_redis()
        rejoin = self._wait_replica(site.n, t0)
        self.events.append({"action": "kill Redis primary", "target": f"node of site {site.n}",
                            "at_s": round(t0 - self.t_start, 1), "failover_s": failover,
                            "accepting_again_s": accepting, "node_replica_again_s": rejoin})

    def act_site(self):
        number = self.rng.choice(self.live())
        self._site_down(number, kind="kill site")

    def act_partition(self):
        where = sentinel_primary(self.live())
        number = int(where[0].rsplit(".", 1)[1])
        self._site_down(number, kind="partition")

    def _site_down(self, number, kind):
        site = self.sites[number]
        where = sentinel_primary(self.live())
        held_primary = where is not None and where[0] == site.ip
        snapshot = leases_of(f"s{number}-", self.live())
        t0 = time.monotonic()
        if kind == "kill site":
            site.kill_all()
            log(f"kill -9 site {number} (services, Redis node, Sentinel){' — it holds the primary' if held_primary else ''}")
        else:
            self.net.partition(number)
            log(f"partition site {number} (the primary's) from the other sites; the Internet still reaches it")
        site.alive = False
        failover = self._wait_failover(where, t0) if held_primary else None
        accepting = self._wait_accepting(t0, exclude=number)
        takeover = self._wait_takeover(snapshot, t0, f"site {number}")
        time.sleep(max(0.0, 20 - (time.monotonic() - t0)))
        t1 = time.monotonic()
        if kind == "kill site":
            site.start_redis()
            site.start_sentinel()
            site.start_services()
        else:
            self.net.heal(number)
        site.alive = True
        rejoin = None
        try:
            wait_until(lambda: registered(number, self.live()) and submit(number, probe(f"rejoin-{number}-{t1}")), 120,
                       interval=0.5, what=f"site {number} to rejoin")
            rejoin = round(time.monotonic() - t1, 1)
        except TimeoutError:
            rejoin = "> 120"
        self._wait_replica(number, t1)
        self.events.append({"action": kind, "target": f"site {number}", "held_primary": held_primary,
                            "at_s": round(t0 - self.t_start, 1), "leases_held": len(snapshot),
                            "in_delivery": in_delivery(snapshot), "failover_s": failover,
                            "accepting_again_s": accepting, "takeover_s": takeover, "down_s": 20, "rejoin_s": rejoin})

    def _wait_takeover(self, snapshot, t0, what):
        """Seconds from the fault until no message of `snapshot` is still leased by its old owner
        (another process claimed it after the lease ran out, or it was finished); None if none was held."""
        if not snapshot:
            return None
        try:
            wait_until(lambda: still_held(snapshot, self.live()) == 0, 120, interval=0.25,
                       what=f"the leases of {what} taken over")
            return round(time.monotonic() - t0, 1)
        except TimeoutError:
            return f"> 120 ({still_held(snapshot, self.live())} still held)"

    def _wait_failover(self, old, t0):
        try:
            wait_until(lambda: (p := sentinel_primary(self.live())) is not None and p != old, 60, interval=0.1,
                       what="a new primary")
            return round(time.monotonic() - t0, 1)
        except TimeoutError:
            return "> 60"

    def _wait_accepting(self, t0, exclude=None):
        try:
            wait_until(lambda: any(self.clients.last(n) > t0 for n in SITES if n != exclude), 90, interval=0.1,
                       what="a 250 after the event")
            return round(time.monotonic() - t0, 1)
        except TimeoutError:
            return "> 90"

    def _wait_replica(self, number, t0):
        def replica():
            c = redislib.Redis(host=Network.address(number), port=REDIS_PORT, socket_timeout=1, decode_responses=True)
            info = c.info("replication")
            return info.get("role") == "slave" and info.get("master_link_status") == "up"
        try:
            wait_until(replica, 60, interval=0.25, what=f"the node of site {number} to be a replica in sync")
            return round(time.monotonic() - t0, 1)
        except TimeoutError:
            return "> 60"

    def run(self):
        args = self.args
        self.start()
        self.clients = Clients(args.rate)
        self.t_start = time.monotonic()
        actions = {"service": self.act_service, "egress": lambda: self.act_service("egress-good"),
                   "primary": self.act_primary, "site": self.act_site, "partition": self.act_partition}
        if args.short:
            plan = ["egress", "service", "primary", "site", "partition"]
        else:
            plan = []
        time.sleep(args.pause)
        i = 0
        while True:
            elapsed = time.monotonic() - self.t_start
            if args.short and i >= len(plan):
                break
            if not args.short and elapsed >= args.duration:
                break
            action = plan[i] if args.short else self.rng.choice(["service", "service", "egress", "primary", "site",
                                                                 "partition"])
            actions[action]()
            i += 1
            time.sleep(args.pause)
        log("load stops")
        self.clients.stop()
        return self.settle()

    def settle(self):
        accepted = dict(self.clients.accepted)
        started = time.monotonic()

        def done():
            delivered, bounced = self.sink.snapshot()
            return set(accepted) <= set(delivered) | set(bounced)

        try:
            wait_until(done, self.args.settle, interval=0.5, what="every accepted message delivered or bounced")
        except TimeoutError:
            pass
        drained = round(time.monotonic() - started, 1)
        time.sleep(3)  # a late duplicate would show now
        delivered, bounced = self.sink.snapshot()
        counts = {}
        for subject in delivered:
            counts[subject] = counts.get(subject, 0) + 1
        duplicates = sorted(s for s, c in counts.items() if c > 1 and s in accepted)
        lost = sorted(set(accepted) - set(delivered) - set(bounced))
        # Deliveries in flight when a process died or its site was cut off may be made twice: a killed
        # egress whose destination had queued the message but whose 250 never arrived (RFC 1047; the
        # sink records a message only if the client is still there after the delay, so this is rare),
        # and a cut-off egress that got the 250 but could not record it where a replica confirms it
        # before its lease ran out (a partition longer than egress.lease: 20 s against 10 s here).
        # Any other duplicate (e.g. after a Redis failover) is a bug.
        cut_off = sum(e.get("in_delivery", 0) for e in self.events)
        per_site = {f"site {n}": sum(1 for s, _ in accepted.values() if s == n) for n in SITES}
        return {
            "duration_s": round(time.monotonic() - self.t_start, 1), "rate": self.args.rate,
            "accepted": len(accepted), "accepted_per_site": per_site,
            "delivered": len(set(delivered) & set(accepted)), "bounced": len(set(bounced) & set(accepted)),
            "duplicates": len(duplicates), "duplicates_possible": cut_off, "duplicate_subjects": duplicates[:20], "lost": len(lost),
            "lost_subjects": lost[:20], "temporary_failures": self.clients.temporary,
            "never_accepted": len(self.clients.given_up), "drained_after_load_s": drained, "events": self.events,
        }

    def stop(self):
        if self.clients:
            self.clients.stopping = True
        for site in self.sites.values():
            site.stop()
        if self.sink:
            self.sink.stop()
        if self.net:
            self.net.delete()

    def dump_logs(self, lines=30):
        for site in self.sites.values():
            for path in sorted(site.dir.glob("*.log")):
                print(f"----- {path.relative_to(self.workdir)} -----")
                print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
            for path in [site.dir / "sentinel" / "sentinel.log", site.dir / "redis" / "redis.log"]:
                if path.exists():
                    print(f"----- {path.relative_to(self.workdir)} -----")
                    print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


def probe(tag):
    return (f"From: sender@customer.example\r\nTo: user@dest.example\r\nSubject: probe-{tag}\r\n\r\nprobe\r\n").encode()


def markdown(report) -> str:
    lines = ["| accepted | delivered | bounced | duplicates | lost | temporary failures (retried) | drained after load |",
             "|---|---|---|---|---|---|---|",
             f"| {report['accepted']} | {report['delivered']} | {report['bounced']} | {report['duplicates']} | "
             f"{report['lost']} | {report['temporary_failures']} | {report['drained_after_load_s']} s |", "",
             "| at | event | failover | accepting again | leases held (in delivery) | takeover | rejoin |",
             "|---|---|---|---|---|---|---|"]
    for e in report["events"]:
        def s(key):
            v = e.get(key)
            return "—" if v is None else (f"{v} s" if isinstance(v, (int, float)) else str(v))
        rejoin = e.get("rejoin_s", e.get("node_replica_again_s"))
        lines.append(f"| {e['at_s']} s | {e['action']} ({e['target']}) | {s('failover_s')} | {s('accepting_again_s')} | "
                     f"{e.get('leases_held', '—')} ({e.get('in_delivery', 0)}) | {s('takeover_s')} | "
                     f"{'—' if rejoin is None else (f'{rejoin} s' if isinstance(rejoin, (int, float)) else rejoin)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the CI form: one of each event, then stop")
    parser.add_argument("--duration", type=float, default=600, help="seconds of chaos (long form)")
    parser.add_argument("--rate", type=float, default=4, help="messages per second offered by the clients")
    parser.add_argument("--pause", type=float, default=8, help="seconds between events")
    parser.add_argument("--settle", type=float, default=240, help="seconds to wait for the last deliveries")
    parser.add_argument("--sink-delay", type=float, default=1.0, help="seconds the destination takes to answer DATA")
    parser.add_argument("--no-curve", action="store_true", help="plaintext ZeroMQ between the sites")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: the sites are network namespaces")
    log(f"seed {args.seed}")
    chaos = Chaos(args)
    failed = False
    try:
        report = chaos.run()
        report["seed"] = args.seed
        print(markdown(report))
        print(json.dumps(report, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        failed = report["lost"] > 0
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            chaos.dump_logs()
        chaos.stop()
        if not args.keep:
            shutil.rmtree(chaos.workdir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
