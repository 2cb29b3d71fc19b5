#!/usr/bin/env python3
"""Ingress figures (issue 4): sessions/s and messages/s with STARTTLS + AUTH, and the ingress
process's memory with 1,000 idle connections.

Starts a private Redis (AOF, fsync always), the DNS fixture, and smg-ingress alone (release
build), creates a customer and login, then measures with Python clients on loopback:

    python3 bench/ingress_bench.py [--sessions 400] [--threads 8] [--messages 2000] [--idle 1000]
"""
import argparse
import os
import resource
import socket
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "Integration"))
import harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=400)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--idle", type=int, default=1000)
    args = p.parse_args()

    subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    bins = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    os.environ["SMG_BIN_DIR"] = bins
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    work = Path(tempfile.mkdtemp(prefix="smg-ingress-bench-"))
    tls = work / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tls / "key.pem"),
                    "-out", str(tls / "cert.pem"), "-days", "1", "-subj", "/CN=smg.test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    auth_port, resolver_port = harness.free_port(), harness.free_port()
    fixture = ROOT / "Tests" / "Fixtures" / "dns"
    subprocess.run([str(fixture / "start-dns.sh"), str(work / "dns"), str(auth_port), str(resolver_port)], check=True,
                   capture_output=True)
    redis = harness.RedisServer(work)
    sink = harness.Sink()
    gw = harness.Gateway(work, redis, sink)
    try:
        proc = gw.start("smg-ingress", SMG_LOG_LEVEL="warning", SMG_INGRESS_REQUIRE_AUTH="true",
                        SMG_INGRESS_CHECK_SENDER_DOMAIN="true", SMG_INGRESS_ALLOW_NONPUBLIC_SENDER_DOMAINS="true",
                        SMG_DNS_SERVERS=f"127.0.0.1:{resolver_port}",
                        SMG_INGRESS_TLS_CERTIFICATE=str(tls / "cert.pem"), SMG_INGRESS_TLS_KEY=str(tls / "key.pem"),
                        SMG_INGRESS_MAX_CONNECTIONS_PER_IP="5000", SMG_INGRESS_MAX_CONNECTIONS="5000")
        harness.wait_until(lambda: harness.listening(gw.ingress_port), 20, what="ingress")
        for cmd in [("customer", "add", "bench", "--network", "127.0.0.0/8", "--domain", "plain.test"),
                    ("account", "add", "bench", "--customer", "bench", "--password", "bench-password-123")]:
            out = gw.smgctl(*cmd)
            assert out.returncode == 0, out.stderr
        ctx = ssl.create_default_context(cafile=str(tls / "cert.pem"))
        body = ("From: b@plain.test\r\nSubject: bench\r\n\r\n" + "x" * 1000 + "\r\n").encode()

        def one_session(count=1):
            with smtplib.SMTP("127.0.0.1", gw.ingress_port, timeout=60) as s:
                s.starttls(context=ctx)
                s.login("bench", "bench-password-123")
                for _ in range(count):
                    s.sendmail("b@plain.test", ["r@dest.example"], body)

        started = time.monotonic()
        one_session()
        first_login = time.monotonic() - started

        def run(total, per_session):
            per_thread = total // args.threads
            def worker():
                for _ in range(per_thread // per_session):
                    one_session(per_session)
            threads = [threading.Thread(target=worker) for _ in range(args.threads)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return (per_thread // per_session) * per_session * args.threads / (time.monotonic() - t0)

        sessions_per_s = run(args.sessions, 1)
        messages_per_s = run(args.messages, 50)

        before = rss_mib(proc.pid)
        idle = []
        for _ in range(args.idle):
            c = socket.create_connection(("127.0.0.1", gw.ingress_port), timeout=10)
            idle.append(c)
        for c in idle:
            assert c.recv(512).startswith(b"220")
        time.sleep(1)
        with_idle = rss_mib(proc.pid)
        for c in idle:
            c.close()

        print(f"first login (scrypt N=2^15 verify + TLS): {first_login * 1000:.0f} ms")
        print(f"sessions/s (STARTTLS + AUTH PLAIN + 1 message of 1 KiB + QUIT, {args.threads} threads): {sessions_per_s:.0f}")
        print(f"messages/s (50 per TLS+AUTH session, {args.threads} threads): {messages_per_s:.0f}")
        print(f"ingress RSS: {before:.1f} MiB before, {with_idle:.1f} MiB with {args.idle} idle connections")
    finally:
        gw.stop_all()
        sink.stop()
        redis.stop()
        subprocess.run([str(fixture / "stop-dns.sh"), str(work / "dns")], capture_output=True)



if __name__ == "__main__":
    main()
