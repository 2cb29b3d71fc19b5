#!/usr/bin/env python3
"""End-to-end throughput of the walking-skeleton pipeline on this machine.

Starts a private Redis (AOF, fsync always), every service (release build by default), and an
aiosmtpd sink; sends N messages of SIZE bytes over C concurrent SMTP connections; reports
accept rate (250s per second at ingress) and end-to-end rate (delivered at the sink per second).

    python3 bench/pipeline_bench.py --messages 2000 --connections 10 --size 10240
"""
import argparse
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path
import tempfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "Integration"))
import harness  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--size", type=int, default=10 * 1024)
    p.add_argument("--debug", action="store_true", help="use the debug build instead of release")
    args = p.parse_args()

    root = Path(__file__).resolve().parents[1]
    config = [] if args.debug else ["-c", "release"]
    subprocess.run(["swift", "build", *config], cwd=root, check=True, stdout=subprocess.DEVNULL)
    bins = subprocess.run(["swift", "build", *config, "--show-bin-path"], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()
    import os
    os.environ["SMG_BIN_DIR"] = bins

    work = Path(tempfile.mkdtemp(prefix="smg-bench-"))
    redis = harness.RedisServer(work)
    sink = harness.Sink()
    gw = harness.Gateway(work, redis, sink)
    try:
        gw.start_all(SMG_LOG_LEVEL="warning", SMG_STAGE_CONCURRENCY="32")
        filler = ("x" * 76 + "\r\n") * max(1, args.size // 78)
        per = args.messages // args.connections
        total = per * args.connections
        accepted_at = []
        lock = threading.Lock()

        def client(n):
            with smtplib.SMTP("127.0.0.1", gw.ingress_port, timeout=120) as s:
                s.ehlo("bench")
                for i in range(per):
                    msg = f"Subject: bench-{n}-{i}\r\n\r\n{filler}".encode()
                    s.sendmail("bench@customer.example", ["sink@dest.example"], msg)
                    with lock:
                        accepted_at.append(time.monotonic())

        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted_done = time.monotonic()
        harness.wait_until(lambda: sink.count() >= total, 600, interval=0.05, what="all delivered")
        delivered_done = time.monotonic()
        print(f"messages={total} size={args.size}B connections={args.connections} build={'debug' if args.debug else 'release'}")
        print(f"accepted: {total / (accepted_done - start):.0f} msg/s ({accepted_done - start:.2f}s)")
        print(f"end-to-end delivered: {total / (delivered_done - start):.0f} msg/s ({delivered_done - start:.2f}s)")
    finally:
        gw.stop_all()
        sink.stop()
        redis.stop()


if __name__ == "__main__":
    main()
