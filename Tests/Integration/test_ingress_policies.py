"""Submission ingress (R1–R8) against real clients: TLS with certificates made here, SASL,
customer policies from Redis, DNS answered by the real knot + unbound fixture.

Every hostile transcript asserts the exact reply the client gets."""
import base64
import select
import json
import socket
import ssl
import smtplib
import subprocess
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from harness import Gateway, RedisServer, Sink, free_port, listening, make_message, wait_until

PASSWORD = "correct horse battery staple"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# The `dns` fixture (knot + unbound, built-in zones only) is in conftest.py.


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=smg.test", "-addext", "subjectAltName=DNS:smg.test,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def env(tmp_path_factory, dns, tls_files):
    """One Redis and one policy-enforcing ingress (plus the pipeline) for the whole module."""
    work = tmp_path_factory.mktemp("gw")
    redis = RedisServer(work)
    sink = Sink()
    gw = Gateway(work, redis, sink)
    gw.implicit_port = free_port()
    gw.policy_env = dict(
        SMG_INGRESS_REQUIRE_AUTH="true", SMG_INGRESS_CHECK_SENDER_DOMAIN="true", SMG_DNS_SERVERS=dns,
        SMG_DNS_TRUSTED="true", SMG_DNS_TIMEOUT="1s", SMG_INGRESS_TLS_CERTIFICATE=str(tls_files[0]),
        SMG_INGRESS_TLS_KEY=str(tls_files[1]), SMG_INGRESS_IMPLICIT_TLS_LISTEN=f"127.0.0.1:{gw.implicit_port}",
        SMG_INGRESS_MAX_CONNECTIONS_PER_IP="20", SMG_INGRESS_HOSTNAME="smg.test",
        SMG_INGRESS_ALLOW_NONPUBLIC_SENDER_DOMAINS="true")  # the fixture's domains resolve to loopback
    for service in Gateway.SERVICES:
        gw.start(service, **(gw.policy_env if service == "smg-ingress" else {}))
    gw.wait_ready()
    ctl = lambda *a: gw.smgctl(*a)
    for args in [
        ("customer", "add", "shop", "--network", "127.0.0.1/32", "--domain", "plain.test"),
        ("customer", "add", "far", "--network", "10.0.0.0/8", "--domain", "plain.test"),
        ("customer", "add", "ratey", "--network", "127.0.0.0/8", "--domain", "plain.test", "--rate-limit", "100"),
        ("customer", "add", "strict", "--network", "127.0.0.0/8", "--domain", "plain.test", "--require-tls",
         "--reverse-dns"),
        ("customer", "add", "lfstrict", "--network", "127.0.0.0/8", "--domain", "plain.test", "--bare-newline", "reject"),
        ("customer", "add", "ghost", "--network", "127.0.0.0/8", "--domain", "nothing.plain.test",
         "--domain", "nullmx.plain.test", "--domain", "ent.plain.test"),
    ]:
        out = ctl(*args)
        assert out.returncode == 0, out.stderr
    for login, customer in [("shop-app", "shop"), ("far-app", "far"), ("ratey-app", "ratey"), ("strict-app", "strict"),
                            ("ghost-app", "ghost"), ("victim", "shop"), ("lfstrict-app", "lfstrict")]:
        out = ctl("account", "add", login, "--customer", customer, "--password", PASSWORD)
        assert out.returncode == 0, out.stderr
    gw.tls_cert = tls_files[0]
    yield gw
    gw.stop_all()
    sink.stop()
    redis.stop()


def client_context(cert):
    ctx = ssl.create_default_context(cafile=str(cert))
    return ctx


class Raw:
    """A raw SMTP client: send exact bytes, read exact replies (multi-line aware)."""

    def __init__(self, port, source="127.0.0.1", tls_context=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
        if tls_context:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname="smg.test")
        self.buffer = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def reply(self) -> str:
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed; got " + repr(lines) + repr(self.buffer))
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def starttls(self, context):
        assert self.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        assert self.buffer == b""
        self.sock = context.wrap_socket(self.sock, server_hostname="smg.test")

    def login(self, user, password=PASSWORD):
        return self.cmd("AUTH PLAIN " + b64(f"\0{user}\0{password}"))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def session(env, user="shop-app", source="127.0.0.1", port=None):
    c = Raw(port or env.ingress_port, source=source)
    assert c.reply().startswith("220 smg.test")
    c.cmd("EHLO app.plain.test")
    c.starttls(client_context(env.tls_cert))
    assert "AUTH PLAIN LOGIN" in c.cmd("EHLO app.plain.test")
    if user:
        assert c.login(user) == "235 2.7.0 Authentication successful"
    return c


