"""DKIM end to end: keys made with smgctl, mail signed by the running signer, verified at the sink
by dkimpy (an independent implementation) with the published records; `smgctl dkim check`
against the project's DNS fixture (knotd + unbound)."""
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import dkim
import pytest

from harness import free_port, make_message, send, wait_until

ROOT = Path(__file__).resolve().parents[2]


def smgctl_raw(gateway, *args):
    return subprocess.run([str(gateway.bins / "smgctl"), *args], capture_output=True, text=True, timeout=60)


def init_master_key(gateway, workdir):
    path = workdir / "dkim-master.key"
    out = smgctl_raw(gateway, "dkim", "init-master-key", "--master-key-file", str(path))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_size == 32
    return path


def keygen(gateway, master, domain, selector, alg):
    out = gateway.smgctl("dkim", "keygen", domain, "--selector", selector, "--alg", alg, "--master-key-file", str(master))
    assert out.returncode == 0, out.stderr
    assert f"{selector}._domainkey.{domain}" in out.stdout
    assert "PRIVATE" not in out.stdout.upper()
    value = re.search(r"^value:\s+(.*)$", out.stdout, re.M).group(1)
    assert value.startswith(f"v=DKIM1; k={alg}; p=")
    return value


def verify_all(raw: bytes, records: dict):
    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return records.get(name.rstrip(".")).encode() if name.rstrip(".") in records else None

    count = sum(1 for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
    return count, [dkim.DKIM(raw).verify(idx=i, dnsfunc=dnsfunc) for i in range(count)]


def opendkim_verify(workdir, raw: bytes, records: dict, name: str) -> str:
    """OpenDKIM's opendkim-testmsg on one message (keys served by knotd in a private namespace)."""
    (workdir / "records.txt").write_text("".join(f"{k} {v}\n" for k, v in records.items()))
    path = workdir / name
    path.write_bytes(raw)
    out = subprocess.run([str(ROOT / "Tests/Fixtures/dkim/opendkim-verify.sh"), str(workdir / "records.txt"), str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split(" ", 2)[0]


def header_fields(raw: bytes):
    """(header fields with their folded lines and CRLFs, body)."""
    head, body = raw.split(b"\r\n\r\n", 1)
    fields = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields, body


def dated(message: bytes) -> bytes:
    # opendkim-testmsg refuses messages without the Date field RFC 5322 requires.
    if b"\r\nDate: " in message or message.startswith(b"Date: "):
        return message
    return b"Date: Mon, 23 Nov 2026 05:00:00 +0000\r\n" + message


def test_signed_at_the_sink_and_verified_by_dkimpy_and_opendkim(gateway, sink, workdir):
    master = init_master_key(gateway, workdir)
    records = {
        "ed1._domainkey.customer.example": keygen(gateway, master, "customer.example", "ed1", "ed25519"),
        "rsa1._domainkey.customer.example": keygen(gateway, master, "customer.example", "rsa1", "rsa"),
    }
    listed = [json.loads(line) for line in gateway.smgctl("dkim", "list").stdout.splitlines()]
    assert {r["selector"] for r in listed} == {"ed1", "rsa1"}
    assert all("private" not in key for r in listed for key in r if key != "public") and all(
        "private_enc" not in r for r in listed)
    redis_dump = b"".join(v for v in gateway.redis.client().hgetall("smg:dkim:customer.example").values())
    assert b"PRIVATE KEY" not in redis_dump

    gateway.start_all(SMG_DKIM_MASTER_KEY_FILE=str(master))
    signed_id = send(gateway.ingress_port, dated(make_message("dkim-signed", sender="sender@customer.example")))
    unsigned_id = send(gateway.ingress_port, make_message("dkim-unsigned", sender="someone@other.example"),
                       sender="someone@other.example")
    wait_until(lambda: sink.count() == 2, 30, what="both messages at the sink")
    by_subject = {raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]: raw for _, _, raw in sink.snapshot()}

    raw = by_subject[b"dkim-signed"]
    assert raw.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    count, results = verify_all(raw, records)
    assert count == 2 and results == [True, True]
    # A header changed after signing fails.
    tampered = raw.replace(b"Subject: dkim-signed", b"Subject: dkim-signed!")
    assert verify_all(tampered, records)[1] == [False, False]
    # OpenDKIM, once per signature (it reports one result per message).
    fields, body = header_fields(raw)
    signatures = [f for f in fields if f.lower().startswith(b"dkim-signature:")]
    others = b"".join(f for f in fields if not f.lower().startswith(b"dkim-signature:"))
    assert len(signatures) == 2
    for i, sig in enumerate(signatures):
        one = sig + others + b"\r\n" + body
        assert opendkim_verify(workdir, one, records, f"sink-{i}.eml") == "PASS"
        changed = one.replace(b"Subject: dkim-signed", b"Subject: dkim-signed!")
        assert opendkim_verify(workdir, changed, records, f"sink-{i}-changed.eml") == "FAIL"

    assert b"DKIM-Signature" not in by_subject[b"dkim-unsigned"]

    def signed_event(message_id):
        events = [e for e in gateway.trace(message_id) if e["type"] == "signed"]
        return events[0]["facts"] if events else None

    facts = wait_until(lambda: signed_event(signed_id), 10, what="signed event")
    assert facts["signed"] is True
    assert facts["domain"] == "customer.example"
    assert sorted(facts["selectors"]) == ["ed1", "rsa1"]
    assert sorted(facts["algorithms"]) == ["ed25519-sha256", "rsa-sha256"]
    facts = wait_until(lambda: signed_event(unsigned_id), 10, what="signed event")
    assert facts["signed"] is False
    assert facts["reason"] == "no key for other.example"


def test_cli_errors_name_the_argument(gateway, workdir):
    master = init_master_key(gateway, workdir)
    again = smgctl_raw(gateway, "dkim", "init-master-key", "--master-key-file", str(master))
    assert again.returncode != 0 and "--master-key-file" in again.stderr
    cases = [
        (["keygen", "customer.example", "--selector", "s", "--alg", "dsa"], "--alg"),
        (["keygen", "customer.example", "--selector", "s", "--bits", "512"], "--bits"),
        (["keygen", "not a domain", "--selector", "s"], "<domain>"),
        (["keygen", "customer.example", "--selector", "bad selector!"], "--selector"),
        (["rotate", "customer.example", "--selector", "s2"], "<domain>"),
        (["check", "customer.example", "--dns-server", "nonsense"], "--dns-server"),
    ]
    for args, name in cases:
        out = gateway.smgctl("dkim", *args, "--master-key-file", str(master)) if args[0] in ("keygen", "rotate") \
            else gateway.smgctl("dkim", *args)
        assert out.returncode != 0, args
        assert name in out.stderr, (args, out.stderr)
    keygen(gateway, master, "customer.example", "s1", "ed25519")
    dup = gateway.smgctl("dkim", "keygen", "customer.example", "--selector", "s1", "--alg", "ed25519",
                         "--master-key-file", str(master))
    assert dup.returncode != 0 and "--selector" in dup.stderr and "already exists" in dup.stderr


def test_rotate_and_check_against_published_dns(gateway, workdir):
    master = init_master_key(gateway, workdir)
    good = keygen(gateway, master, "customer.example", "ed1", "ed25519")
    keygen(gateway, master, "customer.example", "rsa1", "rsa")
    ambiguous = gateway.smgctl("dkim", "rotate", "customer.example", "--selector", "ed2", "--master-key-file", str(master))
    assert ambiguous.returncode != 0 and "--alg" in ambiguous.stderr, ambiguous.stderr
    rotated = gateway.smgctl("dkim", "rotate", "customer.example", "--selector", "ed2", "--alg", "ed25519",
                             "--master-key-file", str(master))
    assert rotated.returncode == 0, rotated.stderr
    assert "retiring ed1" in rotated.stdout
    ed2 = re.search(r"^value:\s+(.*)$", rotated.stdout, re.M).group(1)
    states = {r["selector"]: r["state"] for r in map(json.loads, gateway.smgctl("dkim", "list", "customer.example")
                                                       .stdout.splitlines())}
    assert states == {"ed1": "retiring", "rsa1": "active", "ed2": "active"}

    # Publish ed1 and ed2 correctly, rsa1 with someone else's key, in the DNS fixture.
    zones = workdir / "zones"
    zones.mkdir()
    (zones / "zones.list").write_text("customer.example unsigned\n")
    wrong = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"

    def txt(value):
        return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))

    (zones / "customer.example.zone").write_text(
        "$ORIGIN customer.example.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 900 604800 60\n@ NS ns1\nns1 A 127.0.0.1\n"
        f"ed1._domainkey TXT {txt(good)}\ned2._domainkey TXT {txt(ed2)}\nrsa1._domainkey TXT {txt(wrong)}\n")
    dns_dir = workdir / "dns"
    auth, resolver = free_port(), free_port()
    env = dict(os.environ, SMG_DNS_EXTRA_ZONES=str(zones))
    started = subprocess.run([str(ROOT / "Tests/Fixtures/dns/start-dns.sh"), str(dns_dir), str(auth), str(resolver)],
                             env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    try:
        out = gateway.smgctl("dkim", "check", "customer.example", "--dns-server", f"127.0.0.1:{auth}")
        assert out.returncode == 1, out.stdout + out.stderr
        lines = {line.split()[0]: line for line in out.stdout.splitlines()}
        assert lines["ed1._domainkey.customer.example"].endswith(": ok")
        assert lines["ed2._domainkey.customer.example"].endswith(": ok")
        assert "MISMATCH" in lines["rsa1._domainkey.customer.example"]
        # Through the validating resolver as well.
        out = gateway.smgctl("dkim", "check", "customer.example", "--dns-server", f"127.0.0.1:{resolver}")
        assert "ed2._domainkey.customer.example active ed25519-sha256: ok" in out.stdout
    finally:
        subprocess.run([str(ROOT / "Tests/Fixtures/dns/stop-dns.sh"), str(dns_dir)], capture_output=True, timeout=30)


def test_ndrs_are_signed_with_the_gateways_own_domain(gateway, sink, workdir):
    """Issue 6: NDRs and notices the gateway writes carry the gateway's own signature."""
    from test_scanner import infected_message
    master = init_master_key(gateway, workdir)
    records = {"gw1._domainkey.gateway.test": keygen(gateway, master, "gateway.test", "gw1", "ed25519")}
    gateway.start_all(SMG_DKIM_MASTER_KEY_FILE=str(master), SMG_DKIM_OWN_DOMAIN="gateway.test")
    send(gateway.ingress_port, infected_message("virus-signed-ndr"))
    wait_until(lambda: sink.count() >= 1, 40, what="the NDR at the sink")
    mail_from, _, raw = sink.snapshot()[0]
    assert mail_from in ("", "<>")
    assert raw.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;") and b"d=gateway.test;" in raw
    count, results = verify_all(raw, records)
    assert count == 1 and results == [True]
