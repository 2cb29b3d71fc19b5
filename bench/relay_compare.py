#!/usr/bin/env python3
"""The gateway next to a Postfix relay, with and without OpenDKIM, on the same machine (issue 12).

Every system takes the same load and delivers to Postfix's `smtp-sink` on loopback; runs
alternate (postfix, postfix+opendkim, gateway, postfix, …) so that all see the same machine.

- `postfix`: a plain relay (`relayhost` = the sink) with default queue settings, run as root from
  a configuration written to a temporary folder (`postfix -c DIR start-fg`), never the machine's own.
- `postfix+opendkim`: a second such relay whose smtpd hands every message to the OpenDKIM milter
  over a unix socket (`smtpd_milters`, `milter_default_action = tempfail`); OpenDKIM signs for
  customer.test with an RSA-2048 key made at run time (config, key and socket in the temp folder).
- `gateway`: release build, every service, ingress without AUTH from loopback, ClamAV + YARA with
  the shipped test signatures, the classifier as built, DKIM RSA-2048 for the From domain, good
  egress with a static route to the sink, a private Redis with the shipped durability settings
  (AOF, fsync always).
- `gateway+tls` (with --tls on/both): the same gateway through a second ingress that offers
  STARTTLS (an RSA-2048 certificate made at run time) and requires AUTH PLAIN of a customer login.

Load: `smtp-source` (-d: connections reused), or bench/smtp_load.py where STARTTLS + AUTH is
needed. A cell is (sessions, message size, new or reused connections). Per cell: a warm-up run of
every system (which also sizes the runs when --messages is not given), `--runs` alternating runs,
then every system's accept latency at half of its own median msg/s (smtp_load.py, open loop).

Figures per run: end-to-end msg/s (load start → the sink has every message), accept msg/s (load
start → the load driver is done), CPU ms per message per process (utime + stime from /proc; for
Postfix the master, its live children and the children it reaped), peak VmRSS per process
(sampled from /proc/<pid>/status during the run; Postfix summed over all its processes).
Before the cells, one message through each system to a dumping sink proves that the DKIM
signers really sign: the DKIM-Signature is verified (dkimpy) against the public key.

    python3 bench/relay_compare.py                       # the headline cell: -s 20, 10 KiB, new connections, 3 runs
    python3 bench/relay_compare.py --matrix              # every cell: sessions 1/20/50 × 10/100 KiB × new/reused, TLS both
    python3 bench/relay_compare.py --sessions 1,20,50 --sizes 10240,102400 --reuse both --tls both
    python3 bench/relay_compare.py --bin-dir /tmp/smg-bin --runs 1 --messages 300   # given binaries, small

Writes bench/results/relay_compare.md (tables per cell, ratios to the plain Postfix relay),
relay_compare.json (every run) and relay_compare.png (msg/s per system per cell; CPU ms/msg
stacked by process).
"""
import argparse
import base64
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "Integration"))
import harness  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
SENDER, RECIPIENT = "bench@customer.test", "sink@dest.test"
DOMAIN, SELECTOR = "customer.test", "bench"
LOGIN, PASSWORD = "bench", "bench-password-123"
LOAD = ROOT / "bench" / "smtp_load.py"
HEADLINE = (20, 10240, False)  # (sessions, size, reuse): the default cell, as measured before the matrix
SYSTEMS = ("postfix", "postfix+opendkim", "gateway", "gateway+tls")
LABELS = {"postfix": "Postfix relay", "postfix+opendkim": "Postfix + OpenDKIM",
          "gateway": "the gateway", "gateway+tls": "the gateway, STARTTLS + AUTH"}


# ---- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int, children=False) -> float:
    """utime + stime of a process (+ cutime + cstime of its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK


def proc_kib(pid: int, file: str, field: str) -> int:
    """A "Field: N kB" line of /proc/<pid>/<file> in KiB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_kib(pid: int) -> int:
    """VmRSS: resident memory, shared pages (libraries) counted in full in every process."""
    return proc_kib(pid, "status", "VmRSS:")


def pss_kib(pid: int) -> int:
    """Pss: resident memory with each shared page divided among the processes that share it, so
    that a sum over many processes (Postfix) does not count the libraries once per process."""
    return proc_kib(pid, "smaps_rollup", "Pss:")


def start_time(pid: int):
    """A process's start time (clock ticks after boot): with the pid, it names one process, so a pid
    that the kernel has given to another process since is never signalled by mistake."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def descendants(root: int) -> list:
    """Every live descendant of `root` (children, their children, …)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, frontier = [], [root]
    while frontier:
        kids = children.get(frontier.pop(), [])
        out += kids
        frontier += kids
    return out


