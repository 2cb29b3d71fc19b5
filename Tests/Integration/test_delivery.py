"""Internet delivery (issue 11): egress finds the recipients' mail servers through MX records
(knot + validating unbound, zones/egress.test.zone), talks to real SMTP peers (peers.py) over
STARTTLS where offered, from its source-address pools, and bounces with RFC 3464 NDRs.

Every peer listens on its own loopback address (127.0.0.10 …) and all peers of a test on one port,
which egress gets as `egress.port`. NDRs go to sender@customer.test, whose MX is the recording
peer 127.0.0.30 ("bounces"). Only loopback addresses are ever connected to.

Facts, event names and reply texts the tests had to assume about the new egress are the constants
right below: adjust them there."""
import collections
import json
import re
import smtplib
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from harness import Gateway, data_reply, make_message, queued_id, subject_of, wait_until
from peers import Peers, TestCA, self_signed

DNS_EXTRA_ZONES = Path(__file__).resolve().parent / "zones"

# ---- assumptions about the egress being built (one place to adjust) --------------------------
EV_ATTEMPT, EV_DELIVERED, EV_DEFERRED, EV_BOUNCED = "delivery.attempt", "delivered", "deferred", "bounced"
EV_POOL_EXHAUSTED = "pool.exhausted"
F_MX, F_ADDRESS, F_SOURCE, F_HELO, F_TLS, F_REMOTE_MTA = "mx", "address", "source_address", "helo", "tls", "remote_mta"
F_RECIPIENT, F_REPLY, F_REASON = "recipient", "reply", "reason"
TLS_NONE = "none"                       # the `tls` fact of a plaintext session
TLS_VERSION, TLS_CIPHER, TLS_FINGERPRINT, TLS_VERIFIED = "version", "cipher", "peer_certificate_sha256", "verified"
STATUS_NULL_MX = "5.1.10"
STATUS_LOOP, TEXT_LOOP = "5.4.6", "loops back to myself"
STATUS_HOPS = "5.4.6"                   # more than egress.max_received Received headers
STATUS_NONPUBLIC, TEXT_NONPUBLIC = "5.4.4", "non-public"
TEXT_DRAINED = "drained"                # in the `deferred` reply when every pool address is drained
EIGHTBIT_REASON = re.compile(r"8BITMIME|8-?bit", re.I)  # a bounce for an 8-bit body to a 7-bit hop says so
MAX_RECEIVED = 50                       # egress.max_received default
FAST_DELIVERY_SECONDS = 10              # "promptly", from submission to the fast peer's 250
POOL_PROPAGATION_SECONDS = 3            # `smgctl pool drain` reaches every egress within 2 s (+ margin)
TARPIT_DELAY = 5.0                      # seconds before every reply of the tarpit peer

SENDER = "sender@customer.test"
GOOD_POOL = {"127.0.0.2": "good-a.test", "127.0.0.4": "good-b.test"}
BAD_POOL = {"127.0.0.3": "bad-a.test"}

# Every address a test's peers (or refusing hosts) may use; the port is free on all of them.
PEER_ADDRESSES = ["127.0.0.2", "127.0.0.6", "127.0.0.7"] + [f"127.0.0.{n}" for n in range(10, 35)]


def pool_map(pool: dict) -> str:
    return ";".join(f"{a}={h}" for a, h in pool.items())


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("egress-ca"))


@pytest.fixture
def peers(request):
    """The test's SMTP peers, on the addresses the test module lists in `PEER_ADDRESSES` (other
    modules import this fixture). Requested before `gateway` so that they stop after the gateway."""
    p = Peers(getattr(request.module, "PEER_ADDRESSES", PEER_ADDRESSES))
    yield p
    p.stop()
    assert [e for peer in p.all for e in peer.errors] == [], "a test peer failed"


@pytest.fixture
def bounces(peers):
    """The MX of customer.test: where NDRs (and TLS reports) to …@customer.test arrive."""
    return peers.add("127.0.0.30", "mx.customer.test")


def delivery_env(dns, peers, **more):
    env = {
        "SMG_EGRESS_ROUTES": "",                       # no static routes: MX routing
        "SMG_EGRESS_PORT": peers.port,
        "SMG_DNS_SERVERS": dns,
        "SMG_DNS_TIMEOUT": "2s",
        "SMG_EGRESS_ALLOW_NONPUBLIC_DESTINATIONS": "true",  # every peer is on loopback
    }
    env.update(more)
    return {k: str(v) for k, v in env.items()}


def start(gateway, env, good=None, bad=None):
    """All services with `env`; the good and bad egress get `good` / `bad` on top (their pools)."""
    for service in Gateway.SERVICES:
        extra = dict(env)
        if service == "smg-egress-good" and good:
            extra.update(good)
        if service == "smg-egress-bad" and bad:
            extra.update(bad)
        gateway.start(service, **extra)
    gateway.wait_ready()


def pools_env():
    return ({"SMG_EGRESS_POOL": pool_map(GOOD_POOL)}, {"SMG_EGRESS_POOL": pool_map(BAD_POOL)})


# ---- helpers -----------------------------------------------------------------------------------


def message(marker, rcpts, headers=(), body_lines=None, extra_header_lines=()):
    """make_message with the test sender; `headers` go on top (e.g. Received lines)."""
    raw = make_message(marker, sender=SENDER, rcpt=", ".join(rcpts), body_lines=body_lines)
    top = "".join(f"{h}\r\n" for h in headers).encode()
    return top + raw


def submit(gateway, raw: bytes, rcpts, sender=SENDER, mail_options=()):
    code, reply = data_reply(gateway.ingress_port, raw, sender, rcpts, mail_options, helo="app1.customer.test")
    assert code == 250, reply
    return queued_id(reply)


def send(gateway, marker, rcpts, **kw):
    return submit(gateway, message(marker, rcpts, **kw), rcpts)


def of_type(events, kind, recipient=None):
    return [e for e in events if e["type"] == kind
            and (recipient is None or e["facts"].get(F_RECIPIENT, "").lower() == recipient.lower())]


