"""Spam classification (R10, R11) and the compromised-account brake, with the real processes:
the classifier's own engine seeded from the shipped model, a real rspamd as the optional
backend, smgctl's train/classify, fail-closed behaviour, and a takeover burst through real SMTP AUTH."""
import json
import smtplib
import subprocess
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from harness import ROOT, Gateway, free_port, make_message, send, subject_of, wait_until

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PASSWORD = "correct horse battery staple"
MODEL = ROOT / "deploy/spam/model.txt"
RSPAMD = ROOT / "Tests/Fixtures/rspamd"


def gtube_message(marker, sender="sender@customer.example", rcpt="user@dest.example"):
    return make_message(marker, sender=sender, rcpt=rcpt,
                        body_lines=["This is the GTUBE test message.", "", GTUBE, ""])


def business_message(marker, sender="sender@customer.example", rcpt="user@dest.example"):
    return make_message(marker, sender=sender, rcpt=rcpt, body_lines=[
        "Hi Lukas,", "",
        "thanks for the call this morning. As discussed, we can ship the first twelve shelves on",
        "Thursday and the remaining ones next week, once the carpenter has finished the fittings.",
        "Could you confirm that someone is at the warehouse between 8 and 11 to sign for them?", "",
        "Best regards,", "Anna"])


def classified(gateway, mid, timeout=20):
    def find():
        return next((e for e in gateway.trace(mid) if e["type"] == "classified"), None)
    return wait_until(find, timeout, interval=0.2, what=f"a classified event for {mid}")


def test_gtube_is_spam_with_reasons_and_a_business_message_is_clean(gateway, sink, redis_server):
    gateway.start_all(SMG_CLASSIFIER_ADD_HEADER="true")
    spam_id = send(gateway.ingress_port, gtube_message("gtube-1"))
    ham_id = send(gateway.ingress_port, business_message("shelves-1"))
    spam, ham = classified(gateway, spam_id), classified(gateway, ham_id)
    assert spam["facts"]["category"] == "spam" and spam["facts"]["lane"] == "bad", spam
    assert spam["facts"]["engine"] == "builtin"
    assert any(r.startswith("GTUBE") for r in spam["facts"]["reasons"]), spam
    assert ham["facts"]["category"] == "clean" and ham["facts"]["lane"] == "good", ham
    # The message record carries the verdict, and the signer routed by it.
    r = redis_server.client()
    assert r.hget(f"smg:msg:{spam_id}", "category") == b"spam"
    assert b"GTUBE" in r.hget(f"smg:msg:{spam_id}", "reasons")
    signed = next(e for e in gateway.trace(spam_id) if e["type"] == "signed")
    assert signed["facts"]["lane"] == "bad"
    # Both are delivered (the test routes both lanes to one sink), each with the optional header.
    wait_until(lambda: sink.count() == 2, 20, what="both messages at the sink")
    headers = {subject_of(m[2]): message_from_bytes(m[2], policy=policy.default)["X-SMG-Spam"] for m in sink.snapshot()}
    assert headers["gtube-1"].startswith("spam; score=") and "rules=GTUBE" in headers["gtube-1"], headers
    assert headers["shelves-1"].startswith("clean; "), headers


def test_fail_closed_without_a_model_then_training_lets_it_through(gateway, sink, redis_server):
    # No model file and an empty Redis: the classifier cannot decide, so nothing passes.
    gateway.start_all(SMG_CLASSIFIER_MODEL_FILE="", SMG_CLASSIFIER_MODEL_REFRESH="200ms")
    mid = send(gateway.ingress_port, business_message("waits-1"))
    time.sleep(4)
    assert sink.count() == 0
    assert not any(e["type"] == "classified" for e in gateway.trace(mid))
    r = redis_server.client()
    assert r.zscore("smg:pending:mail.scanned", mid) is not None, "the message waits in the classifier's stage"
    # An operator loads the model: the waiting message goes on by itself.
    out = gateway.smgctl("train", "--load-model", str(MODEL))
    assert out.returncode == 0, out.stderr
    assert "tokens" in out.stdout
    wait_until(lambda: sink.count() == 1, 30, what="the message after the model arrived")
    assert classified(gateway, mid)["facts"]["category"] == "clean"