class RssSampler:
    """Samples VmRSS (and Pss) of every process group of a system (`system.pid_groups()`: label →
    pids, evaluated at each sample, so Postfix's children that come and go are counted) until
    stopped; keeps the peak of each group's sum and of the total."""

    def __init__(self, system, interval=0.25):
        self.system, self.interval = system, interval
        self.peak, self.peak_pss = {}, {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self):
        total = total_pss = 0
        for label, pids in self.system.pid_groups().items():
            kib, pss = sum(rss_kib(p) for p in pids), sum(pss_kib(p) for p in pids)
            total, total_pss = total + kib, total_pss + pss
            self.peak[label] = max(self.peak.get(label, 0), kib)
            self.peak_pss[label] = max(self.peak_pss.get(label, 0), pss)
        self.peak["total"] = max(self.peak.get("total", 0), total)
        self.peak_pss["total"] = max(self.peak_pss.get("total", 0), total_pss)

    def _run(self):
        while True:
            self._sample()
            if self.done.wait(self.interval):
                break

    def stop(self):
        """Peaks in MiB: (VmRSS by label, Pss by label)."""
        self.done.set()
        self.thread.join()
        mib = lambda peaks: {label: round(kib / 1024, 1) for label, kib in peaks.items()}  # noqa: E731
        return mib(self.peak), mib(self.peak_pss)


# ---- the destination ------------------------------------------------------------------------