def final_outcomes(gateway, message_id) -> dict:
    """recipient → "delivered" / "bounced" (final outcomes only)."""
    return {e["facts"][F_RECIPIENT].lower(): e["type"] for e in gateway.trace(message_id)
            if e["type"] in (EV_DELIVERED, EV_BOUNCED)}


def wait_outcomes(gateway, message_id, expected: dict, timeout=45):
    """Waits until every recipient has a final outcome, then asserts they are `expected`."""
    expected = {k.lower(): v for k, v in expected.items()}

    def complete():
        outcomes = final_outcomes(gateway, message_id)
        return outcomes if set(outcomes) >= set(expected) else None

    outcomes = wait_until(complete, timeout, interval=0.2, what=f"outcomes for {sorted(expected)} of {message_id}")
    assert outcomes == expected, (outcomes, gateway.trace(message_id))
    return gateway.trace(message_id)


def facts_text(event) -> str:
    return json.dumps(event["facts"], sort_keys=True)


def subjects(peer):
    return collections.Counter(subject_of(m.data) for m in peer.messages())


def ndr_for(peer, recipient, timeout=45):
    """The NDR at `peer` that reports `recipient`: (Message, parsed email, {recipient: fields})."""
    def find():
        for m in peer.messages():
            if m.mail_from not in ("", "<>"):
                continue
            blocks = dsn_recipients(message_from_bytes(m.data, policy=policy.default))
            if recipient.lower() in blocks:
                return m, blocks
        return None
    m, blocks = wait_until(find, timeout, interval=0.2, what=f"an NDR for {recipient} at {peer.name}")
    assert m.rcpts == [SENDER]
    return m, message_from_bytes(m.data, policy=policy.default), blocks


def dsn_recipients(ndr) -> dict:
    """{final recipient address: {field name lower-case: unfolded value}} of a multipart/report."""
    if ndr.get_content_type() != "multipart/report":
        return {}
    out = {}
    for part in ndr.iter_parts():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in part.get_payload()[1:]:
            fields = {k.lower(): " ".join(str(v).split()) for k, v in block.items()}
            final = fields.get("final-recipient", "")
            address = final.split(";", 1)[1].strip() if ";" in final else final
            out[address.lower()] = fields
    return out


def all_events(redis_server, prefix="smg:"):
    """Every event in the global event stream (also those without a message id)."""
    return [json.loads(fields[b"e"]) for _, fields in redis_server.client().xrange(f"{prefix}events")]


def norm_host(text: str) -> str:
    return text.strip().rstrip(".").lower()


def received_headers(n):
    return [f"Received: from relay{i}.example.net (relay{i}.example.net [192.0.2.{i % 250 + 1}]) by "
            f"hop{i}.example.net with ESMTP id HOP{i:04d}; Mon, 3 Jun 2024 10:{i % 60:02d}:00 +0000"
            for i in range(n)]


# ---- MX routing --------------------------------------------------------------------------------


def test_preferred_mx_gets_the_mail(peers, gateway, dns, bounces):
    a = peers.add("127.0.0.10", "mx-a.pref.egress.test")
    b = peers.add("127.0.0.11", "mx-b.pref.egress.test")
    start(gateway, delivery_env(dns, peers))
    ids = [send(gateway, f"pref-{i}", ["user@pref.egress.test"]) for i in range(3)]
    for mid in ids:
        events = wait_outcomes(gateway, mid, {"user@pref.egress.test": EV_DELIVERED})
        attempts = of_type(events, EV_ATTEMPT)
        assert attempts and all(norm_host(e["facts"][F_MX]) == "mx-a.pref.egress.test" for e in attempts), attempts
        assert all(e["facts"][F_ADDRESS] == "127.0.0.10" for e in attempts)
        [delivered] = of_type(events, EV_DELIVERED)
        assert "mx-a.pref.egress.test" in delivered["facts"][F_REMOTE_MTA].lower()
    assert a.count() == 3 and set(subjects(a)) == {f"pref-{i}" for i in range(3)}
    assert b.count() == 0 and b.connections() == [], "the less preferred MX is not used while the preferred works"
    m = a.messages()[0]
    assert m.mail_from == SENDER and m.rcpts == ["user@pref.egress.test"]


def test_equal_preference_spreads_over_both_mx(peers, gateway, dns, bounces):
    one = peers.add("127.0.0.12", "mx1.equal.egress.test")
    two = peers.add("127.0.0.13", "mx2.equal.egress.test")
    # One message per connection, so that every message is a new choice between the two.
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_CONNECTION_REUSE_LIMIT=1))
    total = 16
    for i in range(total):
        send(gateway, f"equal-{i}", [f"user{i}@equal.egress.test"])
    wait_until(lambda: one.count() + two.count() >= total, 60, interval=0.2, what=f"{total} messages at the two MX")
    # P(all 16 at one of them | a fair random choice) = 2^-15.
    assert one.count() > 0 and two.count() > 0, (one.count(), two.count())
    assert one.count() + two.count() == total


def test_implicit_mx_is_the_domains_address(peers, gateway, dns, bounces):
    host = peers.add("127.0.0.14", "implicit.egress.test")
    start(gateway, delivery_env(dns, peers))
    mid = send(gateway, "implicit-1", ["user@implicit.egress.test"])
    events = wait_outcomes(gateway, mid, {"user@implicit.egress.test": EV_DELIVERED})
    assert host.count() == 1 and host.messages()[0].rcpts == ["user@implicit.egress.test"]
    attempt = of_type(events, EV_ATTEMPT)[-1]
    assert norm_host(attempt["facts"][F_MX]) == "implicit.egress.test" and attempt["facts"][F_ADDRESS] == "127.0.0.14"


def test_null_mx_bounces_with_5_1_10_and_never_uses_the_address(peers, gateway, dns, bounces):
    host = peers.add("127.0.0.15", "nullmx.egress.test")  # the domain's A record: must not be used
    start(gateway, delivery_env(dns, peers))
    mid = send(gateway, "nullmx-1", ["user@nullmx.egress.test"])
    events = wait_outcomes(gateway, mid, {"user@nullmx.egress.test": EV_BOUNCED})
    [bounced] = of_type(events, EV_BOUNCED)
    assert STATUS_NULL_MX in facts_text(bounced), bounced
    _, ndr, blocks = ndr_for(bounces, "user@nullmx.egress.test")
    fields = blocks["user@nullmx.egress.test"]
    assert fields["status"] == STATUS_NULL_MX and fields["action"] == "failed", fields
    assert host.connections() == [], "a null MX domain gets no connection, not even to its A record"
    assert of_type(events, EV_DEFERRED) == [], "a null MX is final at once"


