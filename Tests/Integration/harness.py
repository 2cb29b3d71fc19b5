"""Test harness for the whole gateway: real redis-server, real service processes, real SMTP peers.

Everything listens on 127.0.0.1 only, on ports the kernel hands out. Every process the harness
starts is killed when the test ends, also when it fails.
"""
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from email.parser import BytesParser
from pathlib import Path

import redis as redislib
import requests
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[2]


def bin_dir() -> Path:
    env = os.environ.get("SMG_BIN_DIR")
    if env:
        return Path(env)
    out = subprocess.run(["swift", "build", "--show-bin-path"], cwd=ROOT, capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


_PORTS_GIVEN = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server a test starts. Taken below the kernel's
    ephemeral range (32768–60999 here): a port the kernel hands out (bind to port 0, as every
    service does for its ZeroMQ and HTTP endpoints, or an outgoing connection) could be taken by
    another process between this check and the server's bind — a test then fails with "Address
    already in use". Each port is handed out once per test run."""
    low, high = 20000, 32767
    try:
        low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, low_ephemeral - 1)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise AssertionError(f"no free port in {low}-{high}")


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def redis_is_loading(port: int, command=("GET", "probe")) -> bool:
    """Whether Redis answers `command` with -LOADING, asked over a raw socket: redis-py (6 and
    later) retries LOADING by itself, which would hide it. False when nothing listens."""
    request = f"*{len(command)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in command)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(request)
            return s.recv(256).startswith(b"-LOADING")
    except OSError:
        return False


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list:
    """The samples of a Prometheus text exposition: [(name, {label: value}, float)]."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
            samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def scrape(endpoint: str) -> list:
    """The samples at `endpoint`/metrics (`endpoint`: http://host:port)."""
    with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as resp:
        return parse_metrics(resp.read().decode())


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_processes(procs, grace: float = 10):
    """SIGTERM to every process still running (they drain), SIGKILL to those still there after
    `grace` seconds."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class RedisServer:
    """A private redis-server with the durability settings the gateway requires (AOF, fsync always)."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra_args, wait=True, timeout=10):
        """Starts redis-server on the same port and folder (so it loads its AOF); `extra_args` are
        more redis-server flags (e.g. "--key-load-delay", "20" to make loading take a while)."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log"), "--enable-debug-command", "local", *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            client = redislib.Redis(port=self.port, socket_timeout=1)
            wait_until(lambda: self._ping(client), timeout, what="redis-server to answer")

    @staticmethod
    def _ping(client):
        try:
            return client.ping()
        except Exception:
            return False

    def client(self) -> "redislib.Redis":
        return redislib.Redis(port=self.port, socket_timeout=5)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Sink:
    """A real SMTP server (aiosmtpd) standing in for the Internet: records every message it gets."""

    class Handler:
        def __init__(self, sink):
            self.sink = sink

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("slow"):
                await asyncio.sleep(self.sink.slow_seconds)
            if address.startswith("reject"):
                return "550 5.1.1 No such user"
            if address.startswith("later"):
                return "451 4.3.0 Try again later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            if any(r.startswith("slowdata") for r in envelope.rcpt_tos):
                await asyncio.sleep(self.sink.slow_seconds)
            with self.sink.lock:
                self.sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
            return "250 2.0.0 Message accepted"

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        # Recipients named slow… wait this long for their RCPT reply, slowdata… for the DATA reply.
        self.slow_seconds = 2.0
        self.port = free_port()
        self.controller = Controller(Sink.Handler(self), hostname="127.0.0.1", port=self.port,
                                     data_size_limit=200 * 1024 * 1024)
        self.controller.start()

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def stop(self):
        self.controller.stop()


def shipped_assets_env() -> dict:
    """What every test gateway shares (also bench/chaos_sites.py): the project's test signatures
    (EICAR, clamav-testfiles) and YARA rules, the spam model it ships (seeds the shared model in
    the test's Redis), an NDR domain, and redrive timings short enough for tests."""
    return {
        "SMG_SCANNER_CLAMAV_DATABASE": str(ROOT / "deploy/scanner/clamav"),
        "SMG_SCANNER_YARA_RULES": str(ROOT / "deploy/scanner/yara/smg.yar"),
        "SMG_NDR_DOMAIN": "gateway.test",
        "SMG_CLASSIFIER_MODEL_FILE": str(ROOT / "deploy/spam/model.txt"),
        "SMG_STAGE_REDRIVE_AFTER": "3s",
        "SMG_STAGE_REDRIVE_INTERVAL": "250ms",
        "SMG_STAGE_RETRY_DELAY": "1s",
    }


class Gateway:
    """Starts the gateway's processes against one Redis, with configs written to a temp folder."""

    SERVICES = ["smg-ingress", "smg-scanner", "smg-classifier", "smg-signer", "smg-egress-good", "smg-egress-bad"]

    def __init__(self, workdir: Path, redis: RedisServer, sink: Sink, prefix: str = "smg:"):
        self.workdir = workdir
        self.redis = redis
        self.sink = sink
        self.prefix = prefix
        self.bins = bin_dir()
        self.ingress_port = free_port()
        self.procs = {}
        self.logs = {}

    def env(self, overrides=None):
        env = dict(os.environ)
        env.update({
            "SMG_REDIS_URL": self.redis.url,
            "SMG_REDIS_KEY_PREFIX": self.prefix,
            "SMG_REDIS_TIMEOUT": "1s",
            "SMG_LOG_LEVEL": "info",
            "SMG_HTTP_LISTEN": "127.0.0.1:0",
            **shipped_assets_env(),
            "SMG_SCANNER_CLAMAV_RELOAD_INTERVAL": "500ms",
            "SMG_STAGE_LEASE": "5s",
            "SMG_EGRESS_LEASE": "20s",
            "SMG_EGRESS_ROUTES": f"*=127.0.0.1:{self.sink.port}",
            "SMG_EGRESS_RETRY_SCHEDULE": "1s,2s",
            "SMG_INGRESS_LISTEN": f"127.0.0.1:{self.ingress_port}",
            "SMG_SHUTDOWN_DRAIN_TIMEOUT": "3s",
            # The pipeline tests submit as a trusted relay network; tests of the submission
            # policies (test_ingress_policies.py) turn AUTH, TLS and DNS checks on.
            "SMG_INGRESS_REQUIRE_AUTH": "false",
            "SMG_INGRESS_CHECK_SENDER_DOMAIN": "false",
            # Never ask a resolver outside this machine: a closed loopback port unless a test
            # points ingress at the DNS fixture.
            "SMG_DNS_SERVERS": "127.0.0.1:9",
            "SMG_DNS_TIMEOUT": "200ms",
        })
        if overrides:
            env.update(overrides)
        return env

    def start(self, service: str, name: str = None, args=(), **overrides):
        """Starts `service` (environment: `env()` plus `overrides`); `args` are its command line
        arguments (e.g. ["--config", path])."""
        name = name or service
        env = self.env({k: str(v) for k, v in overrides.items()})
        env["SMG_INSTANCE"] = name
        log = open(self.workdir / f"{name}.log", "ab")
        self.logs[name] = self.workdir / f"{name}.log"
        proc = subprocess.Popen([str(self.bins / service), *map(str, args)], env=env, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def start_all(self, **overrides):
        for service in self.SERVICES:
            self.start(service, **overrides)
        self.wait_ready()

    def wait_ready(self, timeout=20):
        client = self.redis.client()

        def ready():
            topics = ["mail.accepted", "mail.scanned", "mail.classified", "mail.outbound.good", "mail.outbound.bad"]
            if not all(client.hlen(f"{self.prefix}registry:{t}") > 0 for t in topics):
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.ingress_port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(ready, timeout, what="all services to register and ingress to listen")
        time.sleep(1.2)  # consumers discover producers once a second

    def signal(self, name: str, sig):
        self.procs[name].send_signal(sig)

    def kill(self, name: str):
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop_all(self):
        stop_processes(self.procs.values())

    def smgctl(self, *args, timeout=30):
        return subprocess.run([str(self.bins / "smgctl"), *args, "--redis", self.redis.url, "--prefix", self.prefix],
                              capture_output=True, text=True, timeout=timeout)

    def trace(self, message_id: str):
        out = self.smgctl("trace", message_id)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def log_text(self, name: str) -> str:
        return Path(self.logs[name]).read_text(errors="replace")

    def http_endpoints(self) -> list:
        """The /healthz + /metrics endpoints (http://host:port) of the processes running now, as
        they register themselves in Redis (kind `http`)."""
        now = time.time() * 1000
        return sorted(k.decode() for k, v in self.redis.client().hgetall(f"{self.prefix}registry:http").items()
                      if int(v) > now)

    def metrics(self) -> list:
        """The samples of every running process's /metrics: [(name, {label: value}, float)]; a
        process that does not answer is left out."""
        samples = []
        for endpoint in self.http_endpoints():
            try:
                samples += scrape(endpoint)
            except OSError:
                pass
        return samples

    def metric(self, name: str, **labels) -> float:
        """The sum of `name`'s samples with these label values over every running process."""
        return sum(v for n, l, v in self.metrics() if n == name and all(l.get(k) == str(x) for k, x in labels.items()))


def make_message(marker: str, sender="sender@customer.example", rcpt="user@dest.example", body_lines=None) -> bytes:
    body_lines = body_lines or [f"Body of {marker}.", "", ".A line that starts with a dot", "..two dots", "end"]
    lines = [f"From: {sender}", f"To: {rcpt}", f"Subject: {marker}", f"Message-ID: <{marker}@customer.example>",
             # A fixed Date: a client retrying a submission sends the same octets (ingress's dedupe).
             "Date: Mon, 23 Nov 2026 05:00:00 +0000", "", *body_lines]
    return ("\r\n".join(lines) + "\r\n").encode()


def queued_id(reply: bytes) -> str:
    text = reply.decode()
    assert "queued as " in text, text
    return text.rsplit("queued as ", 1)[1].strip()


def data_reply(port: int, message: bytes, sender="sender@customer.example", rcpts=("user@dest.example",),
               mail_options=(), helo="app1.customer.example", rcpt_options=None):
    """Submits one message; MAIL and every RCPT must be accepted. Returns DATA's (code, reply).
    `rcpt_options`: recipient → its RCPT parameters (e.g. ["NOTIFY=SUCCESS"])."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo(helo)
        code, reply = s.mail(sender, list(mail_options))
        assert code == 250, reply
        for r in rcpts:
            code, reply = s.rcpt(r, list((rcpt_options or {}).get(r, ())))
            assert code == 250, reply
        return s.data(message)


def send(port: int, message: bytes, sender="sender@customer.example", rcpts=("user@dest.example",)):
    code, reply = data_reply(port, message, sender, rcpts)
    assert code == 250, reply
    return queued_id(reply)


def subject_of(raw: bytes) -> str:
    return BytesParser().parsebytes(raw, headersonly=True)["Subject"]


def submit_authenticated(port: int, login: str, password: str, message: bytes, cafile, sender="sender@customer.example",
                         rcpts=("user@dest.example",), helo="app1.customer.example") -> str:
    """Submits one message the way a customer's application does: STARTTLS (the server's
    certificate checked against `cafile`, for the name 127.0.0.1), then AUTH as `login`. Returns
    the queued id."""
    context = ssl.create_default_context(cafile=str(cafile))
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo(helo)
        s.starttls(context=context)
        s.ehlo(helo)
        s.login(login, password)
        code, reply = s.mail(sender)
        assert code == 250, reply
        for r in rcpts:
            code, reply = s.rcpt(r)
            assert code == 250, reply
        code, reply = s.data(message)
        assert code == 250, reply
        return queued_id(reply)


# ---- smg-admin ------------------------------------------------------------------------------------


def loopback_certificate(directory: Path):
    """A test CA and a server certificate signed by it for 127.0.0.1 and localhost (IP and DNS
    subjectAltName), made with openssl now. Returns (ca, cert, key) paths; clients verify the
    server with `ca` (requests: verify=str(ca); ssl: cafile=ca)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr, ext = (d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key", d / "server.csr",
                                        d / "server.ext")

    def openssl(*args):
        out = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"openssl {' '.join(map(str, args))}: {out.stderr}"

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
            "-subj", "/CN=SMG Admin Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", "4242", "-days", "2",
            "-sha256", "-extfile", ext, "-out", cert)
    return ca, cert, key


def spki_sha256_base64(cert) -> str:
    """base64 of the SHA-256 of the certificate's public key (SubjectPublicKeyInfo, DER): what
    chromium's --ignore-certificate-errors-spki-list takes, so a browser trusts exactly this key."""
    pem = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True, check=True,
                         timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem, capture_output=True, check=True,
                         timeout=30).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _yaml_file(path: Path, keys: dict):
    """Writes dotted keys ({"admin.listen": "…"}) as nested YAML mappings, every value a quoted string."""
    tree = {}
    for dotted, value in keys.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    def lines(node, indent):
        for k, v in node.items():
            if isinstance(v, dict):
                yield f"{' ' * indent}{k}:"
                yield from lines(v, indent + 2)
            else:
                yield f"{' ' * indent}{k}: {json.dumps(str(v))}"

    Path(path).write_text("\n".join(lines(tree, 0)) + "\n")


