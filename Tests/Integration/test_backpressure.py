"""Recovering by itself and bounded memory: a Redis that is loading, at its memory limit, mail
piling up behind a stopped stage, a flood of refused commands, the in-flight byte budget of
ingress, and secrets kept out of logs. Real redis-server, real processes, real SMTP."""
import collections
import os
import re
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis as redislib

from harness import RedisServer, listening, make_message, redis_is_loading, send, subject_of, wait_until


class LoadingRedis(RedisServer):
    """A redis-server that loads its AOF slowly after a restart (Redis 7 debug knobs), so that it
    answers LOADING for seconds: key-load-delay sleeps per key, events are served every 1 KiB."""

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log"), "--enable-debug-command", "local",
             "--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.port), 10, what="redis-server to listen")


def loading(port) -> bool:
    return redis_is_loading(port, ("PING",))


def test_smgctl_waits_for_a_loading_redis(workdir, gateway):
    server = LoadingRedis(workdir / "loading")
    try:
        client = server.client()
        wait_until(lambda: not loading(server.port), 10, what="the empty redis to be ready")
        client.execute_command("DEBUG", "POPULATE", 30000)
        client.bgrewriteaof()
        wait_until(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0
                   and client.info("persistence")["aof_rewrite_scheduled"] == 0, 30, what="the AOF rewrite")
        server.stop()
        server.start()
        wait_until(lambda: loading(server.port), 5, what="redis to answer LOADING")
        started = time.monotonic()
        out = subprocess.run([str(gateway.bins / "smgctl"), "customer", "add", "acme", "--name", "Acme",
                              "--network", "127.0.0.0/8", "--domain", "acme.test", "--redis",
                              f"redis://127.0.0.1:{server.port}/0"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stderr.count("Redis is loading") == 1, out.stderr
        assert time.monotonic() - started > 0.2
        assert not loading(server.port)
        assert client.exists("smg:customer:acme"), "the customer was written after the load"
    finally:
        server.stop()


def smtp_session(port):
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("app1.customer.example")
    return s


def test_redis_near_its_memory_limit_makes_ingress_answer_4xx_and_recover(gateway, redis_server, sink):
    gateway.start_all()
    accepted = [send(gateway.ingress_port, make_message(f"mem-before-{i}")) for i in range(3)]
    client = redis_server.client()

    def mail_reply():
        with smtp_session(gateway.ingress_port) as s:
            return s.mail("sender@customer.example")

    def refused():
        # Redis's used memory moves a little (client buffers, the connection census): set the
        # limit from a fresh reading each time, 0.95 of it used — above
        # ingress.max_redis_memory_fraction (0.85), below the point where Redis refuses writes.
        client.config_set("maxmemory", str(int(client.info("memory")["used_memory"] / 0.95)))
        time.sleep(0.4)  # the watcher samples every 250 ms
        return mail_reply()[0] == 451

    try:
        wait_until(refused, 10, interval=0.1, what="ingress to answer 451 near Redis's memory limit")
        for i in range(3):
            code, reply = mail_reply()
            assert code == 451 and b"4.3.2" in reply, (code, reply)
    finally:
        client.config_set("maxmemory", "0")  # never leave the shared Redis unable to take writes
    time.sleep(0.8)
    accepted += [send(gateway.ingress_port, make_message(f"mem-after-{i}")) for i in range(3)]
    wait_until(lambda: sink.count() >= 6, 60, what="every accepted message at the sink")
    time.sleep(2)
    subjects = collections.Counter(subject_of(raw) for _, _, raw in sink.snapshot())
    assert subjects == collections.Counter([f"mem-before-{i}" for i in range(3)] + [f"mem-after-{i}" for i in range(3)])


def test_pending_across_all_stages_is_bounded(gateway, redis_server, sink):
    gateway.start_all(SMG_INGRESS_MAX_PENDING=3)
    gateway.signal("smg-egress-good", 15)
    gateway.procs["smg-egress-good"].wait(15)
    client = redis_server.client()
    for i in range(4):
        send(gateway.ingress_port, make_message(f"pile-{i}"))
    # They pile up in front of the stopped egress, beyond the first stage.
    wait_until(lambda: client.zcard("smg:pending:mail.outbound.good") == 4, 30, what="mail waiting for egress")
    assert client.zcard("smg:pending:mail.accepted") == 0
    time.sleep(0.6)
    with smtp_session(gateway.ingress_port) as s:
        code, reply = s.mail("sender@customer.example")
        assert code == 451 and b"4.3.2" in reply, (code, reply)
    gateway.start("smg-egress-good")
    wait_until(lambda: sink.count() == 4, 60, what="the piled-up mail delivered")
    time.sleep(0.6)
    send(gateway.ingress_port, make_message("pile-after"))
    wait_until(lambda: sink.count() == 5, 30, what="new mail flowing again")


def rss_kib(pid) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawSMTP:
    """A plain socket SMTP client that can pipeline and read replies on its own."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buffer = b""
        assert self.reply().startswith(b"220")

    def send(self, data: bytes):
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; buffered {self.buffer[-200:]!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def reply(self) -> bytes:
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return b"\n".join(lines)

    def command(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


def test_a_flood_of_refused_pipelined_commands_keeps_memory_bounded(gateway, redis_server):
    proc = gateway.start("smg-ingress", SMG_INGRESS_MAX_RECIPIENTS=1, SMG_INGRESS_MAX_COMMANDS=10_000_000)
    wait_until(lambda: listening(gateway.ingress_port), 20, what="ingress to listen")
    c = RawSMTP(gateway.ingress_port)
    assert c.command("EHLO app1.customer.example").startswith(b"250")
    assert c.command("MAIL FROM:<sender@customer.example>").startswith(b"250")
    assert c.command("RCPT TO:<first@dest.example>").startswith(b"250")

    def flood(n):
        counts = collections.Counter()
        writer = threading.Thread(target=lambda: c.send(b"".join(b"RCPT TO:<r%d@dest.example>\r\n" % i
                                                                 for i in range(n))))
        writer.start()
        for _ in range(n):
            counts[c.reply()[:3]] += 1
        writer.join()
        return counts

    assert flood(2000) == {b"452": 2000}  # warm up
    before = rss_kib(proc.pid)
    counts = flood(40000)
    after = rss_kib(proc.pid)
    assert counts == {b"452": 40000}, counts
    assert c.command("NOOP").startswith(b"250"), "the session is still usable"
    c.close()
    print(f"RSS before {before} KiB, after 40000 refused RCPTs {after} KiB")
    assert after - before < 40 * 1024, f"RSS grew from {before} KiB to {after} KiB"
    # The refusals were recorded in batches (or counted as dropped), never one task per refusal.
    client = redis_server.client()
    wait_until(lambda: client.xlen("smg:events") > 0, 10, what="refusal events in the log")
    time.sleep(1)
    print(f"refusal events written: {client.xlen('smg:events')}")


def big_body(marker: str, size: int) -> bytes:
    head = f"From: sender@customer.example\r\nTo: user@dest.example\r\nSubject: {marker}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * (size // len(line))


def test_inflight_byte_budget_refuses_one_transaction_and_keeps_the_session(gateway, redis_server):
    gateway.start("smg-ingress", SMG_INGRESS_MAX_INFLIGHT_BYTES="1M")
    wait_until(lambda: listening(gateway.ingress_port), 20, what="ingress to listen")
    a, b = RawSMTP(gateway.ingress_port), RawSMTP(gateway.ingress_port)
    for c in (a, b):
        assert c.command("EHLO app1.customer.example").startswith(b"250")

    def open_transaction(c, size_parameter=""):
        assert c.command(f"MAIL FROM:<sender@customer.example>{size_parameter}").startswith(b"250")
        assert c.command("RCPT TO:<user@dest.example>").startswith(b"250")

    # A buffers 700 KB and holds them (no final dot yet); B's 700 KB do not fit next to them.
    open_transaction(a)
    assert a.command("DATA").startswith(b"354")
    a.send(big_body("budget-a", 700_000))
    time.sleep(0.5)
    open_transaction(b)
    assert b.command("DATA").startswith(b"354")
    b.send(big_body("budget-b", 700_000) + b".\r\n")
    reply = b.reply()
    assert reply.startswith(b"452 4.3.1"), reply
    # A is accepted; B's session is usable and its retry fits now.
    a.send(b".\r\n")
    assert a.reply().startswith(b"250"), "the first transaction is accepted"
    open_transaction(b)
    assert b.command("DATA").startswith(b"354")
    b.send(big_body("budget-b", 700_000) + b".\r\n")
    assert b.reply().startswith(b"250")

    # With SIZE the refusal comes at DATA already, without reading the data.
    open_transaction(a)
    assert a.command("DATA").startswith(b"354")
    a.send(big_body("budget-a2", 700_000))
    time.sleep(0.5)
    open_transaction(b, " SIZE=700000")
    reply = b.command("DATA")
    assert reply.startswith(b"452 4.3.1"), reply
    assert b.command("RSET").startswith(b"250")
    a.send(b".\r\n")
    assert a.reply().startswith(b"250")
    assert b.command("QUIT").startswith(b"221")
    a.close()
    b.close()
    assert "in-flight" in gateway.log_text("smg-ingress")


def test_secrets_are_absent_from_logs_and_check_config(gateway, redis_server):
    password = "pw-S3cret-4711"
    client = redis_server.client()
    client.config_set("requirepass", password)
    try:
        url = f"redis://:{password}@127.0.0.1:{redis_server.port}/0"
        gateway.start("smg-ingress", SMG_REDIS_URL=url)
        wait_until(lambda: listening(gateway.ingress_port), 20, what="ingress to listen")
        send(gateway.ingress_port, make_message("with-a-password"))  # the password works
        check = subprocess.run([str(gateway.bins / "smg-ingress"), "--check-config"], env=gateway.env({"SMG_REDIS_URL": url}),
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        assert password not in check.stdout + check.stderr
        assert f"redis.url = redis://:***@127.0.0.1:{redis_server.port}/0" in check.stdout
        bad = subprocess.run([str(gateway.bins / "smg-ingress")],
                             env=gateway.env({"SMG_REDIS_URL": f"redis://:{password}@127.0.0.1:{redis_server.port}/x"}),
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 78 and "redis.url" in bad.stderr, bad.stderr
        assert password not in bad.stdout + bad.stderr
        gateway.stop_all()
        log = gateway.log_text("smg-ingress")
        assert "redis://:***@" in log, "the effective config is logged, redacted"
        assert password not in log
    finally:
        redislib.Redis(port=redis_server.port, password=password).config_set("requirepass", "")