def test_redis_model_survives_a_classifier_restart_and_training_by_id_is_recorded(gateway, sink, redis_server):
    gateway.start_all()
    mid = send(gateway.ingress_port, business_message("train-me"))
    classified(gateway, mid)
    out = gateway.smgctl("train", "--spam", "--id", mid)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{mid}: learned as spam"
    assert any(e["type"] == "spam.trained" and e["facts"]["label"] == "spam" for e in gateway.trace(mid))
    again = gateway.smgctl("train", "--spam", "--id", mid)
    assert again.stdout.strip() == f"{mid}: unchanged as spam"
    moved = gateway.smgctl("train", "--ham", "--id", mid)
    assert moved.stdout.strip() == f"{mid}: relabelled as ham"
    # Bad input: a clear error naming the argument, nothing changed.
    bad = gateway.smgctl("train", "--spam", "--id", "not-an-id")
    assert bad.returncode != 0 and "--id" in bad.stderr
    none = gateway.smgctl("train")
    assert none.returncode != 0 and "--spam/--ham" in none.stderr


def test_smgctl_classify_uses_the_classifiers_engine(gateway, redis_server, tmp_path):
    spam_file, ham_file = tmp_path / "gtube.eml", tmp_path / "shelves.eml"
    spam_file.write_bytes(gtube_message("gtube-cli"))
    ham_file.write_bytes(business_message("shelves-cli"))
    # Offline, with the model file.
    out = gateway.smgctl("classify", "--model", str(MODEL), str(spam_file), str(ham_file))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(l["category"], l["lane"]) for l in lines] == [("spam", "bad"), ("clean", "good")], lines
    assert any(r.startswith("GTUBE") for r in lines[0]["reasons"])
    # Against Redis: no model there yet is a clear error; after loading one, the same verdicts.
    missing = gateway.smgctl("classify", str(spam_file))
    assert missing.returncode != 0 and "no spam model" in missing.stderr
    assert gateway.smgctl("train", "--load-model", str(MODEL)).returncode == 0
    out = gateway.smgctl("classify", str(spam_file), str(ham_file))
    assert [json.loads(line)["category"] for line in out.stdout.splitlines()] == ["spam", "clean"]
    bad = gateway.smgctl("classify", str(tmp_path / "missing.eml"))
    assert bad.returncode != 0 and "<files>" in bad.stderr


# ---- the compromised-account brake ------------------------------------------------------------