def test_next_host_after_refused_connection_421_greeting_and_dead_address(peers, gateway, dns, bounces):
    peers.refusing("127.0.0.16")
    up = peers.add("127.0.0.17", "mx-up.fallback.egress.test")
    busy = peers.add("127.0.0.18", "mx-busy.fallback421.egress.test", greeting="421 4.3.2 Too busy, come back later")
    up421 = peers.add("127.0.0.19", "mx-up.fallback421.egress.test")
    peers.refusing("127.0.0.33")
    multi = peers.add("127.0.0.34", "mx.multi.egress.test")
    start(gateway, delivery_env(dns, peers))
    cases = [("fallback-1", "user@fallback.egress.test", up, "mx-up.fallback.egress.test"),
             ("fallback421-1", "user@fallback421.egress.test", up421, "mx-up.fallback421.egress.test"),
             ("multi-1", "user@multi.egress.test", multi, "mx.multi.egress.test")]
    ids = {marker: send(gateway, marker, [rcpt]) for marker, rcpt, _, _ in cases}
    for marker, rcpt, peer, mx in cases:
        events = wait_outcomes(gateway, ids[marker], {rcpt: EV_DELIVERED})
        assert of_type(events, EV_DEFERRED) == [], f"{marker}: the next host/address is tried in the same attempt"
        assert list(subjects(peer)) == [marker]
        [delivered] = of_type(events, EV_DELIVERED)
        assert mx in delivered["facts"][F_REMOTE_MTA].lower(), delivered
        assert any(norm_host(e["facts"].get(F_MX, "")) == mx for e in of_type(events, EV_ATTEMPT)), events
    assert busy.connections(), "the 421 host was tried first"
    assert busy.count() == 0 and len(busy.connections()) <= 3, "a 421 greeting is not hammered"


def test_mx_pointing_at_a_cname_is_followed(peers, gateway, dns, bounces):
    real = peers.add("127.0.0.20", "real.cname.egress.test")
    start(gateway, delivery_env(dns, peers))
    mid = send(gateway, "cname-1", ["user@cname.egress.test"])
    events = wait_outcomes(gateway, mid, {"user@cname.egress.test": EV_DELIVERED})
    assert list(subjects(real)) == ["cname-1"]
    assert of_type(events, EV_ATTEMPT)[-1]["facts"][F_ADDRESS] == "127.0.0.20"


def test_mx_that_is_the_gateway_itself_bounces_loops_back(peers, gateway, dns, bounces):
    """MX → a pool address (127.0.0.2), → an egress.local_addresses entry, → an egress.local_names name."""
    # Something listens on every one: if egress did not notice, the mail would arrive there.
    own = [peers.add("127.0.0.2", "mx.loop.egress.test"), peers.add("127.0.0.6", "mx.loop2.egress.test"),
           peers.add("127.0.0.7", "mx.loop3.egress.test")]
    good, bad = pools_env()
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_LOCAL_ADDRESSES="127.0.0.6",
                                SMG_EGRESS_LOCAL_NAMES="mx.loop3.egress.test"), good, bad)
    rcpts = ["user@loop.egress.test", "user@loop2.egress.test", "user@loop3.egress.test"]
    mid = send(gateway, "loop-1", rcpts)
    events = wait_outcomes(gateway, mid, {r: EV_BOUNCED for r in rcpts})
    for r in rcpts:
        [bounced] = of_type(events, EV_BOUNCED, r)
        text = facts_text(bounced)
        assert STATUS_LOOP in text and TEXT_LOOP in text.lower(), bounced
    _, _, blocks = ndr_for(bounces, rcpts[0])
    for r in rcpts:
        assert blocks[r]["status"] == STATUS_LOOP and blocks[r]["action"] == "failed", blocks
        assert TEXT_LOOP in blocks[r].get("diagnostic-code", "").lower(), blocks[r]
    assert [p.count() for p in own] == [0, 0, 0]


def test_too_many_received_headers_are_refused_at_ingress_and_bounced_at_egress(peers, gateway, dns, bounces):
    """Postfix's hopcount_limit: ingress counts Received headers before it strips the customer's
    (R8) and refuses a looping message at DATA; egress checks again (here with ingress's own limit
    raised) and bounces with an NDR."""
    hops = peers.add("127.0.0.32", "mx.hops.egress.test")
    start(gateway, delivery_env(dns, peers))
    raw = message("hops-50", ["user@hops.egress.test"], headers=received_headers(MAX_RECEIVED))
    code, reply = data_reply(gateway.ingress_port, raw, SENDER, ["user@hops.egress.test"])
    assert (code, reply.split()[0]) == (554, b"5.4.6"), (code, reply)
    fine = send(gateway, "hops-40", ["user@hops.egress.test"], headers=received_headers(40))
    wait_outcomes(gateway, fine, {"user@hops.egress.test": EV_DELIVERED})
    [delivered] = hops.messages()
    assert delivered.data.count(b"\nReceived:") + delivered.data.startswith(b"Received:") == 1, \
        "the customer's own Received headers are stripped (R8), ours is on top"
    gateway.stop_all()
    client = gateway.redis.client()
    for key in client.keys(f"{gateway.prefix}registry:*"):
        client.delete(key)  # the stopped processes' endpoints, so that wait_ready waits for the new ones

    # Egress's own check: ingress lets it through (limit raised, nothing stripped), egress bounces.
    start(gateway, delivery_env(dns, peers, SMG_INGRESS_MAX_RECEIVED=500, SMG_INGRESS_STRIP_RECEIVED="false"))
    looping = send(gateway, "hops-51", ["user@hops.egress.test"], headers=received_headers(MAX_RECEIVED + 1))
    events = wait_outcomes(gateway, looping, {"user@hops.egress.test": EV_BOUNCED})
    assert STATUS_HOPS in facts_text(of_type(events, EV_BOUNCED)[0])
    _, _, blocks = ndr_for(bounces, "user@hops.egress.test")
    assert blocks["user@hops.egress.test"]["status"] == STATUS_HOPS
    assert list(subjects(hops)) == ["hops-40"], "the looping message never reaches the destination"


