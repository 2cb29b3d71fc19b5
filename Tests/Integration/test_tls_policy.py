"""Outbound TLS policy (issue 13): DANE, MTA-STS, forced TLS (reject or hold) and TLS reports,
against the real processes, real SMTP peers (peers.py), the knot + validating unbound fixture
and a real HTTPS server for the MTA-STS policies.

Certificates are made at test time, and the TLSA records depend on them, so this module writes
its DNS zones at import time into a temporary directory (`DNS_EXTRA_ZONES`, read by conftest's
module-scoped dns fixture): the DANE certificate and the DANE-TA CA are made then too, every
other certificate lazily when a test first needs it. One CA (`trusted_ca()`) is egress's extra
trust anchor (egress.tls_ca_file) for MX certificates and for the MTA-STS HTTPS fetch; a second
CA (the DANE-TA one) is trusted by nothing but its TLSA record.

Zones (all nothing but 127.0.0.0/8):

  zone            mode      what is in it
  dane.test       signed    good, mismatch, servfail, nostarttls, ta (TLSA at _25._tcp.<mx host>)
  danebogus.test  bogus     MX + a TLSA whose data starts "aaaaaaaa" (altered after signing)
  daneplain.test  unsigned  MX + a TLSA that does not match (ignored: unsigned)
  sts.test        unsigned  MTA-STS domains enforce, notlisted, untrusted, testing, cache,
                            shared1/shared2 (one MX host), rpt (+ _smtp._tls TLSRPT)
  forced.test     unsigned  reject, hold, fp (forced-TLS rules made with smgctl)
  egress.test     unsigned  copied from zones/ (test_delivery.py's)
  customer.test   unsigned  the senders' domain: MX → the bounces peer; also publishes TLSRPT
                            (so that a counted report mail would show up in its own report)

Addresses (every peer of a test on one shared port, given to egress as egress.port; the MTA-STS
HTTPS server on its own port, given as egress.mta_sts_port):

  address      host                     behaviour
  127.0.0.30   mx.customer.test         "bounces": NDRs and TLS reports arrive here (no STARTTLS)
  127.0.0.40   mx.good.dane.test        STARTTLS, self-signed cert; TLSA 3 1 1 = its SPKI
  127.0.0.41   mx.mismatch.dane.test    STARTTLS, test-CA cert; TLSA 3 1 1 of another key
  127.0.0.42   mx.servfail.dane.test    STARTTLS, test-CA cert; _25._tcp is a CNAME to an unserved
                                        name → SERVFAIL
  127.0.0.43   mx.nostarttls.dane.test  no STARTTLS; TLSA 3 1 1
  127.0.0.44   mx.ta.dane.test          leaf + CA of the DANE-TA CA (in no trust store);
                                        TLSA 2 0 1 = SHA-256 of that CA certificate
  127.0.0.45   mx.danebogus.test        STARTTLS, test-CA cert; TLSA bogus
  127.0.0.46   mx.daneplain.test        STARTTLS, test-CA cert; unsigned, non-matching TLSA
  127.0.0.50   mx.enforce.sts.test      enforce, listed in the policy, test-CA cert
  127.0.0.51   mx.notlisted.sts.test    enforce, the policy lists another host
  127.0.0.52   mx.untrusted.sts.test    enforce, listed, self-signed cert
  127.0.0.53   mx.testing.sts.test      testing, listed, self-signed cert
  127.0.0.54   mx.cache.sts.test        enforce (*.cache.sts.test), cached, then a new id
  127.0.0.55   mx.shared.sts.test       MX of shared1 (enforce, listed) and shared2 (invalid policy)
  127.0.0.56   mx.rpt.sts.test          testing; TLSRPT rua=mailto:tlsrpt@customer.test
  127.0.0.60   mx.reject.forced.test    no STARTTLS; rule encrypt / reject
  127.0.0.61   mx.hold.forced.test      no STARTTLS, later restarted with STARTTLS; rule verify / hold
  127.0.0.62   mx.fp.forced.test        self-signed cert; rule fingerprint
  127.0.0.63   mx.backup.forced.test    no STARTTLS; rule encrypt / reject; MX 20 mx-down (.64) refuses
  127.0.0.79   mta-sts.<d>.sts.test     the HTTPS policy server (one cert naming every mta-sts host)

"No plaintext" invariant, checked at every policy peer: every message it got came over TLS, no
connection issued MAIL before STARTTLS, and a refused / deferred / held outcome leaves it with no
message and no MAIL command at all.

Facts, replies and texts the tests had to assume about the new egress are the constants right
below: adjust them there."""
import atexit
import datetime
import gzip
import hashlib
import http.server
import json
import re
import shutil
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
from email import message_from_bytes, policy as email_policy
from functools import lru_cache
from pathlib import Path

import pytest

from harness import wait_until
from peers import CertPair, Peers, TestCA, check_loopback, self_signed
from test_delivery import (EV_ATTEMPT, EV_BOUNCED, EV_DEFERRED, EV_DELIVERED, F_RECIPIENT, F_REPLY, SENDER,
                           bounces, delivery_env, final_outcomes, ndr_for, of_type, peers, send, start, wait_outcomes)

import jsonschema  # installed by scripts/install-deps.sh

# ---- assumptions about the egress being built (one place to adjust) --------------------------
F_TLS_POLICY, F_TLS_FAILURE = "tls_policy", "tls_failure"
MODE_DANE, MODE_STS, MODE_FORCED, MODE_OPPORTUNISTIC = "dane", "mta-sts", "forced", "opportunistic"
# tls_policy.mode when the TLSA lookup is bogus / SERVFAIL: the mail waits for DANE.
MODE_TLSA_LOOKUP_FAILED = "dane"
REPLY_TLS_DEFERRED = "451 4.7.5"        # start of the reply of a TLS-policy deferral
REPLY_FORCED_REJECT, STATUS_FORCED_REJECT = "550 5.7.10", "5.7.10"
HELD_REASON = "TLS required"            # start of the held reason `smgctl queue show` prints
STARTTLS_MISSING = "starttls-not-supported"
RULE_PROPAGATION_SECONDS = 6            # egress reads rule changes within 5 s (+ margin)
REPORT_COUNT_SECONDS = 6                # egress writes its session counts to Redis within 5 s (+ margin)
STS_CACHE_KEY = "tls:sts:{domain}"      # under the gateway's key prefix
REPORT_RCPT = "tlsrpt@customer.test"
OWN_DOMAIN = "gateway.test"             # the harness's SMG_NDR_DOMAIN: the report mail's From

# Peers of this module; 127.0.0.79 is the MTA-STS HTTPS server's, never a peer's.
PEER_ADDRESSES = ["127.0.0.30"] + [f"127.0.0.{n}" for n in range(40, 79)]
STS_ADDRESS = "127.0.0.79"

# ---- certificates and zones (written at import time) -----------------------------------------

