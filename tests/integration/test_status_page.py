"""Issue 12, part 5: the status page's server side: off by default, loopback only, static HTML with no
external asset and a CSP pinning its inline script, and JSON data with PII masked. (The browser test,
`test_browser_status_page.py`, renders it in headless Chromium.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import aiohttp
import pytest

from adapters.webhook.fake import Fault
from relay.exceptions import ConfigurationError
from relay.observability.status_page import mask_pii
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

PAGE_ON = {"admin": {"listen": "127.0.0.1:0", "status_page": True}}


async def get(url: str) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False) as r:
        return r.status, await r.text(), dict(r.headers)


async def test_status_page_is_off_unless_configured(tmp_path):
    async with Harness(tmp_path) as h:
        async with h.app() as app:
            assert app.admin_url is None  # no admin listener at all by default
        async with h.app(settings=h.settings(admin={"listen": "127.0.0.1:0"})) as app:
            status, _, _ = await get(f"{app.admin_url}/status")
            data, _, _ = await get(f"{app.admin_url}/status.json")
            inbound, _, _ = await get(f"{app.inbound_url}/status")
    assert (status, data, inbound) == (404, 404, 404)


async def test_status_page_needs_a_loopback_admin_listener(tmp_path):
    async with Harness(tmp_path) as h:
        check_admin_settings(h)


def check_admin_settings(h: Harness) -> None:
    with pytest.raises(ConfigurationError) as missing:
        h.settings(admin={"status_page": True})
    with pytest.raises(ConfigurationError) as public:
        h.settings(admin={"listen": "0.0.0.0:9464", "status_page": True})
    with pytest.raises(ConfigurationError) as malformed:
        h.settings(admin={"listen": "9464"})
    problems = {
        name: dict(error.value.problems)
        for name, error in (("missing", missing), ("public", public), ("malformed", malformed))
    }
    assert "needs admin.listen" in problems["missing"]["admin.status_page"]
    assert "loopback" in problems["public"]["admin.status_page"]
    assert "host:port" in problems["malformed"]["admin.listen"]
    assert h.settings(admin={"listen": "[::1]:0", "status_page": True}).admin.status_page


async def test_page_is_self_contained_and_its_script_is_pinned_by_the_csp(tmp_path):
    async with Harness(tmp_path) as h, h.app(settings=h.settings(**PAGE_ON)) as app:
        root, _, root_headers = await get(f"{app.admin_url}/")
        status, page, headers = await get(f"{app.admin_url}/status")
    assert root == 302 and root_headers["Location"] == "/status"
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no external asset, no CDN
    assert "@import" not in page and "url(" not in page
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    csp = headers["Content-Security-Policy"]
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "innerHTML" not in page  # shop data goes into the DOM as text only


async def test_status_json_lists_dead_letters_and_held_orders_with_pii_masked(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.storefront.add_order([SeedLine("UNMAPPED-<b>")])
        h.factories["acme"].fail_next(
            Fault(
                status=422,
                body='{"error": "no such street for jane.doe@example.com, call +1 (555) 010-9999"}',
            )
        )
        async with h.app(settings=h.settings(**PAGE_ON)) as app:
            await app.run_once()
            status, text, headers = await get(f"{app.admin_url}/status.json")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    data = json.loads(text)
    [dead] = data["dead_letters"]
    assert dead["kind"] == "delivery" and dead["destination"] == "acme" and dead["number"] == "#1001"
    assert "[email]" in dead["last_error"] and "[phone]" in dead["last_error"]
    assert "jane.doe" not in text and "010-9999" not in text
    [held] = [a for a in data["attention"] if a["state"] == "held"]
    assert held["reason"] == "unknown_sku" and held["number"] == "#1002"
    assert "UNMAPPED-<b>" in held["detail"]  # JSON carries it as text; the page writes it as text
    assert data["orders_by_state"]["failed"] == 1 and data["orders_by_state"]["cancelled"] == 0
    assert {m for m, _ in data["placed_per_minute"]} == set()  # nothing placed: the 422 dead-lettered it


def test_mask_pii():
    assert mask_pii("mail a.b+c@shop.example.co.uk now") == "mail [email] now"
    assert mask_pii("call +44 20 7946 0958 or (555) 010-9999") == "call [phone] or [phone]"
    assert mask_pii("order #1042, 3 items, HTTP 422") == "order #1042, 3 items, HTTP 422"
    assert mask_pii(None) is None
