"""Walking skeleton, end to end: real SMTP clients → ingress → scanner → classifier → signer →
egress → a real SMTP sink, with real Redis and ZeroMQ in between."""
import collections
import json
import signal
import smtplib
import subprocess
import threading
import time
from email import message_from_bytes, policy

import pytest

from harness import make_message, queued_id, send, subject_of, wait_until

STAGE_ORDER = ["accepted", "scanned.clean", "classified", "signed", "delivery.attempt", "delivered"]


def test_message_reaches_sink_intact_and_trace_shows_every_stage(gateway, sink):
    gateway.start_all()
    message = make_message("walking-skeleton-1")
    message_id = send(gateway.ingress_port, message)

    wait_until(lambda: sink.count() == 1, 30, what="the message at the sink")
    mail_from, rcpts, raw = sink.snapshot()[0]
    assert mail_from == "sender@customer.example"
    assert rcpts == ["user@dest.example"]
    # The body arrives byte for byte, below the gateway's own Received header.
    assert raw.replace(b"\r\n", b"\n").endswith(message.replace(b"\r\n", b"\n"))
    received = raw.split(b"\r\n\r\n", 1)[0].split(b"\n")[0:3]
    assert received[0].startswith(b"Received: by smg.localdomain (smg-ingress) with ESMTP id ")
    head = raw.split(b"From: ")[0]
    assert b"127.0.0.1" not in head and b"app1.customer.example" not in head, "no customer IP or host name (R8)"

    def complete_trace():
        events = gateway.trace(message_id)
        return events if events and events[-1]["type"] == "delivered" else None

    events = wait_until(complete_trace, 10, what="the delivered event in the trace")
    assert [e["type"] for e in events] == STAGE_ORDER
    assert all(e["id"] == message_id for e in events)
    assert events[0]["facts"]["size"] > len(message)
    assert events[-1]["facts"]["recipient"] == "user@dest.example"
    assert events[-1]["facts"]["reply"].startswith("250")
    processes = [e["process"] for e in events]
    assert processes[0] == "smg-ingress" and processes[1] == "smg-scanner" and processes[-1] == "smg-egress-good"
    times = [e["time"] for e in events]
    assert times == sorted(times)


def test_swaks_submission_is_delivered(gateway, sink):
    gateway.start_all()
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{gateway.ingress_port}", "--from", "a@customer.example",
                          "--to", "b@dest.example", "--header", "Subject: via swaks", "--body", "hello from swaks"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "queued as" in out.stdout
    wait_until(lambda: sink.count() == 1, 30, what="swaks' message at the sink")
    assert b"hello from swaks" in sink.snapshot()[0][2]


def test_per_recipient_outcomes(gateway, sink):
    gateway.start_all(SMG_EGRESS_MAX_LIFETIME="3s")
    message_id = send(gateway.ingress_port, make_message("per-recipient"),
                      rcpts=("ok@dest.example", "reject@dest.example", "later@dest.example"))

    def final():
        types = collections.Counter(e["type"] for e in gateway.trace(message_id))
        return types if types["delivered"] == 1 and types["bounced"] == 2 else None

    types = wait_until(final, 30, what="one outcome per recipient")
    assert types["deferred"] >= 1, "the 4xx recipient is deferred before it expires"
    events = gateway.trace(message_id)
    outcomes = {e["facts"]["recipient"]: e["type"] for e in events if e["type"] in ("delivered", "bounced")}
    assert outcomes == {"ok@dest.example": "delivered", "reject@dest.example": "bounced",
                        "later@dest.example": "bounced"}
    # The delivered recipient is not tried again when the deferred one is retried.
    assert sum(1 for e in events if e["type"] == "delivered") == 1
    # Once the message is done: one NDR to the sender listing both bounced recipients (RFC 3464).
    wait_until(lambda: sink.count() == 2, 30, what="the message and its NDR at the sink")
    time.sleep(1)
    assert sink.count() == 2
    ndr_from, ndr_rcpts, ndr_raw = next(m for m in sink.snapshot() if m[0] in ("", "<>"))
    assert ndr_rcpts == ["sender@customer.example"]
    ndr = message_from_bytes(ndr_raw, policy=policy.default)
    assert ndr.get_content_type() == "multipart/report"
    blocks = ndr.get_payload()[1].get_payload()
    finals = {b["Final-Recipient"]: b["Status"] for b in blocks[1:]}
    assert finals == {"rfc822; reject@dest.example": "5.1.1", "rfc822; later@dest.example": "4.3.0"}
    sent = [e for e in gateway.trace(message_id) if e["type"] == "ndr.sent"]
    assert len(sent) == 1 and sorted(sent[0]["facts"]["recipients"]) == ["later@dest.example", "reject@dest.example"]


def test_thousand_messages_over_ten_connections_arrive_exactly_once(gateway, sink):
    gateway.start_all()
    per_connection, connections = 100, 10
    errors = []

    def client(n):
        try:
            with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=60) as s:
                s.ehlo(f"client{n}.customer.example")
                for i in range(per_connection):
                    marker = f"bulk-{n}-{i}"
                    s.sendmail("sender@customer.example", ["user@dest.example"], make_message(marker))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    total = per_connection * connections
    wait_until(lambda: sink.count() >= total, 240, interval=0.5, what=f"{total} messages at the sink")
    time.sleep(2)  # anything duplicated would show up now
    subjects = collections.Counter(subject_of(raw) for _, _, raw in sink.snapshot())
    assert len(subjects) == total
    assert set(subjects.values()) == {1}, [s for s, c in subjects.items() if c > 1][:5]


