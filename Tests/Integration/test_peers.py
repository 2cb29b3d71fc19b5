"""The delivery tests' own infrastructure, without the gateway: the SMTP peers (peers.py) against
real clients (smtplib, swaks) and the extra DNS zones (zones/) served by the knot + unbound
fixture. If one of these fails, a failure in test_delivery.py says nothing about egress."""
import hashlib
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from peers import Peers, TestCA, refuses, self_signed

DNS_EXTRA_ZONES = Path(__file__).resolve().parent / "zones"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def peers():
    p = Peers(["127.0.0.10", "127.0.0.11", "127.0.0.16", "127.0.0.18", "127.0.0.23", "127.0.0.25"])
    yield p
    p.stop()
    assert [e for peer in p.all for e in peer.errors] == []


def test_starttls_peer_has_a_certificate_the_test_ca_vouches_for(peers, ca, tmp_path):
    peer = peers.add("127.0.0.10", "mx.tls.egress.test", tls=ca.issue("mx.tls.egress.test"))
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    with smtplib.SMTP("127.0.0.10", peers.port, local_hostname="before-tls.test", source_address=("127.0.0.4", 0),
                      timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls") and s.has_extn("8bitmime") and s.has_extn("pipelining")
        s._host = "mx.tls.egress.test"  # the name smtplib checks the certificate against (SNI too)
        s.starttls(context=ctx)  # verifies chain and host name against the test CA
        assert hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest() == peer.cert.sha256
        s.ehlo("after-tls.test")
        assert not s.has_extn("starttls")
        s.sendmail("a@customer.test", ["x@tls.egress.test"], b"Subject: one\r\n\r\n.leading dot\r\nbody\r\n")
        s.sendmail("", ["y@tls.egress.test"], b"Subject: two\r\n\r\nbody\r\n")
    first, second = peer.messages()
    assert first.data == b"Subject: one\r\n\r\n.leading dot\r\nbody\r\n"
    assert (first.source_ip, first.helo, first.tls, first.tls_version) == ("127.0.0.4", "after-tls.test", True,
                                                                            "TLSv1.3")
    assert first.tls_cipher and first.replied
    assert second.mail_from == "" and second.rcpts == ["y@tls.egress.test"]
    [conn] = peer.connections()
    assert conn.messages == 2 and conn.helo_names == ["before-tls.test", "after-tls.test"]
    wait = time.monotonic() + 5
    while peer.active() and time.monotonic() < wait:
        time.sleep(0.05)
    assert peer.active() == 0 and peer.max_active == 1

    # The self-signed variant does not verify against the CA (nor against the system store).
    bad = peers.add("127.0.0.11", "mx.untrusted.egress.test", tls=self_signed(tmp_path, "mx.untrusted.egress.test"))
    for context in (ctx, ssl.create_default_context()):
        with smtplib.SMTP("127.0.0.11", peers.port, timeout=10) as s:
            s._host = "mx.untrusted.egress.test"
            with pytest.raises(ssl.SSLCertVerificationError):
                s.starttls(context=context)
    # …but an opportunistic client that does not verify gets TLS and delivers.
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.11", peers.port, timeout=10) as s:
        s.starttls(context=unverified)
        assert hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest() == bad.cert.sha256
        s.sendmail("a@customer.test", ["z@untrusted.egress.test"], b"Subject: three\r\n\r\nx\r\n")
    assert [m.tls for m in bad.messages()] == [True]
    assert sum(1 for c in bad.connections() if c.tls_error) == 2


def test_swaks_delivers_over_starttls_to_a_peer(peers, ca):
    peer = peers.add("127.0.0.10", "mx.tls.egress.test", tls=ca.issue("mx.tls.egress.test"))
    out = subprocess.run(["swaks", "--server", f"127.0.0.10:{peers.port}", "--tls", "--tls-verify",
                          "--tls-ca-path", str(ca.cert), "--tls-sni", "mx.tls.egress.test",
                          "--from", "a@customer.test", "--to", "b@tls.egress.test", "--helo", "swaks.test",
                          "--local-interface", "127.0.0.2", "--body", "hello over TLS"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "TLS started with cipher TLSv1.3" in out.stdout
    [m] = peer.messages()
    assert (m.source_ip, m.helo, m.tls, m.rcpts) == ("127.0.0.2", "swaks.test", True, ["b@tls.egress.test"])
    assert b"hello over TLS" in m.data


def test_refusing_host_busy_greeting_and_tarpit(peers):
    assert refuses("127.0.0.16", peers.port) and peers.refusing("127.0.0.16") == "127.0.0.16"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.16", peers.port), timeout=5)

    busy = peers.add("127.0.0.18", "mx-busy.fallback421.egress.test", greeting="421 4.3.2 Too busy, try later")
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.18", peers.port, timeout=10)
    assert e.value.smtp_code == 421
    assert len(busy.connections()) == 1 and busy.count() == 0

    tarpit = peers.add("127.0.0.23", "mx.tarpit.egress.test", delay=0.4)
    start = time.monotonic()
    with smtplib.SMTP("127.0.0.23", peers.port, timeout=10) as s:  # greeting
        assert time.monotonic() - start >= 0.4
        s.sendmail("a@customer.test", ["t@tarpit.egress.test"], b"Subject: slow\r\n\r\nx\r\n")
        assert tarpit.active() == 1
    # greeting, EHLO, MAIL, RCPT, DATA, end of data, QUIT: 7 replies.
    assert time.monotonic() - start >= 7 * 0.4
    assert tarpit.count() == 1


def test_seven_bit_peer_and_per_recipient_replies(peers):
    seven = peers.add("127.0.0.25", "mx.seven.egress.test", eightbitmime=False)
    with smtplib.SMTP("127.0.0.25", peers.port, timeout=10) as s:
        s.ehlo("client.test")
        assert not s.has_extn("8bitmime")
        code, reply = s.mail("a@customer.test", ["BODY=8BITMIME"])
        assert code == 555, reply
        s.rset()
        refused = s.sendmail("a@customer.test", ["ok@seven.egress.test", "reject-me@seven.egress.test",
                                                 "flaky@seven.egress.test"],
                             "Subject: x\r\n\r\nGr\u00fc\u00dfe\r\n".encode())
        assert refused["reject-me@seven.egress.test"][0] == 550
        assert refused["reject-me@seven.egress.test"][1].startswith(b"5.1.1 ")
        assert refused["flaky@seven.egress.test"][0] == 451
        s.sendmail("a@customer.test", ["flaky@seven.egress.test"], b"Subject: y\r\n\r\nplain\r\n")
    first, second = seven.messages()
    assert first.rcpts == ["ok@seven.egress.test"] and first.eight_bit
    assert second.rcpts == ["flaky@seven.egress.test"] and not second.eight_bit
    assert seven.rcpt_attempts("flaky@seven.egress.test") == 2
    [conn] = seven.connections()
    assert conn.messages == 2
    assert any("BODY=8BITMIME" in c for c in conn.mail_commands())


def test_extra_zones_are_served(dns_fixture):
    d = dns_fixture.dig
    assert sorted(d("pref.egress.test", "MX")) == ["10 mx-a.pref.egress.test.", "20 mx-b.pref.egress.test."]
    assert d("mx-a.pref.egress.test") == ["127.0.0.10"] and d("mx-b.pref.egress.test") == ["127.0.0.11"]
    assert sorted(d("equal.egress.test", "MX")) == ["10 mx1.equal.egress.test.", "10 mx2.equal.egress.test."]
    assert d("implicit.egress.test", "MX") == [] and d("implicit.egress.test") == ["127.0.0.14"]
    assert d("nullmx.egress.test", "MX") == ["0 ."]
    assert sorted(d("fallback.egress.test", "MX")) == ["10 mx-down.fallback.egress.test.",
                                                       "20 mx-up.fallback.egress.test."]
    assert sorted(d("fallback421.egress.test", "MX")) == ["10 mx-busy.fallback421.egress.test.",
                                                          "20 mx-up.fallback421.egress.test."]
    assert sorted(d("mx.multi.egress.test")) == ["127.0.0.33", "127.0.0.34"]
    assert d("cname.egress.test", "MX") == ["10 mx.cname.egress.test."]
    assert d("mx.cname.egress.test") == ["real.cname.egress.test.", "127.0.0.20"]
    assert d("mx.loop.egress.test") == ["127.0.0.2"] and d("mx.loop2.egress.test") == ["127.0.0.6"]
    assert d("loop3.egress.test", "MX") == ["10 mx.loop3.egress.test."] and d("mx.loop3.egress.test") == ["127.0.0.7"]
    for host, address in [("tls", 21), ("untrusted", 22), ("tarpit", 23), ("fast", 24), ("seven", 25), ("retry", 26),
                          ("reject", 27), ("reuse", 28), ("crash", 29), ("pool", 31), ("hops", 32)]:
        assert d(f"{host}.egress.test", "MX") == [f"10 mx.{host}.egress.test."], host
        assert d(f"mx.{host}.egress.test") == [f"127.0.0.{address}"], host
    assert d("customer.test", "MX") == ["10 mx.customer.test."] and d("mx.customer.test") == ["127.0.0.30"]
    # The built-in zones are still there.
    assert "10 mx1.plain.test." in d("plain.test", "MX")