def auth_send(port, login, marker, rcpt="user@dest.example", body=business_message):
    """Submits one message with AUTH PLAIN (allowed without TLS in this test). Returns (code, reply)
    of the first refusal, or of DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("app1.customer.example")
        s.login(login, PASSWORD)
        code, reply = s.mail("sender@customer.example")
        if code != 250:
            return code, reply
        code, reply = s.rcpt(rcpt)
        if code != 250:
            return code, reply
        return s.data(body(marker, rcpt=rcpt))


def test_takeover_burst_brakes_the_account_and_release_lifts_it(gateway, sink, redis_server):
    gateway.start_all(SMG_INGRESS_REQUIRE_AUTH="true", SMG_INGRESS_ALLOW_PLAINTEXT_AUTH="true",
                      SMG_BRAKE_NOTIFY="abuse-desk@gateway.test")
    for args in [("customer", "add", "shop", "--network", "127.0.0.0/8", "--domain", "customer.example"),
                 ("account", "add", "shop-app", "--customer", "shop", "--password", PASSWORD)]:
        out = gateway.smgctl(*args)
        assert out.returncode == 0, out.stderr
    # This customer's normal peak is small: a burst is anything beyond 8 messages an hour.
    out = gateway.smgctl("customer", "brake", "shop", "--min-burst", "8", "--volume-factor", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["brake"]["minBurst"] == 8
    # Changing the customer's policy keeps its brake limits (and every setting not given);
    # creating it again is refused rather than silently replacing it.
    out = gateway.smgctl("customer", "update", "shop", "--name", "Shop", "--no-require-tls")
    assert out.returncode == 0, out.stderr
    changed = json.loads(out.stdout)
    assert changed["brake"]["minBurst"] == 8 and changed["name"] == "Shop" and changed["domains"] == ["customer.example"]
    again = gateway.smgctl("customer", "add", "shop", "--network", "127.0.0.0/8")
    assert again.returncode != 0 and "exists" in again.stderr
    bad_limit = gateway.smgctl("customer", "brake", "shop", "--bad-share", "2")
    assert bad_limit.returncode != 0 and "--bad-share" in bad_limit.stderr

    # A normal peak: 8 messages pass.
    for i in range(8):
        code, reply = auth_send(gateway.ingress_port, "shop-app", f"normal-{i}")
        assert code == 250, reply
    wait_until(lambda: sink.count() == 8, 30, what="the normal peak delivered")
    # The burst: the 9th message trips the brake; it and what follows in the pipeline are held.
    ids = []
    for i in range(3):
        code, reply = auth_send(gateway.ingress_port, "shop-app", f"burst-{i}")
        if code != 250:
            break
        ids.append(reply.decode().rsplit("queued as ", 1)[1].strip())
    braked = wait_until(lambda: next((e for e in gateway.trace(ids[0]) if e["type"] == "account.braked"), None), 20,
                        interval=0.2, what="an account.braked event")
    assert braked["facts"]["subject"] in ("login:shop-app", "customer:shop"), braked
    assert "messages this hour" in braked["facts"]["reason"]

    # New mail of the braked account is refused with 451 4.7.1 (within ingress's 2 s cache).
    def refused():
        code, reply = auth_send(gateway.ingress_port, "shop-app", "after-brake")
        return (code, reply) if code != 250 else None
    code, reply = wait_until(refused, 10, interval=0.5, what="MAIL refused for the braked account")
    assert code == 451 and b"4.7.1" in reply, reply
    listed = gateway.smgctl("account", "brakes")
    assert any(json.loads(l)["subject"] == braked["facts"]["subject"] for l in listed.stdout.splitlines()), listed.stdout
    # Monitoring sees it: the brakes in force (read from Redis every 5 s) and the trips.
    kind = braked["facts"]["subject"].split(":")[0]
    wait_until(lambda: gateway.metric("smg_braked_accounts", kind=kind) >= 1, 15, interval=0.5,
               what="smg_braked_accounts up")
    assert gateway.metric("smg_brakes_tripped_total") >= 1

    # The operators were told, through the pipeline.
    def notice():
        return next((m for m in sink.snapshot() if m[1] == ["abuse-desk@gateway.test"]), None)
    m = wait_until(notice, 30, interval=0.2, what="the operator notice")
    assert m[0] in ("", "<>") and "Account braked" in subject_of(m[2]), m[2][:300]
    assert b"smgctl account release" in m[2]
    # The burst messages were held, not delivered.
    r = redis_server.client()
    for mid in ids:
        wait_until(lambda: r.hget("smg:held", mid) is not None, 20, what=f"{mid} held")
    assert not any(subject_of(m[2]).startswith("burst-") for m in sink.snapshot())

    # Release: the account sends again; the held messages go out when released.
    subject = braked["facts"]["subject"]
    release = (["account", "release", "shop-app"] if subject.startswith("login:")
               else ["account", "release", "shop", "--customer"])
    out = gateway.smgctl(*release)
    assert out.returncode == 0, out.stderr
    other = "login:shop-app" if subject.startswith("customer:") else "customer:shop"
    if r.exists(f"smg:brake:{other}"):  # both may have tripped on the same message
        gateway.smgctl(*(["account", "release", "shop", "--customer"] if other.startswith("customer:")
                         else ["account", "release", "shop-app"]))
    again = gateway.smgctl(*release)
    assert again.returncode != 0 and "not braked" in again.stderr
    wait_until(lambda: gateway.metric("smg_braked_accounts") == 0, 15, interval=0.5, what="smg_braked_accounts back to 0")
    time.sleep(2.5)  # ingress's brake cache
    code, reply = auth_send(gateway.ingress_port, "shop-app", "after-release")
    assert code == 250, reply
    for mid in ids:
        out = gateway.smgctl("queue", "release", mid)
        assert out.returncode == 0, out.stderr
    wait_until(lambda: sum(subject_of(m[2]).startswith("burst-") for m in sink.snapshot()) == len(ids), 30,
               what="the released burst messages delivered")


# ---- the rspamd backend -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    work = tmp_path_factory.mktemp("rspamd")
    port = free_port()
    out = subprocess.run([str(RSPAMD / "start-rspamd.sh"), str(work), str(port)], capture_output=True, text=True,
                         timeout=150, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    yield f"http://127.0.0.1:{port}"
    subprocess.run([str(RSPAMD / "stop-rspamd.sh"), str(work)], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def test_rspamd_backend_maps_its_verdict_to_category_and_reasons(gateway, sink, rspamd):
    gateway.start_all(SMG_CLASSIFIER_ENGINE="rspamd", SMG_CLASSIFIER_RSPAMD_URL=rspamd)
    spam_id = send(gateway.ingress_port, gtube_message("rspamd-gtube"))
    ham_id = send(gateway.ingress_port, business_message("rspamd-shelves"))
    spam, ham = classified(gateway, spam_id), classified(gateway, ham_id)
    assert spam["facts"]["engine"] == "rspamd" and spam["facts"]["category"] == "spam", spam
    assert spam["facts"]["lane"] == "bad"
    assert any("RSPAMD_REJECT" in r or "GTUBE" in r for r in spam["facts"]["reasons"]), spam
    assert ham["facts"]["engine"] == "rspamd" and ham["facts"]["category"] in ("clean", "bulk"), ham
    wait_until(lambda: sink.count() == 2, 20, what="both delivered")


def test_rspamd_required_and_down_means_the_message_waits(gateway, sink, redis_server):
    dead = f"http://127.0.0.1:{free_port()}"
    gateway.start_all(SMG_CLASSIFIER_ENGINE="rspamd", SMG_CLASSIFIER_RSPAMD_URL=dead,
                      SMG_CLASSIFIER_RSPAMD_TIMEOUT="500ms")
    mid = send(gateway.ingress_port, business_message("rspamd-down"))
    time.sleep(4)
    assert sink.count() == 0
    assert redis_server.client().zscore("smg:pending:mail.scanned", mid) is not None
    assert "rspamd" in gateway.log_text("smg-classifier")


def test_rspamd_optional_and_down_falls_back_to_the_builtin_engine(gateway, sink):
    dead = f"http://127.0.0.1:{free_port()}"
    gateway.start_all(SMG_CLASSIFIER_ENGINE="rspamd", SMG_CLASSIFIER_RSPAMD_URL=dead,
                      SMG_CLASSIFIER_RSPAMD_TIMEOUT="500ms", SMG_CLASSIFIER_RSPAMD_REQUIRED="false")
    mid = send(gateway.ingress_port, gtube_message("rspamd-fallback"))
    event = classified(gateway, mid)
    assert event["facts"]["engine"] == "builtin" and event["facts"]["category"] == "spam", event


def test_bad_classifier_config_names_the_key(gateway):
    for env, key in [({"SMG_CLASSIFIER_SUSPECT_THRESHOLD": "9"}, "classifier.suspect_threshold"),
                     ({"SMG_CLASSIFIER_ENGINE": "magic"}, "classifier.engine"),
                     ({"SMG_CLASSIFIER_MODEL_FILE": "/nonexistent/model.txt"}, "classifier.model_file"),
                     ({"SMG_BRAKE_BAD_SHARE": "3"}, "brake.bad_share")]:
        out = subprocess.run([str(gateway.bins / "smg-classifier")], env=gateway.env(env),
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert out.returncode == 78 and key in out.stderr + out.stdout, (env, out.returncode, out.stderr)
