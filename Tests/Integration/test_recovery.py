"""The recovery contract, tried the way an operator meets it: real processes, real Redis, real SMTP
peers, and faults from outside — kill -9, SIGSTOP, a Redis that restarts, pauses or loads a big
dataset — under steady load. Nothing is restarted by the test except the thing it broke: every
service must recover by itself.

Exactly-once is checked per logical message: a sender retries until it gets a 250; a message whose
every attempt was answered (250 or a clear refusal) must arrive exactly once. A message one of whose
attempts ended without an answer (the connection broke after DATA) may arrive twice — the SMTP
client cannot know whether it was accepted (RFC 5321 §6.1 prefers duplicates to loss).
"""
import collections
import json
import signal
import smtplib
import threading
import time
from email import message_from_bytes, policy

import pytest

from harness import make_message, queued_id, redis_is_loading, subject_of, wait_until


class Load:
    """`threads` senders, each submitting its own numbered messages until stopped; each message is
    retried (new connection) until a 250, so every marker in `acked` must reach the sink."""

    def __init__(self, port, threads=4, prefix="load", rcpt="user@dest.example", pause=0.0):
        self.port = port
        self.prefix = prefix
        self.rcpt = rcpt
        self.pause = pause
        self.lock = threading.Lock()
        self.acked = {}            # marker → message id
        self.unsure = set()        # markers with an attempt that ended without a clear answer
        self.refused = collections.Counter()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=120):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "a sender hung"

    def count(self):
        with self.lock:
            return len(self.acked)

    def run(self, n):
        seq = 0
        while not self.stopping.is_set():
            marker = f"{self.prefix}-{n}-{seq}"
            seq += 1
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                stage = "connect"
                try:
                    with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as s:
                        stage = "mail"
                        code, _ = s.ehlo("app.customer.example")
                        code, reply = s.mail("sender@customer.example")
                        if code != 250:
                            self.refused[code] += 1
                            raise smtplib.SMTPResponseException(code, reply)
                        code, reply = s.rcpt(self.rcpt)
                        if code != 250:
                            self.refused[code] += 1
                            raise smtplib.SMTPResponseException(code, reply)
                        stage = "data"
                        code, reply = s.data(make_message(marker))
                        if code != 250:
                            self.refused[code] += 1
                            raise smtplib.SMTPResponseException(code, reply)
                        with self.lock:
                            self.acked[marker] = queued_id(reply)
                        break
                except smtplib.SMTPResponseException:
                    time.sleep(0.2)
                except (OSError, smtplib.SMTPException):
                    if stage == "data":
                        with self.lock:
                            self.unsure.add(marker)
                    time.sleep(0.2)
            if self.pause:
                time.sleep(self.pause)


def deliveries(sink):
    return collections.Counter(subject_of(raw) for _, _, raw in sink.snapshot())


def assert_exactly_once(load, sink, timeout=90):
    """Every acknowledged message arrives; only those with an unanswered attempt may arrive twice."""
    expected = set(load.acked)
    wait_until(lambda: expected <= set(deliveries(sink)), timeout,
               what=f"all {len(expected)} acknowledged messages at the sink")
    time.sleep(2)  # anything still in flight that would be a duplicate
    counts = deliveries(sink)
    duplicates = {m: c for m, c in counts.items() if c > 1 and m not in load.unsure}
    assert not duplicates, f"delivered more than once: {sorted(duplicates)[:10]} ({len(duplicates)})"
    return counts


def test_redis_kill9_and_restart_under_load_every_stage_resumes_by_itself(gateway, sink, redis_server):
    gateway.start_all()
    load = Load(gateway.ingress_port, threads=4).start()
    wait_until(lambda: load.count() >= 40 and sink.count() >= 20, 60, what="steady load")
    redis_server.kill()
    time.sleep(2)
    redis_server.start()
    killed_at = time.monotonic()
    # Every stage must pick up again without a restart: new mail flows end to end soon.
    before = sink.count()
    wait_until(lambda: sink.count() >= before + 40, 60, what="mail flowing again after the Redis restart")
    recovered_after = time.monotonic() - killed_at
    time.sleep(1)
    load.stop()
    assert_exactly_once(load, sink)
    assert recovered_after < 45, recovered_after
    for name, proc in gateway.procs.items():
        assert proc.poll() is None, f"{name} exited"


def test_redis_paused_for_20s_under_load(gateway, sink, redis_server):
    gateway.start_all()
    load = Load(gateway.ingress_port, threads=3).start()
    wait_until(lambda: load.count() >= 30 and sink.count() >= 15, 60, what="steady load")
    redis_server.pause()
    time.sleep(20)
    redis_server.resume()
    before = sink.count()
    wait_until(lambda: sink.count() >= before + 30, 60, what="mail flowing again after Redis resumed")
    load.stop()
    assert_exactly_once(load, sink)
    for name, proc in gateway.procs.items():
        assert proc.poll() is None, f"{name} exited"


