"""The bus with CurveZMQ (issue 17): keys made with `smgctl bus keygen`, every process started with
bus.curve_key_file. Mail flows end to end; a process holding another keypair — a scanner, a tap —
gets nothing from the gateway's sockets, and a plaintext process cannot use them either."""
import collections
import json
import os
import stat
import subprocess
import threading
import time

from harness import bin_dir, make_message, send, wait_until

Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def z85_decode(text: str) -> bytes:
    out = b""
    for i in range(0, len(text), 5):
        value = 0
        for ch in text[i:i + 5]:
            value = value * 85 + Z85.index(ch)
        out += value.to_bytes(4, "big")
    return out


def keygen(path) -> str:
    """A keypair file made by the real smgctl; returns its public key (Z85)."""
    out = subprocess.run([str(bin_dir() / "smgctl"), "bus", "keygen", "--out", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    public = out.stdout.strip()
    assert len(public) == 40, out.stdout
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    return public


def tap(gateway, key_file, *args, seconds=12):
    """Runs `smgctl tap` with `key_file` (None: without one) in a thread; returns (thread, result)
    where result gets `stdout` (event JSON lines) and `stderr`."""
    result = {}
    env = dict(os.environ)
    env.pop("SMG_BUS_CURVE_KEY_FILE", None)
    command = [str(bin_dir() / "smgctl"), "tap", *args, "--seconds", str(seconds),
               "--redis", gateway.redis.url, "--prefix", gateway.prefix]
    if key_file:
        command += ["--curve-key-file", str(key_file)]

    def run():
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, env=env)
        result.update(stdout=out.stdout, stderr=out.stderr, returncode=out.returncode)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_pipeline_runs_over_curve_and_strangers_get_nothing(gateway, sink, redis_server, workdir):
    site_key, stranger_key = workdir / "site.key", workdir / "stranger.key"
    site_public = keygen(site_key)
    stranger_public = keygen(stranger_key)
    out = subprocess.run([str(bin_dir() / "smgctl"), "bus", "pubkey", str(site_key)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == site_public
    refused = subprocess.run([str(bin_dir() / "smgctl"), "bus", "keygen", "--out", str(site_key)], capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode != 0 and "exists" in refused.stderr
    assert subprocess.run([str(bin_dir() / "smgctl"), "bus", "pubkey", str(site_key)], capture_output=True, text=True,
                          timeout=30).stdout.strip() == site_public, "the refused keygen left the file alone"

    # Every site shares one keypair: no authorized list needed. Redrive is slowed down so that
    # only ZeroMQ frames could bring a message to the strangers below.
    gateway.start_all(SMG_BUS_CURVE_KEY_FILE=site_key, SMG_STAGE_REDRIVE_AFTER="60s")
    r = redis_server.client()
    server_key = z85_decode(site_public).hex()
    for kind in ["mail.accepted", "mail.scanned", "mail.classified", "mail.outbound.good", "mail.outbound.bad", "events"]:
        entries = [e.decode() for e in r.hkeys(f"smg:registry:{kind}")]
        assert entries and all(e.startswith("tcp://127.0.0.1:") and e.endswith(f"?curve={server_key}") for e in entries), \
            (kind, entries)

    # Strangers: a scanner with another keypair, and one without CURVE.
    gateway.start("smg-scanner", name="smg-scanner-stranger", SMG_BUS_CURVE_KEY_FILE=stranger_key,
                  SMG_STAGE_REDRIVE_AFTER="60s")
    gateway.start("smg-scanner", name="smg-scanner-plain", SMG_BUS_CURVE_KEY_FILE="", SMG_STAGE_REDRIVE_AFTER="60s")
    wait_until(lambda: "refused this process's CURVE key" in gateway.log_text("smg-scanner-stranger"), 15,
               what="the stranger scanner to be refused by ingress")
    wait_until(lambda: "bus.curve_key_file is empty" in gateway.log_text("smg-scanner-plain"), 15,
               what="the plaintext scanner to name the key it lacks")

    site_tap = tap(gateway, site_key, "--type", "delivered", "--count", "10", seconds=40)
    stranger_tap = tap(gateway, stranger_key, seconds=10)
    plain_tap = tap(gateway, None, seconds=6)
    time.sleep(2)  # the taps find the publishers through the registry

    ids = [send(gateway.ingress_port, make_message(f"curve-{i}")) for i in range(10)]
    wait_until(lambda: sink.count() == 10, 30, what="all ten messages at the sink")

    for thread, _ in (site_tap, stranger_tap, plain_tap):
        thread.join(60)
    events = [json.loads(line) for line in site_tap[1]["stdout"].splitlines() if line.strip()]
    assert sorted(e["id"] for e in events) == sorted(ids), site_tap[1]
    assert stranger_tap[1]["stdout"] == "", "a tap with another keypair gets no event"
    assert "refused this process's CURVE key " + stranger_public in stranger_tap[1]["stderr"], stranger_tap[1]["stderr"]
    assert plain_tap[1]["stdout"] == "", "a tap without CURVE gets no event"
    assert "bus.curve_key_file is empty" in plain_tap[1]["stderr"], plain_tap[1]["stderr"]

    # Only the gateway's own scanner scanned; the strangers processed nothing.
    scanners = collections.Counter()
    for _, fields in r.xrange("smg:events"):
        event = json.loads(fields[b"e"])
        if event["type"] == "scanned.clean":
            scanners[event["process"]] += 1
    assert scanners == {"smg-scanner": 10}, scanners
    # The gateway's processes say whom they refused, and the CURVE classifier refused the
    # plaintext scanner's producer endpoint.
    assert stranger_public in gateway.log_text("smg-ingress")
    assert "plaintext endpoint refused" in gateway.log_text("smg-classifier")
    for name in ["smg-scanner-stranger", "smg-scanner-plain"]:
        assert gateway.procs[name].poll() is None, f"{name} keeps running (and watching the registry)"


def test_bad_key_file_stops_the_service_naming_the_key(workdir):
    key = workdir / "site.key"
    keygen(key)
    os.chmod(key, 0o644)
    out = subprocess.run([str(bin_dir() / "smg-scanner"), "--check-config"], capture_output=True, text=True, timeout=30,
                         env={"SMG_BUS_CURVE_KEY_FILE": str(key), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 78, out.stderr
    assert "bus.curve_key_file" in out.stderr and "chmod 600" in out.stderr
    secret = [line for line in key.read_text().splitlines() if line.startswith("secret:")][0].split()[1]
    assert secret not in out.stderr
