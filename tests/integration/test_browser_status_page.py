"""Issue 12, part 5: the status page in a real browser. Debian's headless Chromium, driven by Selenium
through `/usr/bin/chromedriver`, loads the page from a running daemon (in-process App, fake storefront and
factories), finds the dead-lettered order's row, checks that shop data was written as text (a factory's
answer quoting markup does not become markup) and saves a screenshot.

Without Chromium or chromedriver the test skips, saying why; with `RELAY_REQUIRE_BROWSER=1` (CI sets it in
`.ci/run`) it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest

from adapters.webhook.fake import Fault
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE = '<img src=x onerror="document.title=`pwned`"><script>document.title="pwned"</script>'


def browser_or_skip() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if not missing:
        return
    reason = f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver"
    if os.environ.get("RELAY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"RELAY_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def open_page(url: str, screenshot: Path) -> dict[str, Any]:
    """Load the status page headless, wait for its data, read the dead letter's row, take a screenshot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        options.add_argument(arg)
    # Chromium keeps its profile and singleton socket under TMPDIR: a short-lived directory of the test's
    # (short: a unix socket path has ~100 bytes), so a run leaves nothing behind in /tmp.
    scratch = tempfile.TemporaryDirectory(prefix="relay-chromium-")
    options.add_argument(f"--user-data-dir={scratch.name}/profile")
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TMPDIR": scratch.name})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.get(url)
        WebDriverWait(driver, 8).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
        )
        rows = driver.find_elements(By.CSS_SELECTOR, "#dead tr.dead-letter")
        cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
        ids = [row.get_attribute("data-order-id") for row in rows]
        held = [
            [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, "#attention tr.attention")
        ]
        injected = driver.find_elements(By.CSS_SELECTOR, "#dead img, #dead script, #attention img")
        lines = driver.find_elements(By.CSS_SELECTOR, "#chart polyline")
        driver.save_screenshot(str(screenshot))
        return {
            "cells": cells,
            "ids": ids,
            "held": held,
            "injected": len(injected),
            "title": driver.title,
            "series": sorted(line.get_attribute("data-series") for line in lines),
            "errors": [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"],
        }
    finally:
        driver.quit()
        scratch.cleanup()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_status_page_shows_the_dead_lettered_order_in_chromium(tmp_path):
    browser_or_skip()
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])  # acme refuses it: dead-lettered
        h.storefront.add_order([SeedLine("MUG-WHT")])  # placed at bolt
        h.storefront.add_order([SeedLine("UNMAPPED")])  # held: unknown_sku
        h.factories["acme"].fail_next(Fault(status=422, body=f'{{"error": "{HOSTILE}"}}'))
        settings = h.settings(admin={"listen": "127.0.0.1:0", "status_page": True})
        async with h.app(settings=settings) as app:
            await app.run_once()
            dead = await app.store.find_order(1)
            assert dead is not None and dead.order.state == "failed"
            shot = tmp_path / "status-page.png"
            page = await asyncio.to_thread(open_page, f"{app.admin_url}/status", shot)

    assert page["ids"] == ["1"]
    [row] = page["cells"]
    assert row[:4] == ["delivery", "1", "#1001", "acme"]
    assert "HTTP 422" in row[5] and "<script>" in row[5]  # the factory's answer, shown as text
    assert page["injected"] == 0 and page["title"] == "relay status"
    assert any(r[4] == "unknown_sku" and r[2] == "#1003" for r in page["held"])
    assert page["series"] == ["placed", "pushed"]
    assert page["errors"] == []  # no CSP violation, no script error
    width, height = png_size(shot)
    assert (width, height) >= (800, 600)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_a_missing_browser_skips_with_its_reason_or_fails_when_required(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda path: None)
    monkeypatch.delenv("RELAY_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        browser_or_skip()
    monkeypatch.setenv("RELAY_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="RELAY_REQUIRE_BROWSER=1 but /usr/bin/chromium and"):
        browser_or_skip()