def test_redis_loading_a_big_dataset_after_restart(gateway, sink, redis_server):
    client = redis_server.client()
    # A dataset that takes seconds to load: 50,000 keys in the AOF's RDB preamble, each delayed.
    client.execute_command("DEBUG", "POPULATE", "50000", "filler", "16")
    client.execute_command("BGREWRITEAOF")
    wait_until(lambda: client.info("persistence").get("aof_base_size", 0) > 1_000_000, 60,
               what="the AOF rewrite with the filler keys")
    gateway.start_all()
    load = Load(gateway.ingress_port, threads=3).start()
    wait_until(lambda: load.count() >= 30 and sink.count() >= 15, 60, what="steady load")
    redis_server.kill()
    redis_server.start("--key-load-delay", "20", "--loading-process-events-interval-bytes", "1024", wait=False)

    try:
        wait_until(lambda: redis_is_loading(redis_server.port), 10, interval=0.02, what="Redis to report LOADING")
    except AssertionError:
        print((redis_server.dir / "redis.log").read_text()[-3000:])
        raise
    before = sink.count()
    wait_until(lambda: sink.count() >= before + 30, 90, what="mail flowing again after loading")
    load.stop()
    assert_exactly_once(load, sink)
    for name, proc in gateway.procs.items():
        assert proc.poll() is None, f"{name} exited"


def test_killed_stage_messages_are_taken_over_within_the_lease(gateway, sink):
    """kill -9 each stage in turn while it works; its messages move on after its lease (5 s here),
    exactly once. Egress is the one place with a window every MTA has (the destination said 250,
    the process died before recording it): at most its in-flight messages may arrive twice."""
    gateway.start_all()
    load = Load(gateway.ingress_port, threads=3).start()
    for name in ["smg-scanner", "smg-classifier", "smg-signer"]:
        wait_until(lambda: load.count() >= 20, 60, what="load")
        gateway.kill(name)
        time.sleep(1)
        gateway.start(name, name=name)
        time.sleep(2)
    load.stop()
    assert_exactly_once(load, sink, timeout=60)
    # Egress: killed under load; nothing lost, duplicates only within its concurrency.
    load2 = Load(gateway.ingress_port, threads=3, prefix="egress").start()
    wait_until(lambda: load2.count() >= 20, 60, what="load")
    gateway.kill("smg-egress-good")
    time.sleep(1)
    gateway.start("smg-egress-good", name="smg-egress-good")
    time.sleep(3)
    load2.stop()
    expected = set(load2.acked)
    wait_until(lambda: expected <= set(deliveries(sink)), 60, what="every acknowledged message")
    counts = deliveries(sink)
    twice = [m for m in expected if counts[m] > 1 and m not in load2.unsure]
    assert len(twice) <= 8, twice


def test_egress_paused_beyond_its_lease_does_not_deliver_again(gateway, sink):
    """An egress stalled between RCPT and DATA (here: SIGSTOP) loses its lease; another egress takes
    the message over and delivers it; the stalled one, resumed, confirms its lease before DATA,
    finds it gone and sends nothing."""
    sink.slow_seconds = 2.0
    gateway.start_all(SMG_EGRESS_LEASE="3s")
    client = gateway.redis.client()
    message = make_message("paused-egress", rcpt="slow@dest.example")
    with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=30) as s:
        s.ehlo("app.customer.example")
        s.mail("sender@customer.example")
        s.rcpt("slow@dest.example")
        code, reply = s.data(message)
        assert code == 250
    message_id = queued_id(reply)
    # Wait until the egress holds it (lease owner set on mail.outbound.good), then stall it.
    wait_until(lambda: client.hget("smg:owner:mail.outbound.good", message_id) not in (None, b"~wait"), 30,
               interval=0.02, what="egress to take the message")
    time.sleep(0.3)  # in its RCPT wait (2 s) now
    gateway.signal("smg-egress-good", signal.SIGSTOP)
    gateway.start("smg-egress-good", name="egress-good-2")
    wait_until(lambda: sink.count() == 1, 40, what="the second egress to deliver the message")
    gateway.signal("smg-egress-good", signal.SIGCONT)
    time.sleep(6)  # the first egress finishes its RCPT wait and gets to where DATA would be
    assert sink.count() == 1, "delivered twice"
    events = gateway.trace(message_id)
    assert sum(1 for e in events if e["type"] == "delivered") == 1
    assert "lease lost before DATA" in gateway.log_text("smg-egress-good")