def test_a_loop_through_the_gateway_is_counted_because_our_received_headers_stay(peers, gateway, dns, bounces):
    """Mail that comes back through the gateway (a customer's server forwarding to it) keeps the
    earlier smg-ingress Received headers while the customer's own are stripped, so each round
    adds one and the loop ends at ingress.max_received."""
    hops = peers.add("127.0.0.32", "mx.hops.egress.test")
    start(gateway, delivery_env(dns, peers, SMG_INGRESS_MAX_RECEIVED=5))
    ours = [f"Received: by gw{i}.gateway.test (smg-ingress) with ESMTPA id 01LOOP{i};\r\n\t"
            f"Mon, 3 Jun 2024 10:0{i}:00 +0000" for i in range(3)]
    theirs = received_headers(1)
    mid = send(gateway, "round-4", ["user@hops.egress.test"], headers=[ours[0], theirs[0], ours[1], ours[2]])
    wait_outcomes(gateway, mid, {"user@hops.egress.test": EV_DELIVERED})
    [m] = hops.messages()
    head = m.data.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"(smg-ingress) with") == 4 and b"relay0.example.net" not in head, head
    # One more round with the same history: 4 ours + 1 theirs = 5 → refused.
    raw = message("round-5", ["user@hops.egress.test"], headers=ours + [theirs[0], ours[0]])
    code, reply = data_reply(gateway.ingress_port, raw, SENDER, ["user@hops.egress.test"])
    assert code == 554 and b"5.4.6" in reply, (code, reply)


def test_non_public_destination_is_refused_when_not_allowed(peers, gateway, dns, sink):
    a = peers.add("127.0.0.10", "mx-a.pref.egress.test")
    b = peers.add("127.0.0.11", "mx-b.pref.egress.test")
    # The NDR goes by static route to the harness sink (routes are the operator's own choice).
    env = delivery_env(dns, peers, SMG_EGRESS_ALLOW_NONPUBLIC_DESTINATIONS="false",
                       SMG_EGRESS_ROUTES=f"customer.test=127.0.0.1:{sink.port}")
    start(gateway, env)
    mid = send(gateway, "nonpublic-1", ["user@pref.egress.test"])
    events = wait_outcomes(gateway, mid, {"user@pref.egress.test": EV_BOUNCED})
    text = facts_text(of_type(events, EV_BOUNCED)[0])
    assert STATUS_NONPUBLIC in text and TEXT_NONPUBLIC in text.lower(), text
    assert a.connections() == [] and b.connections() == [], "no connection to a non-public address"
    ndr = wait_until(lambda: next((m for m in sink.snapshot() if m[0] in ("", "<>")), None), 45,
                     what="the NDR at the sink")
    assert ndr[1] == [SENDER]
    blocks = dsn_recipients(message_from_bytes(ndr[2], policy=policy.default))
    assert blocks["user@pref.egress.test"]["status"] == STATUS_NONPUBLIC


# ---- TLS ---------------------------------------------------------------------------------------


def tls_env(dns, peers, ca, **more):
    return delivery_env(dns, peers, SMG_EGRESS_TLS="may", SMG_EGRESS_TLS_CA_FILE=ca.cert, **more)


def test_starttls_with_trusted_certificate_is_verified_and_recorded(peers, gateway, dns, bounces, ca):
    cert = ca.issue("mx.tls.egress.test")
    peer = peers.add("127.0.0.21", "mx.tls.egress.test", tls=cert)
    start(gateway, tls_env(dns, peers, ca))
    mid = send(gateway, "tls-trusted", ["user@tls.egress.test"])
    events = wait_outcomes(gateway, mid, {"user@tls.egress.test": EV_DELIVERED})
    [m] = peer.messages()
    assert m.tls and m.tls_version in ("TLSv1.2", "TLSv1.3"), m
    [conn] = [c for c in peer.connections() if c.number == m.connection]
    assert conn.commands.count("STARTTLS") == 1 and not conn.pipelined_after_starttls
    assert len(conn.helo_names) == 2, "EHLO again after STARTTLS"
    for event in [of_type(events, EV_ATTEMPT)[-1], of_type(events, EV_DELIVERED)[0]]:
        tls = event["facts"][F_TLS]
        assert isinstance(tls, dict), event
        assert tls[TLS_VERIFIED] is True, tls
        assert tls[TLS_VERSION] == m.tls_version, (tls, m.tls_version)
        assert tls[TLS_CIPHER], tls
        if m.tls_version == "TLSv1.3":  # TLS 1.3 suites have one name in IANA and OpenSSL spelling
            assert tls[TLS_CIPHER] == m.tls_cipher, (tls, m.tls_cipher)
        assert tls[TLS_FINGERPRINT].replace(":", "").lower() == cert.sha256, (tls, cert.sha256)


def test_starttls_with_untrusted_certificate_still_delivers_unverified(peers, gateway, dns, bounces, ca, tmp_path):
    cert = self_signed(tmp_path, "mx.untrusted.egress.test")
    peer = peers.add("127.0.0.22", "mx.untrusted.egress.test", tls=cert)
    start(gateway, tls_env(dns, peers, ca))
    mid = send(gateway, "tls-untrusted", ["user@untrusted.egress.test"])
    events = wait_outcomes(gateway, mid, {"user@untrusted.egress.test": EV_DELIVERED})
    [m] = peer.messages()
    assert m.tls, "opportunistic TLS: encrypted even though the certificate does not verify"
    tls = of_type(events, EV_DELIVERED)[0]["facts"][F_TLS]
    assert isinstance(tls, dict) and tls[TLS_VERIFIED] is False, tls
    assert tls[TLS_FINGERPRINT].replace(":", "").lower() == cert.sha256
    assert tls[TLS_VERSION] == m.tls_version


