"""smg-admin (R20, R22), the operators' web interface and JSON API, held to its contract
(Services/admin/README.md, Services/admin/openapi.yaml) with real processes: a real
redis-server, smg-admin over HTTPS with a certificate made here (requests sends the `Secure`
session cookie only over HTTPS), operators and API tokens made with smgctl, and smg-ingress
taking mail as a trusted relay network. No scanner runs in the module's gateway, so accepted mail
waits in mail.accepted and every queue action meets a message that nothing else moves.

The module's smg-admin allows many failed logins (admin.login_attempts 100): every client here
is 127.0.0.1, and the throttle and the session expiry have their own smg-admin (own Redis) below.
"""
import hashlib
import itertools
import json
import queue
import re
import subprocess
import threading
import time
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from requests.adapters import HTTPAdapter

from harness import (ROOT, Admin, Gateway, RedisServer, Sink, bin_dir, listening, make_message, send, wait_until)

SPEC_FILE = ROOT / "Services" / "admin" / "openapi.yaml"
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # a well-formed message id (ULID) no message has
PASSWORD = "correct horse battery staple"
PAGES = ["/", "/customers", "/customers/new", "/tls", "/dkim", "/pools", "/queue", "/messages", "/blacklist", "/tail",
         "/audit"]
QUEUE_ACTIONS = ["hold", "release", "bounce", "delete", "requeue"]

_names = itertools.count(1)


def unique(stem: str) -> str:
    return f"{stem}-{next(_names)}"


# ---- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    """One Redis, one ingress (nothing after it), one smg-admin; operators alice (admin) and
    victor (viewer), each with a password and an API token."""
    work = tmp_path_factory.mktemp("admin")
    redis = RedisServer(work)
    sink = Sink()
    gw = Gateway(work, redis, sink)
    gw.start("smg-ingress")
    wait_until(lambda: listening(gw.ingress_port), 20, what="ingress to listen")
    admin = Admin(gw, config={"admin.login_attempts": "100"}).start()
    s = SimpleNamespace(gw=gw, redis=redis, admin=admin, url=admin.url, prefix=gw.prefix)
    s.alice_password = admin.operator("alice", "admin")
    s.victor_password = admin.operator("victor", "viewer")
    s.alice_token = admin.token("alice")
    s.victor_token = admin.token("victor")
    # Every secret the module sees; none may appear in a log, an audit record or a page.
    s.secrets = [s.alice_password, s.victor_password, s.alice_token, s.victor_token, PASSWORD]
    s.api = admin.bearer(s.alice_token)
    s.viewer_api = admin.bearer(s.victor_token)
    yield s
    gw.stop_all()
    if request.session.testsfailed:
        for name in gw.logs:
            print(f"----- {name} log (tail) -----")
            print("\n".join(gw.log_text(name).splitlines()[-60:]))
    sink.stop()
    redis.stop()


# ---- helpers ----------------------------------------------------------------------------------------


def describe(r) -> str:
    return f"{r.request.method} {urlsplit(r.request.url).path}: {r.status_code} {r.text[:800]}"


def ok(r, status=200):
    """The JSON of an answer that must have `status` (None for a 204)."""
    assert r.status_code == status, describe(r)
    if status == 204:
        assert not r.content, describe(r)
        return None
    assert r.headers.get("Content-Type", "").startswith("application/json"), describe(r)
    return r.json()


def refused(r, status, field=None):
    """An error answer: `status`, JSON `{"error": "<what is wrong>", "field": "<name>"}`."""
    assert r.status_code == status, describe(r)
    assert r.headers.get("Content-Type", "").startswith("application/json"), describe(r)
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], describe(r)
    if field is not None:
        assert body.get("field") == field, describe(r)
    return body


def one_of(r, statuses):
    assert r.status_code in statuses, describe(r)
    return r


def redirected_to_login(r):
    assert r.status_code == 303, describe(r)
    assert urlsplit(r.headers["Location"]).path == "/login", r.headers.get("Location")


def set_cookie_headers(r):
    return r.raw.headers.getlist("Set-Cookie") if hasattr(r.raw.headers, "getlist") else [r.headers.get("Set-Cookie", "")]


def form_login(admin, name, password, client=None):
    client = client or admin.client()
    return client, client.post(admin.url + "/login", data={"name": name, "password": password}, allow_redirects=False,
                               timeout=30)


def session_of(site, name, password):
    return site.admin.login(name, password)


def with_csrf(session):
    """Headers for a JSON change made with a session cookie."""
    return {"X-CSRF-Token": session.csrf}


def submit(site, marker, sender=None, rcpts=("user@dest.example",)):
    sender = sender or f"{marker}@customer.example"
    return send(site.gw.ingress_port, make_message(marker, sender=sender, rcpt=rcpts[0]), sender=sender, rcpts=rcpts)


def new_customer(site, **fields):
    body = {"id": unique("cust"), "name": "Customer", "networks": ["127.0.0.1/32"], "domains": ["shop.example"]}
    body.update(fields)
    return ok(site.api.post(site.url + "/api/v1/customers", json=body), 201)


def new_login(site, customer_id, password=None):
    body = {"login": unique("app")}
    if password:
        body["password"] = password
    created = ok(site.api.post(site.url + f"/api/v1/customers/{customer_id}/logins", json=body), 201)
    if created.get("password"):
        site.secrets.append(created["password"])
    return created


def events_of_log(site, *types):
    out = []
    for _, fields in site.redis.client().xrange(f"{site.prefix}events"):
        e = json.loads(fields[b"e"])
        if not types or e["type"] in types:
            out.append(e)
    return out


def seed_pool_member(site, address, lane="good"):
    site.redis.client().hset(f"{site.prefix}pool:members", address,
                             json.dumps({"lane": lane, "helo": f"{lane}.gateway.test", "seen": int(time.time() * 1000)}))


def seed_listing(site, address, zone="dnsbl.test"):
    now = int(time.time())
    site.redis.client().hset(f"{site.prefix}blacklist:listings", f"{address} {zone}", json.dumps({
        "address": address, "lane": "good", "zone": zone, "code": "127.0.0.2", "meaning": "listed",
        "delistURL": f"https://{zone}/remove", "state": "open", "since": now - 3600, "checked": now - 60}))


class Elements(HTMLParser):
    """Every element of a page with its attributes and text (enough to find ids, names, classes)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.all, self.open = [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": {k: (v if v is not None else "") for k, v in attrs}, "text": ""}
        self.all.append(element)
        if tag not in self.VOID:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.all.append({"tag": tag, "attrs": {k: (v if v is not None else "") for k, v in attrs}, "text": ""})

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i]["tag"] == tag:
                del self.open[i:]
                break

    def handle_data(self, data):
        for element in self.open:
            element["text"] += data

    def find(self, tag=None, cls=None, **attrs):
        out = []
        for e in self.all:
            if tag and e["tag"] != tag:
                continue
            if cls and cls not in e["attrs"].get("class", "").split():
                continue
            if all(e["attrs"].get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items()):
                out.append(e)
        return out


def page(r) -> Elements:
    assert r.status_code == 200, describe(r)
    assert r.headers.get("Content-Type", "").startswith("text/html"), describe(r)
    doc = Elements(r.text)
    assert doc.find("h1"), f"{urlsplit(r.url).path}: no <h1>"
    return doc


def shows_once(r):
    """The answer to a form that generates a password: the page with it, either at once (200) or
    after the 303 back to the page."""
    assert r.status_code == 200 and (not r.history or r.history[0].status_code == 303), describe(r)
    return page(r)


def generated_password_on(doc: Elements):
    shown = doc.find(id="generated-password")
    return shown[0]["text"].strip() if shown else None


class EventStream:
    """GET /api/v1/events/stream read on a thread: `next_event(timeout)` gives the parsed `data:`
    of the next server-sent event."""

    def __init__(self, session, url):
        self.response = session.get(url, stream=True, timeout=(10, 120))
        self.events = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        if self.response.status_code == 200:
            self.thread.start()

    def _read(self):
        buffer, data = b"", []
        try:
            for chunk in self.response.iter_content(chunk_size=1):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    line = line.rstrip(b"\r").decode()
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip())
                    elif line == "" and data:
                        self.events.put(json.loads("\n".join(data)))
                        data = []
        except Exception:  # closed by close()
            pass

    def next_event(self, timeout):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        self.response.close()


# ---- configuration ----------------------------------------------------------------------------------


