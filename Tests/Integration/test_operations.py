"""Operator-facing behaviour: configuration errors, taps, health and metrics."""
import json
import subprocess
import threading
import time
import urllib.request

from harness import ROOT, bin_dir, make_message, send, wait_until


def test_config_error_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage:\n  concurrency: 0\n")
    out = subprocess.run([str(bin_dir() / "smg-scanner"), "--config", str(bad)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 78
    assert "stage.concurrency" in out.stderr and "out of range" in out.stderr

    typo = tmp_path / "typo.yaml"
    typo.write_text("redis:\n  ulr: redis://127.0.0.1:1/0\n")
    out = subprocess.run([str(bin_dir() / "smg-scanner"), "--config", str(typo)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 78 and "redis.ulr" in out.stderr and "unknown key" in out.stderr

    env_out = subprocess.run([str(bin_dir() / "smg-egress-good"), "--check-config"], capture_output=True, text=True,
                             timeout=30, env={"SMG_EGRESS_RETRY_SCHEDULE": "1m,soon", "PATH": "/usr/bin:/bin"})
    assert env_out.returncode == 78 and "egress.retry_schedule" in env_out.stderr
    assert "SMG_EGRESS_RETRY_SCHEDULE" in env_out.stderr

    # libclamav's scratch folder must exist and be writable (it defaults to /dev/shm).
    tmp_out = subprocess.run([str(bin_dir() / "smg-scanner"), "--check-config"], capture_output=True, text=True,
                             timeout=30, env={"SMG_SCANNER_CLAMAV_TMPDIR": str(tmp_path / "missing"),
                                              "PATH": "/usr/bin:/bin"})
    assert tmp_out.returncode == 78 and "scanner.clamav.tmpdir" in tmp_out.stderr and "not a folder" in tmp_out.stderr


def test_shipped_configs_are_valid():
    """Every config in deploy/local (the local run), deploy/services and deploy/sites passes its
    service's --check-config on its own: a key a service does not know would stop it at start.
    (site.yaml together with each service's file, as deployed: test_deploy.py.)"""
    files = sorted((ROOT / "deploy" / "local").glob("*.yaml")) + sorted((ROOT / "deploy" / "services").glob("*.yaml")) \
        + sorted((ROOT / "deploy" / "sites").glob("*/*.yaml"))
    checked = 0
    for path in files:
        if path.name == "site.yaml":
            continue
        out = subprocess.run([str(bin_dir() / f"smg-{path.stem}"), "--config", str(path), "--check-config"],
                             capture_output=True, text=True, timeout=30, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, (str(path), out.stderr)
        checked += 1
    assert checked >= 10, files


def test_print_config_lists_every_key_with_default():
    out = subprocess.run([str(bin_dir() / "smg-ingress"), "--print-config"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for key in ["redis.url = redis://127.0.0.1:6379/0", "ingress.max_message_size = 50M", "stage.redrive_after = 30s",
                "SMG_INGRESS_LISTEN"]:
        assert key in out.stdout


def test_smgctl_rejects_bad_arguments():
    out = subprocess.run([str(bin_dir() / "smgctl"), "trace", "not-an-id"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "not a message id" in out.stderr


def test_tap_shows_live_events_filtered(gateway, sink):
    gateway.start_all()
    lines = []

    def tap():
        out = gateway.smgctl("tap", "--type", "delivered", "--type", "accepted", "--count", "2", "--seconds", "30",
                             timeout=60)
        lines.extend(out.stdout.splitlines())

    t = threading.Thread(target=tap)
    t.start()
    time.sleep(2)  # the tap finds the publishers through the registry
    message_id = send(gateway.ingress_port, make_message("tapped"))
    t.join(60)
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["accepted", "delivered"]
    assert all(e["id"] == message_id for e in events)


def test_health_and_metrics(gateway, sink, redis_server):
    gateway.start_all()
    send(gateway.ingress_port, make_message("metrics"))
    wait_until(lambda: sink.count() == 1, 30, what="a message through")
    r = redis_server.client()
    endpoints = [e.decode() for e in r.hkeys("smg:registry:http")]
    assert len(endpoints) == 6
    for endpoint in endpoints:
        with urllib.request.urlopen(endpoint + "/healthz", timeout=5) as resp:
            assert resp.status == 200 and json.load(resp)["status"] == "ok"
    texts = [urllib.request.urlopen(e + "/metrics", timeout=5).read().decode() for e in endpoints]
    assert any("smg_ingress_accepted_total 1" in t for t in texts)
    assert any('smg_stage_messages_total{stage="classifier"} 1' in t for t in texts)