def test_no_relay_without_auth_and_no_auth_before_tls(env):
    c = Raw(env.ingress_port)
    c.reply()
    ehlo = c.cmd("EHLO app.plain.test")
    assert "STARTTLS" in ehlo and "AUTH" not in ehlo, "AUTH is only offered after TLS"
    assert c.cmd("MAIL FROM:<a@plain.test>") == "530 5.7.0 Authentication required"
    assert c.cmd("RCPT TO:<victim@elsewhere.example>") == "503 5.5.1 Error: need MAIL command"
    assert c.login("shop-app") == "538 5.7.11 Encryption required for requested authentication mechanism"
    assert c.cmd("MAIL FROM:<a@plain.test>") == "530 5.7.0 Authentication required"
    c.close()


def test_starttls_command_injection_is_discarded(env):
    """CVE-2011-0411: commands pipelined after STARTTLS in plaintext must never run."""
    c = Raw(env.ingress_port)
    c.reply()
    c.cmd("EHLO app.plain.test")
    c.send(b"STARTTLS\r\nAUTH PLAIN " + b64(f"\0shop-app\0{PASSWORD}").encode() + b"\r\nMAIL FROM:<a@plain.test>\r\n")
    assert c.reply() == "220 2.0.0 Ready to start TLS"
    c.sock = client_context(env.tls_cert).wrap_socket(c.sock, server_hostname="smg.test")
    c.buffer = b""
    # The first thing we hear over TLS is the answer to our EHLO: nothing injected ran.
    assert c.cmd("EHLO app.plain.test").startswith("250-smg.test")
    assert c.cmd("MAIL FROM:<a@plain.test>") == "530 5.7.0 Authentication required"
    c.close()


def submit_and_fetch(env, message: bytes, subject: bytes):
    """One message from billing@plain.test as shop-app; returns its id and the octets the sink got."""
    c = session(env)
    assert c.cmd("MAIL FROM:<billing@plain.test>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<someone@dest.example>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354")
    c.send(message + b".\r\n")
    reply = c.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    c.cmd("QUIT")
    c.close()
    wait_until(lambda: any(subject in m[2] for m in env.sink.snapshot()), 30, what="delivery")
    return reply.rsplit(" ", 1)[1], next(m[2] for m in env.sink.snapshot() if subject in m[2])


def test_authenticated_customer_mail_is_accepted_and_delivered_with_hygiene(env):
    message_id, raw = submit_and_fetch(
        env, b"Received: from internal-app (10.1.2.3) by mail.customer\r\nX-Originating-IP: [10.1.2.3]\r\n"
             b"Subject: hygiene\r\nFrom: billing@plain.test\r\n\r\nhello\r\n", b"Subject: hygiene")
    assert b"10.1.2.3" not in raw and b"X-Originating-IP" not in raw, "R8: nothing reveals the customer's IPs"
    assert b"127.0.0.1" not in raw
    assert raw.startswith(b"Received: by smg.test (smg-ingress) with ESMTPSA id "), raw[:120]
    assert b"app.plain.test" not in raw, "the customer's HELO name is not shown either (R8)"
    accepted = env.trace(message_id)[0]
    assert accepted["facts"]["customer"] == "shop" and accepted["facts"]["login"] == "shop-app"
    assert accepted["facts"]["tls"] is True
    # RFC 6409 §8: the submission had neither Message-ID nor Date; the gateway added both.
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Message-ID"] == f"<{message_id}@smg.test>", parsed["Message-ID"]
    assert parsed["Date"].datetime.tzinfo is not None and abs(time.time() - parsed["Date"].datetime.timestamp()) < 120
    assert accepted["facts"]["fixups"] == ["message-id", "date"]


