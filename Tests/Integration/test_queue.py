"""Operators control the queue (`smgctl queue …`): the real smgctl binary against a real gateway.

A recipient whose name starts with `later` gets 451 from the sink, so its message sits deferred in
egress; the operator finds it, holds it (egress stops trying), releases it (egress tries again) and
bounces it (one RFC 3464 NDR reaches the sender). Bad ids and filters exit non-zero and change nothing.
"""
import json
import threading
import time
from email import message_from_bytes, policy

from harness import listening, make_message, send, wait_until

PREFIX = "smg:"


def count_rcpt_attempts(sink):
    """Counts RCPT commands the sink gets for `later…` recipients (the 451 ones never reach DATA)."""
    handler = sink.controller.handler
    original = handler.handle_RCPT
    seen = {"later": 0}
    lock = threading.Lock()

    async def counting(server, session, envelope, address, rcpt_options):
        if address.startswith("later"):
            with lock:
                seen["later"] += 1
        return await original(server, session, envelope, address, rcpt_options)

    handler.handle_RCPT = counting
    return lambda: seen["later"]


def listed(gateway, *filters):
    out = gateway.smgctl("queue", "list", "--json", *filters)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def snapshot(redis_server):
    """Every key of the gateway with its serialized value, heartbeats left out: the registry's and
    the ingress connection census (`conn:*` hashes and `conn-index`, rewritten every second while
    ingress runs, whatever smgctl does)."""
    r = redis_server.client()
    out = {}
    heartbeats = tuple(PREFIX.encode() + p for p in (b"registry:", b"conn:", b"conn-index"))
    for key in r.keys(PREFIX + "*"):
        if key.startswith(heartbeats):
            continue
        out[key] = (r.dump(key), r.pttl(key) > 0)
    return out


def types(gateway, message_id):
    return [e["type"] for e in gateway.trace(message_id)]


