"""The scanner stage end to end: ClamAV + YARA on every message, infected mail never delivered,
an RFC 3464 NDR to the sender through the whole pipeline, and fail-closed holding when an engine fails."""
import io
import shutil
import time
import zipfile
from email import message_from_bytes, policy
from email.message import EmailMessage

from harness import ROOT, make_message, send, wait_until

# Assembled at run time so that this file itself is not flagged.
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*").encode()


def infected_message(marker: str, sender="sender@customer.example") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "user@dest.example, other@dest.example"
    msg["Subject"] = marker
    msg["Message-ID"] = f"<{marker}@customer.example>"
    msg.set_content("Please see the attached report.\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.txt", EICAR)
    msg.add_attachment(buffer.getvalue(), maintype="application", subtype="zip", filename="report.zip")
    return msg.as_bytes(policy=policy.SMTP)


def event_types(gateway, message_id):
    return [e["type"] for e in gateway.trace(message_id)]


def test_infected_message_is_rejected_and_the_ndr_reaches_the_sender(gateway, sink):
    gateway.start_all()
    message_id = send(gateway.ingress_port, infected_message("virus-1"), rcpts=("user@dest.example", "other@dest.example"))

    wait_until(lambda: sink.count() >= 1, 40, what="the NDR at the sink")
    time.sleep(1.5)
    messages = sink.snapshot()
    assert len(messages) == 1, [m[:2] for m in messages]   # the NDR only: the infected mail never leaves
    mail_from, rcpts, raw = messages[0]
    assert mail_from in ("", "<>")                           # null reverse path: no NDR loops
    assert rcpts == ["sender@customer.example"]

    ndr = message_from_bytes(raw, policy=policy.default)
    assert ndr.get_content_type() == "multipart/report"
    assert ndr.get_param("report-type") == "delivery-status"
    assert "MAILER-DAEMON@gateway.test" in ndr["From"]
    parts = ndr.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    human = parts[0].get_content()
    assert "SMG.Test.EICAR" in human and "report.zip" in human and "clamav" in human
    blocks = parts[1].get_payload()                          # per-message fields, then one block per recipient
    assert blocks[0]["Reporting-MTA"] == "dns; gateway.test"
    assert blocks[0]["Arrival-Date"]
    assert blocks[0]["X-SMG-Message-Id"] == message_id
    assert "Original-Envelope-Id" not in blocks[0], "no ENVID was given (RFC 3464 §2.2.1)"
    recipients = {b["Final-Recipient"]: b for b in blocks[1:]}
    assert set(recipients) == {"rfc822; user@dest.example", "rfc822; other@dest.example"}
    for block in recipients.values():
        assert block["Action"] == "failed"
        assert block["Status"] == "5.7.1"
        assert "SMG.Test.EICAR" in block["Diagnostic-Code"]
    headers = parts[2].get_payload() if isinstance(parts[2].get_payload(), str) else parts[2].as_string()
    assert "virus-1@customer.example" in headers
    assert "report.zip" not in raw.decode(errors="replace").split("text/rfc822-headers", 1)[1], \
        "the original content must not be returned"

    events = gateway.trace(message_id)
    types = [e["type"] for e in events]
    assert types[:2] == ["accepted", "scanned.infected"]
    assert types.count("bounced") == 2 and types[-1] == "ndr.sent"
    assert "delivered" not in types and "classified" not in types
    infected = events[1]["facts"]
    assert infected["engine"] == "clamav"
    assert infected["signature"].startswith("SMG.Test.EICAR")
    assert infected["filename"] == "report.zip"
    assert infected["part"] == "2"

    # The NDR went through the whole pipeline itself (scanned clean, classified, signed, delivered).
    ndr_id = events[-1]["facts"]["ndr"]
    wait_until(lambda: "delivered" in event_types(gateway, ndr_id), 10, what="the NDR's delivered event")
    ndr_types = event_types(gateway, ndr_id)
    # The scanner picks the NDR up on its redrive pass (it is no producer of mail.accepted).
    assert ndr_types[0] == "accepted" and "scanned.clean" in ndr_types and "scanned.infected" not in ndr_types


def test_infected_mail_from_the_null_sender_gets_no_ndr(gateway, sink):
    gateway.start_all()
    message_id = send(gateway.ingress_port, infected_message("virus-null"), sender="")
    wait_until(lambda: "scanned.infected" in event_types(gateway, message_id), 20, what="scanned.infected")
    time.sleep(2)
    assert sink.count() == 0
    assert "ndr.sent" not in event_types(gateway, message_id)


def test_eicar_in_the_body_and_in_a_nested_message_are_detected(gateway, sink):
    gateway.start_all()
    body_id = send(gateway.ingress_port, make_message("eicar-body", body_lines=[EICAR.decode()]), sender="")
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("forwarded")
    inner.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="eicar.bin")
    outer = EmailMessage()
    outer["From"] = "sender@customer.example"
    outer["Subject"] = "nested"
    outer.set_content("see the forwarded message")
    outer.add_attachment(inner)
    nested_id = send(gateway.ingress_port, outer.as_bytes(policy=policy.SMTP), sender="")
    for message_id in (body_id, nested_id):
        wait_until(lambda: "scanned.infected" in event_types(gateway, message_id), 20, what="scanned.infected")
    nested = next(e for e in gateway.trace(nested_id) if e["type"] == "scanned.infected")["facts"]
    engines = {f["engine"] for f in nested["findings"]}
    assert engines == {"clamav", "yara"}, nested
    assert any(f.get("filename") == "eicar.bin" and f["part"].startswith("2.1") for f in nested["findings"]), nested


def test_engine_failure_holds_the_message_until_the_engine_works(gateway, sink, workdir):
    database = workdir / "clamav-db"          # absent at start: ClamAV cannot load (fault injection)
    gateway.start_all(SMG_SCANNER_CLAMAV_DATABASE=database)
    message_id = send(gateway.ingress_port, make_message("held-1"))
    wait_until(lambda: event_types(gateway, message_id).count("scanner.error") >= 2, 20,
               what="scanner.error events (retried after stage.retry_delay)")
    assert sink.count() == 0, "a message must never pass unscanned"
    error = next(e for e in gateway.trace(message_id) if e["type"] == "scanner.error")
    assert error["facts"]["engine"] == "clamav"
    assert "held for retry" in gateway.log_text("smg-scanner")

    shutil.copytree(ROOT / "deploy/scanner/clamav", database)    # the engine works again
    wait_until(lambda: sink.count() == 1, 30, what="the held message at the sink")
    types = event_types(gateway, message_id)
    assert types.index("scanner.error") < types.index("scanned.clean") < types.index("delivered")
