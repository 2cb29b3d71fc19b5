"""smg-admin in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by
selenium. An operator logs in, creates a customer and a login with the forms, the login submits
a message through ingress (STARTTLS + AUTH), and the operator finds the message and reads its
trace. Screenshots of the main pages go to $SMG_TEST_ARTIFACTS, or else to
Tests/Integration/artifacts/admin/ (ignored by git).

Chromium's flags, and why:
  --headless=new                 no display here
  --no-sandbox                   the tests run as root, where Chromium refuses to start its sandbox
  --disable-dev-shm-usage        /dev/shm is small in containers; Chromium then uses /tmp
  --ignore-certificate-errors-spki-list=<key>
                                 smg-admin's certificate comes from a CA made by the test, which
                                 Chromium does not know: trust exactly that server key, nothing else
selenium is handed /usr/bin/chromium and /usr/bin/chromedriver, so Selenium Manager never tries to
download a browser or a driver (there is no network here).
"""
import base64
import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from harness import ROOT, Admin, loopback_certificate, make_message, spki_sha256_base64, submit_authenticated, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT = 30  # seconds for anything the browser waits for (two cores, a whole pipeline beside it)

CUSTOMER = "browser-shop"
LOGIN = "browser-app"
SENDER = "app@browser.test"


def artifacts_dir() -> Path:
    d = Path(os.environ.get("SMG_TEST_ARTIFACTS") or ROOT / "Tests" / "Integration" / "artifacts" / "admin")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def tls(workdir):
    """One test CA and one certificate for 127.0.0.1: smg-admin's HTTPS and ingress's STARTTLS."""
    return loopback_certificate(workdir / "tls")


@pytest.fixture
def pipeline(gateway, tls):
    """The whole gateway, with ingress as customers' applications meet it: AUTH required, offered
    only after STARTTLS (no DNS checks: nothing here resolves)."""
    ca, cert, key = tls
    ingress = dict(SMG_INGRESS_REQUIRE_AUTH="true", SMG_INGRESS_CHECK_SENDER_DOMAIN="false",
                   SMG_INGRESS_TLS_CERTIFICATE=str(cert), SMG_INGRESS_TLS_KEY=str(key), SMG_INGRESS_HOSTNAME="smg.test")
    for service in gateway.SERVICES:
        gateway.start(service, **(ingress if service == "smg-ingress" else {}))
    gateway.wait_ready()
    return gateway


@pytest.fixture
def admin(pipeline, tls):
    return Admin(pipeline, tls=tls).start()


@pytest.fixture
def browser(admin, workdir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900",
                 f"--ignore-certificate-errors-spki-list={spki_sha256_base64(admin.cert)}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(workdir / "chromedriver.log")), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    try:
        console = driver.get_log("browser")
        (artifacts_dir() / "browser-console.log").write_text(
            "\n".join(f"{e.get('level')} {e.get('message')}" for e in console) + "\n")
    except Exception:
        pass
    driver.quit()


# ---- helpers ----------------------------------------------------------------------------------------


def path_of(driver) -> str:
    return urlsplit(driver.current_url).path


def go(driver, admin, path):
    driver.get(admin.url + path)
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.readyState") == "complete")


def submit_form_of(driver, element):
    """Submits the form that holds `element` with its submit button, and waits for the next page."""
    form = element.find_element(By.XPATH, "./ancestor::form")
    old = driver.find_element(By.TAG_NAME, "html")
    buttons = form.find_elements(By.CSS_SELECTOR, "button[type=submit], input[type=submit], button:not([type])")
    if buttons:
        buttons[0].click()
    else:
        form.submit()
    WebDriverWait(driver, WAIT).until(EC.staleness_of(old))
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.readyState") == "complete")


def field(driver, name):
    return driver.find_element(By.CSS_SELECTOR, f"[name='{name}']:not([type=hidden])")


def type_into(driver, name, text):
    element = field(driver, name)
    element.clear()
    element.send_keys(text)
    return element


def heading(driver) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def screenshot(driver, name):
    """The whole page, beyond the window's height too (Chrome DevTools' captureBeyondViewport), as
    <artifacts>/<name>.png."""
    path = artifacts_dir() / f"{name}.png"
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 1000, path
    return path


def event_texts(driver):
    try:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".event")]
    except StaleElementReferenceException:
        return []


# ---- the test ---------------------------------------------------------------------------------------