def test_message_id_and_date_are_kept_when_present(env):
    message_id, raw = submit_and_fetch(
        env, b"Message-ID: <own.1@app.plain.test>\r\nDate: Mon, 3 Jun 2024 10:00:00 +0200\r\n"
             b"Subject: has both\r\nFrom: billing@plain.test\r\n\r\nhello\r\n", b"Subject: has both")
    assert raw.count(b"Message-ID:") == 1 and b"<own.1@app.plain.test>" in raw and raw.count(b"\r\nDate:") == 1
    assert "fixups" not in env.trace(message_id)[0]["facts"]


def test_bare_lf_is_normalized_by_default_and_refused_for_a_reject_customer(env):
    """ingress.bare_newline = normalize (default): LF-only lines are stored as CRLF, and a
    smuggling attempt stays message text (only CRLF.CRLF ends DATA). A customer with
    --bare-newline reject gets 554 5.5.2 for the same octets, and the session goes on."""
    smuggle = (b"From: a@plain.test\nSubject: lf-only\n\nhi\n.\r\nMAIL FROM:<evil@plain.test>\r\n"
               b"RCPT TO:<x@dest.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n")
    c = session(env)
    assert c.cmd("MAIL FROM:<a@plain.test>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<lf@dest.example>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354")
    c.send(smuggle)
    reply = c.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    assert c.cmd("NOOP") == "250 2.0.0 Ok", "the smuggled commands were message text, not commands"
    c.close()
    message_id = reply.rsplit(" ", 1)[1]
    wait_until(lambda: any(b"Subject: lf-only" in m[2] for m in env.sink.snapshot()), 30, what="delivery")
    deliveries = [m for m in env.sink.snapshot() if b"Subject: lf-only" in m[2] or b"Subject: smuggled" in m[2]]
    assert len(deliveries) == 1 and deliveries[0][1] == ["lf@dest.example"], deliveries
    raw = deliveries[0][2]
    assert b"\n" not in raw.replace(b"\r\n", b""), "every line end is CRLF"
    assert b"From: a@plain.test\r\nSubject: lf-only\r\n\r\nhi\r\n" in raw
    assert b"MAIL FROM:<evil@plain.test>\r\n" in raw
    assert "bare-lf" in env.trace(message_id)[0]["facts"]["fixups"]

    c = session(env, user="lfstrict-app")
    assert c.cmd("MAIL FROM:<a@plain.test>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<lf@dest.example>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354")
    c.send(smuggle)
    assert c.reply() == "554 5.5.2 Error: bare <CR> or <LF> in message data"
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    c.close()


def test_spoofed_sender_domain_wrong_network_and_unresolvable_domains(env):
    c = session(env)
    assert c.cmd("MAIL FROM:<ceo@bank.example>") == "553 5.7.1 Sender address not owned by your account"
    assert c.cmd("MAIL FROM:<x@aonly.plain.test>") == "250 2.1.0 Ok", "a subdomain with only an A record is fine"
    c.close()

    c = session(env, user="far-app")
    assert c.cmd("MAIL FROM:<a@plain.test>") == "550 5.7.1 Client host not allowed for this account"
    c.close()

    c = session(env, user="ghost-app")
    for domain in ["nothing.plain.test", "nullmx.plain.test", "ent.plain.test"]:  # NXDOMAIN, null MX, NODATA
        assert c.cmd(f"MAIL FROM:<a@{domain}>") == "550 5.7.1 Sender Domain must resolve", domain
    c.close()


NOT_OWNED = "550 5.7.1 From header missing or not owned by your account"
MALFORMED = "550 5.6.0 "


