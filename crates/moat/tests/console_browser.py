#!/usr/bin/env python3
"""Drives the Moat web console in headless Chromium with Playwright (called by
tests/console.rs, which prepares the hub and checks the outcome from the hub's side).

Usage: console_browser.py CONFIG.json
CONFIG: base (admin URL), chromium (path), admin_token, viewer_token (read-only operator),
campaign (id of a running campaign), fleet (argv that connects its devices), shots (dir for
screenshots), downloads (dir for downloaded files), victim (a device the viewer tries to
revoke).

Every step asserts what a user would see; the first failure raises and exits non-zero.
"""

import json
import os
import re
import subprocess
import sys

from playwright.sync_api import expect, sync_playwright

cfg = json.load(open(sys.argv[1]))
BASE = cfg["base"].rstrip("/")
SHOTS = cfg["shots"]
DOWNLOADS = cfg["downloads"]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
expect.set_options(timeout=15_000)


def step(msg):
    print(f"- {msg}", flush=True)


def shot(page, name, full=True):
    page.screenshot(path=os.path.join(SHOTS, name), full_page=full)


def sign_in(page, token):
    page.goto(f"{BASE}/console/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/devices$"))


def csrf_of(page):
    return page.locator("input[name=csrf]").first.get_attribute("value")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=cfg["chromium"], headless=True, args=ARGS
    )
    # The hub's certificate is issued by its own CA, which this throwaway profile does not
    # trust; the TLS itself is what the rest of the suite tests with openssl and curl.
    ctx = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": 1280, "height": 860},
        accept_downloads=True,
        color_scheme="light",
    )
    page = ctx.new_page()

    step("signed out: pages send to the sign-in form; a wrong token is refused")
    page.goto(f"{BASE}/console/devices")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    page.fill("#token", "moat_op_not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("not valid")
    shot(page, "01-sign-in.png")

    step("sign in as admin; the session cookie is HttpOnly, Secure, SameSite=Strict")
    sign_in(page, cfg["admin_token"])
    cookie = [c for c in ctx.cookies() if c["name"] == "__Host-moat_session"]
    assert len(cookie) == 1, ctx.cookies()
    c = cookie[0]
    assert c["httpOnly"] and c["secure"] and c["sameSite"] == "Strict", c
    headers = page.request.get(f"{BASE}/console/devices").headers
    assert "default-src 'none'" in headers["content-security-policy"], headers
    assert headers["cache-control"] == "no-store", headers

    step("device list: the fleet is there, search narrows it")
    expect(page.get_by_test_id("device-count")).to_contain_text("4 devices")
    page.fill("input[name=q]", "fleet-000002")
    page.click("form.search button")
    expect(page.get_by_test_id("device-count")).to_contain_text("1 devices")
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    # Out-of-range and odd input gets a page, not an error or a crash.
    r = page.goto(f"{BASE}/console/devices?page=18446744073709551615")
    assert r.status == 200, r.status
    expect(page.locator("table.list")).to_contain_text("No device matches")
    r = page.goto(f"{BASE}/console/devices?q=%25_%5C%27%22%3Cscript%3E")
    assert r.status == 200, r.status
    expect(page.get_by_test_id("device-count")).to_contain_text("0 devices")
    r = page.goto(f"{BASE}/console/devices?state=bogus")
    assert r.status == 400, r.status
    expect(page.locator("[role=alert]")).to_contain_text("active, disabled, revoked")
    r = page.goto(f"{BASE}/console/devices/no-such-device")
    assert r.status == 404, r.status
    page.goto(f"{BASE}/console/devices")
    shot(page, "02-devices.png")

    step("create a device: certificate and key shown once, downloadable")
    page.click("text=Create device")
    page.fill("#id", "web-1")
    page.click("button:has-text('Create')")
    expect(page.get_by_test_id("key-warning")).to_be_visible()
    key = page.get_by_test_id("private-key").inner_text()
    assert "BEGIN PRIVATE KEY" in key, key
    cert = page.get_by_test_id("certificate").inner_text()
    assert "BEGIN CERTIFICATE" in cert
    with page.expect_download() as dl:
        page.click("text=Download private key")
    dl.value.save_as(os.path.join(DOWNLOADS, "web-1.key.pem"))
    with page.expect_download() as dl:
        page.click("text=Download certificate")
    dl.value.save_as(os.path.join(DOWNLOADS, "web-1.crt.pem"))
    with open(os.path.join(DOWNLOADS, "web-1.key.pem")) as f:
        assert f.read().strip() == key.strip(), "the download is the key shown"
    shot(page, "03-key-once.png")

    step("a reload no longer shows the key")
    resp = page.reload()
    assert resp.status == 410, resp.status
    expect(page.get_by_test_id("key-gone")).to_be_visible()
    assert "PRIVATE KEY" not in page.content()
    page.go_back()
    assert "PRIVATE KEY" not in page.content()

    step("revoke it behind a confirmation; the state changes")
    page.goto(f"{BASE}/console/devices/web-1")
    expect(page.get_by_test_id("device-state")).to_contain_text("enrolled")
    shot(page, "04-device.png")
    page.click("a:has-text('Revoke')")
    expect(page).to_have_url(re.compile(r"/confirm/revoke$"))
    page.select_option("#reason", "key_compromise")
    page.click("button:has-text('Revoke')")
    expect(page).to_have_url(re.compile(r"/console/devices/web-1$"))
    expect(page.get_by_test_id("device-state")).to_contain_text("decommissioned")
    expect(page.locator(".flash.ok")).to_contain_text("revoked")
    expect(page.locator("table.list").first).to_contain_text("key_compromise")
    shot(page, "05-device-revoked.png")

    step("forged or missing CSRF tokens are refused, and nothing changes")
    for form in ({"csrf": "forged"}, {}):
        r = page.request.post(
            f"{BASE}/console/devices/{cfg['victim']}/disable", form=form
        )
        assert r.status == 403, (form, r.status)
        assert "security token" in r.text(), r.text()
    # A page of another origin posting with the right token is refused too.
    token = csrf_of(page)
    r = page.request.post(
        f"{BASE}/console/devices/{cfg['victim']}/disable",
        form={"csrf": token},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert r.status == 403, r.status
    page.goto(f"{BASE}/console/devices/{cfg['victim']}")
    expect(page.get_by_test_id("device-state")).to_contain_text("enrolled")

    step("watch the campaign advance while the fleet updates")
    page.goto(f"{BASE}/console/campaigns/{cfg['campaign']}")
    expect(page.get_by_test_id("campaign-state")).to_contain_text("running")
    expect(page.get_by_test_id("wave-chart")).to_be_visible()
    confirmed = page.locator("table[data-testid=waves] td[data-state=confirmed]")
    expect(confirmed.first).to_have_text("0")
    shot(page, "06-campaign-running.png")
    fleet = subprocess.Popen(
        cfg["fleet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # The page reloads itself every 2 s while the campaign runs.
        expect(page.get_by_test_id("campaign-state")).to_contain_text(
            "succeeded", timeout=120_000
        )
        expect(confirmed.nth(0)).to_have_text("2")
        expect(confirmed.nth(1)).to_have_text("2")
        shot(page, "06-campaign-done.png")
    finally:
        fleet.terminate()
        try:
            fleet.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fleet.kill()

    step("the devices that updated show as connected or recently seen")
    page.goto(f"{BASE}/console/devices?q=fleet-000000")
    row = page.locator("table.list tbody tr").first
    expect(row).to_contain_text(re.compile(r"connected|just now|min ago"))
    expect(row).to_contain_text("1.2.0")  # the firmware it reported

    step("audit log: filter by target, and the security events")
    page.goto(f"{BASE}/console/audit")
    page.fill("input[name=target]", "web-1")
    page.click("form.search button")
    audit = page.get_by_test_id("audit")
    expect(audit).to_contain_text("device.create")
    expect(audit).to_contain_text("device.revoke")
    shot(page, "07-audit.png")
    page.goto(f"{BASE}/console/audit?outcome=refused")
    expect(page.get_by_test_id("audit")).to_contain_text("console.csrf")
    expect(page.get_by_test_id("audit")).to_contain_text("console.cross_origin")

    step("certificate authorities, posture, firmware, overview")
    page.goto(f"{BASE}/console/cas")
    expect(page.locator("main")).to_contain_text("Download the CA bundle")
    bundle = page.request.get(f"{BASE}/console/cas/bundle.pem")
    assert bundle.status == 200 and "BEGIN CERTIFICATE" in bundle.text()
    page.click("button:has-text('Get a code')")
    flash = page.locator(".flash.ok")
    expect(flash).to_contain_text("Registration code")
    code = re.search(r"Registration code: (\S+)", flash.inner_text()).group(1)
    # Proof of possession: a certificate with CN = the code, signed by the vendor CA's key.
    work = cfg["work"]
    vkey, vcsr, vcert = (os.path.join(work, n) for n in ("v.key", "v.csr", "v.pem"))
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", vkey, "-subj", f"/CN={code}", "-out", vcsr],
        check=True, capture_output=True,
    )
    subprocess.run(
        ["openssl", "x509", "-req", "-in", vcsr, "-CA", cfg["vendor_cert"], "-CAkey",
         cfg["vendor_key"], "-set_serial", "0x1234", "-days", "1", "-out", vcert],
        check=True, capture_output=True,
    )
    page.fill("#ca-name", "acme-se")
    page.fill("#ca-cert", open(cfg["vendor_cert"]).read())
    page.fill("#ca-verification", open(vcert).read())
    page.select_option("#ca-identity", "cn")
    page.click("button:has-text('Register')")
    expect(page.locator(".flash.ok")).to_contain_text("CA acme-se is registered")
    expect(page.locator("main")).to_contain_text("acme-se Root")
    shot(page, "08-cas.png")
    # The same code cannot be used twice.
    page.fill("#ca-name", "acme-se-2")
    page.fill("#ca-cert", open(cfg["vendor_cert"]).read())
    page.fill("#ca-verification", open(vcert).read())
    page.click("button:has-text('Register')")
    expect(page.locator("[role=alert]")).to_be_visible()
    page.goto(f"{BASE}/console/posture")
    expect(page.get_by_test_id("findings")).to_be_visible()
    shot(page, "09-posture.png")
    page.goto(f"{BASE}/console/firmware")
    expect(page.get_by_test_id("campaigns")).to_contain_text(cfg["campaign"])
    shot(page, "10-firmware.png")

    step("a phone-sized screen and the dark scheme")
    phone = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        storage_state=ctx.storage_state(),
    )
    pp = phone.new_page()
    pp.goto(f"{BASE}/console/devices")
    expect(pp.get_by_test_id("device-count")).to_be_visible()
    shot(pp, "11-devices-phone.png")
    phone.close()
    dark = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": 1280, "height": 860},
        color_scheme="dark",
        storage_state=ctx.storage_state(),
    )
    dp = dark.new_page()
    dp.goto(f"{BASE}/console")
    expect(dp.get_by_test_id("posture-findings")).to_be_visible()
    bg = dp.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(13, 17, 23)", bg
    shot(dp, "12-overview-dark.png")
    dark.close()

    step("sign out ends the session")
    page.goto(f"{BASE}/console/devices")
    page.click("button:has-text('Sign out')")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    page.goto(f"{BASE}/console/devices")
    expect(page).to_have_url(re.compile(r"/console/login$"))

    step("a read-only operator reads but cannot revoke")
    ro = browser.new_context(ignore_https_errors=True)
    rp = ro.new_page()
    sign_in(rp, cfg["viewer_token"])
    expect(rp.get_by_test_id("who")).to_contain_text("read-only")
    assert rp.locator("text=Create device").count() == 0
    rp.goto(f"{BASE}/console/devices/{cfg['victim']}")
    expect(rp.get_by_test_id("device-state")).to_be_visible()
    assert rp.locator("a:has-text('Revoke')").count() == 0, "no revoke button"
    r = rp.request.post(
        f"{BASE}/console/devices/{cfg['victim']}/revoke", form={"csrf": csrf_of(rp)}
    )
    assert r.status == 403, r.status
    assert "read-only" in r.text(), r.text()
    rp.goto(f"{BASE}/console/devices/{cfg['victim']}/confirm/revoke")
    rp.click("button:has-text('Revoke')")
    expect(rp.locator("[role=alert]")).to_contain_text("may not")
    rp.goto(f"{BASE}/console/devices/{cfg['victim']}")
    expect(rp.get_by_test_id("device-state")).not_to_contain_text("decommissioned")
    ro.close()

    browser.close()
print("console: all browser checks passed")
