#!/usr/bin/env python3
"""Scale-out of one stage: does a second scanner process double a scanner-bound load?

On a 2-core machine the whole pipeline shares both cores, so "add a scanner" cannot show its
effect end to end. This measures the stage alone, as far as two cores allow:

1. Redis and the ingress only; `smtp-source` submits N messages (default 4000 × 10 KiB), which wait
   in `pending:mail.accepted` (no scanner runs, so their frames are lost: the case redrive serves).
2. All made due at once; then K scanner processes start, each pinned to its own core (`taskset`)
   with one ClamAV scan slot, and the time until `pending:mail.accepted` is empty is taken.
   Nothing consumes `mail.scanned` (hand-overs to an absent stage cost no CPU: the message waits in
   the next pending set), so the scanners are the only CPU users besides Redis.
3. K = 1 and K = 2, alternating, `--runs` times each.

    SMG_BIN_DIR=$(swift build -c release --show-bin-path) python3 bench/scale_out.py [--messages 4000] [--runs 2]

Prints msg/s per K and the ratio. Redis shares the cores with the scanners, so the ratio is a lower
bound of what a machine with a core per scanner and one for Redis would show.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests/Integration"))
from harness import Gateway, RedisServer, listening, wait_until  # noqa: E402

PENDING = "smg:pending:mail.accepted"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(args, scanners: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="smg-scale-"))
    redis = RedisServer(work)
    gw = Gateway(work, redis, type("NoSink", (), {"port": 9})())
    common = dict(SMG_LOG_LEVEL="warning", SMG_STAGE_CONCURRENCY="16", SMG_STAGE_REDRIVE_AFTER="30s",
                  SMG_STAGE_REDRIVE_INTERVAL="100ms", SMG_STAGE_LEASE="30s", SMG_INGRESS_MAX_PENDING="1000000",
                  SMG_INGRESS_MAX_CONNECTIONS_PER_IP="10000")
    try:
        gw.start("smg-ingress", **common)
        wait_until(lambda: listening(gw.ingress_port), 30, what="ingress")
        subprocess.run(["smtp-source", "-s", "20", "-m", str(args.messages), "-l", str(args.size), "-f",
                        "bench@customer.test", "-t", "sink@dest.test", f"127.0.0.1:{gw.ingress_port}"],
                       check=True, capture_output=True)
        client = redis.client()
        wait_until(lambda: client.zcard(PENDING) >= args.messages, 60, what="the backlog")
        gw.stop_all()   # ingress off: only Redis and the scanners run from here
        ids = client.zrange(PENDING, 0, -1)
        for i in range(0, len(ids), 1000):
            client.zadd(PENDING, {m: 0 for m in ids[i:i + 1000]})
        client.delete("smg:owner:mail.accepted")
        redis_cpu = cpu_seconds(redis.proc.pid)
        started = time.monotonic()
        procs = []
        for k in range(scanners):
            proc = gw.start("smg-scanner", name=f"smg-scanner-{k}", SMG_SCANNER_CLAMAV_SCAN_SLOTS="1", **common)
            subprocess.run(["taskset", "-p", "-c", str(k % os.cpu_count()), str(proc.pid)], check=True,
                           capture_output=True)
            procs.append(proc)
        # Timed from the first message done, so the processes' start-up (signatures, discovery)
        # is not in the rate.
        wait_until(lambda: client.zcard(PENDING) < args.messages, 60, interval=0.01, what="the first scan")
        first, left = time.monotonic(), client.zcard(PENDING)
        wait_until(lambda: client.zcard(PENDING) == 0, 600, interval=0.05, what="the backlog to drain")
        elapsed = time.monotonic() - first
        startup = first - started
        cpu = sum(cpu_seconds(p.pid) for p in procs)
        redis_cpu = cpu_seconds(redis.proc.pid) - redis_cpu
        return {"msgs": left / elapsed, "elapsed": elapsed, "startup": startup,
                "scanner_ms": cpu * 1000 / args.messages, "redis_ms": redis_cpu * 1000 / args.messages}
    finally:
        gw.stop_all()
        redis.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args()
    results = {1: [], 2: []}
    for i in range(args.runs):
        for k in (1, 2):
            r = one_run(args, k)
            results[k].append(r)
            print(f"run {i + 1}, {k} scanner(s): {r['msgs']:.0f} msg/s ({r['elapsed']:.1f} s after a {r['startup']:.1f} s start), scanners "
                  f"{r['scanner_ms']:.2f} ms/msg, Redis {r['redis_ms']:.2f} ms/msg", flush=True)
    one = statistics.median(r["msgs"] for r in results[1])
    two = statistics.median(r["msgs"] for r in results[2])
    print(f"| scanners | msg/s (median of {args.runs}) | ratio |")
    print("|---|---|---|")
    print(f"| 1 (one core) | {one:.0f} | 1.00× |")
    print(f"| 2 (a core each) | {two:.0f} | {two / one:.2f}× |")


if __name__ == "__main__":
    main()
