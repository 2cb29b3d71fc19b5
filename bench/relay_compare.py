#!/usr/bin/env python3
"""The gateway next to a Postfix relay on the same machine (issue 12, first step).

Both systems take the same load from Postfix's `smtp-source` and deliver to Postfix's
`smtp-sink`; runs alternate (Postfix, gateway, Postfix, …) so that both see the same machine.

- Postfix: a plain relay (`relayhost` = the sink) with default queue settings, run as root from a
  configuration written to a temporary folder (`postfix -c DIR`), never the machine's own.
- The gateway: release build, every service, ingress without AUTH from loopback, ClamAV + YARA
  with the shipped test signatures, the classifier as built, DKIM RSA-2048 for the From domain,
  good egress with a static route to the sink, a private Redis with the shipped durability
  settings (AOF, fsync always).

Figures per run: end-to-end msg/s (smtp-source start → the sink has every message) and CPU ms
per message per process (utime + stime from /proc; for Postfix the master, its live children and
the children it reaped). Writes a Markdown table to bench/results/relay_compare.md.

    python3 bench/relay_compare.py [--messages 5000] [--sessions 20] [--size 10240] [--runs 3]
"""
import argparse
import os
import re
import shutil
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


def descendants(root: int) -> list:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


class SmtpSink:
    """Postfix's smtp-sink with a running counter (-c) read from its output."""

    def __init__(self, port: int):
        self.port = port
        self.proc = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{self.port}", "1024"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.count = 0
        threading.Thread(target=self._read, daemon=True).start()
        harness.wait_until(lambda: harness.listening(self.port), 10, what="smtp-sink")

    def _read(self):
        buffer = b""
        while chunk := self.proc.stdout.read1(4096):
            buffer = (buffer + chunk)[-256:]
            found = re.findall(rb"mesg=(\d+)", buffer)
            if found:
                self.count = int(found[-1])

    def stop(self):
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

    def __init__(self, work: Path, sink_port: int):
        self.dir = work / "postfix"
        self.etc = self.dir / "etc"
        for d in (self.etc, self.dir / "queue", self.dir / "data"):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir / "data", "postfix")  # the queue folder stays root's; Postfix makes its parts
        self.port = harness.free_port()
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
""")
        (self.etc / "master.cf").write_text(self.MASTER.format(port=self.port))
        # `start-fg` keeps the master in the foreground (plain `start` waits for an init handshake
        # that a container without an init system does not give).
        self.proc = subprocess.Popen(["postfix", "-c", str(self.etc), "start-fg"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness.wait_until(lambda: harness.listening(self.port), 20, what="the Postfix relay")
        self.master = int((self.dir / "queue" / "pid" / "master.pid").read_text().split()[0])

    def cpu(self) -> dict:
        total = cpu_seconds(self.master, children=True) + sum(cpu_seconds(p) for p in descendants(self.master))
        return {"postfix (all processes)": total}

    def stop(self):
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class GatewayUnderTest:
    def __init__(self, work: Path, sink_port: int):
        self.redis = harness.RedisServer(work)
        self.gw = harness.Gateway(work, self.redis, type("S", (), {"port": sink_port})())
        master = work / "dkim-master.key"
        out = subprocess.run([str(self.gw.bins / "smgctl"), "dkim", "init-master-key", "--master-key-file", str(master)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        out = self.gw.smgctl("dkim", "keygen", "customer.test", "--selector", "bench", "--alg", "rsa",
                             "--master-key-file", str(master))
        assert out.returncode == 0, out.stderr
        self.gw.start_all(SMG_LOG_LEVEL="warning", SMG_DKIM_MASTER_KEY_FILE=str(master),
                          SMG_STAGE_REDRIVE_AFTER="30s", SMG_STAGE_REDRIVE_INTERVAL="1s", SMG_STAGE_LEASE="30s",
                          SMG_EGRESS_LEASE="60s", SMG_STAGE_CONCURRENCY="32")
        self.port = self.gw.ingress_port

    def cpu(self) -> dict:
        out = {name: cpu_seconds(proc.pid) for name, proc in self.gw.procs.items()}
        out["redis-server"] = cpu_seconds(self.redis.proc.pid)
        return out

    def stop(self):
        self.gw.stop_all()
        self.redis.stop()


def run(system, sink_port, args):
    sink = SmtpSink(sink_port)
    before = system.cpu()
    started = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(args.sessions), "-m", str(args.messages), "-l", str(args.size),
                    "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{system.port}"], check=True, capture_output=True)
    accepted = time.monotonic() - started
    harness.wait_until(lambda: sink.count >= args.messages, 600, interval=0.05, what="every message at the sink")
    elapsed = time.monotonic() - started
    after = system.cpu()
    sink.stop()
    cpu = {k: (after[k] - before.get(k, 0.0)) * 1000 / args.messages for k in after}
    return {"msgs": args.messages / elapsed, "accept": args.messages / accepted, "cpu": cpu}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    for tool in ("smtp-source", "smtp-sink", "postfix"):
        if not shutil.which(tool):
            sys.exit(f"relay_compare: {tool} is missing (apt install postfix; scripts/install-deps.sh does)")

    subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    os.environ["SMG_BIN_DIR"] = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT,
                                               check=True, capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="smg-relay-compare-"))
    work.chmod(0o755)  # Postfix's own user must reach its data folder inside
    # Each system keeps one sink port for all its runs; a fresh smtp-sink is started on it per run.
    ports = {"postfix": harness.free_port(), "gateway": harness.free_port()}

    postfix = PostfixRelay(work, ports["postfix"])
    gateway = GatewayUnderTest(work, ports["gateway"])
    results = {"postfix": [], "gateway": []}
    try:
        for i in range(args.runs):
            for name, system in (("postfix", postfix), ("gateway", gateway)):
                r = run(system, ports[name], args)
                results[name].append(r)
                print(f"run {i + 1} {name}: {r['msgs']:.0f} msg/s end to end, accept {r['accept']:.0f} msg/s, "
                      f"CPU {sum(r['cpu'].values()):.2f} ms/msg", flush=True)
    finally:
        postfix.stop()
        gateway.stop()

    def median(name, key):
        return statistics.median(r[key] for r in results[name])

    def cpu_total(name):
        return statistics.median(sum(r["cpu"].values()) for r in results[name])

    pf = median("postfix", "msgs")
    lines = [f"# Gateway vs Postfix relay — {time.strftime('%Y-%m-%d')}", "",
             f"`smtp-source -s {args.sessions} -m {args.messages} -l {args.size}` (a new connection per message) into "
             f"each system, `smtp-sink` as the destination, {args.runs} alternating runs, medians.", "",
             "| system | end-to-end msg/s (range) | ratio to Postfix | accept msg/s | CPU ms/msg |",
             "|---|---|---|---|---|"]
    for name in ("postfix", "gateway"):
        values = [r["msgs"] for r in results[name]]
        lines.append(f"| {name} | {median(name, 'msgs'):.0f} ({min(values):.0f}–{max(values):.0f}) | "
                     f"{median(name, 'msgs') / pf:.2f}× | {median(name, 'accept'):.0f} | {cpu_total(name):.2f} |")
    lines += ["", "CPU ms per message by process (gateway, medians):", "",
              "| process | ms/msg |", "|---|---|"]
    for proc in results["gateway"][0]["cpu"]:
        lines.append(f"| {proc} | {statistics.median(r['cpu'][proc] for r in results['gateway']):.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "relay_compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