class Admin:
    """smg-admin (the operators' web interface and JSON API) started by `gateway` with a YAML
    config file (stopped with the gateway's other processes): HTTPS on a free loopback port with a certificate made now (`loopback_certificate`,
    or `tls=(ca, cert, key)`), the gateway's Redis and key prefix, and a DKIM master key made with
    `smgctl dkim init-master-key`. `config`: more keys, dotted (`{"admin.session_idle": "3s"}`).

        admin = Admin(gateway).start()
        password = admin.operator("alice", "admin")
        web = admin.login("alice", password)        # a requests.Session with the session cookie
        api = admin.bearer(admin.token("alice"))    # a requests.Session with Authorization: Bearer
        api.get(admin.url + "/api/v1/customers")
    """

    def __init__(self, gateway: "Gateway", config=None, name: str = "smg-admin", tls=None):
        self.gateway = gateway
        self.name = name
        self.dir = gateway.workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca, self.cert, self.key = tls or loopback_certificate(self.dir / "tls")
        self.port = free_port()
        self.master_key = self.dir / "dkim-master.key"
        if not self.master_key.exists():
            out = subprocess.run([str(gateway.bins / "smgctl"), "dkim", "init-master-key", "--master-key-file",
                                  str(self.master_key)], capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL)
            assert out.returncode == 0, out.stdout + out.stderr
        self.config = {
            "admin.listen": f"127.0.0.1:{self.port}",
            "admin.tls_certificate": str(self.cert),
            "admin.tls_key": str(self.key),
            "redis.url": gateway.redis.url,
            "redis.key_prefix": gateway.prefix,
            "dkim.master_key_file": str(self.master_key),
        }
        self.config.update(config or {})
        self.config_file = self.dir / "admin.yaml"
        self.proc = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "Admin":
        _yaml_file(self.config_file, self.config)
        self.proc = self.gateway.start("smg-admin", name=self.name, args=["--config", self.config_file])

        def answering():
            if self.proc.poll() is not None:
                raise AssertionError(f"smg-admin exited with {self.proc.returncode}:\n" + self.log_text()[-3000:])
            try:
                self.client().get(self.url + "/login", timeout=2, allow_redirects=False)
                return True
            except requests.RequestException:
                return False

        wait_until(answering, timeout, interval=0.2, what="smg-admin to answer HTTPS")
        return self

    def log_text(self) -> str:
        return self.gateway.log_text(self.name) if self.name in self.gateway.logs else ""

    def operator(self, name: str, role: str = "admin") -> str:
        """Creates an operator with `smgctl operator add`; returns the password it printed once."""
        out = self.gateway.smgctl("operator", "add", name, "--role", role)
        assert out.returncode == 0, out.stdout + out.stderr
        for line in out.stdout.splitlines():
            if line.startswith("password: "):
                return line.split()[1]
        raise AssertionError(f"no 'password: …' line from smgctl operator add: {out.stdout!r}")

    def token(self, name: str) -> str:
        """An API token for operator `name` (`smgctl operator token`, printed once)."""
        out = self.gateway.smgctl("operator", "token", name)
        assert out.returncode == 0, out.stdout + out.stderr
        for line in out.stdout.splitlines():
            if line.startswith("token: "):
                return line.split()[1]
        raise AssertionError(f"no 'token: …' line from smgctl operator token: {out.stdout!r}")

    def client(self):
        """A requests.Session that trusts the admin's test CA. It ignores the environment: with
        trust_env, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would win over `verify`, and a proxy
        variable would send loopback requests elsewhere."""
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.ca)
        return s

    def bearer(self, token: str):
        """A requests.Session sending `Authorization: Bearer <token>` (no cookie, no CSRF token)."""
        s = self.client()
        s.headers["Authorization"] = f"Bearer {token}"
        return s

    def login(self, name: str, password: str):
        """A requests.Session logged in through the form at POST /login (cookie `smg_session`);
        `.csrf` is its CSRF token (from GET /api/v1/session)."""
        s = self.client()
        r = s.post(self.url + "/login", data={"name": name, "password": password}, allow_redirects=False, timeout=30)
        assert r.status_code == 303, (r.status_code, r.text[:500])
        assert "smg_session" in s.cookies, r.headers
        info = s.get(self.url + "/api/v1/session", timeout=30)
        assert info.status_code == 200, (info.status_code, info.text[:500])
        s.csrf = info.json()["csrf"]
        return s