def test_operator_creates_a_customer_and_login_then_traces_its_mail(pipeline, admin, browser, sink, tls):
    d = browser
    password = admin.operator("alice", "admin")

    # Not logged in: every page leads to the login form.
    go(d, admin, "/customers")
    assert path_of(d) == "/login", d.current_url
    screenshot(d, "login")
    type_into(d, "name", "alice")
    type_into(d, "password", "not the password at all")
    submit_form_of(d, field(d, "password"))
    assert path_of(d) == "/login", "a wrong password does not log in"
    assert d.find_elements(By.CSS_SELECTOR, "div.error"), "the login form says what went wrong"
    assert not [c for c in d.get_cookies() if c["name"] == "smg_session"]

    type_into(d, "name", "alice")
    type_into(d, "password", password)
    submit_form_of(d, field(d, "password"))
    assert path_of(d) != "/login", d.page_source[:2000]
    [cookie] = [c for c in d.get_cookies() if c["name"] == "smg_session"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", cookie

    go(d, admin, "/")
    assert heading(d)
    screenshot(d, "overview")

    # A customer, with the form.
    go(d, admin, "/customers/new")
    type_into(d, "id", CUSTOMER)
    type_into(d, "name", "Browser Shop")
    type_into(d, "networks", "127.0.0.1/32")
    type_into(d, "domains", "browser.test\nbrowser2.test")
    type_into(d, "rate_limit_per_minute", "100")
    require_tls = d.find_element(By.CSS_SELECTOR, "input[type=checkbox][name=require_tls]")
    if not require_tls.is_selected():
        require_tls.click()
    submit_form_of(d, field(d, "id"))
    assert not d.find_elements(By.CSS_SELECTOR, "div.error"), d.page_source[:3000]
    assert d.find_elements(By.CSS_SELECTOR, "div.flash"), "a change says so"
    shown = admin.gateway.smgctl("customer", "show", CUSTOMER)
    assert shown.returncode == 0, shown.stderr
    stored = json.loads(shown.stdout.splitlines()[0])
    assert stored["networks"] == ["127.0.0.1/32"] and stored["domains"] == ["browser.test", "browser2.test"], stored
    assert stored["requireTLS"] is True and stored["rateLimitPerMinute"] == 100, stored

    go(d, admin, "/customers")
    assert d.find_elements(By.CSS_SELECTOR, f"a[href='/customers/{CUSTOMER}']")
    screenshot(d, "customers")

    # A login of it: the generated password is shown once.
    go(d, admin, f"/customers/{CUSTOMER}")
    type_into(d, "login", LOGIN)
    submit_form_of(d, field(d, "login"))
    # The password is on the answer to the form, or on the customer's page the form leads back to.
    assert path_of(d) in (f"/customers/{CUSTOMER}", f"/customers/{CUSTOMER}/logins"), d.current_url
    generated = WebDriverWait(d, WAIT).until(EC.visibility_of_element_located((By.ID, "generated-password"))).text.strip()
    assert re.fullmatch(r"\S{12,}", generated), generated
    go(d, admin, f"/customers/{CUSTOMER}")
    assert not d.find_elements(By.ID, "generated-password") and generated not in d.page_source, "shown once only"
    assert LOGIN in d.page_source
    screenshot(d, "customer")

    # The login sends mail the way an application does: STARTTLS, AUTH, the customer's domain.
    ca = tls[0]
    message_id = submit_authenticated(pipeline.ingress_port, LOGIN, generated, make_message(
        "browser-submitted", sender=SENDER, rcpt="someone@dest.example"), ca, sender=SENDER, rcpts=("someone@dest.example",))
    wait_until(lambda: any(b"browser-submitted" in raw for _, _, raw in sink.snapshot()), 60, what="delivery to the sink")

    # The operator finds it by its sender and opens its trace.
    def search_result():
        go(d, admin, f"/messages?sender={quote(SENDER)}")
        links = d.find_elements(By.CSS_SELECTOR, f"a[href='/messages/{message_id}']")
        return links[0] if links else None

    link = wait_until(search_result, WAIT, interval=1, what="the message in the search results")
    screenshot(d, "messages")
    old = d.find_element(By.TAG_NAME, "html")
    link.click()
    WebDriverWait(d, WAIT).until(EC.staleness_of(old))
    assert path_of(d) == f"/messages/{message_id}", d.current_url

    def delivered():
        texts = event_texts(d)
        if any("delivered" in t for t in texts):
            return texts
        go(d, admin, f"/messages/{message_id}")
        return None

    texts = wait_until(delivered, WAIT, interval=1, what="the delivered event in the trace page")
    assert any("accepted" in t for t in texts) and any("delivered" in t for t in texts), texts
    screenshot(d, "message")

    # The other main pages, as an operator sees them.
    for path, name in [("/queue", "queue"), ("/tail", "tail"), ("/dkim", "dkim"), ("/tls", "tls"), ("/pools", "pools"),
                       ("/blacklist", "blacklist"), ("/audit", "audit")]:
        go(d, admin, path)
        assert path_of(d) == path, d.current_url
        assert heading(d), path
        if path == "/tail":
            time.sleep(2)  # let the live tail show something
        screenshot(d, name)

    # The audit page shows the operator's changes and no password.
    go(d, admin, "/audit")
    assert "alice" in d.page_source and CUSTOMER in d.page_source
    assert generated not in d.page_source and password not in d.page_source