def test_classifier_killed_with_200_in_flight_loses_and_duplicates_nothing(gateway, sink, redis_server):
    gateway.start_all()
    # Freeze the classifier so that all 200 messages pile up in front of and inside it...
    gateway.signal("smg-classifier", signal.SIGSTOP)
    ids = [send(gateway.ingress_port, make_message(f"inflight-{i}")) for i in range(200)]
    r = redis_server.client()
    wait_until(lambda: r.zcard("smg:pending:mail.scanned") == 200, 60, what="200 messages waiting for the classifier")
    # ...then kill it while its socket buffers hold frames, and start it again.
    gateway.kill("smg-classifier")
    assert sink.count() == 0
    gateway.start("smg-classifier")
    wait_until(lambda: sink.count() >= 200, 120, interval=0.5, what="200 messages at the sink")
    time.sleep(2)
    subjects = collections.Counter(subject_of(raw) for _, _, raw in sink.snapshot())
    assert len(subjects) == 200 and set(subjects.values()) == {1}
    # Each message was classified once, even if it was redriven.
    sample = gateway.trace(ids[0])
    assert [e["type"] for e in sample].count("classified") == 1


def test_classifier_killed_mid_stream(gateway, sink):
    gateway.start_all()
    total = 200
    sent = []

    def producer():
        with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=60) as s:
            for i in range(total):
                s.sendmail("sender@customer.example", ["user@dest.example"], make_message(f"stream-{i}"))
                sent.append(i)

    t = threading.Thread(target=producer)
    t.start()
    wait_until(lambda: sink.count() >= 20, 60, what="the first messages through")
    gateway.kill("smg-classifier")
    gateway.start("smg-classifier")
    t.join(120)
    assert len(sent) == total
    wait_until(lambda: sink.count() >= total, 120, interval=0.5, what="all messages at the sink")
    time.sleep(2)
    subjects = collections.Counter(subject_of(raw) for _, _, raw in sink.snapshot())
    assert len(subjects) == total and set(subjects.values()) == {1}


def test_second_scanner_started_mid_run_takes_a_share(gateway, sink, redis_server):
    gateway.start_all()
    for i in range(20):
        send(gateway.ingress_port, make_message(f"before-{i}"))
    gateway.start("smg-scanner", name="smg-scanner-2")
    r = redis_server.client()
    wait_until(lambda: r.hlen("smg:registry:events") >= 7, 10, what="the second scanner to register")
    time.sleep(1.5)  # it discovers the ingress producer within a second
    for i in range(100):
        send(gateway.ingress_port, make_message(f"after-{i}"))
    wait_until(lambda: sink.count() >= 120, 60, what="120 messages at the sink")
    scanners = collections.Counter()
    for _, fields in r.xrange("smg:events"):
        event = json.loads(fields[b"e"])
        if event["type"] == "scanned.clean":
            scanners[event["process"]] += 1
    assert scanners["smg-scanner"] > 0 and scanners["smg-scanner-2"] > 0, scanners
    assert sum(scanners.values()) == 120


def test_redis_unreachable_at_end_of_data_gives_4xx_and_acknowledged_mail_survives(gateway, sink, redis_server):
    gateway.start_all()
    acknowledged = [send(gateway.ingress_port, make_message(f"before-crash-{i}")) for i in range(5)]
    wait_until(lambda: sink.count() == 5, 30, what="the first five messages")

    s = smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=30)
    s.ehlo("app1.customer.example")
    assert s.mail("sender@customer.example")[0] == 250
    assert s.rcpt("user@dest.example")[0] == 250
    s.putcmd("data")
    assert s.getreply()[0] == 354
    s.send(make_message("during-crash").replace(b"\r\n.", b"\r\n.."))
    redis_server.kill()
    s.send(b".\r\n")
    code, reply = s.getreply()
    assert 400 <= code < 500, (code, reply)
    s.close()

    # Whatever got a 250 is still there after Redis restarts from its append-only file.
    redis_server.start()
    r = redis_server.client()
    for message_id in acknowledged:
        assert r.exists(f"smg:msg:{message_id}") == 1
    # The refused message was never acknowledged; the sender retries, and then it goes through.
    retried = send(gateway.ingress_port, make_message("after-crash"))
    wait_until(lambda: sink.count() == 6, 60, what="the retried message")
    assert [e["type"] for e in gateway.trace(retried)][-1] == "delivered"


def test_ingress_pushes_back_when_scanners_fall_behind(gateway, sink):
    for service in ["smg-ingress", "smg-classifier", "smg-signer", "smg-egress-good", "smg-egress-bad"]:
        gateway.start(service, SMG_INGRESS_MAX_PENDING="5")
    time.sleep(2)
    codes = []
    with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=30) as s:
        s.ehlo("app1")
        for i in range(12):
            code, _ = s.mail("sender@customer.example")
            codes.append(code)
            if code != 250:
                break
            s.rcpt("user@dest.example")
            s.data(make_message(f"bp-{i}"))
            time.sleep(0.6)  # the pending figure is refreshed twice a second
    assert codes[-1] == 451, codes
    # A scanner arrives: the backlog drains and everything accepted is delivered.
    gateway.start("smg-scanner")
    accepted = codes.count(250)
    wait_until(lambda: sink.count() == accepted, 60, what="the backlog to drain")


def test_sigterm_drains_and_exits_cleanly(gateway, sink):
    gateway.start_all()
    send(gateway.ingress_port, make_message("drain"))
    wait_until(lambda: sink.count() == 1, 30, what="a message through")
    for name, proc in gateway.procs.items():
        proc.send_signal(signal.SIGTERM)
    for name, proc in gateway.procs.items():
        assert proc.wait(15) == 0, f"{name} exit status {proc.returncode}"
        assert '"msg":"stopped"' in gateway.log_text(name), name