def test_redis_stopped_after_remote_250_keeps_the_outcome_no_second_delivery(gateway, sink, redis_server):
    """Redis goes away while the destination is answering DATA: egress cannot record the outcome,
    retries the commit until Redis is back, and then the message (and its NDR for the refused
    recipient) exists exactly once."""
    sink.slow_seconds = 3.0
    gateway.start_all()
    message = make_message("commit-after-250", rcpt="slowdata@dest.example")
    with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=30) as s:
        s.ehlo("app.customer.example")
        s.mail("sender@customer.example")
        s.rcpt("slowdata@dest.example")
        s.rcpt("reject-me@dest.example")
        code, reply = s.data(message)
        assert code == 250
    message_id = queued_id(reply)
    client = gateway.redis.client()
    wait_until(lambda: client.hget("smg:owner:mail.outbound.good", message_id) not in (None, b"~wait"), 30,
               interval=0.02, what="egress to take the message")
    redis_server.pause()
    time.sleep(8)   # the sink says 250 at 3 s; egress' commit waits for Redis
    redis_server.resume()
    wait_until(lambda: sink.count() == 2, 40, what="the message and the NDR for the refused recipient")
    time.sleep(4)
    subjects = [subject_of(raw) for _, _, raw in sink.snapshot()]
    assert subjects.count("commit-after-250") == 1, subjects
    events = gateway.trace(message_id)
    assert [e["facts"]["recipient"] for e in events if e["type"] == "delivered"] == ["slowdata@dest.example"]
    assert sum(1 for e in events if e["type"] == "ndr.sent") == 1


def test_sigterm_during_slow_data_records_the_delivery(gateway, sink):
    sink.slow_seconds = 2.5
    gateway.start_all(SMG_SHUTDOWN_DRAIN_TIMEOUT="1s")
    message_id = None
    with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=30) as s:
        s.ehlo("app.customer.example")
        s.mail("sender@customer.example")
        s.rcpt("slowdata@dest.example")
        code, reply = s.data(make_message("sigterm-slow-data"))
        message_id = queued_id(reply)
    client = gateway.redis.client()
    wait_until(lambda: client.hget("smg:owner:mail.outbound.good", message_id) not in (None, b"~wait"), 30,
               interval=0.02, what="egress to take the message")
    time.sleep(0.5)
    gateway.signal("smg-egress-good", signal.SIGTERM)
    gateway.procs["smg-egress-good"].wait(30)
    gateway.start("smg-egress-good", name="egress-good-2")
    wait_until(lambda: sink.count() == 1, 30, what="the delivery")
    time.sleep(5)
    assert sink.count() == 1, "delivered twice"
    types = [e["type"] for e in gateway.trace(message_id)]
    assert types.count("delivered") == 1, types


def test_message_failing_in_the_scanner_past_its_maximum_age_is_bounced_with_an_ndr(gateway, sink, workdir):
    """No signatures: the scanner holds mail (fail closed) and retries; past stage.max_lifetime the
    message is bounced and its sender gets an NDR saying what failed, once signatures load."""
    empty = workdir / "no-signatures"
    empty.mkdir()
    gateway.start_all(SMG_SCANNER_CLAMAV_DATABASE=str(empty), SMG_STAGE_MAX_LIFETIME="4s",
                      SMG_STAGE_RETRY_DELAY="500ms")
    with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=30) as s:
        s.ehlo("app.customer.example")
        s.mail("sender@customer.example")
        s.rcpt("user@dest.example")
        code, reply = s.data(make_message("poison-scanner"))
    message_id = queued_id(reply)

    def expired():
        types = [e["type"] for e in gateway.trace(message_id)]
        return types if "expired" in types else None

    types = wait_until(expired, 30, what="the message to expire in the scanner")
    assert "scanner.error" in types and "bounced" in types and "ndr.sent" in types
    assert types.count("scanner.error") < 40, "retries are paced"
    assert sink.count() == 0, "never passed on unscanned"
    # Signatures arrive: the NDR (itself scanned) reaches the sender.
    import shutil
    from harness import ROOT
    for f in (ROOT / "deploy/scanner/clamav").iterdir():
        shutil.copy(f, empty / f.name)
    wait_until(lambda: sink.count() == 1, 30, what="the NDR at the sink")
    mail_from, rcpts, raw = sink.snapshot()[0]
    assert mail_from in ("", "<>") and rcpts == ["sender@customer.example"]
    report = message_from_bytes(raw, policy=policy.default)
    assert report.get_content_type() == "multipart/report"
    text = raw.decode(errors="replace")
    assert "5.4.7" in text and "scanner" in text