def test_tls_none_delivers_in_plaintext(peers, gateway, dns, bounces, ca):
    peer = peers.add("127.0.0.21", "mx.tls.egress.test", tls=ca.issue("mx.tls.egress.test"))
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_TLS="none", SMG_EGRESS_TLS_CA_FILE=ca.cert))
    mid = send(gateway, "tls-none", ["user@tls.egress.test"])
    events = wait_outcomes(gateway, mid, {"user@tls.egress.test": EV_DELIVERED})
    [m] = peer.messages()
    assert not m.tls
    assert all("STARTTLS" not in c.commands for c in peer.connections())
    assert of_type(events, EV_DELIVERED)[0]["facts"][F_TLS] == TLS_NONE
    assert of_type(events, EV_ATTEMPT)[-1]["facts"][F_TLS] == TLS_NONE


# ---- replies -----------------------------------------------------------------------------------


def test_4xx_then_250_is_deferred_then_delivered(peers, gateway, dns, bounces):
    peer = peers.add("127.0.0.26", "mx.retry.egress.test", temp_failures=1)
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_RETRY_SCHEDULE="1s,2s"))
    mid = send(gateway, "retry-1", ["flaky@retry.egress.test"])
    events = wait_outcomes(gateway, mid, {"flaky@retry.egress.test": EV_DELIVERED}, timeout=30)
    [deferred] = of_type(events, EV_DEFERRED)
    assert deferred["facts"][F_REPLY].startswith("451") and peer.marker in deferred["facts"][F_REPLY], deferred
    types = [e["type"] for e in events]
    assert types.index(EV_DEFERRED) < types.index(EV_DELIVERED)
    assert peer.rcpt_attempts("flaky@retry.egress.test") == 2
    assert list(subjects(peer)) == ["retry-1"]
    # Counted per recipient and attempt once recorded (smg_delivery_recipients_total).
    wait_until(lambda: gateway.metric("smg_delivery_recipients_total", outcome="delivered") == 1, 10,
               what="the delivery counted")
    assert gateway.metric("smg_delivery_recipients_total", outcome="deferred") == 1
    time.sleep(1)
    assert bounces.count() == 0, "no NDR for a recipient that was delivered"
    assert gateway.metric("smg_delivery_recipients_total", outcome="bounced") == 0


def test_5xx_bounces_with_an_ndr_that_carries_the_remote_reply(peers, gateway, dns, bounces):
    peer = peers.add("127.0.0.27", "mx.reject.egress.test")
    start(gateway, delivery_env(dns, peers))
    rcpts = ["ok@reject.egress.test", "reject-me@reject.egress.test"]
    mid = send(gateway, "reject-1", rcpts)
    events = wait_outcomes(gateway, mid, {"ok@reject.egress.test": EV_DELIVERED,
                                          "reject-me@reject.egress.test": EV_BOUNCED})
    assert [m.rcpts for m in peer.messages()] == [["ok@reject.egress.test"]]
    m, ndr, blocks = ndr_for(bounces, "reject-me@reject.egress.test")
    assert ndr.get_content_type() == "multipart/report"
    assert ndr.get_param("report-type") == "delivery-status"
    assert set(blocks) == {"reject-me@reject.egress.test"}, "only the bounced recipient is reported"
    fields = blocks["reject-me@reject.egress.test"]
    assert fields["action"] == "failed" and fields["status"] == "5.1.1", fields
    kind, _, remote = fields["remote-mta"].partition(";")
    assert kind.strip().lower() == "dns" and norm_host(remote) == "mx.reject.egress.test", fields
    kind, _, diagnostic = fields["diagnostic-code"].partition(";")
    assert kind.strip().lower() == "smtp", fields
    assert diagnostic.strip().startswith("550 5.1.1") and peer.marker in diagnostic, fields
    assert "User unknown in mx.reject.egress.test" in diagnostic
    assert ndr["To"] and SENDER in ndr["To"]
    [bounced] = of_type(events, EV_BOUNCED)
    assert peer.marker in bounced["facts"][F_REPLY]
    wait_until(lambda: gateway.metric("smg_delivery_recipients_total", outcome="bounced") == 1, 10,
               what="the bounce counted")
    assert gateway.metric("smg_delivery_recipients_total", outcome="delivered") >= 1   # and the NDR, by now
    assert gateway.metric("smg_delivery_recipients_total", outcome="deferred") == 0


def dsn_submit(gateway, marker, rcpt_options: dict, mail_options):
    rcpts = list(rcpt_options)
    code, reply = data_reply(gateway.ingress_port, message(marker, rcpts), SENDER, rcpts, mail_options,
                             helo="app1.customer.test", rcpt_options=rcpt_options)
    assert code == 250, reply
    return queued_id(reply)


