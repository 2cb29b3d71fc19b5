#!/usr/bin/env python3
"""Where the gateway's CPU goes per message: the whole pipeline under load, sampled by `perf`.

Starts the gateway as `relay_compare.py` does (release binaries, every service, DKIM RSA-2048,
ClamAV + YARA, a private Redis with fsync always, Postfix's `smtp-sink` as the destination), drives
it with `smtp-source`, and while the load runs records every process with `perf record -g`
(system-wide, so Redis and the kernel's share are in it). Then prints, per process, its CPU
ms per message (from /proc) and the top symbols (`perf report`, children excluded) to
`bench/results/profile.txt`.

    python3 bench/profile_pipeline.py [--messages 4000] [--sessions 20] [--size 10240] [--bin-dir DIR]
                                      [--seconds 10] [--no-perf]

Needs `perf` (apt: linux-perf) and Postfix's tools (apt: postfix). Loopback only.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "Integration"))
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402
import redis as redislib  # noqa: E402
from relay_compare import GatewayUnderTest, SmtpSink, cpu_seconds  # noqa: E402

SENDER, RECIPIENT = "bench@customer.test", "sink@dest.test"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--seconds", type=int, default=10, help="how long perf records (from 2 s into the load)")
    p.add_argument("--bin-dir", help="release binaries (default: swift build -c release)")
    p.add_argument("--top", type=int, default=25, help="symbols shown per process")
    p.add_argument("--no-perf", action="store_true", help="CPU per process only")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "profile.txt"))
    args = p.parse_args()
    if not args.bin_dir:
        subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        args.bin_dir = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout.strip()
    os.environ["SMG_BIN_DIR"] = args.bin_dir
    use_perf = not args.no_perf and shutil.which("perf")

    work = Path(tempfile.mkdtemp(prefix="smg-profile-"))
    sink_port = harness.free_port()
    gateway = GatewayUnderTest(work, sink_port)
    system = gateway.view(False)
    sink = SmtpSink(sink_port)
    report = []
    try:
        stats = redislib.Redis(port=gateway.redis.port)
        stats.config_resetstat()
        before = system.cpu()
        started = time.monotonic()
        source = subprocess.Popen(["smtp-source", "-s", str(args.sessions), "-m", str(args.messages),
                                   "-l", str(args.size), "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{gateway.port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        perf_data = work / "perf.data"
        if use_perf:
            time.sleep(2)
            subprocess.run(["perf", "record", "-a", "-g", "-F", "499", "-o", str(perf_data), "--",
                            "sleep", str(args.seconds)], capture_output=True)
        source.wait()
        harness.wait_until(lambda: sink.count >= args.messages, 600, interval=0.05, what="every message at the sink")
        elapsed = time.monotonic() - started
        after = system.cpu()
        cpu = {k: (after[k] - before.get(k, 0.0)) * 1000 / args.messages for k in after}
        report.append(f"{args.messages} x {args.size} B, {args.sessions} sessions: "
                      f"{args.messages / elapsed:.0f} msg/s end to end, CPU {sum(cpu.values()):.2f} ms/msg")
        for name, ms in sorted(cpu.items(), key=lambda kv: -kv[1]):
            report.append(f"  {name:18} {ms:6.2f} ms/msg")
        # What Redis is asked per message: calls of each command, and the scripts' own commands.
        commands = stats.info("commandstats")
        report.append("")
        report.append("Redis calls per message (scripts' inner commands included):")
        for name, v in sorted(commands.items(), key=lambda kv: -kv[1]["calls"]):
            if v["calls"] / args.messages >= 0.05:
                report.append(f"  {name.removeprefix('cmdstat_'):22} {v['calls'] / args.messages:6.2f}"
                              f"   {v['usec'] / args.messages:7.1f} us/msg")
        if use_perf:
            # One report per process (its threads together): the top symbols of that process,
            # as percentages of its own samples.
            for name, pid in sorted(system.pid_groups().items()):
                out = subprocess.run(["perf", "report", "-i", str(perf_data), "--pid", ",".join(map(str, pid)),
                                      "--no-children", "--sort", "dso,sym", "--stdio", "-g", "none",
                                      "--percentage", "relative", "--percent-limit", "1.5"],
                                     capture_output=True, text=True)
                lines = [l for l in out.stdout.splitlines() if l.strip() and not l.startswith("#")]
                report.append("")
                report.append(f"== {name} (cpu {cpu.get(name, 0):.2f} ms/msg)")
                report += [l[:150] for l in lines[:args.top]]
    finally:
        sink.stop()
        gateway.stop()
    text = "\n".join(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text[:6000])


if __name__ == "__main__":
    main()