def test_bdat_chunks_are_submitted_like_data(env):
    """CHUNKING (RFC 3030) into the real ingress: chunks pipelined with the envelope, the same
    checks as DATA (From ownership, bare LF per customer), 250 only after the durable accept, and
    the message delivered as sent."""
    def chunk(data: bytes, last=False) -> bytes:
        return f"BDAT {len(data)}{' LAST' if last else ''}\r\n".encode() + data

    c = session(env)
    assert "CHUNKING" in c.cmd("EHLO app.plain.test")
    head = b"From: a@plain.test\r\nSubject: chunked\r\n\r\n"
    c.send(b"MAIL FROM:<a@plain.test>\r\nRCPT TO:<bdat@dest.example>\r\n" + chunk(head)
           + chunk(b"line one\r\n.\r\nQUIT\r\n") + chunk(b"line two\n", last=True))
    replies = [c.reply() for _ in range(5)]
    assert replies[:4] == ["250 2.1.0 Ok", "250 2.1.5 Ok", f"250 2.0.0 {len(head)} octets received",
                           "250 2.0.0 19 octets received"], replies
    assert replies[4].startswith("250 2.0.0 Ok: queued as "), replies
    message_id = replies[4].rsplit(" ", 1)[1]
    # A foreign From is refused exactly as with DATA.
    c.send(b"MAIL FROM:<a@plain.test>\r\nRCPT TO:<bdat@dest.example>\r\n"
           + chunk(b"From: ceo@bank.example\r\n\r\nx\r\n", last=True))
    assert [c.reply() for _ in range(3)][2] == "550 5.7.1 From header missing or not owned by your account"
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    c.close()
    wait_until(lambda: any(b"Subject: chunked" in m[2] for m in env.sink.snapshot()), 30, what="delivery")
    raw = next(m[2] for m in env.sink.snapshot() if b"Subject: chunked" in m[2])
    assert raw.endswith(b"Subject: chunked\r\n\r\nline one\r\n.\r\nQUIT\r\nline two\r\n"), raw[-120:]
    assert "bare-lf" in env.trace(message_id)[0]["facts"]["fixups"]

    c = session(env, user="lfstrict-app")
    c.send(b"MAIL FROM:<a@plain.test>\r\nRCPT TO:<bdat@dest.example>\r\n"
           + chunk(b"From: a@plain.test\r\n\r\nbare\nlf\r\n", last=True))
    assert [c.reply() for _ in range(3)][2] == "554 5.5.2 Error: bare <CR> or <LF> in message data"
    c.close()


def test_sender_domain_must_lead_to_public_addresses(env):
    """R5 read strictly: a sender domain whose MX or A/AAAA lead only to private, loopback or
    reserved addresses is refused like one that does not resolve (an ingress without
    ingress.allow_nonpublic_sender_domains; the module's own ingress allows them)."""
    port = free_port()
    env.start("smg-ingress", name="ingress-public", **dict(env.policy_env, SMG_INGRESS_LISTEN=f"127.0.0.1:{port}",
                                                          SMG_INGRESS_IMPLICIT_TLS_LISTEN="",
                                                          SMG_INGRESS_ALLOW_NONPUBLIC_SENDER_DOMAINS="false"))
    wait_until(lambda: listening(port), 20, what="the second ingress")
    try:
        c = session(env, port=port)
        for domain in ["intranet.plain.test", "plain.test", "aonly.plain.test"]:  # 10.0.0.1; loopback MX; loopback A
            assert c.cmd(f"MAIL FROM:<a@{domain}>") == "550 5.7.1 Sender Domain must resolve", domain
        assert c.cmd("MAIL FROM:<a@public.plain.test>") == "250 2.1.0 Ok", "8.8.8.8 (looked up, never contacted)"
        c.close()
        c = session(env)  # the module's ingress allows non-public addresses
        assert c.cmd("MAIL FROM:<a@intranet.plain.test>") == "250 2.1.0 Ok"
        c.close()
    finally:
        env.kill("ingress-public")