WORK = Path(tempfile.mkdtemp(prefix="smg-tls-policy-"))
atexit.register(shutil.rmtree, WORK, True)
PKI = WORK / "pki"
PKI.mkdir()
DNS_EXTRA_ZONES = WORK / "zones"
DNS_EXTRA_ZONES.mkdir()
DELIVERY_ZONES = Path(__file__).resolve().parent / "zones"


@lru_cache(maxsize=None)
def trusted_ca() -> TestCA:
    """The CA egress trusts (egress.tls_ca_file, smgctl tls check --ca-file)."""
    return TestCA(PKI / "trusted-ca", name="SMG TLS Policy Test CA")


@lru_cache(maxsize=None)
def ca_cert(host: str) -> CertPair:
    """A certificate for `host` from the trusted test CA."""
    return trusted_ca().issue(host)


@lru_cache(maxsize=None)
def untrusted_cert(host: str) -> CertPair:
    """A self-signed certificate for `host`: no trust anchor vouches for it."""
    return self_signed(PKI / "self-signed", host)


def spki_sha256(cert: CertPair) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (TLSA selector 1, matching type 1)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert.cert), "-pubkey", "-noout"], capture_output=True,
                         check=True, timeout=60).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True,
                         check=True, timeout=60).stdout
    return hashlib.sha256(der).hexdigest()


def with_chain(leaf: CertPair, ca: TestCA) -> CertPair:
    """The leaf with its CA certificate after it: the server presents both (needed for DANE-TA)."""
    chain = Path(f"{leaf.cert}.chain.pem")
    chain.write_text(leaf.cert.read_text().rstrip("\n") + "\n" + ca.cert.read_text())
    return CertPair(chain, leaf.key)


# DANE-EE: a self-signed certificate (RFC 7672 §3.1.1: no PKIX, no name check for usage 3).
DANE_GOOD_CERT = untrusted_cert("mx.good.dane.test")
DANE_GOOD_TLSA = "3 1 1 " + spki_sha256(DANE_GOOD_CERT)
# DANE-TA: a CA that only its TLSA record vouches for (not in egress.tls_ca_file).
TA_CA = TestCA(PKI / "dane-ta-ca", name="SMG DANE-TA Test CA")
DANE_TA_TLSA = "2 0 1 " + hashlib.sha256(ssl.PEM_cert_to_DER_cert(TA_CA.cert.read_text())).hexdigest()
# Well-formed TLSA data that matches no key any peer has.
OTHER_KEY_TLSA = "3 1 1 " + hashlib.sha256(b"the key of some other server").hexdigest()
NOSTARTTLS_TLSA = "3 1 1 " + hashlib.sha256(b"the key the nostarttls host would have").hexdigest()
BOGUS_TLSA = "3 1 1 aaaaaaaa" + hashlib.sha256(b"bogus").hexdigest()[8:]
assert not OTHER_KEY_TLSA.split()[3].startswith("aaaaaaaa") and not NOSTARTTLS_TLSA.split()[3].startswith("aaaaaaaa")

STS_IDS = {d: f"2024060{i}T010000" for i, d in enumerate(
    ["enforce", "notlisted", "untrusted", "testing", "cache", "shared1", "shared2", "rpt"], start=1)}
# A name in no zone of the fixture: unbound forwards it to knotd, which refuses it → SERVFAIL.
UNSERVED = "_25._tcp.mx.unserved-zone.example."

HEAD = """$TTL 60
@                 SOA   ns1 hostmaster 2024060101 3600 900 604800 60
@                 NS    ns1
ns1               A     127.0.0.1
"""

ZONES = {
    ("dane.test", "signed"): f"""; DANE destinations (signed: MX, A and TLSA validate, answers carry AD).
$ORIGIN dane.test.
{HEAD}
good              MX    10 mx.good
mx.good           A     127.0.0.40
_25._tcp.mx.good  TLSA  {DANE_GOOD_TLSA}
mismatch          MX    10 mx.mismatch
mx.mismatch       A     127.0.0.41
_25._tcp.mx.mismatch TLSA {OTHER_KEY_TLSA}
servfail          MX    10 mx.servfail
mx.servfail       A     127.0.0.42
_25._tcp.mx.servfail CNAME {UNSERVED}
nostarttls        MX    10 mx.nostarttls
mx.nostarttls     A     127.0.0.43
_25._tcp.mx.nostarttls TLSA {NOSTARTTLS_TLSA}
ta                MX    10 mx.ta
mx.ta             A     127.0.0.44
_25._tcp.mx.ta    TLSA  {DANE_TA_TLSA}
""",
    ("danebogus.test", "bogus"): f"""; Signed, then the TLSA (data starting aaaaaaaa) is altered: SERVFAIL.
$ORIGIN danebogus.test.
{HEAD}
@                 MX    10 mx
mx                A     127.0.0.45
_25._tcp.mx       TLSA  {BOGUS_TLSA}
""",
    ("daneplain.test", "unsigned"): f"""; Unsigned: its TLSA record must be ignored (no DANE without DNSSEC).
$ORIGIN daneplain.test.
{HEAD}
@                 MX    10 mx
mx                A     127.0.0.46
_25._tcp.mx       TLSA  {OTHER_KEY_TLSA}
""",
    ("sts.test", "unsigned"): f"""; MTA-STS policy domains; every mta-sts.<domain> is the HTTPS server on {STS_ADDRESS}.
$ORIGIN sts.test.
{HEAD}
""" + "".join(f"""
{d:<17} MX    10 mx.{'shared' if d.startswith('shared') else d}
_mta-sts.{d:<8} TXT   "v=STSv1; id={STS_IDS[d]};"
mta-sts.{d:<9} A     {STS_ADDRESS}
""" for d in STS_IDS) + """
mx.enforce        A     127.0.0.50
mx.notlisted      A     127.0.0.51
mx.untrusted      A     127.0.0.52
mx.testing        A     127.0.0.53
mx.cache          A     127.0.0.54
mx.shared         A     127.0.0.55
mx.rpt            A     127.0.0.56
_smtp._tls.rpt    TXT   "v=TLSRPTv1; rua=mailto:""" + REPORT_RCPT + """"
""",
    ("forced.test", "unsigned"): f"""; Destinations of the forced-TLS rules (smgctl tls rule add).
$ORIGIN forced.test.
{HEAD}
reject            MX    10 mx.reject
mx.reject         A     127.0.0.60
hold              MX    10 mx.hold
mx.hold           A     127.0.0.61
fp                MX    10 mx.fp
mx.fp             A     127.0.0.62
backup            MX    10 mx.backup
backup            MX    20 mx-down.backup
mx.backup         A     127.0.0.63
mx-down.backup    A     127.0.0.64
""",
    ("customer.test", "unsigned"): (DELIVERY_ZONES / "customer.test.zone").read_text() + f"""
; TLS reporting for the senders' domain too: a report mail that were counted would show up in
; customer.test's own report (it must not: reports are never counted).
_smtp._tls        TXT   "v=TLSRPTv1; rua=mailto:{REPORT_RCPT}"
""",
    ("egress.test", "unsigned"): (DELIVERY_ZONES / "egress.test.zone").read_text(),
}