class SmtpSink:
    """Postfix's smtp-sink with a running counter (-c) read from its output; with `dump`, every
    message is also written to a file in that folder (-d) so that its headers can be checked."""

    def __init__(self, port: int, dump: Path = None):
        self.port = port
        cmd = ["smtp-sink", "-u", "nobody", "-c"]
        if dump:
            dump.mkdir(parents=True, exist_ok=True)
            shutil.chown(dump, "nobody")  # smtp-sink writes as the user it runs as
            cmd += ["-d", f"{dump}/%M."]
        self.proc = subprocess.Popen(cmd + [f"127.0.0.1:{self.port}", "1024"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.count = 0
        threading.Thread(target=self._read, daemon=True).start()
        try:
            harness.wait_until(lambda: harness.listening(self.port), 10, what="smtp-sink")
        except BaseException:
            self.stop()
            raise

    def _read(self):
        buffer = b""
        while chunk := self.proc.stdout.read1(4096):
            buffer = (buffer + chunk)[-256:]
            found = re.findall(rb"mesg=(\d+)", buffer)
            if found:
                self.count = int(found[-1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# ---- the systems ----------------------------------------------------------------------------


class OpenDKIM:
    """The OpenDKIM milter, signing only (Mode s) for customer.test with an RSA-2048 key made here,
    on a unix socket that Postfix's smtpd (user postfix) can reach: it runs as opendkim with group
    postfix, and the socket is group-writable (UMask 007)."""

    def __init__(self, work: Path):
        self.dir = work / "opendkim"
        self.dir.mkdir()
        self.key = self.dir / f"{SELECTOR}.private"
        subprocess.run(["openssl", "genrsa", "-out", str(self.key), "2048"], check=True, capture_output=True)
        der = subprocess.run(["openssl", "rsa", "-in", str(self.key), "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.txt = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"  # what DNS would publish
        self.socket = self.dir / "opendkim.sock"
        user = "opendkim" if user_exists("opendkim") else "postfix"
        for path in (self.dir, self.key):
            shutil.chown(path, user, "postfix")
        self.dir.chmod(0o750)
        self.key.chmod(0o600)
        self.conf = self.dir / "opendkim.conf"
        self.conf.write_text(f"""# written by bench/relay_compare.py
Mode                s
Socket              local:{self.socket}
UMask               007
UserID              {user}:postfix
Domain              {DOMAIN}
Selector            {SELECTOR}
KeyFile             {self.key}
Canonicalization    relaxed/relaxed
SignatureAlgorithm  rsa-sha256
# The key sits below /tmp, which others can write: OpenDKIM would refuse it as unsafe.
RequireSafeKeys     false
Syslog              no
Background          no
# A signer makes no DNS queries; should it ever, only to loopback.
Nameservers         127.0.0.1
PidFile             {self.dir}/opendkim.pid
""")
        self.proc = subprocess.Popen(["opendkim", "-f", "-x", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "opendkim.log", "ab"))
        try:
            harness.wait_until(lambda: self.socket.exists() or self.proc.poll() is not None, 20, what="opendkim")
            if self.proc.poll() is not None:
                raise RuntimeError(f"opendkim exited: {(self.dir / 'opendkim.log').read_text()[-500:]}")
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PostfixRelay:
    MASTER = """127.0.0.1:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

    def __init__(self, work: Path, sink_port: int, name="postfix", milter: OpenDKIM = None):
        self.dir = work / name
        self.etc = self.dir / "etc"
        self.milter = milter
        for d in (self.etc, self.dir / "queue", self.dir / "data"):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir / "data", "postfix")  # the queue folder stays root's; Postfix makes its parts
        self.port = harness.free_port()
        milter_settings = f"""smtpd_milters = unix:{milter.socket}
milter_default_action = tempfail
""" if milter else ""
        (self.etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = {self.dir}/data/maillog
maillog_file_prefixes = {self.dir}
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
{milter_settings}""")
        (self.etc / "master.cf").write_text(self.MASTER.format(port=self.port))
        # `start-fg` keeps the master in the foreground (plain `start` waits for an init handshake
        # that a container without an init system does not give).
        self.proc = subprocess.Popen(["postfix", "-c", str(self.etc), "start-fg"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.master = None
        try:
            harness.wait_until(lambda: harness.listening(self.port), 20, what=f"the Postfix relay ({name})")
            self.master = int((self.dir / "queue" / "pid" / "master.pid").read_text().split()[0])
        except BaseException:
            self.stop()
            raise

    def cpu(self) -> dict:
        total = cpu_seconds(self.master, children=True) + sum(cpu_seconds(p) for p in descendants(self.master))
        out = {"postfix (all processes)": total}
        if self.milter:
            out["opendkim"] = cpu_seconds(self.milter.proc.pid)
        return out

    def pid_groups(self) -> dict:
        out = {"postfix (all processes)": [self.master, *descendants(self.master)]}
        if self.milter:
            out["opendkim"] = [self.milter.proc.pid]
        return out

    def stop(self):
        ours = {p: start_time(p) for p in ([self.master, *descendants(self.master)] if self.master else [])}
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # The master stops its children; any of them still there after a few seconds is killed here,
        # by pid, if that pid is still the same process.
        alive = lambda: [p for p, t in ours.items() if t is not None and start_time(p) == t]  # noqa: E731
        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in alive():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class GatewayUnderTest:
    """Every gateway service on a private Redis, as the integration tests run them. With `tls`, a
    second ingress (`smg-ingress-tls`) offers STARTTLS with a certificate made here and requires
    AUTH; a customer owning customer.test and its login are created for it."""

    # Generous connection limits: a new connection per message from 50 sessions must not meet
    # the per-IP limit (50) while the last connection's close is still being counted.
    # A benchmark is a burst by design: the compromised-account brake still does its work per
    # message, but its thresholds are out of reach (the AUTH runs send tens of thousands an hour).
    LIMITS = dict(SMG_INGRESS_MAX_CONNECTIONS="10000", SMG_INGRESS_MAX_CONNECTIONS_PER_IP="10000",
                  SMG_BRAKE_MIN_BURST="100000000", SMG_BRAKE_MAX_RECIPIENT_DOMAINS="100000000",
                  SMG_BRAKE_BAD_SHARE="1", SMG_BRAKE_MIN_VERDICTS="1000000")

    def __init__(self, work: Path, sink_port: int, tls=False):
        self.redis = harness.RedisServer(work)
        self.gw = harness.Gateway(work, self.redis, type("S", (), {"port": sink_port})())
        self.tls_port = None
        try:
            master = work / "dkim-master.key"
            out = subprocess.run([str(self.gw.bins / "smgctl"), "dkim", "init-master-key", "--master-key-file",
                                  str(master)], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            out = self.gw.smgctl("dkim", "keygen", DOMAIN, "--selector", SELECTOR, "--alg", "rsa",
                                 "--master-key-file", str(master))
            assert out.returncode == 0, out.stderr
            found = re.search(r"^value:\s*(.+)$", out.stdout, re.M)
            self.txt = found.group(1).strip() if found else None  # the public key record, for the check
            self.common = dict(SMG_LOG_LEVEL="warning", SMG_DKIM_MASTER_KEY_FILE=str(master),
                               SMG_STAGE_REDRIVE_AFTER="30s", SMG_STAGE_REDRIVE_INTERVAL="1s", SMG_STAGE_LEASE="30s",
                               SMG_EGRESS_LEASE="60s", SMG_STAGE_CONCURRENCY="32", **self.LIMITS)
            self.gw.start_all(**self.common)
            self.port = self.gw.ingress_port
            if tls:
                self._start_tls_ingress(work)
        except BaseException:
            self.stop()
            raise

    def _start_tls_ingress(self, work: Path):
        d = work / "tls"
        d.mkdir()
        self.cert, key = d / "cert.pem", d / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=smg.test",
                        "-addext", "subjectAltName=DNS:smg.test,IP:127.0.0.1"], check=True, capture_output=True)
        for args in [("customer", "add", LOGIN, "--network", "127.0.0.0/8", "--domain", DOMAIN),
                     ("account", "add", LOGIN, "--customer", LOGIN, "--password", PASSWORD)]:
            out = self.gw.smgctl(*args)
            assert out.returncode == 0, out.stderr
        self.tls_port = harness.free_port()
        self.gw.start("smg-ingress", name="smg-ingress-tls", **self.common,
                      SMG_INGRESS_LISTEN=f"127.0.0.1:{self.tls_port}", SMG_INGRESS_HOSTNAME="smg.test",
                      SMG_INGRESS_TLS_CERTIFICATE=str(self.cert), SMG_INGRESS_TLS_KEY=str(key),
                      SMG_INGRESS_REQUIRE_AUTH="true", SMG_INGRESS_CHECK_SENDER_DOMAIN="false")
        harness.wait_until(lambda: harness.listening(self.tls_port), 20, what="the STARTTLS ingress")
        time.sleep(1.2)  # the scanner discovers a new producer once a second

    def view(self, tls: bool):
        """The system as one load sees it: the ingress it talks to and every other process."""
        return GatewayView(self, tls)

    def stop(self):
        self.gw.stop_all()
        self.redis.stop()


class GatewayView:
    """`gateway` or `gateway+tls`: the same processes, with only the ingress in use counted (the
    other one idles); it is reported as smg-ingress either way."""

    def __init__(self, gateway: GatewayUnderTest, tls: bool):
        self.gateway, self.tls = gateway, tls
        self.port = gateway.tls_port if tls else gateway.port
        self.txt = gateway.txt

    def _procs(self) -> dict:
        procs = self.gateway.gw.procs
        out = {"smg-ingress": procs["smg-ingress-tls" if self.tls else "smg-ingress"].pid}
        out.update({name: proc.pid for name, proc in procs.items() if not name.startswith("smg-ingress")})
        out["redis-server"] = self.gateway.redis.proc.pid
        return out

    def cpu(self) -> dict:
        return {name: cpu_seconds(pid) for name, pid in self._procs().items()}

    def pid_groups(self) -> dict:
        return {name: [pid] for name, pid in self._procs().items()}


# ---- load -----------------------------------------------------------------------------------


def load_command(name, system, sessions, count, size, reuse, rate=None, cafile=None):
    """The load driver's command line: smtp-source where it can, smtp_load.py for STARTTLS + AUTH
    and for the open-loop latency runs."""
    target = f"127.0.0.1:{system.port}"
    if name != "gateway+tls" and rate is None:
        return ["smtp-source", *(["-d"] if reuse else []), "-s", str(sessions), "-m", str(count), "-l", str(size),
                "-f", SENDER, "-t", RECIPIENT, target]
    cmd = [sys.executable, str(LOAD), target, "--sessions", str(sessions), "--messages", str(count),
           "--size", str(size), "--from", SENDER, "--to", RECIPIENT]
    if reuse:
        cmd.append("--reuse")
    if rate is not None:
        cmd += ["--rate", f"{rate:.2f}"]
    if name == "gateway+tls":
        cmd += ["--starttls", "--cafile", str(cafile), "--tls-name", "smg.test", "--auth", f"{LOGIN}:{PASSWORD}"]
    return cmd


def run_driver(cmd, timeout):
    """Runs the load driver to its end; returns (stdout, wall seconds, its CPU seconds)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = started + timeout
        try:
            while True:  # os.wait4 gives this child's own rusage
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} took longer than {timeout:.0f}s")
                time.sleep(0.01)
        except BaseException:  # a timeout, Ctrl-C, SIGTERM: the driver goes too
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}… exited {proc.returncode}: {stderr[-800:] or stdout[-800:]}")
    return stdout, wall, usage.ru_utime + usage.ru_stime


def run(name, system, sink_port, sessions, count, size, reuse, ctx, rate=None):
    """One run: the load into `system`, until the sink has every message. Returns its figures."""
    sink = SmtpSink(sink_port)
    sampler = None
    try:
        before = system.cpu()
        sampler = RssSampler(system)
        started = time.monotonic()
        stdout, accepted, driver_cpu = run_driver(
            load_command(name, system, sessions, count, size, reuse, rate, ctx.get("cafile")),
            timeout=600 + count * 0.5)
        report = json.loads(stdout) if stdout.strip().startswith("{") else None
        delivered = report["count"] if report else count  # smtp-source stops at the first error
        harness.wait_until(lambda: sink.count >= delivered, max(600, count / 5), interval=0.02,
                           what=f"every message of {name} at the sink")
        elapsed = time.monotonic() - started
        after = system.cpu()
    finally:
        rss, pss = sampler.stop() if sampler else ({}, {})
        sink.stop()
    cpu = {k: round((after[k] - before.get(k, 0.0)) * 1000 / delivered, 3) for k in after}
    out = {"messages": delivered, "msgs": delivered / elapsed, "accept": delivered / accepted, "cpu": cpu,
           "cpu_total": round(sum(cpu.values()), 3), "rss_mib": rss, "pss_mib": pss,
           "driver_cpu_ms": round(driver_cpu * 1000 / max(1, delivered), 3)}
    if report:
        out["load"] = report
    return out


# ---- the DKIM check --------------------------------------------------------------------------


def strip_sink_headers(raw: bytes) -> bytes:
    """A message as smtp-sink -d wrote it, without what smtp-sink put on top (its X-Client-…,
    X-…-Args lines and its own Received header), with CRLF line ends."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    i = 0
    while i < len(lines) and re.match(rb"X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args):", lines[i]):
        i += 1
    if i < len(lines) and lines[i].startswith(b"Received:"):
        j = i + 1
        while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
            j += 1
        if b"smtp-sink" in b"".join(lines[i:j]):
            i = j
    return b"\r\n".join(lines[i:])


def check_dkim(name, system, sink_port, work, ctx) -> dict:
    """One message through `system` to a dumping sink: does it arrive with a DKIM-Signature of
    customer.test that verifies against the signer's public key? Asserted for the signing systems."""
    dump = work / "dkim-check" / name
    sink = SmtpSink(sink_port, dump=dump)
    try:
        run_driver(load_command(name, system, 1, 1, 2048, False, cafile=ctx.get("cafile")), timeout=120)
        harness.wait_until(lambda: sink.count >= 1 and any(dump.iterdir()), 120, what=f"the check message of {name}")
        time.sleep(0.2)  # the file is complete when smtp-sink has answered; give it a moment anyway
    finally:
        sink.stop()
    message = strip_sink_headers(next(dump.iterdir()).read_bytes())
    headers = message.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    found = re.search(r"^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", headers, re.M | re.I)
    out = {"signed": bool(found)}
    if found:
        tags = dict(t.strip().split("=", 1) for t in re.sub(r"\s+", "", found.group(1)).split(";") if "=" in t)
        out.update({"d": tags.get("d"), "s": tags.get("s"), "a": tags.get("a"), "c": tags.get("c"),
                    "h": tags.get("h")})
        txt = getattr(system, "txt", None) or getattr(getattr(system, "milter", None), "txt", None)
        try:
            import dkim
            out["verified"] = bool(txt) and dkim.verify(message, dnsfunc=lambda *_a, **_k: txt.encode())
        except ImportError:
            out["verified"] = None  # dkimpy missing (scripts/install-deps.sh installs it)
    if name != "postfix":
        assert out["signed"], f"{name}: the message arrived without a DKIM-Signature"
        assert out["d"] == DOMAIN and out["a"] == "rsa-sha256", f"{name}: unexpected signature {out}"
        assert out["verified"] is not False, f"{name}: the DKIM-Signature does not verify: {out}"
    return out


# ---- cells, runs, results ---------------------------------------------------------------------


def cell_title(cell) -> str:
    sessions, size, reuse = cell
    return (f"{sessions} session{'s' if sessions != 1 else ''}, {size // 1024} KiB, "
            f"{'connections reused' if reuse else 'a new connection per message'}")


def cell_short(cell) -> str:
    sessions, size, reuse = cell
    return f"s{sessions} {size // 1024}K {'reuse' if reuse else 'new'}"


def run_cell(cell, systems, ports, args, ctx, record):
    """Warm-up of every system (which sizes the runs without --messages), the alternating runs,
    then each system's accept latency at half of its median msg/s."""
    sessions, size, reuse = cell
    record.update({"sessions": sessions, "size": size, "reuse": reuse, "title": cell_title(cell), "systems": {}})
    counts = {}
    for name, system in systems.items():
        warm = run(name, system, ports[name], sessions, max(100, 4 * sessions), size, reuse, ctx)
        if args.messages:
            counts[name] = args.messages
        elif args.headline_only:
            counts[name] = 5000  # the headline figure as it was measured before the matrix
        else:
            counts[name] = int(min(100_000, max(200, warm["msgs"] * args.run_seconds)))
        record["systems"][name] = {"warmup": warm, "messages": counts[name], "runs": []}
        print(f"  warm-up {name}: {warm['msgs']:.0f} msg/s; {counts[name]} messages per run", flush=True)
    for i in range(args.runs):
        for name, system in systems.items():
            r = run(name, system, ports[name], sessions, counts[name], size, reuse, ctx)
            record["systems"][name]["runs"].append(r)
            print(f"  run {i + 1} {name}: {r['msgs']:.0f} msg/s end to end, accept {r['accept']:.0f} msg/s, "
                  f"CPU {r['cpu_total']:.2f} ms/msg, peak RSS {r['rss_mib'].get('total', 0):.0f} MiB", flush=True)
    if args.latency_seconds > 0:
        for name, system in systems.items():
            median = statistics.median(r["msgs"] for r in record["systems"][name]["runs"])
            rate = median / 2
            count = max(20, round(rate * args.latency_seconds))
            r = run(name, system, ports[name], 2 * sessions, count, size, reuse, ctx, rate=rate)
            record["systems"][name]["latency"] = r
            lat = r["load"]["latency_ms"]
            print(f"  latency {name} at {rate:.0f} msg/s: p50 {lat['p50']:.1f} p95 {lat['p95']:.1f} "
                  f"p99 {lat['p99']:.1f} ms ({r['load']['errors']} errors)", flush=True)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(system_record) -> dict:
    """Medians over the runs of one system in one cell."""
    runs = system_record["runs"]
    procs = list(dict.fromkeys(k for r in runs for k in r["cpu"]))
    labels = list(dict.fromkeys(k for r in runs for k in r["rss_mib"]))
    out = {"msgs": med([r["msgs"] for r in runs]), "msgs_min": min(r["msgs"] for r in runs),
           "msgs_max": max(r["msgs"] for r in runs), "accept": med([r["accept"] for r in runs]),
           "cpu_total": med([r["cpu_total"] for r in runs]),
           "cpu": {p: med([r["cpu"].get(p) for r in runs]) for p in procs},
           "rss": {label: max(r["rss_mib"].get(label, 0) for r in runs) for label in labels},
           "pss": {label: max(r["pss_mib"].get(label, 0) for r in runs) for label in labels},
           "driver_cpu": med([r["driver_cpu_ms"] for r in runs])}
    lat = system_record.get("latency")
    if lat:
        out["latency"] = dict(lat["load"]["latency_ms"], rate=lat["load"].get("rate"), errors=lat["load"]["errors"],
                              achieved=lat["load"]["msgs_per_s"], lag_p99=(lat["load"].get("lag_ms") or {}).get("p99"))
    return out


def dkim_text(check) -> str:
    if not check["signed"]:
        return "no DKIM-Signature"
    verified = {True: "verifies", False: "does NOT verify", None: "not verified (no dkimpy)"}[check.get("verified")]
    return f"DKIM-Signature d={check['d']} s={check['s']} a={check['a']} c={check['c']}, {verified}"


def fmt(value, digits=0):
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(value, base):
    return "" if value is None or not base else f" ({value / base:.2f}×)"


def write_results(results, args, out: Path):
    """relay_compare.md, relay_compare.json and (with matplotlib) relay_compare.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "relay_compare.json").write_text(json.dumps(results, indent=1) + "\n")
    cells = [c for c in results["cells"] if c.get("systems") and all(s["runs"] for s in c["systems"].values())]
    lines = [f"# Gateway vs Postfix relay — {results['date']}", "",
             f"{results['machine']}. Postfix {results['versions'].get('postfix', '?')}, OpenDKIM "
             f"{results['versions'].get('opendkim', '?')}, Redis {results['versions'].get('redis-server', '?')}; "
             f"gateway binaries: {results['bin_dir']}.", "",
             f"Load: `smtp-source` (`-d` when connections are reused) or `bench/smtp_load.py` (STARTTLS + AUTH) into "
             f"each system, `smtp-sink` as the destination; {args.runs} alternating run(s) per cell after a warm-up; "
             "medians, range in brackets. Every figure also as a ratio to the plain Postfix relay of the same cell. "
             "CPU ms/msg: utime + stime of the system's processes over the run (end to end), divided by the messages; "
             "the load driver's own CPU is listed apart. Latency: accept latency (final dot sent → 250 read) from "
             "`smtp_load.py` in open loop at half of the system's own median msg/s, the cell's size and connection "
             "mode. Peak RSS: the highest VmRSS sampled (every 0.25 s) over any run, for Postfix summed over all "
             "its processes (its shared libraries counted once per process); peak PSS: the same with shared pages "
             "divided among their processes, the fairer sum for many processes.", ""]
    if results.get("dkim_check"):
        lines += [f"DKIM check (one message per system, as it reached the sink): "
                  f"{'; '.join(f'{n}: {dkim_text(c)}' for n, c in results['dkim_check'].items())}.", ""]
    if len(cells) > 1:
        names = [n for n in SYSTEMS if any(n in c["systems"] for c in cells)]
        lines += ["## Summary: end-to-end msg/s (ratio to Postfix)", "",
                  "| cell | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for c in cells:
            s = {n: summarize(r) for n, r in c["systems"].items()}
            base = s.get("postfix", {}).get("msgs")
            lines.append(f"| {c['title']} | " + " | ".join(
                (fmt(s[n]["msgs"]) + ratio(s[n]["msgs"], base)) if n in s else "—" for n in names) + " |")
        lines.append("")
    for c in cells:
        s = {n: summarize(r) for n, r in c["systems"].items()}
        base = s.get("postfix")
        b = (lambda key: base.get(key)) if base else (lambda key: None)  # noqa: E731
        bl = (lambda key: (base.get("latency") or {}).get(key)) if base else (lambda key: None)  # noqa: E731
        lines += [f"## {c['title']}", "",
                  "Messages per run: " + ", ".join(f"{n} {r['messages']}" for n, r in c["systems"].items()) + ".", "",
                  "| system | msg/s end to end (range) | accept msg/s | CPU ms/msg | latency p50 / p95 / p99 ms "
                  "(at msg/s) | peak RSS MiB | peak PSS MiB | load driver CPU ms/msg |",
                  "|---|---|---|---|---|---|---|---|"]
        for n, v in s.items():
            lat = v.get("latency")
            lat_text = (f"{fmt(lat['p50'], 1)}{ratio(lat['p50'], bl('p50'))} / {fmt(lat['p95'], 1)}"
                        f"{ratio(lat['p95'], bl('p95'))} / {fmt(lat['p99'], 1)}{ratio(lat['p99'], bl('p99'))} "
                        f"(at {fmt(lat['achieved'])}{', ' + str(lat['errors']) + ' errors' if lat['errors'] else ''}"
                        f"{', starts up to ' + fmt(lat['lag_p99']) + ' ms late (p99)' if (lat['lag_p99'] or 0) > 50 else ''})"
                        ) if lat else "—"
            lines.append(
                f"| {LABELS[n]} | {fmt(v['msgs'])} ({fmt(v['msgs_min'])}–{fmt(v['msgs_max'])}){ratio(v['msgs'], b('msgs'))} "
                f"| {fmt(v['accept'])}{ratio(v['accept'], b('accept'))} "
                f"| {fmt(v['cpu_total'], 2)}{ratio(v['cpu_total'], b('cpu_total'))} | {lat_text} "
                f"| {fmt(v['rss'].get('total'), 1)}{ratio(v['rss'].get('total'), (base or {}).get('rss', {}).get('total'))} "
                f"| {fmt(v['pss'].get('total'), 1)}{ratio(v['pss'].get('total'), (base or {}).get('pss', {}).get('total'))} "
                f"| {fmt(v['driver_cpu'], 2)} |")
        base_cpu, base_rss = b("cpu_total"), (base or {}).get("rss", {}).get("total")
        base_pss = (base or {}).get("pss", {}).get("total")
        lines += ["", "CPU ms/msg and peak memory per process (ratios: to the plain Postfix relay's total):", "",
                  "| system | process | CPU ms/msg | peak RSS MiB | peak PSS MiB |", "|---|---|---|---|---|"]
        for n, v in s.items():
            for proc in v["cpu"]:
                lines.append(f"| {LABELS[n]} | {proc} | {fmt(v['cpu'][proc], 2)}{ratio(v['cpu'][proc], base_cpu)} "
                             f"| {fmt(v['rss'].get(proc), 1)}{ratio(v['rss'].get(proc), base_rss)} "
                             f"| {fmt(v['pss'].get(proc), 1)}{ratio(v['pss'].get(proc), base_pss)} |")
        lines.append("")
    (out / "relay_compare.md").write_text("\n".join(lines))
    if cells:
        plot(cells, out / "relay_compare.png")


def plot(cells, path: Path):
    """msg/s per system per cell (bars with the range), and CPU ms/msg stacked by process."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("relay_compare: matplotlib is missing, no plot (scripts/install-deps.sh --bench installs it)")
        return
    names = [n for n in SYSTEMS if any(n in c["systems"] for c in cells)]
    summaries = [{n: summarize(r) for n, r in c["systems"].items()} for c in cells]
    width = 0.8 / len(names)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(10, 0.9 * len(cells) * len(names) + 4), 9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, n in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(cells))]
        ys = [s[n]["msgs"] if n in s else 0 for s in summaries]
        err = [[max(0, s[n]["msgs"] - s[n]["msgs_min"]) if n in s else 0 for s in summaries],
               [max(0, s[n]["msgs_max"] - s[n]["msgs"]) if n in s else 0 for s in summaries]]
        top.bar(xs, ys, width, yerr=err, capsize=2, label=LABELS[n], color=colors[k % len(colors)])
    top.set_xticks(range(len(cells)), [cell_short((c["sessions"], c["size"], c["reuse"])) for c in cells])
    top.set_ylabel("msg/s end to end (median, range)")
    top.set_title("Throughput per system per cell")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars stay visible
    # CPU ms/msg stacked by process: one bar per system per cell, a colour per process.
    procs = list(dict.fromkeys(p for s in summaries for v in s.values() for p in v["cpu"]))
    proc_colors = {p: plt.get_cmap("tab20")(i % 20) for i, p in enumerate(procs)}
    labelled = set()
    for k, n in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(cells))]
        bottoms = [0.0] * len(cells)
        for p in procs:
            ys = [(s[n]["cpu"].get(p) or 0) if n in s else 0 for s in summaries]
            if any(ys):
                bottom.bar(xs, ys, width * 0.95, bottom=bottoms, color=proc_colors[p],
                           label=None if p in labelled else p, edgecolor="white", linewidth=0.3)
                labelled.add(p)
                bottoms = [a + b for a, b in zip(bottoms, ys)]
        for x, total in zip(xs, bottoms):
            if total:
                bottom.text(x, total, n.replace("postfix", "pf").replace("gateway", "gw").replace("+opendkim", "+dk"),
                            ha="center", va="bottom", fontsize=6, rotation=90)
    bottom.set_xticks(range(len(cells)), [cell_short((c["sessions"], c["size"], c["reuse"])) for c in cells])
    bottom.margins(y=0.15)  # room for the system names above the bars
    bottom.set_ylabel("CPU ms per message (median)")
    bottom.set_title("CPU per message, stacked by process (pf = Postfix, dk = OpenDKIM, gw = the gateway)")
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main -------------------------------------------------------------------------------------


def int_list(text):
    return [int(x) for x in str(text).split(",") if x.strip()]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--bin-dir", help="the gateway's binaries (default: swift build -c release, its bin path)")
    p.add_argument("--messages", type=int, default=None,
                   help="messages per run (default: 5000 for the headline cell alone, otherwise sized from the "
                        "warm-up so that a run takes about --run-seconds)")
    p.add_argument("--runs", type=int, default=3, help="alternating runs per cell (default 3)")
    p.add_argument("--run-seconds", type=float, default=12.0,
                   help="target length of one run when --messages is not given (default 12)")
    p.add_argument("--sessions", type=int_list, default=None, help="concurrent sessions, e.g. 1,20,50 (default 20)")
    p.add_argument("--sizes", "--size", dest="sizes", type=int_list, default=None,
                   help="message body sizes in octets, e.g. 10240,102400 (default 10240)")
    p.add_argument("--reuse", choices=["no", "yes", "both"], default=None,
                   help="a new connection per message (no, default), connections reused (yes), or both")
    p.add_argument("--tls", choices=["off", "on", "both"], default=None,
                   help="the gateway without (off, default), with STARTTLS + AUTH (on), or both")
    p.add_argument("--systems", default="postfix,postfix+opendkim,gateway",
                   help="which of postfix, postfix+opendkim, gateway to run (default all three; "
                        "gateway+tls follows --tls)")
    p.add_argument("--matrix", action="store_true",
                   help="every cell: --sessions 1,20,50 --sizes 10240,102400 --reuse both --tls both "
                        "(options given explicitly still win)")
    p.add_argument("--latency-seconds", type=float, default=20.0,
                   help="length of the half-load latency run of each system per cell; 0 = none (default 20)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    if args.runs < 1 or (args.messages is not None and args.messages < 1):
        p.error("--runs and --messages must be at least 1")
    m = args.matrix
    args.sessions = args.sessions or ([1, 20, 50] if m else [20])
    args.sizes = args.sizes or ([10240, 102400] if m else [10240])
    args.reuse = args.reuse or ("both" if m else "no")
    args.tls = args.tls or ("both" if m else "off")
    chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(chosen) - set(SYSTEMS)
    if unknown:
        p.error(f"--systems: unknown {', '.join(sorted(unknown))}")
    chosen = [s for s in chosen if s != "gateway+tls"]
    if "gateway" in chosen:
        chosen = [s for s in chosen if s != "gateway" or args.tls in ("off", "both")]
        if args.tls in ("on", "both"):
            chosen.append("gateway+tls")
    args.systems = [s for s in SYSTEMS if s in chosen]
    if not args.systems:
        p.error("no system to run")
    return args


def main():
    args = parse_args()
    # SIGTERM ends the bench like Ctrl-C: through the finally below, which stops every process
    # (a second SIGTERM or Ctrl-C must not cut that clean-up short).
    def terminate(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(143)
    signal.signal(signal.SIGTERM, terminate)
    need_opendkim = "postfix+opendkim" in args.systems
    missing = [t for t in ("smtp-source", "smtp-sink", "postfix", "redis-server", "openssl") if not shutil.which(t)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        missing.append("matplotlib")
    if need_opendkim and not shutil.which("opendkim"):
        missing.append("opendkim")
    if missing:  # the bench-only tools come with install-deps.sh --bench (idempotent, quiet)
        print(f"relay_compare: installing {', '.join(missing)} (scripts/install-deps.sh --bench)", flush=True)
        subprocess.run([str(ROOT / "scripts" / "install-deps.sh"), "--bench"], check=True)

    uses_gateway = any(s.startswith("gateway") for s in args.systems)
    if args.bin_dir:
        bins = Path(args.bin_dir).resolve()
    elif uses_gateway:
        subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        bins = Path(subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                                   capture_output=True, text=True).stdout.strip())
    else:
        bins = None
    if uses_gateway:
        for service in [*harness.Gateway.SERVICES, "smgctl"]:
            if not (bins / service).exists():
                sys.exit(f"relay_compare: {bins / service} is missing")
        os.environ["SMG_BIN_DIR"] = str(bins)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    cells = [(s, z, r) for s in args.sessions for z in args.sizes
             for r in ({"no": [False], "yes": [True], "both": [False, True]}[args.reuse])]
    args.headline_only = cells == [HEADLINE]
    versions = {}
    for pkg in ("postfix", "opendkim", "redis-server"):
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True).stdout
        if v:
            versions[pkg] = v
    results = {"date": time.strftime("%Y-%m-%d"), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
                          f"load average {os.getloadavg()[0]:.1f} at the start",
               "versions": versions, "bin_dir": str(bins) if bins else None,
               "options": {k: v for k, v in vars(args).items()}, "dkim_check": {}, "cells": []}
    out = Path(args.out)

    work = Path(tempfile.mkdtemp(prefix="smg-relay-compare-"))
    work.chmod(0o755)  # Postfix's and OpenDKIM's own users must reach their folders inside
    # Each system keeps one sink port for all its runs; a fresh smtp-sink is started on it per run.
    ports = {name: harness.free_port() for name in SYSTEMS}
    ports["gateway+tls"] = ports["gateway"]  # one gateway, one egress route
    started, stoppers, systems, ctx = time.monotonic(), [], {}, {}
    ok = False
    try:
        if "postfix" in args.systems:
            systems["postfix"] = PostfixRelay(work, ports["postfix"])
            stoppers.append(systems["postfix"].stop)
        if "postfix+opendkim" in args.systems:
            milter = OpenDKIM(work)
            stoppers.append(milter.stop)
            systems["postfix+opendkim"] = PostfixRelay(work, ports["postfix+opendkim"], "postfix-opendkim", milter)
            stoppers.append(systems["postfix+opendkim"].stop)
        if uses_gateway:
            gateway = GatewayUnderTest(work, ports["gateway"], tls="gateway+tls" in args.systems)
            stoppers.append(gateway.stop)
            if "gateway" in args.systems:
                systems["gateway"] = gateway.view(tls=False)
            if "gateway+tls" in args.systems:
                systems["gateway+tls"] = gateway.view(tls=True)
                ctx["cafile"] = gateway.cert
        for name, system in systems.items():
            check = check_dkim(name, system, ports[name], work, ctx)
            results["dkim_check"][name] = check
            print(f"DKIM check {name}: {dkim_text(check)}", flush=True)
        for cell in cells:
            print(f"== {cell_title(cell)}", flush=True)
            record = {}
            results["cells"].append(record)
            run_cell(cell, systems, ports, args, ctx, record)
            results["elapsed_s"] = round(time.monotonic() - started)
            write_results(results, args, out)  # after every cell: a failure later keeps what was measured
        ok = True
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as above: the clean-up runs to its end
        raise
    finally:
        for stop in reversed(stoppers):
            try:
                stop()
            except Exception as error:  # noqa: BLE001 — stop the others all the same
                print(f"relay_compare: stopping: {error}", file=sys.stderr)
        if ok:
            shutil.rmtree(work, ignore_errors=True)  # Redis's AOF alone can be gigabytes after a matrix
        else:
            print(f"relay_compare: logs and configs kept in {work}", file=sys.stderr)
    print((out / "relay_compare.md").read_text())
    print(f"relay_compare: {round(time.monotonic() - started)} s; wrote {out}/relay_compare.md, .json, .png")


if __name__ == "__main__":
    main()