def test_from_header_must_belong_to_the_customer(env):
    """No customer can make the gateway DKIM-sign under another's name (R5 for the header): every
    mailbox of From and Sender, read with the RFC 5322 parser, must be the customer's; a field
    that does not parse, or a second From, is refused and says why."""
    for headers, expected in [
        (b"From: CEO <ceo@bank.example>\r\n", NOT_OWNED),
        (b"", NOT_OWNED),
        (b"From: a@plain.test\r\nFrom: b@bank.example\r\n", MALFORMED + "From header: more than one From field"),
        # Hostile variants that show bank.example to the reader.
        (b"From: <ceo@bank.example>, <a@plain.test>\r\n", NOT_OWNED),
        (b"From: a@plain.test, ceo@bank.example\r\n", NOT_OWNED),
        (b"From: \"a@plain.test\" <ceo@bank.example>\r\n", NOT_OWNED),
        (b"From: ceo@bank.example (a@plain.test)\r\n", NOT_OWNED),
        (b"From: <@plain.test:ceo@bank.example>\r\n", NOT_OWNED),
        (b"From: Board: ceo@bank.example, a@plain.test;\r\n", NOT_OWNED),
        (b"From: =?utf-8?q?a=40plain.test?= <ceo@bank.example>\r\n", NOT_OWNED),
        (b"From: a@[127.0.0.1]\r\n", NOT_OWNED),
        (b"From: a@plain.test <ceo@bank.example>\r\n", MALFORMED + "From header: expected ',' between addresses at '<'"),
        (b"From: a@plain.test (<ceo@bank.example>\r\n", MALFORMED + "From header: unterminated comment"),
        (b"From: \"a@plain.test <ceo@bank.example>\r\n", MALFORMED + "From header: unterminated quoted string"),
        (b"From: undisclosed:;\r\n", MALFORMED + "From header: no mailbox"),
        (b"From: a@plain.test\r\nSender: ceo@bank.example\r\n", NOT_OWNED),
        (b"From: a@plain.test\r\nSender: a@plain.test, b@plain.test\r\n", MALFORMED + "Sender header: more than one mailbox"),
        # Accepted: the customer's own, in the forms applications write.
        (b"From: \"Shop\" <news@mail.plain.test>\r\n", None),
        (b"From: Shop <news@plain.test>, Billing <billing@plain.test>\r\nSender: ops@plain.test\r\n", None),
        (b"From: =?utf-8?q?J=C3=BCrgen?= (Vertrieb)\r\n <j@plain.test>\r\n", None),
        (b"From: \"Shop, Inc.\" <\"first last\"@plain.test>\r\n", None),
    ]:
        c = session(env)
        assert c.cmd("MAIL FROM:<a@plain.test>") == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<r@dest.example>") == "250 2.1.5 Ok"
        assert c.cmd("DATA").startswith("354")
        c.send(headers + b"Subject: from check\r\n\r\nbody\r\n.\r\n")
        reply = c.reply()
        if expected:
            assert reply.startswith(expected), (headers, reply)
        else:
            assert reply.startswith("250 2.0.0 Ok: queued as "), (headers, reply)
        c.close()


def test_relay_attempts_are_recorded(env):
    c = Raw(env.ingress_port, source="127.0.0.6")
    c.reply()
    c.cmd("EHLO relay.example")
    assert c.cmd("MAIL FROM:<spam@relay.example>") == "530 5.7.0 Authentication required"
    c.close()

    def recorded():
        events = [json.loads(f[b"e"]) for _, f in env.redis.client().xrange("smg:events")]
        return [e for e in events if e["type"] == "rejected.policy" and e["facts"]["client"] == "127.0.0.6"]
    found = wait_until(recorded, 10, what="the refusal event")
    assert found[0]["facts"]["reason"] == "relay attempt without authentication"


def test_dns_timeout_gives_451_not_550(env):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a DNS server that never answers
    silent.bind(("127.0.0.1", 0))
    port = free_port()
    overrides = dict(env.policy_env, SMG_DNS_SERVERS=f"127.0.0.1:{silent.getsockname()[1]}", SMG_DNS_TIMEOUT="200ms",
                     SMG_DNS_ATTEMPTS="1", SMG_INGRESS_LISTEN=f"127.0.0.1:{port}", SMG_INGRESS_IMPLICIT_TLS_LISTEN="")
    env.start("smg-ingress", name="ingress-silent-dns", **overrides)
    wait_until(lambda: listening(port), 15, what="second ingress")
    c = Raw(port)
    c.reply()
    c.cmd("EHLO a")
    c.starttls(client_context(env.tls_cert))
    c.cmd("EHLO a")
    assert c.login("shop-app") == "235 2.7.0 Authentication successful"
    assert c.cmd("MAIL FROM:<a@plain.test>") == "451 4.4.3 Temporary DNS failure checking the sender domain"
    c.close()
    env.kill("ingress-silent-dns")
    silent.close()