def test_dsn_success_is_relayed_never_is_silent_and_ret_full_returns_the_message(peers, gateway, dns, bounces):
    """RFC 3461 towards a next hop without DSN: NOTIFY=SUCCESS gets our "relayed" notice,
    NOTIFY=NEVER no report at all, NOTIFY=FAILURE the failure report with the whole message
    (RET=FULL), the client's ENVID and each recipient's ORCPT."""
    peer = peers.add("127.0.0.27", "mx.reject.egress.test")        # does not offer DSN
    start(gateway, delivery_env(dns, peers))
    mid = dsn_submit(gateway, "dsn-1", {
        "ok@reject.egress.test": ["NOTIFY=SUCCESS", "ORCPT=rfc822;orig+2Bok@customer.test"],
        "reject-never@reject.egress.test": ["NOTIFY=NEVER"],
        "reject-me@reject.egress.test": ["NOTIFY=FAILURE,DELAY"],
    }, ["RET=FULL", "ENVID=order+2B17"])
    wait_outcomes(gateway, mid, {"ok@reject.egress.test": EV_DELIVERED, "reject-never@reject.egress.test": EV_BOUNCED,
                                 "reject-me@reject.egress.test": EV_BOUNCED})
    [delivered] = peer.messages()
    assert not any(o.upper().startswith(("RET=", "ENVID=")) for o in delivered.mail_options), delivered.mail_options
    assert delivered.rcpt_options == {"ok@reject.egress.test": []}, "no DSN parameters to a hop without DSN"

    _, failure, blocks = ndr_for(bounces, "reject-me@reject.egress.test")
    assert set(blocks) == {"reject-me@reject.egress.test"}, "NOTIFY=NEVER is never reported"
    assert blocks["reject-me@reject.egress.test"]["action"] == "failed"
    parts = list(failure.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/rfc822"]
    returned = parts[2].get_payload()[0]
    assert returned["Subject"] == "dsn-1", "RET=FULL returns the message"
    per_message = parts[1].get_payload()[0]
    assert per_message["Original-Envelope-Id"] == "order+17"

    _, success, blocks = ndr_for(bounces, "ok@reject.egress.test")
    fields = blocks["ok@reject.egress.test"]
    assert fields["action"] == "relayed" and fields["status"].startswith("2."), fields
    assert fields["original-recipient"] == "rfc822; orig+ok@customer.test", fields
    assert "Successful" in success["Subject"]
    parts = list(success.iter_parts())
    assert parts[2].get_content_type() == "text/rfc822-headers", "a success notice returns headers only"
    assert parts[1].get_payload()[0]["Original-Envelope-Id"] == "order+17"
    time.sleep(2)
    assert bounces.count() == 2, [subject_of(m.data) for m in bounces.messages()]


def test_dsn_delay_notice_only_for_recipients_that_allow_it(peers, gateway, dns, bounces):
    peers.add("127.0.0.26", "mx.retry.egress.test")               # later… recipients: always 451
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_RETRY_SCHEDULE="1s", SMG_EGRESS_DELAY_WARNING_AFTER="1s"))
    dsn_submit(gateway, "dsn-3", {
        "later-delay@retry.egress.test": ["NOTIFY=DELAY"],
        "later-failure@retry.egress.test": ["NOTIFY=FAILURE"],
        "later-default@retry.egress.test": [],
    }, ["ENVID=wait1"])
    _, notice, blocks = ndr_for(bounces, "later-delay@retry.egress.test", timeout=30)
    assert set(blocks) == {"later-delay@retry.egress.test", "later-default@retry.egress.test"}, blocks
    assert all(b["action"] == "delayed" for b in blocks.values())
    assert "Delayed" in notice["Subject"]
    time.sleep(3)
    assert bounces.count() == 1, "one delay notice, once"


def test_dsn_is_passed_on_to_a_hop_that_offers_it_and_bad_parameters_are_refused(peers, gateway, dns, bounces):
    peer = peers.add("127.0.0.27", "mx.reject.egress.test", dsn=True)
    start(gateway, delivery_env(dns, peers))
    mid = dsn_submit(gateway, "dsn-2", {
        "ok@reject.egress.test": ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;first+2Bok@customer.test"],
        "plain@reject.egress.test": [],
    }, ["RET=HDRS", "ENVID=abc+2Bdef"])
    events = wait_outcomes(gateway, mid, {"ok@reject.egress.test": EV_DELIVERED, "plain@reject.egress.test": EV_DELIVERED})
    [delivered] = peer.messages()
    assert "RET=HDRS" in delivered.mail_options and "ENVID=abc+2Bdef" in delivered.mail_options, delivered.mail_options
    assert sorted(delivered.rcpt_options["ok@reject.egress.test"]) == ["NOTIFY=SUCCESS,FAILURE",
                                                                       "ORCPT=rfc822;first+2Bok@customer.test"]
    assert delivered.rcpt_options["plain@reject.egress.test"] == []
    assert all(e["facts"].get("next_hop_dsn") is True for e in of_type(events, EV_DELIVERED))
    time.sleep(2)
    assert bounces.count() == 0, "the next hop took the success notice over"

    with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=10) as s:
        s.ehlo("app1.customer.test")
        assert s.has_extn("dsn")
        assert s.mail(SENDER, ["RET=BODY"])[0] == 501
        assert s.mail(SENDER, ["ENVID=a=b"])[0] == 501
        assert s.mail(SENDER, ["RET=FULL"])[0] == 250
        assert s.rcpt("x@reject.egress.test", ["NOTIFY=NEVER,SUCCESS"])[0] == 501
        assert s.rcpt("x@reject.egress.test", ["ORCPT=rfc822;bad+zz"])[0] == 501
        assert s.rcpt("x@reject.egress.test", ["NOTIFY=NEVER"])[0] == 250


