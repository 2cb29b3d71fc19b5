#!/usr/bin/env python3
"""Backlog drain: how fast a stage works off messages that are all due at once (after an outage, a
Redis failover, a dead process), compared with the same stage fed by ZeroMQ frames.

    SMG_BIN_DIR=$(swift build -c release --show-bin-path) python3 bench/backlog_drain.py [N]

1. Starts Redis, every service and an aiosmtpd sink (the integration harness), with egress-good
   stopped; submits N messages (default 10,000); they pile up in pending:mail.outbound.good.
2. Makes them all due (score 0, as if their frames were lost), starts egress-good and times until
   the sink has all N: that is redrive alone, no frames.
3. For comparison, submits N more with egress-good running (the frame path) and times them from
   the first to the last arrival at the sink.
Prints a Markdown table row for bench/README.md.
"""
import os
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests/Integration"))
from harness import Gateway, RedisServer, Sink, listening, make_message, wait_until  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
CONCURRENCY = os.environ.get("SMG_STAGE_CONCURRENCY", "32")


def submit(port, count, prefix, threads=8):
    def worker(k):
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.ehlo("bench.customer.example")
            for i in range(k, count, threads):
                while True:   # a 4xx (backpressure) is retried, as a real client would
                    code, _ = s.mail("sender@customer.example")
                    if code == 250:
                        s.rcpt("user@dest.example")
                        code, reply = s.data(make_message(f"{prefix}-{i}"))
                        if code == 250:
                            break
                    else:
                        s.rset()
                    time.sleep(0.1)
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def main():
    work = Path(tempfile.mkdtemp(prefix="smg-drain-"))
    redis = RedisServer(work)
    sink = Sink()
    gw = Gateway(work, redis, sink)
    overrides = dict(SMG_STAGE_CONCURRENCY=CONCURRENCY, SMG_STAGE_REDRIVE_AFTER="5s", SMG_LOG_LEVEL="warning",
                     SMG_INGRESS_MAX_PENDING="1000000")
    try:
        for svc in gw.SERVICES:
            if svc != "smg-egress-good":
                gw.start(svc, **overrides)
        client = redis.client()
        wait_until(lambda: listening(gw.ingress_port), 30, what="ingress to listen")
        t0 = time.monotonic()
        submit(gw.ingress_port, N, "drain")
        wait_until(lambda: client.zcard("smg:pending:mail.outbound.good") >= N, 600, interval=0.5,
                   what="the backlog in egress' pending set")
        print(f"submitted and staged {N} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        ids = client.zrange("smg:pending:mail.outbound.good", 0, -1)
        for i in range(0, len(ids), 1000):
            client.zadd("smg:pending:mail.outbound.good", {m: 0 for m in ids[i:i + 1000]})
        started = time.monotonic()
        gw.start("smg-egress-good", **overrides)
        wait_until(lambda: sink.count() >= N, 1200, interval=0.2, what="the backlog to drain")
        drain = time.monotonic() - started
        # The frame path, egress running.
        base = sink.count()
        t1 = time.monotonic()
        submit(gw.ingress_port, N, "frames")
        wait_until(lambda: sink.count() >= base + N, 1200, interval=0.2, what="the frame-path messages")
        frames = time.monotonic() - t1
        print("| messages | concurrency | redrive drain (egress start → last at sink) | msg/s | "
              "frame path end to end (submit → last at sink) | msg/s |")
        print("|---|---|---|---|---|---|")
        print(f"| {N} | {CONCURRENCY} | {drain:.1f} s | {N / drain:.0f} | {frames:.1f} s | {N / frames:.0f} |")
    finally:
        gw.stop_all()
        sink.stop()
        redis.stop()


if __name__ == "__main__":
    main()