def test_reverse_dns_and_require_tls(env):
    # 127.0.0.1 has PTR client.plain.test, which resolves back to 127.0.0.1.
    c = session(env, user="strict-app")
    assert c.cmd("MAIL FROM:<a@plain.test>") == "250 2.1.0 Ok"
    c.close()
    # 127.0.0.2 has no PTR at all.
    c = session(env, user="strict-app", source="127.0.0.2")
    assert c.cmd("MAIL FROM:<a@plain.test>") == "550 5.7.25 Reverse DNS validation failed for your IP address"
    c.close()
    # Where plaintext AUTH is explicitly allowed, a require-TLS customer is still refused without TLS.
    port = free_port()
    env.start("smg-ingress", name="ingress-plaintext", **dict(env.policy_env, SMG_INGRESS_ALLOW_PLAINTEXT_AUTH="true",
                                                            SMG_INGRESS_LISTEN=f"127.0.0.1:{port}",
                                                            SMG_INGRESS_IMPLICIT_TLS_LISTEN=""))
    wait_until(lambda: listening(port), 15, what="plaintext ingress")
    c = Raw(port)
    c.reply()
    assert "AUTH PLAIN LOGIN" in c.cmd("EHLO a")
    assert c.login("strict-app") == "235 2.7.0 Authentication successful"
    assert c.cmd("MAIL FROM:<a@plain.test>") == "530 5.7.0 Must issue a STARTTLS command first"
    c.close()
    env.kill("ingress-plaintext")


def test_auth_brute_force_is_throttled_without_revealing_users(env):
    source = "127.0.0.3"
    replies = []
    for i in range(10):
        c = session(env, user=None, source=source)
        replies.append(c.login("victim" if i % 2 else "nobody-such", "wrong password"))
        c.close()
    assert set(replies) == {"535 5.7.8 Error: authentication failed"}, "same answer for unknown users"
    c = session(env, user=None, source=source)
    assert c.login("victim") == "454 4.7.0 Too many failed logins, try again later", "even the right password"
    c.close()
    events = [json.loads(f[b"e"]) for _, f in env.redis.client().xrange("smg:events")]
    assert sum(1 for e in events if e["type"] == "rejected.auth" and e["facts"]["client"] == source) == 11


def test_hostile_transcripts(env):
    c = session(env)
    # NUL and control characters in commands.
    c.send(b"NOOP\x00\r\n")
    assert c.reply() == "500 5.5.2 Error: invalid character in command"
    # A 10 MB line: refused, the session survives, memory stays bounded (the line is discarded as it streams).
    c.send(b"X" * (10 * 1024 * 1024) + b"\r\n")
    assert c.reply() == "500 5.5.2 Error: line too long"
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    # SMTP smuggling with a bare CR: <CR>.<CR> inside DATA does not end it; refused in every mode.
    assert c.cmd("MAIL FROM:<a@plain.test>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<r@dest.example>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354")
    c.send(b"From: a@plain.test\r\nSubject: smuggle\r\n\r\nhi\r.\rMAIL FROM:<evil@plain.test>\r\nRCPT TO:<x@dest.example>\r\n"
           b"DATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n")
    assert c.reply() == "554 5.5.2 Error: bare <CR> or <LF> in message data"
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    c.close()


def test_ten_thousand_recipients(env):
    c = session(env)
    assert c.cmd("MAIL FROM:<a@plain.test>") == "250 2.1.0 Ok"
    c.send(b"".join(f"RCPT TO:<r{i}@dest.example>\r\n".encode() for i in range(10_000)))
    replies = []
    try:
        while True:
            r = c.reply()
            replies.append(r)
            if r.startswith("421"):
                break
    except (ConnectionError, socket.timeout):
        pass
    assert replies.count("250 2.1.5 Ok") == 100
    assert all(r == "452 4.5.3 Error: too many recipients" for r in replies[100:-1])
    assert replies[-1] == "421 4.7.0 smg.test Error: too many commands", "10,000 commands per connection at most"
    c.close()