(DNS_EXTRA_ZONES / "zones.list").write_text(
    "# Zones of test_tls_policy.py (written at import time; see its docstring).\n"
    + "".join(f"{name:<16} {mode}\n" for name, mode in ZONES))
for (name, _), text in ZONES.items():
    (DNS_EXTRA_ZONES / f"{name}.zone").write_text(text)


def sts_policy(mode, *mx, max_age=86400, eol="\r\n"):
    """An RFC 8461 policy text."""
    return eol.join(["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], f"max_age: {max_age}"]) + eol


POLICIES = {
    "enforce": sts_policy("enforce", "mx.enforce.sts.test", "*.backup.enforce.sts.test"),
    "notlisted": sts_policy("enforce", "mx.elsewhere.sts.test", eol="\n"),
    "untrusted": sts_policy("enforce", "mx.untrusted.sts.test"),
    "testing": sts_policy("testing", "mx.testing.sts.test"),
    "cache": sts_policy("enforce", "*.cache.sts.test"),
    "shared1": sts_policy("enforce", "mx.shared.sts.test"),
    "shared2": sts_policy("sometimes", "mx.shared.sts.test"),   # invalid mode: no policy
    "rpt": sts_policy("testing", "mx.rpt.sts.test"),
}

# ---- the MTA-STS policy server -----------------------------------------------------------------


class _TLSHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, context):
        self.context = context
        super().__init__(address, handler)

    def server_bind(self):
        # Not HTTPServer.server_bind: its getfqdn() would ask the system resolver about the address.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        # The handshake happens in the request's thread (at its first read), not in the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass  # e.g. a client that refuses the certificate: recorded nowhere, as a real server would


class PolicyServer:
    """HTTPS on `address` (a free port) answering GET /.well-known/mta-sts.txt per Host header
    (mta-sts.<domain>[:port]) with what `serve` / `fail` set for that domain; 404 for anything else.
    One certificate from the trusted test CA names every mta-sts.<domain>.sts.test host."""

    def __init__(self, address: str, cert: CertPair):
        check_loopback(address)
        self.lock = threading.Lock()
        self.responses = {}
        self.requests = []   # (host without port, path)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").strip().lower()
                host = host.rsplit(":", 1)[0] if re.search(r":\d+$", host) else host
                with server.lock:
                    server.requests.append((host, self.path))
                    answer = server.responses.get(host) if self.path == "/.well-known/mta-sts.txt" else None
                status, content_type, body = answer or (404, "text/plain", "not found\n")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = _TLSHTTPServer((address, 0), Handler, cert.server_context())
        self.address, self.port = address, self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mta-sts-https", daemon=True)
        self.thread.start()

    def serve(self, domain: str, text: str, status=200, content_type="text/plain"):
        with self.lock:
            self.responses[f"mta-sts.{domain}"] = (status, content_type, text)

    def fail(self, domain: str, status: int):
        self.serve(domain, f"error {status}\n", status=status)

    def reset(self):
        with self.lock:
            self.requests = []
            self.responses = {}
        for d, text in POLICIES.items():
            self.serve(f"{d}.sts.test", text)

    def fetches(self, domain: str) -> int:
        with self.lock:
            return sum(1 for host, path in self.requests if host == f"mta-sts.{domain}")

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sts_server():
    cert = trusted_ca().issue(*[f"mta-sts.{d}.sts.test" for d in STS_IDS])
    server = PolicyServer(STS_ADDRESS, cert)
    yield server
    server.stop()


@pytest.fixture
def sts(sts_server):
    """The policy server with every domain's default policy (POLICIES) and no requests yet."""
    sts_server.reset()
    return sts_server




def policy_env(dns, peers, sts, **more):
    return delivery_env(dns, peers, SMG_DNS_TRUSTED="true", SMG_EGRESS_TLS_CA_FILE=trusted_ca().cert,
                        SMG_EGRESS_MTA_STS_PORT=sts.port, **more)


# ---- helpers -----------------------------------------------------------------------------------


def ctl(gateway, *args, env=None, timeout=60):
    """smgctl with --redis/--prefix, and the gateway's environment (plus `env`): SMG_DNS_SERVERS,
    SMG_NDR_DOMAIN and the like reach it in case it reads them."""
    return subprocess.run([str(gateway.bins / "smgctl"), *args, "--redis", gateway.redis.url,
                           "--prefix", gateway.prefix], capture_output=True, text=True, timeout=timeout,
                          env=gateway.env(env or {}), stdin=subprocess.DEVNULL)


def add_rule(gateway, *args) -> str:
    out = ctl(gateway, "tls", "rule", "add", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    match = re.search(r"\brule\s+([^\s:,]+)", out.stdout)
    assert match, out.stdout
    return match.group(1)


def rule_list(gateway) -> list:
    out = ctl(gateway, "tls", "rule", "list", "--json")
    assert out.returncode == 0, out.stderr
    rules = json.loads(out.stdout)
    assert isinstance(rules, list), out.stdout
    return rules


def held_ids(gateway) -> list:
    out = ctl(gateway, "queue", "list", "--json", "--state", "held")
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["id"] for line in out.stdout.splitlines() if line.strip()]


def tls_policy(event) -> dict:
    p = event["facts"].get(F_TLS_POLICY)
    assert isinstance(p, dict), event
    assert isinstance(p.get("source"), str) and p["source"], event
    return p


def check_policy(events, rcpt, mode, attempted=True, **fields) -> dict:
    """Every outcome event of `rcpt` and every attempt for its domain carry tls_policy with `mode`
    (None: any), domain = rcpt's domain and `fields`. Returns the last outcome event."""
    domain = rcpt.split("@", 1)[1].lower()
    outcomes = [e for e in events if e["type"] in (EV_DELIVERED, EV_DEFERRED, EV_BOUNCED)
                and e["facts"].get(F_RECIPIENT, "").lower() == rcpt.lower()]
    attempts = [e for e in of_type(events, EV_ATTEMPT)
                if str((e["facts"].get(F_TLS_POLICY) or {}).get("domain", "")).lower() == domain]
    assert outcomes, events
    if attempted:
        assert attempts, f"no delivery.attempt with a tls_policy for {domain}: {of_type(events, EV_ATTEMPT)}"
    for e in outcomes + attempts:
        p = tls_policy(e)
        assert p.get("mode") in ((MODE_DANE, MODE_STS, MODE_FORCED, MODE_OPPORTUNISTIC) if mode is None else (mode,)), \
            (mode, e)
        assert str(p.get("domain", "")).lower() == domain, e
        for key, value in fields.items():
            assert p.get(key) == value, (key, value, e)
    return outcomes[-1]


def tls_failure(event) -> str:
    failure = event["facts"].get(F_TLS_FAILURE)
    assert isinstance(failure, str) and failure, event
    return failure


def wait_deferred(gateway, mid, rcpt, timeout=45) -> list:
    """Waits for a `deferred` of `rcpt`; asserts it is a TLS-policy deferral and nothing is final.
    Returns the message's events."""
    wait_until(lambda: of_type(gateway.trace(mid), EV_DEFERRED, rcpt), timeout, interval=0.2,
               what=f"{rcpt} deferred")
    events = gateway.trace(mid)
    for e in of_type(events, EV_DEFERRED, rcpt):
        assert e["facts"][F_REPLY].startswith(REPLY_TLS_DEFERRED), e
        tls_failure(e)
    assert final_outcomes(gateway, mid) == {}, events
    return events


def assert_no_plaintext(peer):
    """Whatever the peer got came over TLS; no connection sent MAIL before STARTTLS."""
    for m in peer.messages():
        assert m.tls, f"{peer.name} got a message in plaintext"
    for c in peer.connections():
        commands = [x.strip().upper() for x in c.commands]
        mails = [i for i, x in enumerate(commands) if x.startswith("MAIL")]
        if mails:
            assert "STARTTLS" in commands and commands.index("STARTTLS") < mails[0], c.commands


def assert_refused(peer):
    """A refused destination: no message, and no transaction was even begun (in plaintext or not)."""
    assert peer.count() == 0, [m.rcpts for m in peer.messages()]
    for c in peer.connections():
        assert c.mail_commands() == [], c.commands


def sts_key(gateway, domain) -> str:
    return gateway.prefix + STS_CACHE_KEY.format(domain=domain)


def utc_day() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


# ---- DANE --------------------------------------------------------------------------------------


def test_dane_ee_matching_tlsa_delivers_over_tls(peers, gateway, dns, bounces, sts):
    peer = peers.add("127.0.0.40", "mx.good.dane.test", tls=DANE_GOOD_CERT)
    start(gateway, policy_env(dns, peers, sts))
    mid = send(gateway, "dane-good", ["user@good.dane.test"])
    events = wait_outcomes(gateway, mid, {"user@good.dane.test": EV_DELIVERED})
    delivered = check_policy(events, "user@good.dane.test", MODE_DANE)
    assert F_TLS_FAILURE not in delivered["facts"] or not delivered["facts"][F_TLS_FAILURE], delivered
    [m] = peer.messages()
    assert m.tls and m.tls_version in ("TLSv1.2", "TLSv1.3"), m
    assert_no_plaintext(peer)


def test_dane_tlsa_not_matching_defers_and_sends_nothing(peers, gateway, dns, bounces, sts):
    # The certificate is trusted by the CA file: only DANE can refuse it (no fallback to PKIX).
    peer = peers.add("127.0.0.41", "mx.mismatch.dane.test", tls=ca_cert("mx.mismatch.dane.test"))
    start(gateway, policy_env(dns, peers, sts))
    mid = send(gateway, "dane-mismatch", ["user@mismatch.dane.test"])
    events = wait_deferred(gateway, mid, "user@mismatch.dane.test")
    check_policy(events, "user@mismatch.dane.test", MODE_DANE)
    time.sleep(1)
    assert_refused(peer)
    assert_no_plaintext(peer)


def test_dane_bogus_tlsa_defers_and_sends_nothing(peers, gateway, dns_fixture, dns, bounces, sts):
    peer = peers.add("127.0.0.45", "mx.danebogus.test", tls=ca_cert("mx.danebogus.test"))
    assert dns_fixture.dig("_25._tcp.mx.danebogus.test", "TLSA") == [], "bogus: SERVFAIL"
    assert dns_fixture.dig("mx.danebogus.test") == ["127.0.0.45"], "the rest of the zone validates"
    start(gateway, policy_env(dns, peers, sts))
    mid = send(gateway, "dane-bogus", ["user@danebogus.test"])
    events = wait_deferred(gateway, mid, "user@danebogus.test")
    check_policy(events, "user@danebogus.test", MODE_TLSA_LOOKUP_FAILED, attempted=False)
    time.sleep(1)
    assert_refused(peer)
    assert_no_plaintext(peer)


def test_dane_tlsa_lookup_servfail_defers_and_sends_nothing(peers, gateway, dns_fixture, dns, bounces, sts):
    peer = peers.add("127.0.0.42", "mx.servfail.dane.test", tls=ca_cert("mx.servfail.dane.test"))
    assert dns_fixture.dig("_25._tcp.mx.servfail.dane.test", "TLSA") == [], "SERVFAIL"
    assert dns_fixture.dig("_25._tcp.mx.servfail.dane.test", "CNAME") == [UNSERVED], "the CNAME itself validates"
    start(gateway, policy_env(dns, peers, sts))
    mid = send(gateway, "dane-servfail", ["user@servfail.dane.test"])
    events = wait_deferred(gateway, mid, "user@servfail.dane.test")
    check_policy(events, "user@servfail.dane.test", MODE_TLSA_LOOKUP_FAILED, attempted=False)
    time.sleep(1)
    assert_refused(peer)
    assert_no_plaintext(peer)


def test_tlsa_in_an_unsigned_zone_is_ignored(peers, gateway, dns, bounces, sts):
    peer = peers.add("127.0.0.46", "mx.daneplain.test", tls=ca_cert("mx.daneplain.test"))
    start(gateway, policy_env(dns, peers, sts))
    mid = send(gateway, "dane-unsigned", ["user@daneplain.test"])
    events = wait_outcomes(gateway, mid, {"user@daneplain.test": EV_DELIVERED})
    check_policy(events, "user@daneplain.test", MODE_OPPORTUNISTIC)
    assert of_type(events, EV_DEFERRED) == []
    [m] = peer.messages()
    assert m.tls, "opportunistic TLS: the peer offers STARTTLS"


def test_dane_host_without_starttls_defers(peers, gateway, dns, bounces, sts):
    peer = peers.add("127.0.0.43", "mx.nostarttls.dane.test")
    start(gateway, policy_env(dns, peers, sts))
    mid = send(gateway, "dane-nostarttls", ["user@nostarttls.dane.test"])
    events = wait_deferred(gateway, mid, "user@nostarttls.dane.test")
    deferred = check_policy(events, "user@nostarttls.dane.test", MODE_DANE)
    assert tls_failure(deferred) == STARTTLS_MISSING, deferred
    time.sleep(1)
    assert peer.connections(), "egress looked at the server's EHLO"
    assert_refused(peer)
    assert_no_plaintext(peer)


def test_dane_ta_tlsa_with_the_ca_in_the_chain_delivers(peers, gateway, dns, bounces, sts):
    leaf = TA_CA.issue("mx.ta.dane.test")
    peer = peers.add("127.0.0.44", "mx.ta.dane.test", tls=with_chain(leaf, TA_CA))
    start(gateway, policy_env(dns, peers, sts))     # TA_CA is in no trust store: only its TLSA vouches
    mid = send(gateway, "dane-ta", ["user@ta.dane.test"])
    events = wait_outcomes(gateway, mid, {"user@ta.dane.test": EV_DELIVERED})
    check_policy(events, "user@ta.dane.test", MODE_DANE)
    [m] = peer.messages()
    assert m.tls
    assert_no_plaintext(peer)


# ---- MTA-STS -----------------------------------------------------------------------------------


def test_mta_sts_enforce_with_listed_mx_and_valid_certificate_delivers(peers, gateway, dns, bounces, sts):
    peer = peers.add("127.0.0.50", "mx.enforce.sts.test", tls=ca_cert("mx.enforce.sts.test"))
    start(gateway, policy_env(dns, peers, sts))
    mid = send(gateway, "sts-enforce", ["user@enforce.sts.test"])
    events = wait_outcomes(gateway, mid, {"user@enforce.sts.test": EV_DELIVERED})
    check_policy(events, "user@enforce.sts.test", MODE_STS, sts_mode="enforce")
    assert sts.fetches("enforce.sts.test") >= 1, sts.requests
    [m] = peer.messages()
    assert m.tls
    assert_no_plaintext(peer)


def test_mta_sts_enforce_refuses_unlisted_mx_and_untrusted_certificate(peers, gateway, dns, bounces, sts):
    notlisted = peers.add("127.0.0.51", "mx.notlisted.sts.test", tls=ca_cert("mx.notlisted.sts.test"))
    untrusted = peers.add("127.0.0.52", "mx.untrusted.sts.test", tls=untrusted_cert("mx.untrusted.sts.test"))
    start(gateway, policy_env(dns, peers, sts))
    first = send(gateway, "sts-notlisted", ["user@notlisted.sts.test"])
    second = send(gateway, "sts-untrusted", ["user@untrusted.sts.test"])
    for mid, rcpt in [(first, "user@notlisted.sts.test"), (second, "user@untrusted.sts.test")]:
        events = wait_deferred(gateway, mid, rcpt)
        check_policy(events, rcpt, MODE_STS, attempted=False, sts_mode="enforce")
    time.sleep(1)
    for peer in (notlisted, untrusted):
        assert_refused(peer)
        assert_no_plaintext(peer)


def test_mta_sts_testing_delivers_despite_a_bad_certificate_and_says_so(peers, gateway, dns, bounces, sts):
    peer = peers.add("127.0.0.53", "mx.testing.sts.test", tls=untrusted_cert("mx.testing.sts.test"))
    start(gateway, policy_env(dns, peers, sts))
    mid = send(gateway, "sts-testing", ["user@testing.sts.test"])
    events = wait_outcomes(gateway, mid, {"user@testing.sts.test": EV_DELIVERED})
    delivered = check_policy(events, "user@testing.sts.test", MODE_STS, sts_mode="testing")
    tls_failure(delivered)
    [m] = peer.messages()
    assert m.tls, "testing mode still uses the TLS the server offers"
    assert_no_plaintext(peer)


def test_mta_sts_policy_is_cached_and_refetched_when_its_id_changes(peers, gateway, redis_server, dns, bounces,
                                                                    sts):
    peer = peers.add("127.0.0.54", "mx.cache.sts.test", tls=ca_cert("mx.cache.sts.test"))
    start(gateway, policy_env(dns, peers, sts))
    r = redis_server.client()
    key = sts_key(gateway, "cache.sts.test")
    rcpt = "user@cache.sts.test"

    first = send(gateway, "sts-cache-1", [rcpt])
    events = wait_outcomes(gateway, first, {rcpt: EV_DELIVERED})
    check_policy(events, rcpt, MODE_STS, sts_mode="enforce")
    raw = r.get(key)
    assert raw is not None, f"no policy cached under {key}: {sorted(k.decode() for k in r.keys(gateway.prefix + 'tls:*'))}"
    cached = json.loads(raw)
    assert cached["id"] == STS_IDS["cache"], cached
    assert "*.cache.sts.test" in cached["policy"] and "enforce" in cached["policy"], cached
    assert cached["fetched"] <= time.time() + 5 and cached["expires"] > time.time() + 3600, cached

    # The policy host breaks: the cached policy (same id) goes on being followed.
    sts.fail("cache.sts.test", 500)
    second = send(gateway, "sts-cache-2", [rcpt])
    events = wait_outcomes(gateway, second, {rcpt: EV_DELIVERED})
    check_policy(events, rcpt, MODE_STS, sts_mode="enforce")
    assert peer.count() == 2

    # A new id in DNS (here: the cached one changed) → refetched; the new policy does not list the MX.
    sts.serve("cache.sts.test", sts_policy("enforce", "mx.other.sts.test"))
    cached["id"] = "anolderid1"
    r.set(key, json.dumps(cached), keepttl=True)
    third = send(gateway, "sts-cache-3", [rcpt])
    events = wait_deferred(gateway, third, rcpt)
    check_policy(events, rcpt, MODE_STS, attempted=False, sts_mode="enforce")
    refetched = json.loads(r.get(key))
    assert refetched["id"] == STS_IDS["cache"] and "mx.other.sts.test" in refetched["policy"], refetched

    # Another id change whose refetch fails: the (new) cached policy stays in force.
    sts.fail("cache.sts.test", 404)
    refetched["id"] = "anolderid2"
    r.set(key, json.dumps(refetched), keepttl=True)
    fourth = send(gateway, "sts-cache-4", [rcpt])
    events = wait_deferred(gateway, fourth, rcpt)
    check_policy(events, rcpt, MODE_STS, attempted=False, sts_mode="enforce")
    assert "mx.other.sts.test" in json.loads(r.get(key))["policy"]
    time.sleep(1)
    assert peer.count() == 2, "nothing goes to an MX the policy in force does not list"
    assert_no_plaintext(peer)


def test_two_domains_on_one_mx_host_keep_their_own_policies(peers, gateway, redis_server, dns, bounces, sts):
    peer = peers.add("127.0.0.55", "mx.shared.sts.test", tls=ca_cert("mx.shared.sts.test"))
    start(gateway, policy_env(dns, peers, sts))
    rcpts = ["user@shared1.sts.test", "user@shared2.sts.test"]
    mid = send(gateway, "sts-shared", rcpts)
    events = wait_outcomes(gateway, mid, {r: EV_DELIVERED for r in rcpts})
    check_policy(events, "user@shared1.sts.test", MODE_STS, sts_mode="enforce")
    check_policy(events, "user@shared2.sts.test", MODE_OPPORTUNISTIC)
    got = sorted(r for m in peer.messages() for r in m.rcpts)
    assert got == rcpts and all(m.tls for m in peer.messages()), got
    r = redis_server.client()
    assert r.get(sts_key(gateway, "shared1.sts.test")) is not None
    assert r.get(sts_key(gateway, "shared2.sts.test")) is None, "an invalid policy is not cached"

    # The other way round, one message each: still each its own.
    for marker, rcpt, mode in [("sts-shared-2", rcpts[1], MODE_OPPORTUNISTIC), ("sts-shared-1", rcpts[0], MODE_STS)]:
        one = send(gateway, marker, [rcpt])
        check_policy(wait_outcomes(gateway, one, {rcpt: EV_DELIVERED}), rcpt, mode)
    assert sorted(r for m in peer.messages() for r in m.rcpts) == sorted(rcpts * 2)
    assert_no_plaintext(peer)


# ---- forced TLS --------------------------------------------------------------------------------


def test_forced_tls_reject_bounces_when_the_peer_has_no_starttls(peers, gateway, dns, bounces, sts):
    peer = peers.add("127.0.0.60", "mx.reject.forced.test")
    rule = add_rule(gateway, "--recipient", "reject.forced.test", "--level", "encrypt", "--action", "reject",
                    "--comment", "contract with reject.forced.test")
    start(gateway, policy_env(dns, peers, sts))
    rcpt = "user@reject.forced.test"
    mid = send(gateway, "forced-reject", [rcpt])
    events = wait_outcomes(gateway, mid, {rcpt: EV_BOUNCED})
    bounced = check_policy(events, rcpt, MODE_FORCED, rule=rule, action="reject")
    assert bounced["facts"][F_REPLY].startswith(REPLY_FORCED_REJECT), bounced
    assert tls_failure(bounced) == STARTTLS_MISSING, bounced
    _, _, blocks = ndr_for(bounces, rcpt)
    fields = blocks[rcpt]
    assert fields["action"] == "failed" and fields["status"] == STATUS_FORCED_REJECT, fields
    assert "tls" in fields.get("diagnostic-code", "").lower(), fields
    assert_refused(peer)
    assert_no_plaintext(peer)


def test_forced_tls_reject_waits_while_another_mx_was_only_unreachable(peers, gateway, dns, bounces, sts):
    """Reject is for "TLS cannot be made", not for "one MX lacks TLS and the other is down": then
    the mail is deferred (the other MX may offer TLS when it is back)."""
    peer = peers.add("127.0.0.63", "mx.backup.forced.test")          # MX 10, no STARTTLS; MX 20 refuses
    rule = add_rule(gateway, "--recipient", "backup.forced.test", "--level", "encrypt", "--action", "reject")
    start(gateway, policy_env(dns, peers, sts))
    rcpt = "user@backup.forced.test"
    mid = send(gateway, "forced-reject-backup", [rcpt])
    def deferred():
        return [e for e in gateway.trace(mid) if e["type"] == EV_DEFERRED]
    [first, *_] = wait_until(deferred, 45, interval=0.3, what="a deferral")
    assert first["facts"][F_REPLY].startswith("4"), first      # the last host's reply: unreachable
    assert tls_failure(first) == STARTTLS_MISSING, first
    check_policy(gateway.trace(mid), rcpt, MODE_FORCED, rule=rule, action="reject")
    assert final_outcomes(gateway, mid) == {}, "not bounced"
    assert_refused(peer)
    assert_no_plaintext(peer)


def test_forced_tls_hold_keeps_the_message_until_released(peers, gateway, dns, bounces, sts):
    address, host = "127.0.0.61", "mx.hold.forced.test"
    plain = peers.add(address, host)
    rule = add_rule(gateway, "--recipient", "hold.forced.test", "--level", "verify", "--action", "hold")
    # The default egress.tls_hold_recheck (15m): only the operator's release sends it again.
    start(gateway, policy_env(dns, peers, sts, SMG_EGRESS_CONNECTION_REUSE_LIMIT=1))
    rcpt = "user@hold.forced.test"
    mid = send(gateway, "forced-hold", [rcpt])
    wait_until(lambda: mid in held_ids(gateway), 45, interval=0.3, what="the message held for TLS")
    show = ctl(gateway, "queue", "show", mid)
    assert show.returncode == 0, show.stderr
    assert HELD_REASON in show.stdout, show.stdout
    for e in gateway.trace(mid):
        if e["type"] in (EV_ATTEMPT, EV_DEFERRED, EV_BOUNCED, EV_DELIVERED) and F_TLS_POLICY in e["facts"]:
            p = tls_policy(e)
            assert (p["mode"], p.get("rule"), p.get("action")) == (MODE_FORCED, rule, "hold"), e
    assert final_outcomes(gateway, mid) == {}
    time.sleep(2)
    assert mid in held_ids(gateway), "it stays held"
    assert_refused(plain)

    # The destination gets STARTTLS (a certificate the CA file vouches for); the operator releases.
    plain.stop()
    tls = peers.add(address, host, tls=ca_cert(host))
    out = ctl(gateway, "queue", "release", mid)
    assert out.returncode == 0, out.stdout + out.stderr
    events = wait_outcomes(gateway, mid, {rcpt: EV_DELIVERED})
    check_policy(events, rcpt, MODE_FORCED, rule=rule, action="hold")
    [m] = tls.messages()
    assert m.tls and m.rcpts == [rcpt]
    assert_no_plaintext(tls)
    assert_refused(plain)


def test_forced_tls_hold_is_retried_by_itself_once_tls_works(peers, gateway, dns, bounces, sts):
    """egress.tls_hold_recheck: a held message goes back to its egress after the recheck time, is
    held again while TLS still fails, and is delivered once it works — with nobody releasing it."""
    address, host = "127.0.0.61", "mx.hold.forced.test"
    plain = peers.add(address, host)
    rule = add_rule(gateway, "--recipient", "hold.forced.test", "--level", "encrypt", "--action", "hold")
    start(gateway, policy_env(dns, peers, sts, SMG_EGRESS_CONNECTION_REUSE_LIMIT=1, SMG_EGRESS_TLS_HOLD_RECHECK="1s"))
    rcpt = "user@hold.forced.test"
    mid = send(gateway, "forced-hold-recheck", [rcpt])
    wait_until(lambda: mid in held_ids(gateway), 45, interval=0.3, what="the message held for TLS")
    # Rechecked (every 10 s) and held again: more than one refused session at the plaintext peer.
    wait_until(lambda: len(plain.connections()) >= 2 and mid in held_ids(gateway), 40, interval=0.3,
               what="a recheck that found no TLS and held it again")
    assert final_outcomes(gateway, mid) == {}
    assert_refused(plain)
    plain.stop()
    tls = peers.add(address, host, tls=ca_cert(host))
    events = wait_outcomes(gateway, mid, {rcpt: EV_DELIVERED}, timeout=40)
    check_policy(events, rcpt, MODE_FORCED, rule=rule, action="hold")
    [m] = tls.messages()
    assert m.tls
    assert_no_plaintext(tls)
    released = [e for e in gateway.trace(mid) if e["type"] == "queue.released"]
    assert released and all("TLS recheck" in json.dumps(e) for e in released), released


def test_forced_tls_fingerprint_refuses_a_wrong_one_and_delivers_with_the_right_one(peers, gateway, dns, bounces,
                                                                                    sts):
    cert = untrusted_cert("mx.fp.forced.test")     # self-signed: the fingerprint alone vouches for it
    peer = peers.add("127.0.0.62", "mx.fp.forced.test", tls=cert)
    wrong = hashlib.sha256(b"some other certificate").hexdigest()
    first_rule = add_rule(gateway, "--recipient", "fp.forced.test", "--level", "fingerprint",
                          "--fingerprint", wrong, "--action", "reject")
    start(gateway, policy_env(dns, peers, sts, SMG_EGRESS_CONNECTION_REUSE_LIMIT=1))
    rcpt = "user@fp.forced.test"
    refused = send(gateway, "forced-fp-wrong", [rcpt])
    events = wait_outcomes(gateway, refused, {rcpt: EV_BOUNCED})
    bounced = check_policy(events, rcpt, MODE_FORCED, rule=first_rule, action="reject")
    assert bounced["facts"][F_REPLY].startswith(REPLY_FORCED_REJECT), bounced
    tls_failure(bounced)
    assert_refused(peer)

    out = ctl(gateway, "tls", "rule", "remove", first_rule)
    assert out.returncode == 0, out.stdout + out.stderr
    second_rule = add_rule(gateway, "--recipient", "fp.forced.test", "--level", "fingerprint",
                           "--fingerprint", wrong, "--fingerprint", cert.sha256, "--action", "reject")
    time.sleep(RULE_PROPAGATION_SECONDS)
    accepted = send(gateway, "forced-fp-right", [rcpt])
    events = wait_outcomes(gateway, accepted, {rcpt: EV_DELIVERED})
    check_policy(events, rcpt, MODE_FORCED, rule=second_rule, action="reject")
    [m] = peer.messages()
    assert m.tls and m.rcpts == [rcpt]
    assert_no_plaintext(peer)


def test_tls_rule_arguments_are_checked_and_rules_list_and_remove(gateway, redis_server):
    fp_a, fp_b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    bad = [
        (["--recipient", "x.forced.test", "--level", "paranoid", "--action", "reject"], ["--level"]),
        (["--level", "encrypt", "--action", "reject"], ["--sender", "--recipient"]),
        (["--recipient", "x.forced.test", "--level", "encrypt", "--action", "shrug"], ["--action"]),
        (["--recipient", "x.forced.test", "--level", "fingerprint", "--action", "reject"], ["--fingerprint"]),
        (["--recipient", "x.forced.test", "--level", "fingerprint", "--fingerprint", "not-hex", "--action",
          "reject"], ["--fingerprint"]),
        (["--recipient", "x*.forced.test", "--level", "encrypt", "--action", "reject"], ["--recipient"]),
    ]
    for args, named in bad:
        out = ctl(gateway, "tls", "rule", "add", *args)
        assert out.returncode != 0, (args, out.stdout)
        assert any(n in out.stderr for n in named), (args, named, out.stderr)
    assert rule_list(gateway) == [], "refused arguments add nothing"

    first = add_rule(gateway, "--recipient", "*.forced.test", "--level", "verify", "--action", "hold",
                     "--comment", "partner contract")
    second = add_rule(gateway, "--sender", "customer.test", "--recipient", "fp.forced.test", "--level", "fingerprint",
                      "--fingerprint", fp_a, "--fingerprint", fp_b, "--action", "reject")
    assert first != second
    rules = {r["id"]: r for r in rule_list(gateway)}
    assert set(rules) == {first, second}, rules
    for r in rules.values():   # "sender" may be left out (or null) where the rule has none
        assert {"id", "recipient", "level", "fingerprints", "action", "comment"} <= set(r), r
    assert not rules[first].get("sender"), rules[first]
    assert (rules[first]["recipient"], rules[first]["level"], rules[first]["action"], rules[first]["comment"]) == \
        ("*.forced.test", "verify", "hold", "partner contract"), rules[first]
    assert (rules[second]["sender"], rules[second]["recipient"], rules[second]["level"], rules[second]["action"]) == \
        ("customer.test", "fp.forced.test", "fingerprint", "reject"), rules[second]
    assert [f.replace(":", "").lower() for f in rules[second]["fingerprints"]] == [fp_a, fp_b], rules[second]
    text = ctl(gateway, "tls", "rule", "list")
    assert text.returncode == 0 and first in text.stdout and second in text.stdout, text.stdout

    out = ctl(gateway, "tls", "rule", "remove", first)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [r["id"] for r in rule_list(gateway)] == [second]
    again = ctl(gateway, "tls", "rule", "remove", first)
    assert again.returncode != 0 and first in again.stderr, again
    assert [r["id"] for r in rule_list(gateway)] == [second]


def test_tls_check_reports_the_policy_of_a_domain(gateway, dns, sts):
    def check(domain, *extra):
        args = ["tls", "check", domain, *extra, "--dns", dns, "--dns-trusted", "--ca-file", str(trusted_ca().cert),
                "--mta-sts-port", str(sts.port)]
        as_json = ctl(gateway, *args, "--json")
        assert as_json.returncode == 0, as_json.stdout + as_json.stderr
        text = ctl(gateway, *args)
        assert text.returncode == 0, text.stdout + text.stderr
        return json.loads(as_json.stdout), text.stdout

    def norm(name):
        return name.strip().rstrip(".").lower()

    report, text = check("good.dane.test")
    assert norm(report["domain"]) == "good.dane.test"
    assert report["policy"]["mode"] == MODE_DANE and report["policy"]["source"], report
    [mx] = report["mx"]
    assert norm(mx["host"]) == "mx.good.dane.test", mx
    assert [" ".join(t.split()).lower() for t in mx["tlsa"]] == [DANE_GOOD_TLSA], mx
    assert report["mta_sts"] is None, report
    assert MODE_DANE in text.lower() and DANE_GOOD_TLSA.split()[3] in text.lower(), text

    report, text = check("enforce.sts.test")
    assert report["policy"]["mode"] == MODE_STS and report["policy"]["source"], report
    sts_info = report["mta_sts"]
    assert sts_info["mode"] == "enforce" and sts_info["id"] == STS_IDS["enforce"], sts_info
    assert sts_info["mx"] == ["mx.enforce.sts.test", "*.backup.enforce.sts.test"], sts_info
    assert [norm(m["host"]) for m in report["mx"]] == ["mx.enforce.sts.test"], report
    assert "*.backup.enforce.sts.test" in text and "enforce" in text, text

    report, _ = check("daneplain.test")
    assert report["policy"]["mode"] == MODE_OPPORTUNISTIC, "a TLSA in an unsigned zone is no DANE"

    add_rule(gateway, "--recipient", "reject.forced.test", "--level", "encrypt", "--action", "reject")
    report, _ = check("reject.forced.test", "--sender", SENDER)
    assert report["policy"]["mode"] == MODE_FORCED, report


# ---- TLS reporting (RFC 8460) --------------------------------------------------------------------

RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_STR = {"type": "string", "minLength": 1}
_COUNT = {"type": "integer", "minimum": 0}
TLSRPT_SCHEMA = {  # RFC 8460 §4.4
    "type": "object",
    "required": ["organization-name", "date-range", "contact-info", "report-id", "policies"],
    "properties": {
        "organization-name": _STR,
        "date-range": {
            "type": "object", "required": ["start-datetime", "end-datetime"],
            "properties": {"start-datetime": {"type": "string", "pattern": RFC3339},
                           "end-datetime": {"type": "string", "pattern": RFC3339}}},
        "contact-info": _STR,
        "report-id": _STR,
        "policies": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["policy", "summary"],
            "properties": {
                "policy": {
                    "type": "object", "required": ["policy-type", "policy-domain"],
                    "properties": {
                        "policy-type": {"type": "string", "enum": ["tlsa", "sts", "no-policy-found"]},
                        "policy-string": {"type": "array", "items": {"type": "string"}},
                        "policy-domain": _STR,
                        "mx-host": {"type": "array", "items": {"type": "string"}}}},
                "summary": {
                    "type": "object", "required": ["total-successful-session-count", "total-failure-session-count"],
                    "properties": {"total-successful-session-count": _COUNT, "total-failure-session-count": _COUNT}},
                "failure-details": {"type": "array", "items": {
                    "type": "object", "required": ["result-type", "failed-session-count"],
                    "properties": {
                        "result-type": _STR,
                        "sending-mta-ip": {"type": "string"},
                        "receiving-mx-hostname": {"type": "string"},
                        "receiving-mx-helo": {"type": "string"},
                        "receiving-ip": {"type": "string"},
                        "failed-session-count": _COUNT,
                        "additional-information": {"type": "string"},
                        "failure-reason-code": {"type": "string"}}}}}}},
    },
}