def test_corrupt_record_is_quarantined_and_visible(gateway, sink):
    gateway.start_all()
    client = gateway.redis.client()
    bad_id = "01JZZZZZZZZZZZZZZZZZZZZZZZ"
    client.hset(f"smg:msg:{bad_id}", mapping={"envelope": "{not json", "state": "accepted"})
    client.set(f"smg:body:{bad_id}", b"Subject: x\r\n\r\nx\r\n")
    client.zadd("smg:pending:mail.outbound.good", {bad_id: 0})
    wait_until(lambda: client.zscore("smg:quarantine", bad_id) is not None, 20, what="quarantine")
    assert client.zscore("smg:pending:mail.outbound.good", bad_id) is None
    events = gateway.trace(bad_id)
    assert events[-1]["type"] == "quarantined" and events[-1]["facts"]["topic"] == "mail.outbound.good"
    # The pipeline is not held up by it.
    from harness import send
    send(gateway.ingress_port, make_message("after-poison"))
    wait_until(lambda: sink.count() == 1, 30, what="the next message")


def test_5000_recipients_end_to_end(gateway, sink):
    gateway.start_all(SMG_INGRESS_MAX_RECIPIENTS="6000")
    rcpts = [f"user{i}@dest.example" for i in range(5000)]
    with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=120) as s:
        s.ehlo("app.customer.example")
        s.mail("sender@customer.example")
        for r in rcpts:
            code, reply = s.rcpt(r)
            assert code == 250, reply
        code, reply = s.data(make_message("five-thousand"))
        assert code == 250, reply
    message_id = queued_id(reply)
    wait_until(lambda: sink.count() >= 1, 120, what="the message at the sink")
    client = gateway.redis.client()
    wait_until(lambda: client.hget(f"smg:msg:{message_id}", "state") == b"done", 60, what="the message to finish")
    delivered = set()
    for _, got, _ in sink.snapshot():
        delivered.update(got)
    assert delivered == set(rcpts)
    states = [json.loads(v)["state"] for k, v in client.hgetall(f"smg:msg:{message_id}").items()
              if k.startswith(b"rcpt:")]
    assert len(states) == 5000 and set(states) == {"delivered"}
    # The message's own event stream is capped.
    assert client.xlen(f"smg:ev:{message_id}") <= 1200


def test_due_backlog_drains_without_frames(gateway, sink):
    """Short form of bench/backlog_drain.py: messages that are due in egress's pending set (their
    frames lost) are all redriven as one continuous stream, not one batch per interval."""
    gateway.start_all(SMG_STAGE_REDRIVE_INTERVAL="1s", SMG_STAGE_CONCURRENCY="8")
    gateway.kill("smg-egress-good")
    ids = []
    for i in range(60):
        ids.append(send_quick(gateway.ingress_port, f"backlog-{i}"))
    client = gateway.redis.client()
    wait_until(lambda: client.zcard("smg:pending:mail.outbound.good") == 60, 60, what="60 messages waiting for egress")
    # Make them all due now, as after a long outage.
    client.zadd("smg:pending:mail.outbound.good", {i: 0 for i in ids})
    started = time.monotonic()
    gateway.start("smg-egress-good")
    wait_until(lambda: sink.count() == 60, 60, what="the backlog to drain")
    took = time.monotonic() - started
    # Batches of 8 once a second would take ≥ 7 s; a stream takes well under that.
    assert took < 6, took


def send_quick(port, marker):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("app.customer.example")
        s.mail("sender@customer.example")
        s.rcpt("user@dest.example")
        code, reply = s.data(make_message(marker))
        assert code == 250, reply
        return queued_id(reply)


def test_message_failing_in_the_signer_past_its_maximum_age_is_bounced_with_an_ndr(gateway, sink, workdir):
    """A DKIM key sealed under another master key: the signer cannot sign (it never sends unsigned
    what should be signed), retries, and past stage.max_lifetime bounces the message with an NDR."""
    from test_dkim import init_master_key, keygen, smgctl_raw
    master = init_master_key(gateway, workdir)
    keygen(gateway, master, "customer.example", "ed1", "ed25519")
    other = workdir / "other-master.key"
    out = smgctl_raw(gateway, "dkim", "init-master-key", "--master-key-file", str(other))
    assert out.returncode == 0, out.stderr
    gateway.start_all(SMG_DKIM_MASTER_KEY_FILE=str(other), SMG_STAGE_MAX_LIFETIME="4s",
                      SMG_STAGE_RETRY_DELAY="500ms")
    from harness import send
    message_id = send(gateway.ingress_port, make_message("poison-signer"))

    def expired():
        types = [e["type"] for e in gateway.trace(message_id)]
        return types if "expired" in types else None

    types = wait_until(expired, 40, what="the message to expire in the signer")
    assert "stage.error" in types and "bounced" in types and "ndr.sent" in types
    wait_until(lambda: sink.count() == 1, 30, what="the NDR at the sink")
    mail_from, rcpts, raw = sink.snapshot()[0]
    assert rcpts == ["sender@customer.example"]
    assert subject_of(raw) != "poison-signer", "the message itself never left"
    assert b"signer" in raw and b"5.4.7" in raw