def test_8bit_body_never_reaches_a_7bit_hop_as_8bit(peers, gateway, dns, bounces):
    """Accepted outcomes: delivered converted to 7-bit (quoted-printable/base64), or bounced with a
    reason that says why. Never: 8-bit octets, or BODY=8BITMIME, to a server without 8BITMIME."""
    seven = peers.add("127.0.0.25", "mx.seven.egress.test", eightbitmime=False)
    start(gateway, delivery_env(dns, peers))
    text = "Gr\u00fc\u00dfe aus K\u00f6ln \u2014 eine Nachricht mit 8-Bit-Inhalt \u2713\r\nzweite Zeile \u00e4\u00f6\u00fc\r\n"
    raw = ("From: " + SENDER + "\r\nTo: user@seven.egress.test\r\nSubject: eightbit-1\r\n"
           "Message-ID: <eightbit-1@customer.test>\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text).encode()
    assert any(b >= 0x80 for b in raw)
    mid = submit(gateway, raw, ["user@seven.egress.test"], mail_options=["BODY=8BITMIME"])
    outcome = wait_until(lambda: final_outcomes(gateway, mid).get("user@seven.egress.test"), 45, interval=0.2,
                         what="an outcome for the 8-bit message")
    # The invariant, whatever the outcome.
    for conn in seven.connections():
        assert not any("BODY=8BITMIME" in c.upper() for c in conn.mail_commands()), conn.commands
        assert not any(b >= 0x80 for b in conn.partial_data)
    for m in seven.messages():
        assert not m.eight_bit, "8-bit octets sent to a server that did not offer 8BITMIME"
    events = gateway.trace(mid)
    if outcome == EV_DELIVERED:
        [m] = seven.messages()
        delivered = message_from_bytes(m.data, policy=policy.default)
        assert delivered["Content-Transfer-Encoding"].lower() in ("quoted-printable", "base64"), delivered
        assert delivered.get_content().replace("\r\n", "\n").rstrip() == text.replace("\r\n", "\n").rstrip()
    else:
        assert outcome == EV_BOUNCED
        [bounced] = of_type(events, EV_BOUNCED)
        assert EIGHTBIT_REASON.search(facts_text(bounced)), bounced
        _, _, blocks = ndr_for(bounces, "user@seven.egress.test")
        fields = blocks["user@seven.egress.test"]
        assert fields["status"].startswith("5.") and fields["action"] == "failed", fields
        assert EIGHTBIT_REASON.search(fields.get("diagnostic-code", "")), fields
        assert seven.count() == 0


# ---- scheduling --------------------------------------------------------------------------------


def test_tarpitting_destination_does_not_hold_up_a_fast_one(peers, gateway, dns, bounces):
    tarpit = peers.add("127.0.0.23", "mx.tarpit.egress.test", delay=TARPIT_DELAY)
    fast = peers.add("127.0.0.24", "mx.fast.egress.test")
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_DESTINATION_CONCURRENCY=2))
    for i in range(6):
        send(gateway, f"tarpit-{i}", [f"user{i}@tarpit.egress.test"])
    wait_until(lambda: tarpit.active() >= 1, 20, interval=0.1, what="egress in session with the tarpit")
    time.sleep(1)
    began = time.monotonic()
    mid = send(gateway, "fast-1", ["user@fast.egress.test"])
    wait_until(lambda: fast.count() == 1, FAST_DELIVERY_SECONDS, interval=0.05, what="the fast destination's mail")
    took = time.monotonic() - began
    # A tarpit session needs 7 replies of TARPIT_DELAY each: none can have finished yet.
    assert tarpit.count() == 0 and tarpit.active() >= 1, (tarpit.count(), tarpit.active())
    assert tarpit.max_active <= 2, f"egress.destination_concurrency=2, but {tarpit.max_active} sessions at once"
    assert took < FAST_DELIVERY_SECONDS
    wait_outcomes(gateway, mid, {"user@fast.egress.test": EV_DELIVERED}, timeout=10)


def test_messages_to_one_destination_share_connections(peers, gateway, dns, bounces):
    peer = peers.add("127.0.0.28", "mx.reuse.egress.test")
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_DESTINATION_CONCURRENCY=1,
                                SMG_EGRESS_CONNECTION_REUSE_LIMIT=3, SMG_EGRESS_CONNECTION_IDLE_TIMEOUT="10s"))
    total = 7
    with smtplib.SMTP("127.0.0.1", gateway.ingress_port, timeout=30) as s:
        s.ehlo("app1.customer.test")
        for i in range(total):
            rcpt = f"user{i}@reuse.egress.test"
            s.sendmail(SENDER, [rcpt], message(f"reuse-{i}", [rcpt]))
    wait_until(lambda: peer.count() >= total, 60, interval=0.2, what=f"{total} messages at the peer")
    time.sleep(1)
    assert set(subjects(peer).values()) == {1} and len(subjects(peer)) == total
    used = peer.message_connections()
    per_connection = [c.messages for c in used]
    assert len(used) < total, f"no connection reuse: {per_connection}"
    assert max(per_connection) >= 2, per_connection
    assert max(per_connection) <= 3, f"egress.connection_reuse_limit=3 exceeded: {per_connection}"
    # Idle connections are closed after egress.connection_idle_timeout.
    wait_until(lambda: peer.active() == 0, 20, interval=0.2, what="idle connections to close")


# ---- source pools ------------------------------------------------------------------------------


def test_good_mail_leaves_from_the_good_pool_in_rotation(peers, gateway, dns, bounces):
    peer = peers.add("127.0.0.31", "mx.pool.egress.test")
    good, bad = pools_env()
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_CONNECTION_REUSE_LIMIT=1), good, bad)
    ids = [send(gateway, f"pool-{i}", [f"user{i}@pool.egress.test"]) for i in range(8)]
    for i, mid in enumerate(ids):
        events = wait_outcomes(gateway, mid, {f"user{i}@pool.egress.test": EV_DELIVERED})
        attempt = of_type(events, EV_ATTEMPT)[-1]["facts"]
        assert attempt[F_SOURCE] in GOOD_POOL and attempt[F_HELO] == GOOD_POOL[attempt[F_SOURCE]], attempt
        assert attempt.get("lane") == "good"
    used = peer.message_connections()
    assert {(c.source_ip, c.helo) for c in used} <= set(GOOD_POOL.items()), [(c.source_ip, c.helo) for c in used]
    assert {c.source_ip for c in used} == set(GOOD_POOL), "both good addresses are used in rotation"
    assert peers.connections_from("127.0.0.3") == [], "good mail never leaves from the bad lane's address"


GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def test_spam_leaves_only_from_the_bad_pool_and_its_bounce_says_why(peers, gateway, dns, bounces):
    """R11: the classifier's `spam` verdict sends a message through the bad lane only; a bounce from
    there tells the customer the category, the score and the reasons."""
    peer = peers.add("127.0.0.27", "mx.reject.egress.test")
    good, bad = pools_env()
    start(gateway, delivery_env(dns, peers), good, bad)
    clean = send(gateway, "clean-1", ["ok@reject.egress.test"], body_lines=[
        "Hi Lukas,", "", "the shelves ship on Thursday; please confirm someone is at the warehouse.", "", "Anna"])
    spam = send(gateway, "gtube-1", ["ok2@reject.egress.test", "reject-me@reject.egress.test"],
                body_lines=["This is the GTUBE.", "", GTUBE])
    wait_outcomes(gateway, clean, {"ok@reject.egress.test": EV_DELIVERED})
    events = wait_outcomes(gateway, spam, {"ok2@reject.egress.test": EV_DELIVERED,
                                           "reject-me@reject.egress.test": EV_BOUNCED})
    [verdict] = of_type(events, "classified")
    assert verdict["facts"]["category"] == "spam" and verdict["facts"]["lane"] == "bad", verdict
    for attempt in of_type(events, EV_ATTEMPT):
        assert attempt["facts"][F_SOURCE] in BAD_POOL and attempt["facts"].get("lane") == "bad", attempt
    by_subject = {subject_of(m.data): m.source_ip for m in peer.messages()}
    assert by_subject["gtube-1"] in BAD_POOL and by_subject["clean-1"] in GOOD_POOL, by_subject
    for address in GOOD_POOL:
        for m in peer.messages():
            if m.source_ip == address:
                assert GTUBE.encode() not in m.data, "spam never leaves through the good lane's addresses"
    _, ndr, _ = ndr_for(bounces, "reject-me@reject.egress.test")
    text = next(p for p in ndr.walk() if p.get_content_type() == "text/plain").get_content()
    assert "lane for suspected spam" in text and "classified it as spam" in text, text
    assert "score" in text and "GTUBE" in text, text
    # The NDR itself is the gateway's own message: not scored, good lane.
    [sent] = of_type(gateway.trace(spam), "ndr.sent")
    [ndr_verdict] = of_type(gateway.trace(sent["facts"]["ndr"]), "classified")
    assert ndr_verdict["facts"]["engine"] == "none" and ndr_verdict["facts"]["lane"] == "good", ndr_verdict