def test_unterminated_data_stores_nothing(env):
    before = env.redis.client().xlen("smg:events")
    c = session(env)
    c.cmd("MAIL FROM:<a@plain.test>")
    c.cmd("RCPT TO:<r@dest.example>")
    assert c.cmd("DATA").startswith("354")
    c.send(b"Subject: cut\r\n\r\nthe connection dies here")
    c.close()
    time.sleep(1)
    events = [json.loads(f[b"e"]) for _, f in env.redis.client().xrange("smg:events", count=100000)][before:]
    assert not [e for e in events if e["type"] == "accepted"]


def test_rate_limit_101st_message_across_two_ingress_processes(env):
    port2 = free_port()
    env.start("smg-ingress", name="ingress-2", **dict(env.policy_env, SMG_INGRESS_LISTEN=f"127.0.0.1:{port2}",
                                                     SMG_INGRESS_IMPLICIT_TLS_LISTEN=""))
    wait_until(lambda: listening(port2), 15, what="second ingress")
    results = []
    lock = threading.Lock()

    def hammer(port, count):
        ctx = client_context(env.tls_cert)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.starttls(context=ctx)
            s.login("ratey-app", PASSWORD)
            for i in range(count):
                code, msg = s.mail("a@plain.test")
                with lock:
                    results.append((code, msg.decode()))
                if code == 250:
                    s.rcpt("r@dest.example")
                    s.data(b"From: a@plain.test\r\nSubject: rate\r\n\r\nx\r\n")

    threads = [threading.Thread(target=hammer, args=(p, 70)) for p in (env.ingress_port, port2, env.ingress_port, port2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    accepted = [r for r in results if r[0] == 250]
    refused = [r for r in results if r[0] != 250]
    assert len(accepted) == 100, f"{len(accepted)} accepted"
    assert set(refused) == {(451, "4.7.1 Ratelimit reached")}
    env.kill("ingress-2")


def test_implicit_tls_port_and_swaks(env):
    with smtplib.SMTP_SSL("127.0.0.1", env.implicit_port, context=client_context(env.tls_cert), timeout=30) as s:
        code, _ = s.ehlo("app.plain.test")
        assert code == 250 and "auth" in s.esmtp_features
        s.login("shop-app", PASSWORD)
        s.sendmail("news@plain.test", ["x@dest.example"], make_message("implicit-tls", sender="news@plain.test"))
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{env.ingress_port}", "--tls", "--tls-ca-path",
                          str(env.tls_cert), "--auth", "LOGIN", "--auth-user", "shop-app", "--auth-password", PASSWORD,
                          "--from", "swaks@plain.test", "--to", "y@dest.example"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "235 2.7.0 Authentication successful" in out.stdout and "queued as" in out.stdout


def test_connection_limit_per_ip(env):
    clients = [Raw(env.ingress_port, source="127.0.0.4") for _ in range(20)]
    for c in clients:
        assert c.reply().startswith("220 ")
    extra = Raw(env.ingress_port, source="127.0.0.4")
    assert extra.reply() == "421 4.7.0 smg.test Too many connections from your host"
    with pytest.raises((ConnectionError, OSError)):
        extra.cmd("NOOP")
    other = Raw(env.ingress_port, source="127.0.0.5")
    assert other.reply().startswith("220 "), "other hosts are not affected"
    for c in clients + [extra, other]:
        c.close()


def test_connection_limit_counts_every_ingress_of_the_site_and_forgets_a_killed_one(env):
    """R3 across processes: two ingress processes of one site share ingress.max_connections
    (through the Redis census, refreshed every second); kill -9 of one gives its share back
    within the census lifetime (5 s) without any operator step."""
    ports = {name: free_port() for name in ("ingress-a", "ingress-b")}
    for name, port in ports.items():
        env.start("smg-ingress", name=name, **dict(env.policy_env, SMG_INGRESS_LISTEN=f"127.0.0.1:{port}",
                                                   SMG_INGRESS_IMPLICIT_TLS_LISTEN="", SMG_INGRESS_MAX_CONNECTIONS="6",
                                                   SMG_SITE="eu-de-09"))  # a site of their own: only they count
    for port in ports.values():
        wait_until(lambda: listening(port), 20, what="ingress")
    held = []
    try:
        for _ in range(4):
            c = Raw(ports["ingress-a"], source="127.0.0.6")
            assert c.reply().startswith("220 ")
            held.append(c)
        time.sleep(2.5)  # two census rounds
        for _ in range(2):
            c = Raw(ports["ingress-b"], source="127.0.0.6")
            reply = c.reply()
            census = {k: env.redis.client().hgetall(k) for k in env.redis.client().keys("smg:conn:*")}
            assert reply.startswith("220 "), (reply, census)
            held.append(c)
        refused = Raw(ports["ingress-b"], source="127.0.0.6")
        assert refused.reply().startswith("421 4.7.0 smg.test Too many connections"), "4 on A + 2 on B = the site's 6"
        refused.close()
        env.kill("ingress-a")
        started = time.monotonic()

        def accepted():
            c = Raw(ports["ingress-b"], source="127.0.0.6")
            ok = c.reply().startswith("220 ")
            c.close()
            return ok
        wait_until(accepted, 10, interval=0.5, what="ingress-b to forget the killed ingress-a's connections")
        assert time.monotonic() - started < 8
    finally:
        for c in held:
            c.close()
        env.kill("ingress-a")
        env.kill("ingress-b")


def test_smgctl_tlsa_matches_the_certificate(env):
    out = subprocess.run([str(env.bins / "smgctl"), "tlsa", "--certificate", str(env.tls_cert), "--host", "smg.test"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    spki = subprocess.run(["openssl", "x509", "-in", str(env.tls_cert), "-pubkey", "-noout"], capture_output=True,
                          check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=spki, capture_output=True,
                         check=True).stdout
    import hashlib
    assert out.stdout.strip() == f"_25._tcp.smg.test. IN TLSA 3 1 1 {hashlib.sha256(der).hexdigest()}"
    bad = env.smgctl("customer", "add", "bad id!", "--network", "x")
    assert bad.returncode != 0 and "id" in bad.stderr
    bad = env.smgctl("customer", "add", "x", "--network", "300.0.0.0/8")
    assert bad.returncode != 0 and "networks" in bad.stderr


def test_slow_clients_are_cut_off(env):
    """A client trickling one byte at a time cannot hold a session: the command line must be
    complete within ingress.command_timeout, and DATA within ingress.max_data_time."""
    port = free_port()
    env.start("smg-ingress", name="ingress-slow", **dict(env.policy_env, SMG_INGRESS_LISTEN=f"127.0.0.1:{port}",
                                                        SMG_INGRESS_IMPLICIT_TLS_LISTEN="",
                                                        SMG_INGRESS_COMMAND_TIMEOUT="2s",
                                                        SMG_INGRESS_MAX_DATA_TIME="3s"))
    wait_until(lambda: listening(port), 15, what="slow-client ingress")
    c = Raw(port)
    c.reply()
    started = time.monotonic()
    reply = None
    for byte in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP":
        readable, _, _ = select.select([c.sock], [], [], 0.25)
        if readable:
            reply = c.reply()
            break
        c.send(bytes([byte]))
    assert reply == "421 4.4.2 smg.test Error: timeout exceeded", reply
    assert time.monotonic() - started < 6
    c.close()

    c = Raw(port)
    c.reply()
    c.cmd("EHLO a")
    c.starttls(client_context(env.tls_cert))
    c.cmd("EHLO a")
    c.login("shop-app")
    c.cmd("MAIL FROM:<a@plain.test>")
    c.cmd("RCPT TO:<r@dest.example>")
    assert c.cmd("DATA").startswith("354")
    started = time.monotonic()
    reply = None
    for _ in range(40):
        readable, _, _ = select.select([c.sock], [], [], 0.2)
        if readable:
            reply = c.reply()
            break
        c.send(b"x" * 10 + b"\r\n")   # steady, never idle for long, never finishing
    assert reply == "421 4.4.2 smg.test Error: timeout exceeded", reply
    assert time.monotonic() - started < 7
    c.close()
    env.kill("ingress-slow")