def test_deferred_message_held_released_and_bounced(gateway, sink, redis_server):
    attempts = count_rcpt_attempts(sink)
    gateway.start_all()
    message_id = send(gateway.ingress_port, make_message("queue-deferred"), rcpts=("later1@dest.example",))

    # It sits deferred in egress: `list --state deferred` shows it with its stage.
    rows = wait_until(lambda: [m for m in listed(gateway, "--state", "deferred") if m["id"] == message_id], 30,
                      what="the message deferred in egress")
    assert rows[0]["topic"] == "mail.outbound.good"
    assert rows[0]["sender"] == "sender@customer.example" and rows[0]["recipients"] == 1
    assert rows[0]["deferred_recipients"] == ["later1@dest.example"]
    table = gateway.smgctl("queue", "list", "--state", "deferred")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["ID", "STAGE", "STATE"]
    assert message_id in table.stdout and "mail.outbound.good" in table.stdout

    # Hold: out of egress's pending set; egress does not try it again (the retry schedule is 1s, 2s).
    held = gateway.smgctl("queue", "hold", message_id, "--reason", "looks odd", "--operator", "alice")
    assert held.returncode == 0, held.stderr
    assert message_id in held.stdout and "mail.outbound.good" in held.stdout
    r = redis_server.client()
    assert r.hget(PREFIX + "held", message_id) == b"mail.outbound.good"
    assert r.zscore(PREFIX + "pending:mail.outbound.good", message_id) is None
    assert [m["id"] for m in listed(gateway, "--state", "held")] == [message_id]
    time.sleep(1.0)  # an attempt in flight when it was held may still finish
    before = attempts()
    time.sleep(5)
    assert attempts() == before, "a held message is not retried"
    event = gateway.trace(message_id)
    held_event = [e for e in event if e["type"] == "queue.held"][-1]
    assert held_event["facts"] == {"action": "hold", "reason": "looks odd", "operator": "alice",
                                   "from": "mail.outbound.good", "to": "held"}
    summary = gateway.smgctl("queue")
    assert summary.returncode == 0 and any(line.split() == ["held", "1"] for line in summary.stdout.splitlines())

    # Release: due now in egress, which tries it again at once.
    released = gateway.smgctl("queue", "release", message_id)
    assert released.returncode == 0, released.stderr
    assert r.hget(PREFIX + "held", message_id) is None
    wait_until(lambda: attempts() > before, 15, what="egress to try the released message again")

    show = gateway.smgctl("queue", "show", message_id)
    assert show.returncode == 0, show.stderr
    for text in ["later1@dest.example", "deferred", "body size:", "queue.released", "mail.outbound.good"]:
        assert text in show.stdout, text

    # Bounce: the recipient bounced with the operator's reason, one NDR to the sender.
    bounced = gateway.smgctl("queue", "bounce", message_id, "--reason", "customer request")
    assert bounced.returncode == 0, bounced.stderr
    assert "NDR" in bounced.stdout

    def ndr_at_sink():
        for mail_from, rcpts, raw in sink.snapshot():
            if rcpts == ["sender@customer.example"] and mail_from in ("", "<>"):
                return raw
        return None

    raw = wait_until(ndr_at_sink, 30, what="the NDR at the sink")
    report = message_from_bytes(raw, policy=policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = [p.get_content_type() for p in report.iter_parts()]
    assert parts[:2] == ["text/plain", "message/delivery-status"]
    assert "Bounced by operator: customer request" in raw.decode(errors="replace")
    assert "later1@dest.example" in raw.decode(errors="replace")

    history = types(gateway, message_id)
    assert history.count("queue.bounced") == 1 and "ndr.sent" in history
    assert history[history.index("queue.bounced") + 1] == "bounced"
    record = r.hgetall(PREFIX + "msg:" + message_id)
    assert record[b"state"] == b"done"
    rcpt = json.loads(record[b"rcpt:later1@dest.example"])
    assert rcpt["state"] == "bounced" and rcpt["lastReply"] == "550 5.0.0 Bounced by operator: customer request"
    assert r.ttl(PREFIX + "msg:" + message_id) > 0
    assert all(m["id"] != message_id for m in listed(gateway))

    # A finished message cannot be bounced (or held, released) again; its keys do not change.
    # (Only its own keys: the NDR is still moving through the pipeline.)
    own = [f"{PREFIX}{kind}:{message_id}" for kind in ("msg", "ev", "body")]
    before_keys = [(r.dump(k), r.pttl(k) > 0) for k in own]
    for args in (["bounce", message_id], ["hold", message_id], ["release", message_id]):
        again = gateway.smgctl("queue", *args)
        assert again.returncode == 1 and message_id in again.stderr and "finished" in again.stderr, again.stderr
    assert [(r.dump(k), r.pttl(k) > 0) for k in own] == before_keys
    assert r.hget(PREFIX + "held", message_id) is None


def test_bad_ids_and_filters_change_nothing(gateway, sink, redis_server):
    # Ingress only: accepted messages wait in pending:mail.accepted, nothing moves them.
    gateway.start("smg-ingress")
    wait_until(lambda: listening(gateway.ingress_port), 20, what="ingress to listen")
    first = send(gateway.ingress_port, make_message("queue-bad-1"))
    second = send(gateway.ingress_port, make_message("queue-bad-2"), sender="other@customer.example",
                  rcpts=("x@elsewhere.example",))
    unknown = "01" + "0" * 8 + "ZZZZZZZZZZZZZZZZ"
    before = snapshot(redis_server)

    usage = [
        (["queue", "hold", "not-an-id"], "not-an-id"),
        (["queue", "release", first, "bogus"], "bogus"),
        (["queue", "list", "--topic", "mail.bogus"], "--topic"),
        (["queue", "list", "--state", "stuck"], "--state"),
        (["queue", "list", "--older-than", "soon"], "--older-than"),
        (["queue", "list", "--limit", "0"], "--limit"),
        (["queue", "requeue", first, "--stage", "egress"], "--stage"),
        (["queue", "delete", first], "--reason"),
        (["queue", "show", "01234"], "01234"),
    ]
    for args, named in usage:
        out = gateway.smgctl(*args)
        assert out.returncode == 64, (args, out.returncode, out.stderr)
        assert named in out.stderr, (args, out.stderr)
    refused = [
        (["queue", "hold", unknown], unknown),
        (["queue", "bounce", unknown], unknown),
        (["queue", "delete", unknown, "--reason", "x"], unknown),
        (["queue", "requeue", unknown], unknown),
        (["queue", "show", unknown], unknown),
        (["queue", "release", first], "not held"),
    ]
    for args, named in refused:
        out = gateway.smgctl(*args)
        assert out.returncode == 1, (args, out.returncode, out.stderr)
        assert named in out.stderr, (args, out.stderr)
    assert snapshot(redis_server) == before, "bad input changed nothing"

    # Filters.
    assert [m["id"] for m in listed(gateway)] == [first, second]
    assert [m["id"] for m in listed(gateway, "--sender", "OTHER@customer.example")] == [second]
    assert [m["id"] for m in listed(gateway, "--recipient-domain", "elsewhere.example")] == [second]
    assert [m["id"] for m in listed(gateway, "--topic", "mail.accepted", "--limit", "1")] == [first]
    assert listed(gateway, "--older-than", "1d") == []
    assert listed(gateway, "--topic", "mail.scanned") == []
    assert listed(gateway, "--customer", "nobody") == []
    assert [m["state"] for m in listed(gateway, "--state", "queued")] == ["queued", "queued"]

    # Several ids: each on its own; the good one is done, the unknown one reported, exit 1.
    mixed = gateway.smgctl("queue", "hold", first, unknown, "--operator", "bob")
    assert mixed.returncode == 1
    assert first in mixed.stdout and unknown in mixed.stderr
    assert redis_server.client().hget(PREFIX + "held", first) == b"mail.accepted"
    again = gateway.smgctl("queue", "hold", first)
    assert again.returncode == 1 and "already held" in again.stderr

    # Requeue a held message into its stage, delete the other with a reason.
    requeued = gateway.smgctl("queue", "requeue", first, "--stage", "accepted")
    assert requeued.returncode == 0, requeued.stderr
    assert redis_server.client().zscore(PREFIX + "pending:mail.accepted", first) is not None
    deleted = gateway.smgctl("queue", "delete", second, "--reason", "test cleanup")
    assert deleted.returncode == 0, deleted.stderr
    last = gateway.trace(second)[-1]
    assert last["type"] == "queue.deleted" and last["facts"]["reason"] == "test cleanup"
    assert last["facts"]["from"] == "mail.accepted" and last["facts"]["to"] == "deleted"
    assert [m["id"] for m in listed(gateway)] == [first]
    summary = gateway.smgctl("queue", "summary")
    assert summary.returncode == 0
    lines = {line.split()[0]: line.split()[1] for line in summary.stdout.splitlines()}
    assert lines["mail.accepted"] == "1" and lines["held"] == "0" and lines["quarantined"] == "0"