def validate_report(report):
    jsonschema.validate(report, TLSRPT_SCHEMA)


def reports(gateway, day, env) -> list:
    out = ctl(gateway, "tls", "report", "--day", day, "--json", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    listed = json.loads(out.stdout)
    assert isinstance(listed, list), out.stdout
    return listed


def policies_for(report_list, domain) -> list:
    return [(report, p) for report in report_list for p in report.get("policies", [])
            if str(p.get("policy", {}).get("policy-domain", "")).rstrip(".").lower() == domain]


def test_tls_report_counts_sessions_and_is_mailed_to_the_rua(peers, gateway, dns, bounces, sts, workdir):
    from test_dkim import init_master_key, keygen, verify_all
    address, host, domain = "127.0.0.56", "mx.rpt.sts.test", "rpt.sts.test"
    good = peers.add(address, host, tls=ca_cert(host))
    # The report is signed with the gateway's own domain, like every mail the gateway writes.
    master = init_master_key(gateway, workdir)
    dkim_records = {f"gw1._domainkey.{OWN_DOMAIN}": keygen(gateway, master, OWN_DOMAIN, "gw1", "ed25519")}
    env = policy_env(dns, peers, sts, SMG_EGRESS_CONNECTION_REUSE_LIMIT=1, SMG_DKIM_MASTER_KEY_FILE=str(master),
                     SMG_DKIM_OWN_DOMAIN=OWN_DOMAIN)
    start(gateway, env)
    day = utc_day()
    rcpt = f"user@{domain}"

    first = send(gateway, "rpt-good", [rcpt])
    delivered = check_policy(wait_outcomes(gateway, first, {rcpt: EV_DELIVERED}), rcpt, MODE_STS, sts_mode="testing")
    assert not delivered["facts"].get(F_TLS_FAILURE), delivered
    # The same MX host now presents a certificate nobody vouches for: testing mode delivers, and counts a failure.
    good.stop()
    bad = peers.add(address, host, tls=untrusted_cert(host))
    second = send(gateway, "rpt-bad", [rcpt])
    delivered = check_policy(wait_outcomes(gateway, second, {rcpt: EV_DELIVERED}), rcpt, MODE_STS, sts_mode="testing")
    result_type = tls_failure(delivered)
    assert [m.tls for m in good.messages() + bad.messages()] == [True, True]
    if utc_day() != day:
        pytest.skip("the UTC day changed during the test")

    def counted():
        found = policies_for(reports(gateway, day, env), domain)
        if len(found) == 1:
            summary = found[0][1].get("summary", {})
            if (summary.get("total-successful-session-count"), summary.get("total-failure-session-count")) == (1, 1):
                return found[0]
        return None
    report, entry = wait_until(counted, REPORT_COUNT_SECONDS + 10, interval=0.5, what=f"a report for {domain} counting 1 + 1 sessions")
    validate_report(report)
    assert report["date-range"]["start-datetime"].startswith(day), report["date-range"]
    assert entry["policy"]["policy-type"] == "sts", entry
    assert [f["failed-session-count"] for f in entry["failure-details"]] == [1], entry
    assert entry["failure-details"][0]["result-type"] == result_type, (entry, result_type)

    # --send: one mail to the rua address, from <>, a multipart/report with the gzipped JSON.
    out = ctl(gateway, "tls", "report", "--day", day, "--send", env=env)
    assert out.returncode == 0, out.stdout + out.stderr

    def report_mail():
        return next((m for m in bounces.messages() if m.rcpts == [REPORT_RCPT]), None)
    m = wait_until(report_mail, 45, interval=0.3, what=f"the TLS report at {REPORT_RCPT}")
    assert m.mail_from in ("", "<>"), m.mail_from
    assert m.data.startswith(b"DKIM-Signature: ") and f"d={OWN_DOMAIN};".encode() in m.data.split(b"\r\n\r\n")[0]
    assert verify_all(m.data, dkim_records) == (1, [True])
    mail = message_from_bytes(m.data, policy=email_policy.default)
    assert mail.get_content_type() == "multipart/report" and mail.get_param("report-type") == "tlsrpt", mail
    assert str(mail["TLS-Report-Domain"]).strip().rstrip(".").lower() == domain, mail["TLS-Report-Domain"]
    assert str(mail["TLS-Report-Submitter"] or "").strip(), "TLS-Report-Submitter"
    assert f"@{OWN_DOMAIN}" in str(mail["From"]).lower(), mail["From"]
    [part] = [p for p in mail.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    mailed = json.loads(gzip.decompress(part.get_payload(decode=True)))
    validate_report(mailed)
    [(_, mailed_entry)] = policies_for([mailed], domain)
    assert mailed_entry["summary"] == entry["summary"], (mailed_entry, entry)

    # The report's own delivery (to customer.test, which publishes TLSRPT too) was not counted.
    time.sleep(REPORT_COUNT_SECONDS)
    for _, own in policies_for(reports(gateway, day, env), "customer.test"):
        summary = own.get("summary", {})
        assert (summary.get("total-successful-session-count", 0), summary.get("total-failure-session-count", 0)) \
            == (0, 0), own
    assert len([x for x in bounces.messages() if x.rcpts == [REPORT_RCPT]]) == 1