def test_print_config_lists_the_admin_keys_with_defaults():
    out = subprocess.run([str(bin_dir() / "smg-admin"), "--print-config"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for key in ["admin.listen = 127.0.0.1:8443", "admin.session_idle = 30m", "admin.session_max = 12h",
                "admin.login_attempts = 5", "admin.login_window = 15m", "admin.tls_certificate", "admin.tls_key",
                "dkim.master_key_file", "SMG_ADMIN_LISTEN"]:
        assert key in out.stdout, key


def test_listen_beyond_loopback_needs_tls(tmp_path):
    config = tmp_path / "admin.yaml"
    config.write_text('admin:\n  listen: "192.0.2.10:8443"\n')  # TEST-NET-1: nothing is bound, it is only checked
    out = subprocess.run([str(bin_dir() / "smg-admin"), "--config", str(config), "--check-config"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 78, (out.returncode, out.stdout, out.stderr)
    assert "admin.tls_certificate" in out.stderr or "admin.listen" in out.stderr, out.stderr


# ---- logging in, sessions, CSRF, roles --------------------------------------------------------------


def test_login_sets_a_strict_secure_http_only_cookie_and_bad_passwords_do_not(site):
    admin = site.admin
    login_page = admin.client().get(site.url + "/login", timeout=30)
    form = page(login_page)
    assert form.find("input", name="name") and form.find("input", name="password")

    for name, password in [("alice", "wrong password, surely"), ("nobody", "wrong password, surely"), ("alice", "")]:
        client, bad = form_login(admin, name, password)
        assert bad.status_code in (200, 400, 401, 403) or (
            bad.status_code == 303 and urlsplit(bad.headers["Location"]).path == "/login"), describe(bad)
        assert "smg_session" not in client.cookies, (name, bad.headers)
        refused(client.get(site.url + "/api/v1/session", timeout=30), 401)

    client, good = form_login(admin, "alice", site.alice_password)
    assert good.status_code == 303, describe(good)
    [cookie] = [c for c in set_cookie_headers(good) if c.startswith("smg_session=")]
    value, *attributes = [part.strip() for part in cookie.split(";")]
    flags = {a.lower() for a in attributes}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags, cookie
    token = value.split("=", 1)[1]
    assert len(token) >= 20, "a session token is long and random"

    # The session record is keyed by the SHA-256 of the cookie, never by the cookie itself.
    r = site.redis.client()
    assert r.exists(f"{site.prefix}admin:session:{hashlib.sha256(token.encode()).hexdigest()}"), "session record"
    assert not any(token.encode() in key or token.encode() in (r.get(key) or b"")
                   for key in r.keys(f"{site.prefix}admin:session:*") if r.type(key) == b"string")

    info = ok(client.get(site.url + "/api/v1/session", timeout=30))
    assert info["operator"] == "alice" and info["role"] == "admin"
    assert isinstance(info["csrf"], str) and len(info["csrf"]) >= 16 and info["csrf"] != token
    assert info["expires"]
    overview = page(client.get(site.url + "/", timeout=30))
    assert overview.find("h1")
    # Every form of a page carries the session's CSRF token.
    new = page(client.get(site.url + "/customers/new", timeout=30))
    assert {e["attrs"].get("value") for e in new.find("input", name="csrf")} == {info["csrf"]}


def test_not_logged_in_pages_redirect_to_login_and_the_api_answers_401(site):
    anonymous = site.admin.client()
    message_id = submit(site, "anonymous")
    for path in PAGES + ["/customers/someone", f"/messages/{message_id}"]:
        redirected_to_login(anonymous.get(site.url + path, allow_redirects=False, timeout=30))
    page(anonymous.get(site.url + "/login", timeout=30))
    for path in ["/api/v1/session", "/api/v1/customers", "/api/v1/queue", "/api/v1/messages", "/api/v1/pipeline",
                 "/api/v1/audit", "/api/v1/blacklist", "/api/v1/pools", "/api/v1/tls/rules", "/api/v1/dkim/keys",
                 f"/api/v1/messages/{message_id}/trace"]:
        refused(anonymous.get(site.url + path, timeout=30), 401)
    refused(anonymous.post(site.url + "/api/v1/customers", json={"id": unique("anon")}, timeout=30), 401)
    # A made-up cookie or token is no better than none.
    forged = site.admin.client()
    forged.headers["Cookie"] = "smg_session=" + "0" * 43
    redirected_to_login(forged.get(site.url + "/customers", allow_redirects=False, timeout=30))
    refused(forged.get(site.url + "/api/v1/customers", timeout=30), 401)
    refused(site.admin.bearer("not-a-token").get(site.url + "/api/v1/customers", timeout=30), 401)
    refused(site.admin.bearer(site.alice_token + "x").get(site.url + "/api/v1/customers", timeout=30), 401)


def test_api_tokens_are_stored_as_their_sha256_only(site):
    tokens = site.redis.client().hgetall(f"{site.prefix}admin:tokens")
    digests = {k.decode() for k in tokens}
    for token in (site.alice_token, site.victor_token):
        assert hashlib.sha256(token.encode()).hexdigest() in digests
        assert not any(token.encode() in k or token.encode() in v for k, v in tokens.items())


def test_csrf_token_is_required_for_changes_made_with_a_session(site):
    web = session_of(site, "alice", site.alice_password)
    cid = unique("csrf")
    body = {"id": cid, "networks": ["127.0.0.1/32"], "domains": ["csrf.example"]}

    refused(web.post(site.url + "/api/v1/customers", json=body, timeout=30), 403, "csrf")
    refused(web.post(site.url + "/api/v1/customers", json=body, headers={"X-CSRF-Token": "0" * 32}, timeout=30), 403, "csrf")
    refused(site.api.get(site.url + f"/api/v1/customers/{cid}"), 404)
    created = ok(web.post(site.url + "/api/v1/customers", json=body, headers=with_csrf(web), timeout=30), 201)
    assert created["id"] == cid

    refused(web.patch(site.url + f"/api/v1/customers/{cid}", json={"name": "changed"}, timeout=30), 403, "csrf")
    login = new_login(site, cid)["login"]
    refused(web.delete(site.url + f"/api/v1/logins/{login}", timeout=30), 403, "csrf")
    assert ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["customer"]["name"] != "changed"

    # Pages' forms carry it as the field `csrf`.
    form_id = unique("csrf-form")
    fields = {"id": form_id, "name": "Form", "networks": "127.0.0.1/32", "domains": "form.example"}
    no_token = web.post(site.url + "/customers", data=fields, allow_redirects=False, timeout=30)
    assert no_token.status_code == 403, describe(no_token)
    refused(site.api.get(site.url + f"/api/v1/customers/{form_id}"), 404)
    done = web.post(site.url + "/customers", data=dict(fields, csrf=web.csrf), allow_redirects=False, timeout=30)
    assert done.status_code == 303, describe(done)
    assert ok(site.api.get(site.url + f"/api/v1/customers/{form_id}"))["customer"]["domains"] == ["form.example"]

    # Another session's token is not this session's.
    other = session_of(site, "alice", site.alice_password)
    assert other.csrf != web.csrf
    refused(web.patch(site.url + f"/api/v1/customers/{cid}", json={"name": "x"}, headers=with_csrf(other), timeout=30),
            403, "csrf")


def test_a_bearer_token_changes_without_cookie_or_csrf_token(site):
    api = site.admin.bearer(site.alice_token)
    cid = unique("bearer")
    created = ok(api.post(site.url + "/api/v1/customers", json={"id": cid, "networks": ["10.9.0.0/16"]}), 201)
    assert created["id"] == cid and created["networks"] == ["10.9.0.0/16"]
    assert not api.cookies, "the API sets no cookie for a bearer token"
    ok(api.patch(site.url + f"/api/v1/customers/{cid}", json={"name": "By token"}))


def change_routes(site, targets):
    """Every change route of the contract, each with a body that an admin could send."""
    t = targets
    routes = [
        ("POST", "/api/v1/customers", {"id": unique("viewer-made"), "networks": ["127.0.0.1/32"]}),
        ("PATCH", f"/api/v1/customers/{t.customer}", {"name": "viewer was here"}),
        ("POST", f"/api/v1/customers/{t.customer}/logins", {"login": unique("viewer-login")}),
        ("POST", f"/api/v1/logins/{t.login}/password", {}),
        ("PATCH", f"/api/v1/logins/{t.login}", {"disabled": True}),
        ("DELETE", f"/api/v1/logins/{t.login}", None),
        ("POST", "/api/v1/tls/rules", {"recipient": "viewer.example", "level": "encrypt", "action": "hold"}),
        ("DELETE", f"/api/v1/tls/rules/{t.rule}", None),
        ("POST", "/api/v1/dkim/keys", {"domain": t.dkim_domain, "selector": "viewer1", "alg": "ed25519"}),
        ("POST", f"/api/v1/dkim/domains/{t.dkim_domain}/rotate", {"selector": "viewer2", "alg": "ed25519"}),
        ("DELETE", f"/api/v1/dkim/keys/{t.dkim_domain}/{t.retiring_selector}", None),
        ("POST", "/api/v1/pools/drained", {"address": "127.0.0.33", "reason": "viewer"}),
        ("DELETE", f"/api/v1/pools/drained/{t.drained}", None),
        ("POST", "/api/v1/blacklist/requested", {"address": t.listed, "zone": "dnsbl.test", "note": "viewer"}),
    ]
    routes += [("POST", f"/api/v1/queue/{t.message}/{action}", {"reason": "viewer"}) for action in QUEUE_ACTIONS]
    return routes


def make_targets(site):
    """One of everything, made by alice through the API."""
    t = SimpleNamespace()
    t.customer = new_customer(site)["id"]
    t.login = new_login(site, t.customer)["login"]
    t.rule = ok(site.api.post(site.url + "/api/v1/tls/rules",
                              json={"recipient": unique("rule") + ".example", "level": "verify", "action": "hold"}), 201)["id"]
    t.dkim_domain = unique("viewer") + ".example"
    ok(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": t.dkim_domain, "selector": "old", "alg": "ed25519"}), 201)
    ok(site.api.post(site.url + f"/api/v1/dkim/domains/{t.dkim_domain}/rotate", json={"selector": "new", "alg": "ed25519"}))
    t.retiring_selector = "old"
    t.drained = f"127.0.2.{next(_names) % 250}"
    ok(site.api.post(site.url + "/api/v1/pools/drained", json={"address": t.drained, "reason": "for the viewer test"}), 201)
    t.listed = "127.0.0.45"
    seed_listing(site, t.listed)
    t.message = submit(site, unique("viewer-msg"))
    return t


def test_a_viewer_reads_everything_and_changes_nothing(site):
    t = make_targets(site)

    def snapshot():
        return {
            "customer": ok(site.api.get(site.url + f"/api/v1/customers/{t.customer}")),
            "rules": ok(site.api.get(site.url + "/api/v1/tls/rules")),
            "keys": ok(site.api.get(site.url + "/api/v1/dkim/keys", params={"domain": t.dkim_domain})),
            "pools": ok(site.api.get(site.url + "/api/v1/pools")),
            "blacklist": ok(site.api.get(site.url + "/api/v1/blacklist")),
            "customers": ok(site.api.get(site.url + "/api/v1/customers")),
        }

    before = snapshot()
    held_before = site.redis.client().hgetall(f"{site.prefix}held")

    for method, path, body in change_routes(site, t):
        r = site.viewer_api.request(method, site.url + path, json=body, timeout=60)
        refused(r, 403)

    # Its session (with the right CSRF token) is refused the same way, pages' forms included.
    web = session_of(site, "victor", site.victor_password)
    assert ok(web.get(site.url + "/api/v1/session"))["role"] == "viewer"
    refused(web.patch(site.url + f"/api/v1/customers/{t.customer}", json={"name": "x"}, headers=with_csrf(web)), 403)
    form = web.post(site.url + "/customers", data={"csrf": web.csrf, "id": unique("viewer-form"), "networks": "127.0.0.1/32"},
                    allow_redirects=False)
    assert form.status_code == 403, describe(form)
    form = web.post(site.url + f"/logins/{t.login}/disable", data={"csrf": web.csrf}, allow_redirects=False)
    assert form.status_code == 403, describe(form)

    after = snapshot()
    for key in before:
        if key == "pools":  # members' `seen` is the only thing that may move
            assert before[key]["drained"] == after[key]["drained"]
        else:
            assert before[key] == after[key], key
    assert site.redis.client().hgetall(f"{site.prefix}held") == held_before

    # Reads: everything.
    for path, params in [("/api/v1/customers", None), (f"/api/v1/customers/{t.customer}", None), ("/api/v1/tls/rules", None),
                         ("/api/v1/dkim/keys", {"domain": t.dkim_domain}), ("/api/v1/pools", None), ("/api/v1/queue", None),
                         ("/api/v1/messages", {"id": t.message}), (f"/api/v1/messages/{t.message}/trace", None),
                         ("/api/v1/blacklist", None), ("/api/v1/pipeline", None), ("/api/v1/audit", None),
                         (f"/api/v1/dkim/domains/{t.dkim_domain}/check", None)]:
        ok(site.viewer_api.get(site.url + path, params=params, timeout=60))
    for path in PAGES + [f"/customers/{t.customer}", f"/messages/{t.message}"]:
        r = web.get(site.url + path)
        if path == "/customers/new" and r.status_code == 403:
            continue  # a form a viewer cannot send may be refused outright
        page(r)


def test_sessions_expire_after_idle_time_and_after_their_maximum(gateway):
    admin = Admin(gateway, config={"admin.session_idle": "3s", "admin.session_max": "8s"}).start()
    password = admin.operator("olga", "admin")

    # Kept busy (a request every second), a session lives until admin.session_max.
    busy = admin.login("olga", password)
    started = time.monotonic()
    seen = []
    while time.monotonic() - started < 11:
        time.sleep(1)
        seen.append((time.monotonic() - started, busy.get(admin.url + "/api/v1/session", timeout=30).status_code))
    assert all(status == 200 for t, status in seen if t < 6.5), seen
    assert all(status == 401 for t, status in seen if t > 9.5), seen

    # Left alone for longer than admin.session_idle, a session is over.
    idle = admin.login("olga", password)
    ok(idle.get(admin.url + "/api/v1/session"))
    time.sleep(5)
    refused(idle.get(admin.url + "/api/v1/session", timeout=30), 401)
    redirected_to_login(idle.get(admin.url + "/customers", allow_redirects=False, timeout=30))
    csrf = idle.csrf
    refused(idle.post(admin.url + "/api/v1/customers", json={"id": "late"}, headers={"X-CSRF-Token": csrf}), 401)
    # Logging in again works.
    ok(admin.login("olga", password).get(admin.url + "/api/v1/session"))


class SourceAddressAdapter(HTTPAdapter):
    """Connects from another loopback address (127.0.0.2, …): another client IP for the throttle."""

    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def test_login_throttle_answers_429_after_five_failures_per_ip_and_per_name(gateway):
    admin = Admin(gateway, config={"admin.login_window": "10s"}).start()
    carol = admin.operator("carol", "admin")
    dave = admin.operator("dave", "viewer")
    here = admin.client()
    there = admin.client()
    there.mount("https://", SourceAddressAdapter("127.0.0.2"))

    for attempt in range(5):
        _, r = form_login(admin, "carol", f"wrong password {attempt}", client=here)
        assert r.status_code != 429 and "smg_session" not in here.cookies, (attempt, describe(r))
    # The sixth try is refused before any password is looked at: the right one too.
    _, r = form_login(admin, "carol", carol, client=here)
    assert r.status_code == 429, describe(r)
    assert "smg_session" not in here.cookies
    _, r = form_login(admin, "dave", dave, client=here)
    assert r.status_code == 429, "per client IP: " + describe(r)
    _, r = form_login(admin, "carol", carol, client=there)
    assert r.status_code == 429, "per operator name: " + describe(r)
    _, r = form_login(admin, "dave", dave, client=there)
    assert r.status_code == 303, "another IP and another name: " + describe(r)
    # API tokens are not throttled by failed form logins.
    ok(admin.bearer(admin.token("carol")).get(admin.url + "/api/v1/customers"))

    time.sleep(11.5)  # admin.login_window
    _, r = form_login(admin, "carol", carol, client=admin.client())
    assert r.status_code == 303, "after the window: " + describe(r)


# ---- customers and logins ---------------------------------------------------------------------------


def test_customers_create_duplicate_bad_input_and_partial_update(site):
    cid = unique("shop")
    body = {"id": cid, "name": "Shop Ltd", "networks": ["127.0.0.1/32", "2001:db8::/32"], "domains": ["shop.example"],
            "rate_limit_per_minute": 100, "require_tls": True, "reverse_dns_check": False, "max_message_size": 10485760,
            "max_recipients": 50, "bare_newline": "reject"}
    created = ok(site.api.post(site.url + "/api/v1/customers", json=body), 201)
    assert {k: created[k] for k in body} == body
    assert cid in [c["id"] for c in ok(site.api.get(site.url + "/api/v1/customers"))]
    shown = ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))
    assert shown["customer"] == created and shown["logins"] == []
    # The same store smgctl reads.
    out = site.gw.smgctl("customer", "show", cid)
    assert out.returncode == 0, out.stderr
    stored = json.loads(out.stdout.splitlines()[0])
    assert stored["networks"] == body["networks"] and stored["rateLimitPerMinute"] == 100 and stored["requireTLS"] is True

    refused(site.api.post(site.url + "/api/v1/customers", json=dict(body, name="Impostor")), 409)
    assert ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["customer"]["name"] == "Shop Ltd"

    for bad, field in [
        (dict(body, id=unique("cidr"), networks=["127.0.0.1/32", "10.0.0.0/33"]), "networks"),
        (dict(body, id=unique("cidr"), networks=["not a network"]), "networks"),
        (dict(body, id="bad id!"), "id"),
        ({k: v for k, v in body.items() if k != "id"}, "id"),
        (dict(body, id=unique("dom"), domains=["user@shop.example"]), "domains"),
        (dict(body, id=unique("rate"), rate_limit_per_minute=0), "rate_limit_per_minute"),
        (dict(body, id=unique("rate"), rate_limit_per_minute="fast"), "rate_limit_per_minute"),
        (dict(body, id=unique("tls"), require_tls="yes"), "require_tls"),
        (dict(body, id=unique("size"), max_message_size=10), "max_message_size"),
        (dict(body, id=unique("lf"), bare_newline="sometimes"), "bare_newline"),
    ]:
        refused(site.api.post(site.url + "/api/v1/customers", json=bad), 400, field)
        if bad.get("id") and bad["id"] != "bad id!":
            refused(site.api.get(site.url + f"/api/v1/customers/{bad['id']}"), 404)
    refused(site.api.post(site.url + "/api/v1/customers", data="{not json", headers={"Content-Type": "application/json"}), 400)
    refused(site.api.post(site.url + "/api/v1/customers", json=["a", "list"]), 400)
    refused(site.api.get(site.url + "/api/v1/customers/no-such-customer"), 404)

    # PATCH changes the fields given and keeps every other one.
    patched = ok(site.api.patch(site.url + f"/api/v1/customers/{cid}", json={"rate_limit_per_minute": 250}))
    assert patched == dict(created, rate_limit_per_minute=250)
    patched = ok(site.api.patch(site.url + f"/api/v1/customers/{cid}", json={"domains": ["shop.example", "shop2.example"],
                                                                             "require_tls": False}))
    assert patched == dict(created, rate_limit_per_minute=250, domains=["shop.example", "shop2.example"], require_tls=False)
    assert ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["customer"] == patched
    refused(site.api.patch(site.url + f"/api/v1/customers/{cid}", json={"networks": ["300.1.2.3/8"]}), 400, "networks")
    refused(site.api.patch(site.url + f"/api/v1/customers/{cid}", json={"max_recipients": 0}), 400, "max_recipients")
    assert ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["customer"] == patched, "a refused change writes nothing"
    refused(site.api.patch(site.url + "/api/v1/customers/no-such-customer", json={"name": "x"}), 404)


def test_logins_generated_password_once_reset_disable_delete(site):
    cid = new_customer(site)["id"]
    login = unique("app")
    created = ok(site.api.post(site.url + f"/api/v1/customers/{cid}/logins", json={"login": login}), 201)
    assert created["login"] == login and created["customer"] == cid
    first = created["password"]
    site.secrets.append(first)
    assert isinstance(first, str) and len(first) >= 12

    given = ok(site.api.post(site.url + f"/api/v1/customers/{cid}/logins", json={"login": login + "-b", "password": PASSWORD}), 201)
    assert given["login"] == login + "-b" and "password" not in given, "a password given is never echoed"

    shown = site.api.get(site.url + f"/api/v1/customers/{cid}")
    body = ok(shown)
    assert sorted((l["login"], l["disabled"]) for l in body["logins"]) == [(login, False), (login + "-b", False)]
    stored_hash = json.loads(site.redis.client().get(f"{site.prefix}account:{login}"))["passwordHash"]
    for secret in (first, PASSWORD, stored_hash):
        assert secret not in shown.text
    assert "password" not in shown.text.lower()
    customer_page = site.admin.login("alice", site.alice_password).get(site.url + f"/customers/{cid}")
    assert login in customer_page.text
    for secret in (first, PASSWORD, stored_hash):
        assert secret not in customer_page.text

    # Bad input.
    refused(site.api.post(site.url + f"/api/v1/customers/{cid}/logins", json={"login": login}), 409)
    refused(site.api.post(site.url + f"/api/v1/customers/{cid}/logins", json={"login": "has space"}), 400, "login")
    refused(site.api.post(site.url + f"/api/v1/customers/{cid}/logins", json={}), 400, "login")
    refused(site.api.post(site.url + f"/api/v1/customers/{cid}/logins", json={"login": unique("short"), "password": "short"}),
            400, "password")
    refused(site.api.post(site.url + "/api/v1/customers/no-such-customer/logins", json={"login": unique("orphan")}), 404)

    # Reset: a new generated password (shown once), or the one given (not echoed).
    reset = ok(site.api.post(site.url + f"/api/v1/logins/{login}/password", json={}))
    assert reset["login"] == login and reset["password"] != first and len(reset["password"]) >= 12
    site.secrets.append(reset["password"])
    assert json.loads(site.redis.client().get(f"{site.prefix}account:{login}"))["passwordHash"] != stored_hash
    again = ok(site.api.post(site.url + f"/api/v1/logins/{login}/password", json={"password": PASSWORD + " 2"}))
    assert again["login"] == login and "password" not in again, "a password given is never echoed"
    site.secrets.append(PASSWORD + " 2")
    refused(site.api.post(site.url + f"/api/v1/logins/{login}/password", json={"password": "short"}), 400, "password")
    refused(site.api.post(site.url + "/api/v1/logins/no-such-login/password", json={}), 404)

    # Disable and enable.
    assert ok(site.api.patch(site.url + f"/api/v1/logins/{login}", json={"disabled": True})) == {
        "login": login, "customer": cid, "disabled": True}
    logins = ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["logins"]
    assert (login, True) in [(l["login"], l["disabled"]) for l in logins]
    assert json.loads(site.redis.client().get(f"{site.prefix}account:{login}"))["disabled"] is True
    assert ok(site.api.patch(site.url + f"/api/v1/logins/{login}", json={"disabled": False}))["disabled"] is False
    refused(site.api.patch(site.url + f"/api/v1/logins/{login}", json={"disabled": "yes"}), 400, "disabled")
    refused(site.api.patch(site.url + f"/api/v1/logins/{login}", json={}), 400, "disabled")
    refused(site.api.patch(site.url + "/api/v1/logins/no-such-login", json={"disabled": True}), 404)

    # Delete.
    ok(site.api.delete(site.url + f"/api/v1/logins/{login}"), 204)
    assert [l["login"] for l in ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["logins"]] == [login + "-b"]
    assert site.redis.client().get(f"{site.prefix}account:{login}") is None
    refused(site.api.delete(site.url + f"/api/v1/logins/{login}"), 404)


def test_customer_and_login_forms(site):
    web = site.admin.login("alice", site.alice_password)
    form = page(web.get(site.url + "/customers/new"))
    for name in ["id", "name", "networks", "domains", "rate_limit_per_minute", "require_tls", "csrf"]:
        assert form.find(name=name), f"/customers/new has no field named {name}"
    assert form.find("textarea", name="networks") and form.find("textarea", name="domains")
    assert form.find("input", name="require_tls", type="checkbox")

    cid = unique("formshop")
    fields = {"csrf": web.csrf, "id": cid, "name": "Form Shop", "networks": "127.0.0.1/32\r\n10.1.0.0/16\r\n",
              "domains": "form-shop.example\r\nform-shop2.example", "rate_limit_per_minute": "60", "require_tls": "on"}
    r = web.post(site.url + "/customers", data=fields)
    assert r.history and r.history[0].status_code == 303, describe(r)
    assert page(r).find("div", cls="flash"), "a change says so in a flash message"
    customer = ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["customer"]
    assert customer["networks"] == ["127.0.0.1/32", "10.1.0.0/16"]
    assert customer["domains"] == ["form-shop.example", "form-shop2.example"]
    assert customer["rate_limit_per_minute"] == 60 and customer["require_tls"] is True and customer["name"] == "Form Shop"

    # A field error: the form again (400) with the error at the field; nothing stored.
    bad_id = unique("formbad")
    r = web.post(site.url + "/customers", data=dict(fields, id=bad_id, networks="127.0.0.1/32\nnot-a-cidr"),
                 allow_redirects=False)
    assert r.status_code == 400, describe(r)
    errors = Elements(r.text).find("div", cls="error")
    assert [e["attrs"].get("data-field") for e in errors] == ["networks"], errors
    assert "not-a-cidr" in r.text, "the form keeps what was typed"
    refused(site.api.get(site.url + f"/api/v1/customers/{bad_id}"), 404)
    r = web.post(site.url + "/customers", data=dict(fields), allow_redirects=False)
    assert r.status_code == 409 or (r.status_code == 400 and Elements(r.text).find("div", cls="error")), describe(r)

    # The customer's page: only the fields posted change.
    detail = page(web.get(site.url + f"/customers/{cid}"))
    assert detail.find("input", name="login"), "the page has the form for a new login"
    r = web.post(site.url + f"/customers/{cid}", data={"csrf": web.csrf, "rate_limit_per_minute": "90"}, allow_redirects=False)
    assert r.status_code == 303 and urlsplit(r.headers["Location"]).path == f"/customers/{cid}", describe(r)
    assert ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["customer"] == dict(customer, rate_limit_per_minute=90)
    r = web.post(site.url + f"/customers/{cid}", data={"csrf": web.csrf, "rate_limit_per_minute": "lots"}, allow_redirects=False)
    assert r.status_code == 400, describe(r)
    assert [e["attrs"].get("data-field") for e in Elements(r.text).find("div", cls="error")] == ["rate_limit_per_minute"]

    # A login: its generated password is shown once, on the page the form leads back to.
    login = unique("formapp")
    r = web.post(site.url + f"/customers/{cid}/logins", data={"csrf": web.csrf, "login": login})
    password = generated_password_on(shows_once(r))
    assert password and len(password) >= 12, r.text[:2000]
    site.secrets.append(password)
    again = web.get(site.url + f"/customers/{cid}")
    assert generated_password_on(page(again)) is None and password not in again.text, "shown once only"
    assert login in again.text

    r = web.post(site.url + f"/customers/{cid}/logins", data={"csrf": web.csrf, "login": "has space"}, allow_redirects=False)
    assert r.status_code == 400, describe(r)
    assert [e["attrs"].get("data-field") for e in Elements(r.text).find("div", cls="error")] == ["login"]

    def login_state():
        return {l["login"]: l["disabled"] for l in ok(site.api.get(site.url + f"/api/v1/customers/{cid}"))["logins"]}

    for action, expect in [("disable", {login: True}), ("enable", {login: False})]:
        r = web.post(site.url + f"/logins/{login}/{action}", data={"csrf": web.csrf}, allow_redirects=False)
        assert r.status_code == 303, describe(r)
        assert login_state() == expect
    r = web.post(site.url + f"/logins/{login}/reset", data={"csrf": web.csrf})
    second = generated_password_on(shows_once(r))
    assert second and second != password
    site.secrets.append(second)
    r = web.post(site.url + f"/logins/{login}/delete", data={"csrf": web.csrf}, allow_redirects=False)
    assert r.status_code == 303, describe(r)
    assert login_state() == {}
    r = web.post(site.url + f"/logins/{login}/delete", data={"csrf": web.csrf}, allow_redirects=False)
    assert r.status_code == 404, describe(r)
    for action in ["disable", "reset", "delete"]:
        r = web.post(site.url + f"/logins/{login}/{action}", data={}, allow_redirects=False)
        assert r.status_code == 403, describe(r)
    assert page(web.get(site.url + "/customers")).find("a", href=f"/customers/{cid}")
    r = web.get(site.url + "/customers/no-such-customer")
    assert r.status_code == 404, describe(r)


# ---- audit ------------------------------------------------------------------------------------------


def test_every_change_is_audited_with_operator_before_and_after_and_no_secret(site):
    cid = new_customer(site, rate_limit_per_minute=100)["id"]
    ok(site.api.patch(site.url + f"/api/v1/customers/{cid}", json={"rate_limit_per_minute": 250}))
    login = new_login(site, cid)
    ok(site.api.post(site.url + f"/api/v1/logins/{login['login']}/password", json={"password": PASSWORD}))
    generated = ok(site.api.post(site.url + f"/api/v1/logins/{login['login']}/password", json={}))["password"]
    site.secrets.append(generated)
    web = site.admin.login("alice", site.alice_password)
    ok(web.patch(site.url + f"/api/v1/customers/{cid}", json={"name": "Audited"}, headers=with_csrf(web)))

    audit = site.api.get(site.url + "/api/v1/audit", params={"count": 1000})
    events = ok(audit)
    changes = [e for e in events if e["type"] == "admin.change"]
    assert changes and len(changes) == len(events)
    for e in changes:
        assert {"operator", "action", "target", "before", "after"} <= set(e["facts"]), e
    mine = [e for e in changes if cid in json.dumps(e["facts"]["target"]) or cid in json.dumps(e["facts"]["after"])]
    for e in mine:
        assert e["facts"]["operator"] == "alice", e
        assert isinstance(e["facts"]["action"], str) and e["facts"]["action"], e
        assert e["time"] and e["process"], e
    def side(e, which):
        value = e["facts"][which]
        return value if isinstance(value, dict) else {}

    assert [e for e in mine if not e["facts"]["before"] and side(e, "after").get("id") == cid], mine
    assert [e for e in mine if side(e, "before").get("rate_limit_per_minute") == 100
            and side(e, "after").get("rate_limit_per_minute") == 250], mine
    assert [e for e in mine if side(e, "after").get("name") == "Audited"], mine
    login_changes = [e for e in changes if login["login"] in json.dumps(e["facts"])]
    assert len(login_changes) >= 3, login_changes  # created, password set, password generated

    # No secret anywhere: the audit, the event log, pages, the admin's log.
    stored_hash = json.loads(site.redis.client().get(f"{site.prefix}account:{login['login']}"))["passwordHash"]
    operator_hash = site.redis.client().get(f"{site.prefix}admin:operator:alice")
    texts = {"audit": audit.text,
             "events": json.dumps(events_of_log(site, "admin.change")),
             "audit stream": repr(site.redis.client().xrange(f"{site.prefix}admin:audit")),
             "audit page": web.get(site.url + "/audit").text,
             "log": site.admin.log_text()}
    assert "admin.change" in texts["events"], "changes reach the event log (taps and smgctl tap see them)"
    for where, text in texts.items():
        for secret in site.secrets + [login["password"], stored_hash, json.loads(operator_hash)["password_hash"]]:
            assert secret not in text, f"a secret in the {where}"
    assert "password_hash" not in texts["audit"] and "passwordHash" not in texts["audit"]

    assert len(ok(site.api.get(site.url + "/api/v1/audit", params={"count": 2}))) == 2
    refused(site.api.get(site.url + "/api/v1/audit", params={"count": "many"}), 400, "count")
    refused(site.api.get(site.url + "/api/v1/audit", params={"count": -1}), 400, "count")


# ---- TLS rules, DKIM, pools, blacklist ---------------------------------------------------------------


def test_tls_rules(site):
    domain = unique("bank") + ".example"
    rule = ok(site.api.post(site.url + "/api/v1/tls/rules", json={"recipient": domain, "level": "verify", "action": "hold",
                                                                  "comment": "their auditors ask for it"}), 201)
    assert rule["id"] and rule["recipient"] == domain and rule["level"] == "verify" and rule["action"] == "hold"
    assert rule["id"] in [r["id"] for r in ok(site.api.get(site.url + "/api/v1/tls/rules"))]
    listed = json.loads(site.gw.smgctl("tls", "rule", "list", "--json").stdout)
    assert rule["id"] in [r["id"] for r in listed], "the store egress and smgctl read"
    pin = ok(site.api.post(site.url + "/api/v1/tls/rules", json={"sender": "*." + domain, "level": "fingerprint",
                                                                 "fingerprints": ["ab" * 32], "action": "reject"}), 201)
    assert pin["fingerprints"] == ["ab" * 32]

    for bad, field in [({"recipient": domain, "level": "paranoid", "action": "hold"}, "level"),
                       ({"recipient": domain, "action": "hold"}, "level"),
                       ({"recipient": domain, "level": "verify", "action": "shrug"}, "action"),
                       ({"recipient": "not a domain", "level": "verify", "action": "hold"}, "recipient"),
                       ({"recipient": domain, "level": "fingerprint", "fingerprints": ["xyz"], "action": "hold"}, "fingerprints"),
                       ({"level": "verify", "action": "hold"}, None)]:
        refused(site.api.post(site.url + "/api/v1/tls/rules", json=bad), 400, field)
    ok(site.api.delete(site.url + f"/api/v1/tls/rules/{rule['id']}"), 204)
    assert rule["id"] not in [r["id"] for r in ok(site.api.get(site.url + "/api/v1/tls/rules"))]
    refused(site.api.delete(site.url + f"/api/v1/tls/rules/{rule['id']}"), 404)


def test_dkim_keys_rotation_retirement_and_check(site):
    domain = unique("signed") + ".example"
    made = ok(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": domain, "selector": "s2026a", "alg": "ed25519"}), 201)
    assert made["key"]["domain"] == domain and made["key"]["selector"] == "s2026a" and made["key"]["state"] == "active"
    assert made["dns"]["name"] == f"s2026a._domainkey.{domain}"
    assert "v=DKIM1" in made["dns"]["value"] and "k=ed25519" in made["dns"]["value"]
    rsa = ok(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": domain, "selector": "rsa1", "alg": "rsa",
                                                                 "bits": 2048}), 201)
    assert "p=" in rsa["dns"]["value"]
    for answer in (made, rsa):
        assert "private" not in json.dumps(answer).lower()
    keys = ok(site.api.get(site.url + "/api/v1/dkim/keys", params={"domain": domain}))
    assert sorted(k["selector"] for k in keys) == ["rsa1", "s2026a"]
    assert "private" not in json.dumps(keys).lower()
    assert domain in site.gw.smgctl("dkim", "list", domain).stdout, "the store the signer and smgctl read"

    refused(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": domain, "selector": "bad_selector!"}), 400, "selector")
    refused(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": domain, "selector": "s2026a", "alg": "ed25519"}), 409)
    refused(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": "not a domain", "selector": "x1"}), 400, "domain")
    refused(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": domain, "selector": "x2", "alg": "dsa"}), 400, "alg")
    refused(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": domain, "selector": "x3", "alg": "rsa",
                                                                "bits": 1024}), 400, "bits")
    refused(site.api.get(site.url + "/api/v1/dkim/keys", params={"domain": "not a domain"}), 400, "domain")

    rotated = ok(site.api.post(site.url + f"/api/v1/dkim/domains/{domain}/rotate", json={"selector": "s2026b", "alg": "ed25519"}))
    assert rotated["key"]["selector"] == "s2026b" and rotated["key"]["state"] == "active"
    assert [k["selector"] for k in rotated["retiring"]] == ["s2026a"]
    assert rotated["dns"]["name"] == f"s2026b._domainkey.{domain}"
    refused(site.api.post(site.url + f"/api/v1/dkim/domains/{domain}/rotate", json={"selector": "Bad Selector"}), 400, "selector")
    refused(site.api.post(site.url + f"/api/v1/dkim/domains/{domain}/rotate", json={"selector": "s2026a", "alg": "ed25519"}), 409)
    refused(site.api.post(site.url + "/api/v1/dkim/domains/no-keys.example/rotate", json={"selector": "n1"}), 404)

    # Only a retiring key may go.
    one_of(site.api.delete(site.url + f"/api/v1/dkim/keys/{domain}/s2026b"), (400, 409))
    ok(site.api.delete(site.url + f"/api/v1/dkim/keys/{domain}/s2026a"), 204)
    assert sorted(k["selector"] for k in ok(site.api.get(site.url + "/api/v1/dkim/keys", params={"domain": domain}))) == [
        "rsa1", "s2026b"]
    refused(site.api.delete(site.url + f"/api/v1/dkim/keys/{domain}/s2026a"), 404)
    refused(site.api.delete(site.url + f"/api/v1/dkim/keys/{domain}/bad_selector!"), 400, "selector")

    # The live check asks DNS (here a closed port: every record is a failed lookup, not an error of the API).
    checked = ok(site.api.get(site.url + f"/api/v1/dkim/domains/{domain}/check", timeout=60))
    assert sorted(c["selector"] for c in checked) == ["rsa1", "s2026b"]
    for c in checked:
        assert {"record", "selector", "state", "verdict", "detail"} <= set(c)
        assert c["record"] == f"{c['selector']}._domainkey.{domain}"
    refused(site.api.get(site.url + "/api/v1/dkim/domains/not..a..domain/check"), 400, "domain")
    refused(site.api.get(site.url + "/api/v1/dkim/domains/no-keys.example/check"), 404)


def test_pools_drain_and_undrain(site):
    seed_pool_member(site, "127.0.0.7", "good")
    seed_pool_member(site, "127.0.0.8", "bad")
    pools = ok(site.api.get(site.url + "/api/v1/pools"))
    members = {m["address"]: m for m in pools["members"]}
    assert members["127.0.0.7"]["lane"] == "good" and members["127.0.0.7"]["drained"] is False
    assert members["127.0.0.8"]["helo"] == "bad.gateway.test" and members["127.0.0.8"]["seen"]

    ok(site.api.post(site.url + "/api/v1/pools/drained", json={"address": "127.0.0.7", "reason": "maintenance"}), 201)
    pools = ok(site.api.get(site.url + "/api/v1/pools"))
    assert {m["address"]: m["drained"] for m in pools["members"]}["127.0.0.7"] is True
    [drain] = [d for d in pools["drained"] if d["address"] == "127.0.0.7"]
    assert drain["reason"] == "maintenance" and "alice" in drain["by"] and drain["at"]
    assert "127.0.0.7" in site.gw.smgctl("pool", "list").stdout, "the set every egress reads"

    for bad in [{"address": "300.1.1.1", "reason": "x"}, {"address": "127.0.0.0/8", "reason": "x"},
                {"address": "mail.example", "reason": "x"}, {"reason": "x"}]:
        refused(site.api.post(site.url + "/api/v1/pools/drained", json=bad), 400, "address")
    ok(site.api.delete(site.url + "/api/v1/pools/drained/127.0.0.7"), 204)
    assert "127.0.0.7" not in [d["address"] for d in ok(site.api.get(site.url + "/api/v1/pools"))["drained"]]
    refused(site.api.delete(site.url + "/api/v1/pools/drained/127.0.0.7"), 404)
    refused(site.api.delete(site.url + "/api/v1/pools/drained/not-an-address"), 400, "address")
    ok(site.api.post(site.url + "/api/v1/pools/drained", json={"address": "2001:db8::25", "reason": "v6"}), 201)
    ok(site.api.delete(site.url + "/api/v1/pools/drained/2001:db8::25"), 204)


def test_blacklist_listings_and_removal_requests(site):
    seed_listing(site, "127.0.0.9")
    listings = ok(site.api.get(site.url + "/api/v1/blacklist"))
    [listing] = [l for l in listings if l["address"] == "127.0.0.9"]
    assert listing["zone"] == "dnsbl.test" and listing["state"] == "open"

    requested = ok(site.api.post(site.url + "/api/v1/blacklist/requested",
                                 json={"address": "127.0.0.9", "zone": "dnsbl.test", "note": "ticket 4711"}))
    assert requested["state"] == "requested" and requested["requested_by"] == "alice" and requested["note"] == "ticket 4711"
    status = [json.loads(line) for line in site.gw.smgctl("blacklist", "status", "--json").stdout.splitlines()
              if '"127.0.0.9"' in line]
    assert status and status[0]["state"] == "requested" and status[0]["requestedBy"] == "alice"

    refused(site.api.post(site.url + "/api/v1/blacklist/requested", json={"address": "127.0.0.99", "zone": "dnsbl.test"}), 404)
    refused(site.api.post(site.url + "/api/v1/blacklist/requested", json={"address": "127.0.0.9", "zone": "other.test"}), 404)
    refused(site.api.post(site.url + "/api/v1/blacklist/requested", json={"address": "not-an-ip", "zone": "dnsbl.test"}),
            400, "address")
    refused(site.api.post(site.url + "/api/v1/blacklist/requested", json={"address": "127.0.0.9"}), 400, "zone")


# ---- queue, messages, pipeline, live events ----------------------------------------------------------


def queue_ids(site, **params):
    return [i["id"] for i in ok(site.api.get(site.url + "/api/v1/queue", params=params))["items"]]


def test_queue_list_filters_and_actions(site):
    sender = f"{unique('queue')}@customer.example"
    first = submit(site, unique("queue-a"), sender=sender)
    second = submit(site, unique("queue-b"), sender=sender, rcpts=("other@elsewhere.example",))
    listing = ok(site.api.get(site.url + "/api/v1/queue", params={"sender": sender}))
    assert sorted(i["id"] for i in listing["items"]) == sorted([first, second])
    assert listing["summary"]
    assert queue_ids(site, sender=sender, recipient_domain="elsewhere.example") == [second]
    assert queue_ids(site, sender=sender, topic="mail.accepted", limit=1) in ([first], [second])
    assert queue_ids(site, sender=sender, older_than="1d") == []

    for params, field in [({"state": "sleeping"}, "state"), ({"topic": "mail.nowhere"}, "topic"),
                          ({"older_than": "a while"}, "older_than"), ({"limit": 0}, "limit"), ({"limit": "ten"}, "limit")]:
        refused(site.api.get(site.url + "/api/v1/queue", params=params), 400, field)

    def act(message_id, action, body=None):
        return site.api.post(site.url + f"/api/v1/queue/{message_id}/{action}", json=body or {"reason": "a test"})

    held = ok(act(first, "hold", {"reason": "looks odd"}))
    assert held["id"] == first and held["result"]
    assert queue_ids(site, sender=sender, state="held") == [first]
    assert site.redis.client().hget(f"{site.prefix}held", first) == b"mail.accepted"
    [event] = [e for e in site.gw.trace(first) if e["type"] == "queue.held"]
    assert event["facts"]["operator"] == "alice" and event["facts"]["reason"] == "looks odd"
    one_of(act(first, "hold"), (400, 409))  # already held
    ok(act(first, "release"))
    assert site.redis.client().hget(f"{site.prefix}held", first) is None
    one_of(act(first, "release"), (400, 409))  # not held
    ok(act(first, "requeue", {"stage": "accepted"}))
    refused(act(first, "requeue", {"stage": "nowhere"}), 400, "stage")
    ok(act(first, "bounce", {"reason": "customer asked"}))
    assert [e for e in site.gw.trace(first) if e["type"] == "bounced"]
    one_of(act(first, "hold"), (400, 409))  # finished
    ok(act(second, "delete", {"reason": "test"}))
    assert queue_ids(site, sender=sender) == []

    for action in QUEUE_ACTIONS:
        refused(act("not-a-message-id", action), 400, "id")
        refused(act(UNKNOWN_ID, action), 404)
    one_of(act(second, "frobnicate"), (404, 400))


def test_message_search_and_trace(site):
    sender = f"{unique('search')}@customer.example"
    message_id = submit(site, unique("search"), sender=sender, rcpts=("found@dest.example",))
    other = submit(site, unique("search-other"), sender=sender, rcpts=("second@dest.example",))

    def found(**params):
        return ok(site.api.get(site.url + "/api/v1/messages", params=params))

    rows = wait_until(lambda: len(found(sender=sender)) == 2 and found(sender=sender), 20, what="the messages in the search")
    row = [r for r in rows if r["id"] == message_id][0]
    assert row["sender"] == sender and row["time"] and row["state"]
    assert row["recipients"] in (["found@dest.example"], 1), row
    assert "customer" in row
    assert [r["id"] for r in found(id=message_id)] == [message_id]
    assert [r["id"] for r in found(recipient="found@dest.example")] == [message_id]
    assert len(found(sender=sender, limit=1)) == 1
    assert {r["id"] for r in found(sender=sender, since="2020-01-01T00:00:00Z")} == {message_id, other}
    assert found(sender=sender, since="2099-01-01T00:00:00Z") == []
    assert found(sender=sender, until="2020-01-01T00:00:00Z") == []

    for params, field in [({"since": "last tuesday"}, "since"), ({"until": "2026-13-45T99:00:00Z"}, "until"),
                          ({"limit": -5}, "limit"), ({"limit": "all"}, "limit"), ({"id": "not-an-id"}, "id")]:
        refused(site.api.get(site.url + "/api/v1/messages", params=params), 400, field)

    trace = ok(site.api.get(site.url + f"/api/v1/messages/{message_id}/trace"))
    assert trace and trace[0]["type"] == "accepted" and all(e["id"] == message_id for e in trace)
    assert [e["type"] for e in trace] == [e["type"] for e in site.gw.trace(message_id)][:len(trace)]
    refused(site.api.get(site.url + "/api/v1/messages/not-an-id/trace"), 400, "id")
    unknown = site.api.get(site.url + f"/api/v1/messages/{UNKNOWN_ID}/trace")
    assert unknown.status_code == 404 or (unknown.status_code == 200 and unknown.json() == []), describe(unknown)

    web = site.admin.login("victor", site.victor_password)
    results = page(web.get(site.url + "/messages", params={"sender": sender}))
    assert results.find("a", href=f"/messages/{message_id}"), "search results link to the message"
    detail = page(web.get(site.url + f"/messages/{message_id}"))
    assert any("accepted" in e["text"] for e in detail.find(cls="event"))
    r = web.get(site.url + "/messages/not-an-id")
    assert r.status_code in (400, 404), describe(r)


def test_pipeline_overview(site):
    submit(site, unique("pipeline"))  # it waits in mail.accepted: nothing consumes that topic here
    overview = ok(site.api.get(site.url + "/api/v1/pipeline"))
    stages = {s["topic"]: s for s in overview["stages"]}
    assert stages["mail.accepted"]["pending"] >= 1 and stages["mail.accepted"]["oldest_age_ms"] >= 0
    assert {"mail.scanned", "mail.classified", "mail.outbound.good", "mail.outbound.bad"} <= set(stages)
    assert isinstance(overview["held"], int) and isinstance(overview["quarantined"], int)
    assert "rates" in overview
    refused(site.admin.client().get(site.url + "/api/v1/pipeline"), 401)
    page(site.admin.login("alice", site.alice_password).get(site.url + "/"))


def test_live_event_stream(site):
    stream = EventStream(site.admin.bearer(site.victor_token), site.url + "/api/v1/events/stream?type=accepted")
    try:
        assert stream.response.status_code == 200, describe(stream.response)
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        seen = []
        # The admin finds every process's tap through the registry: the first message may come early.
        for attempt in range(6):
            message_id = submit(site, unique("streamed"))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                event = stream.next_event(max(0.1, deadline - time.monotonic()))
                if event:
                    seen.append(event)
                if any(e.get("id") == message_id for e in seen):
                    break
            if any(e.get("id") == message_id for e in seen):
                break
        assert any(e.get("id") == message_id for e in seen), seen
        assert {e["type"] for e in seen} == {"accepted"}, "?type= filters"
    finally:
        stream.close()
    refused(site.admin.client().get(site.url + "/api/v1/events/stream", timeout=30), 401)
    web = site.admin.login("alice", site.alice_password)
    page(web.get(site.url + "/tail"))


def test_pages_for_an_admin(site):
    web = site.admin.login("alice", site.alice_password)
    message_id = submit(site, unique("pages"))
    cid = new_customer(site)["id"]
    for path in PAGES + [f"/customers/{cid}", f"/messages/{message_id}"]:
        r = web.get(site.url + path)
        page(r)
        assert not any(secret in r.text for secret in site.secrets), path


# ---- the OpenAPI document ---------------------------------------------------------------------------

CONTRACT_ROUTES = [
    ("GET", "/api/v1/session"), ("GET", "/api/v1/customers"), ("POST", "/api/v1/customers"),
    ("GET", "/api/v1/customers/{}"), ("PATCH", "/api/v1/customers/{}"), ("POST", "/api/v1/customers/{}/logins"),
    ("POST", "/api/v1/logins/{}/password"), ("PATCH", "/api/v1/logins/{}"), ("DELETE", "/api/v1/logins/{}"),
    ("GET", "/api/v1/tls/rules"), ("POST", "/api/v1/tls/rules"), ("DELETE", "/api/v1/tls/rules/{}"),
    ("GET", "/api/v1/dkim/keys"), ("POST", "/api/v1/dkim/keys"), ("POST", "/api/v1/dkim/domains/{}/rotate"),
    ("DELETE", "/api/v1/dkim/keys/{}/{}"), ("GET", "/api/v1/dkim/domains/{}/check"),
    ("GET", "/api/v1/pools"), ("POST", "/api/v1/pools/drained"), ("DELETE", "/api/v1/pools/drained/{}"),
    ("GET", "/api/v1/queue"),
    *[("POST", f"/api/v1/queue/{{}}/{action}") for action in QUEUE_ACTIONS],
    ("GET", "/api/v1/messages"), ("GET", "/api/v1/messages/{}/trace"),
    ("GET", "/api/v1/blacklist"), ("POST", "/api/v1/blacklist/requested"),
    ("GET", "/api/v1/pipeline"), ("GET", "/api/v1/events/stream"), ("GET", "/api/v1/audit"),
]


def normalized(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def template_matches(template: str, route: str) -> bool:
    """`template` (from openapi.yaml, parameters as {}) covers `route` (from the contract)."""
    a, b = template.strip("/").split("/"), route.strip("/").split("/")
    return len(a) == len(b) and all(x == y or x == "{}" for x, y in zip(a, b))


def load_spec():
    assert SPEC_FILE.exists(), f"{SPEC_FILE} is missing"
    spec = yaml.safe_load(SPEC_FILE.read_text())
    assert isinstance(spec, dict) and str(spec.get("openapi", "")).startswith("3."), "not an OpenAPI 3 document"
    assert isinstance(spec.get("paths"), dict) and spec["paths"], "openapi.yaml has no paths"
    return spec


def api_base(spec) -> str:
    """Where the paths hang: the first server URL's path when it is one (e.g. /api/v1), else ''."""
    for server in spec.get("servers") or []:
        path = urlsplit(server.get("url", "")).path.rstrip("/")
        if path:
            return path
    return ""


def resolved(node, spec, seen=()):
    """A schema with every $ref replaced by its target (components/schemas), OpenAPI 3.0's
    `nullable` turned into JSON Schema's null type."""
    if isinstance(node, list):
        return [resolved(x, spec, seen) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local references are resolved: {ref}"
        if ref in seen:
            return {}  # a recursive schema: what is below was checked once already
        target = spec
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        out = resolved(target, spec, seen + (ref,))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {"allOf": [out, resolved(siblings, spec, seen)]} if siblings else out
    out = {k: (v if k in ("example", "examples", "enum", "const", "default") else resolved(v, spec, seen))
           for k, v in node.items()}
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = list(out["enum"]) + [None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def check_against_spec(spec, operation, r, where):
    """The answer's status is documented for the operation; a JSON answer validates against the
    documented schema."""
    responses = {str(k): v for k, v in (operation.get("responses") or {}).items()}  # YAML reads 200: as a number
    status = str(r.status_code)
    documented = responses.get(status) or responses.get(f"{status[0]}XX") or responses.get(f"{status[0]}xx") \
        or responses.get("default")
    assert documented is not None, f"{where}: status {status} is not documented (documented: {sorted(responses)})"
    documented = resolved(documented, spec)
    content = documented.get("content") or {}
    sent_type = r.headers.get("Content-Type", "").split(";")[0].strip()
    if r.status_code == 204 or not r.content:
        return
    assert content, f"{where}: answered {sent_type} but status {status} documents no content"
    media = content.get(sent_type) or next((v for k, v in content.items() if k.split(";")[0] == sent_type), None) \
        or next((v for k, v in content.items() if "json" in k and "json" in sent_type), None)
    assert media is not None, f"{where}: answered {sent_type}, documented {sorted(content)}"
    if "json" in sent_type and "schema" in media:
        schema = resolved(media["schema"], spec)
        validator = jsonschema.Draft4Validator if str(spec["openapi"]).startswith("3.0") else jsonschema.Draft202012Validator
        errors = sorted(validator(schema).iter_errors(r.json()), key=lambda e: list(e.path))
        assert not errors, f"{where}: the answer does not match the documented schema: " + "; ".join(
            f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors[:5])


def test_openapi_document_matches_the_server(site):
    spec = load_spec()
    base = api_base(spec)
    operations = {}
    for path, item in spec["paths"].items():
        full = path if path.startswith("/api/") else base + path
        for method, operation in item.items():
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                operations[(method.upper(), normalized(full))] = (full, operation)

    # Every route of the contract is documented.
    undocumented = [f"{m} {p}" for m, p in CONTRACT_ROUTES
                    if not any(m == om and template_matches(op, p) for om, op in operations)]
    assert not undocumented, "routes missing from openapi.yaml: " + ", ".join(undocumented)

    # What each call needs, made by alice now.
    t = make_targets(site)
    web = site.admin.login("alice", site.alice_password)

    def fresh_login():
        return new_login(site, t.customer)["login"]

    def retiring_key():
        domain = unique("spec") + ".example"
        ok(site.api.post(site.url + "/api/v1/dkim/keys", json={"domain": domain, "selector": "a1", "alg": "ed25519"}), 201)
        ok(site.api.post(site.url + f"/api/v1/dkim/domains/{domain}/rotate", json={"selector": "a2", "alg": "ed25519"}))
        return f"{domain}/a1"

    def drained():
        ok(site.api.post(site.url + "/api/v1/pools/drained", json={"address": "127.0.0.66", "reason": "spec"}), 201)
        return "127.0.0.66"

    def queued(state=None):
        message_id = submit(site, unique("spec-q"))
        if state == "held":
            ok(site.api.post(site.url + f"/api/v1/queue/{message_id}/hold", json={}))
        return message_id

    def listing():
        address = f"127.0.1.{next(_names) % 250}"
        seed_listing(site, address)
        return address

    # route → [(kind, path, json body, session)]; kind is good (must succeed), bad (400/404) or anonymous (401).
    A, N = site.api, site.admin.client()
    calls = {
        ("GET", "/api/v1/session"): lambda: [("good", "/api/v1/session", None, web), ("anonymous", "/api/v1/session", None, N)],
        ("GET", "/api/v1/customers"): lambda: [("good", "/api/v1/customers", None, A)],
        ("POST", "/api/v1/customers"): lambda: [
            ("good", "/api/v1/customers", {"id": unique("spec"), "networks": ["127.0.0.1/32"]}, A),
            ("bad", "/api/v1/customers", {"id": unique("spec"), "networks": ["nope"]}, A),
            ("bad", "/api/v1/customers", {"id": t.customer}, A)],
        ("GET", "/api/v1/customers/{}"): lambda: [("good", f"/api/v1/customers/{t.customer}", None, A),
                                                  ("bad", "/api/v1/customers/no-such-customer", None, A)],
        ("PATCH", "/api/v1/customers/{}"): lambda: [("good", f"/api/v1/customers/{t.customer}", {"name": "Spec"}, A),
                                                    ("bad", f"/api/v1/customers/{t.customer}", {"networks": ["x"]}, A)],
        ("POST", "/api/v1/customers/{}/logins"): lambda: [
            ("good", f"/api/v1/customers/{t.customer}/logins", {"login": unique("spec-login")}, A),
            ("bad", f"/api/v1/customers/{t.customer}/logins", {"login": "has space"}, A)],
        ("POST", "/api/v1/logins/{}/password"): lambda: [("good", f"/api/v1/logins/{fresh_login()}/password", {}, A),
                                                         ("bad", "/api/v1/logins/no-such-login/password", {}, A)],
        ("PATCH", "/api/v1/logins/{}"): lambda: [("good", f"/api/v1/logins/{fresh_login()}", {"disabled": True}, A),
                                                 ("bad", f"/api/v1/logins/{t.login}", {"disabled": "maybe"}, A)],
        ("DELETE", "/api/v1/logins/{}"): lambda: [("good", f"/api/v1/logins/{fresh_login()}", None, A),
                                                  ("bad", "/api/v1/logins/no-such-login", None, A)],
        ("GET", "/api/v1/tls/rules"): lambda: [("good", "/api/v1/tls/rules", None, A)],
        ("POST", "/api/v1/tls/rules"): lambda: [
            ("good", "/api/v1/tls/rules", {"recipient": unique("spec") + ".example", "level": "encrypt", "action": "hold"}, A),
            ("bad", "/api/v1/tls/rules", {"recipient": "spec.example", "level": "loud", "action": "hold"}, A)],
        ("DELETE", "/api/v1/tls/rules/{}"): lambda: [
            ("good", "/api/v1/tls/rules/" + ok(A.post(site.url + "/api/v1/tls/rules", json={
                "recipient": unique("spec") + ".example", "level": "encrypt", "action": "hold"}), 201)["id"], None, A),
            ("bad", "/api/v1/tls/rules/no-such-rule", None, A)],
        ("GET", "/api/v1/dkim/keys"): lambda: [("good", f"/api/v1/dkim/keys?domain={t.dkim_domain}", None, A),
                                               ("bad", "/api/v1/dkim/keys?domain=not..valid", None, A)],
        ("POST", "/api/v1/dkim/keys"): lambda: [
            ("good", "/api/v1/dkim/keys", {"domain": unique("spec") + ".example", "selector": "k1", "alg": "ed25519"}, A),
            ("bad", "/api/v1/dkim/keys", {"domain": "spec.example", "selector": "bad_one!"}, A)],
        ("POST", "/api/v1/dkim/domains/{}/rotate"): lambda: [
            ("good", f"/api/v1/dkim/domains/{t.dkim_domain}/rotate", {"selector": unique("r").replace("-", ""), "alg": "ed25519"}, A),
            ("bad", f"/api/v1/dkim/domains/{t.dkim_domain}/rotate", {"selector": "bad_one!"}, A)],
        ("DELETE", "/api/v1/dkim/keys/{}/{}"): lambda: [("good", f"/api/v1/dkim/keys/{retiring_key()}", None, A),
                                                         ("bad", f"/api/v1/dkim/keys/{t.dkim_domain}/nosuchselector", None, A)],
        ("GET", "/api/v1/dkim/domains/{}/check"): lambda: [("good", f"/api/v1/dkim/domains/{t.dkim_domain}/check", None, A),
                                                           ("bad", "/api/v1/dkim/domains/no-keys.example/check", None, A)],
        ("GET", "/api/v1/pools"): lambda: [("good", "/api/v1/pools", None, A)],
        ("POST", "/api/v1/pools/drained"): lambda: [
            ("good", "/api/v1/pools/drained", {"address": "127.0.0.67", "reason": "spec"}, A),
            ("bad", "/api/v1/pools/drained", {"address": "nowhere", "reason": "spec"}, A)],
        ("DELETE", "/api/v1/pools/drained/{}"): lambda: [("good", f"/api/v1/pools/drained/{drained()}", None, A),
                                                         ("bad", "/api/v1/pools/drained/not-an-ip", None, A)],
        ("GET", "/api/v1/queue"): lambda: [("good", "/api/v1/queue?limit=5", None, A), ("bad", "/api/v1/queue?state=odd", None, A)],
        ("POST", "/api/v1/queue/{}/hold"): lambda: [("good", f"/api/v1/queue/{queued()}/hold", {"reason": "spec"}, A),
                                                    ("bad", f"/api/v1/queue/{UNKNOWN_ID}/hold", {"reason": "spec"}, A)],
        ("POST", "/api/v1/queue/{}/release"): lambda: [("good", f"/api/v1/queue/{queued('held')}/release", {}, A),
                                                       ("bad", "/api/v1/queue/not-an-id/release", {}, A)],
        ("POST", "/api/v1/queue/{}/bounce"): lambda: [("good", f"/api/v1/queue/{queued()}/bounce", {"reason": "spec"}, A),
                                                      ("bad", f"/api/v1/queue/{UNKNOWN_ID}/bounce", {"reason": "spec"}, A)],
        ("POST", "/api/v1/queue/{}/delete"): lambda: [("good", f"/api/v1/queue/{queued()}/delete", {"reason": "spec"}, A),
                                                      ("bad", f"/api/v1/queue/{UNKNOWN_ID}/delete", {"reason": "spec"}, A)],
        ("POST", "/api/v1/queue/{}/requeue"): lambda: [("good", f"/api/v1/queue/{queued()}/requeue", {}, A),
                                                       ("bad", f"/api/v1/queue/{queued()}/requeue", {"stage": "nowhere"}, A)],
        ("GET", "/api/v1/messages"): lambda: [("good", f"/api/v1/messages?id={t.message}", None, A),
                                              ("bad", "/api/v1/messages?since=someday", None, A)],
        ("GET", "/api/v1/messages/{}/trace"): lambda: [("good", f"/api/v1/messages/{t.message}/trace", None, A),
                                                       ("bad", "/api/v1/messages/not-an-id/trace", None, A)],
        ("GET", "/api/v1/blacklist"): lambda: [("good", "/api/v1/blacklist", None, A)],
        ("POST", "/api/v1/blacklist/requested"): lambda: [
            ("good", "/api/v1/blacklist/requested", {"address": listing(), "zone": "dnsbl.test"}, A),
            ("bad", "/api/v1/blacklist/requested", {"address": "127.0.0.250", "zone": "never.test"}, A)],
        ("GET", "/api/v1/pipeline"): lambda: [("good", "/api/v1/pipeline", None, A)],
        ("GET", "/api/v1/events/stream"): lambda: [("good", "/api/v1/events/stream", None, A)],
        ("GET", "/api/v1/audit"): lambda: [("good", "/api/v1/audit?count=5", None, A), ("bad", "/api/v1/audit?count=x", None, A)],
    }

    exercised, problems = set(), []
    for (method, template), (spec_path, operation) in sorted(operations.items()):
        routes = [route for route in calls if route[0] == method and template_matches(template, route[1])]
        if not routes and method == "GET" and "{}" not in template:
            routes = [None]
        for route in routes:
            planned = calls[route]() if route else [("good", template, None, A)]
            if route and route != ("GET", "/api/v1/session"):
                planned.append(("anonymous", planned[0][1], planned[0][2], N))
            for kind, path, body, client in planned:
                where = f"{method} {path} ({kind}; documented as {spec_path})"
                stream = path.startswith("/api/v1/events/stream")
                r = client.request(method, site.url + path, json=body, timeout=60, stream=stream)
                try:
                    if kind == "good":
                        assert r.status_code < 400, describe(r)
                    elif kind == "bad":
                        assert r.status_code in (400, 404, 409), describe(r)
                    else:
                        assert r.status_code == 401, describe(r)
                    if stream and r.status_code == 200:
                        assert r.headers["Content-Type"].startswith("text/event-stream")
                        documented = {str(k): v for k, v in (operation.get("responses") or {}).items()}.get("200") or {}
                        assert "text/event-stream" in (resolved(documented, spec).get("content") or {}), where
                    else:
                        check_against_spec(spec, operation, r, where)
                except AssertionError as e:
                    problems.append(str(e))
                finally:
                    r.close()
            if route:
                exercised.add(route)
    assert not problems, "\n".join(problems)
    assert exercised >= {(m, p) for m, p in CONTRACT_ROUTES}, sorted({(m, p) for m, p in CONTRACT_ROUTES} - exercised)


# ---- secrets ----------------------------------------------------------------------------------------


def test_no_secret_in_the_admin_log(site):
    """Run last in this module: every password and token seen so far is absent from the log."""
    log = site.admin.log_text()
    assert log, "smg-admin logs"
    for secret in site.secrets:
        assert secret not in log