def test_drained_addresses_are_not_used_and_exhaustion_defers(peers, gateway, dns, bounces, redis_server):
    peer = peers.add("127.0.0.31", "mx.pool.egress.test")
    good, bad = pools_env()
    start(gateway, delivery_env(dns, peers, SMG_EGRESS_CONNECTION_REUSE_LIMIT=1, SMG_EGRESS_RETRY_SCHEDULE="1s,2s"),
          good, bad)

    out = gateway.smgctl("pool", "drain", "127.0.0.4", "--reason", "reputation check")
    assert out.returncode == 0, out.stdout + out.stderr
    listing = gateway.smgctl("pool", "list")
    assert listing.returncode == 0, listing.stderr
    assert "127.0.0.4" in listing.stdout and "reputation check" in listing.stdout, listing.stdout
    assert "127.0.0.2" not in listing.stdout, listing.stdout
    time.sleep(POOL_PROPAGATION_SECONDS)

    ids = [send(gateway, f"drained-{i}", [f"user{i}@pool.egress.test"]) for i in range(5)]
    for i, mid in enumerate(ids):
        wait_outcomes(gateway, mid, {f"user{i}@pool.egress.test": EV_DELIVERED})
    assert {c.source_ip for c in peer.connections()} == {"127.0.0.2"}, "the drained address is never used"

    # All good addresses drained: deferred, an event says so, and the bad lane's address is not borrowed.
    out = gateway.smgctl("pool", "drain", "127.0.0.2", "--reason", "all out")
    assert out.returncode == 0, out.stdout + out.stderr
    time.sleep(POOL_PROPAGATION_SECONDS)
    before = len(peer.connections())
    mid = send(gateway, "exhausted-1", ["user@pool.egress.test"])
    deferred = wait_until(lambda: of_type(gateway.trace(mid), EV_DEFERRED), 30, interval=0.2,
                          what="the message to be deferred")
    assert TEXT_DRAINED in deferred[0]["facts"][F_REPLY].lower(), deferred[0]
    assert final_outcomes(gateway, mid) == {}
    wait_until(lambda: any(e["type"] == EV_POOL_EXHAUSTED for e in gateway.trace(mid) + all_events(redis_server)),
               10, interval=0.2, what=f"a {EV_POOL_EXHAUSTED} event")
    time.sleep(2)
    assert len(peer.connections()) == before, "nothing goes out while every good address is drained"
    assert peers.connections_from("127.0.0.3") == [], "never through the bad lane's address"

    out = gateway.smgctl("pool", "undrain", "127.0.0.2")
    assert out.returncode == 0, out.stdout + out.stderr
    listing = gateway.smgctl("pool", "list")
    assert listing.returncode == 0 and "127.0.0.2" not in listing.stdout and "127.0.0.4" in listing.stdout, listing
    wait_outcomes(gateway, mid, {"user@pool.egress.test": EV_DELIVERED}, timeout=45)
    [m] = [m for m in peer.messages() if subject_of(m.data) == "exhausted-1"]
    assert (m.source_ip, m.helo) == ("127.0.0.2", "good-a.test")
    assert peers.connections_from("127.0.0.3") == [] and peers.connections_from("127.0.0.4") == []


# ---- crash recovery ----------------------------------------------------------------------------


def test_egress_killed_mid_delivery_delivers_everything_with_at_most_one_duplicate(peers, gateway, dns, bounces):
    peer = peers.add("127.0.0.29", "mx.crash.egress.test", data_delay=4)
    # One session at a time: only the message whose DATA reply is pending can be in the window.
    env = delivery_env(dns, peers, SMG_EGRESS_DESTINATION_CONCURRENCY=1, SMG_EGRESS_LEASE="10s")
    start(gateway, env)
    markers = [f"crash-{i}" for i in range(3)]
    wanted = {(mk, f"{who}@crash.egress.test") for mk in markers for who in ("alice", "bob")}
    ids = {mk: send(gateway, mk, ["alice@crash.egress.test", "bob@crash.egress.test"]) for mk in markers}
    # The first message's body is at the peer; its 250 is being held back.
    wait_until(lambda: any(not m.replied for m in peer.messages()), 30, interval=0.05,
               what="a DATA waiting for its reply")
    gateway.kill("smg-egress-good")
    time.sleep(0.5)
    gateway.start("smg-egress-good", **env)

    def got():
        return {(subject_of(m.data), r.lower()) for m in peer.messages() for r in m.rcpts}
    wait_until(lambda: got() >= wanted, 120, interval=0.5, what="every recipient at the peer")
    for mk, mid in ids.items():
        wait_outcomes(gateway, mid, {"alice@crash.egress.test": EV_DELIVERED, "bob@crash.egress.test": EV_DELIVERED},
                      timeout=30)
    time.sleep(3)  # a late duplicate would show now
    per_message = collections.Counter(subject_of(m.data) for m in peer.messages())
    per_recipient = collections.Counter((subject_of(m.data), r) for m in peer.messages() for r in m.rcpts)
    assert set(per_message) == set(markers)
    assert sum(n - 1 for n in per_message.values()) <= 1, f"more than one duplicate: {per_message}"
    assert max(per_recipient.values()) <= 2, per_recipient
