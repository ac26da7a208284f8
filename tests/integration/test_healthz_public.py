"""Issue 11, item 11 (the `/healthz` part): `/healthz` is on the public inbound port, and it returned each
failing loop's last error, which can quote a URL with a credential in it (a WooCommerce redirect echoing
`consumer_secret`). It now gives the failing components' names only; the errors stay in the logs and in
`App.health()` (for the CLI)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp

from relay.exceptions import RetriableAdapterError, StoreUnavailable
from relay.testing.harness import Harness

SECRET = "cs_hunter2hunter2"


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def test_healthz_names_failing_loops_without_their_errors(tmp_path, monkeypatch):
    async with Harness(tmp_path) as h, h.app() as app:
        poller = app.pollers[0]

        async def leaky(since: object) -> AsyncIterator[list[object]]:
            raise RetriableAdapterError(f"redirected to https://shop.example/?consumer_secret={SECRET}")
            yield []  # pragma: no cover

        monkeypatch.setattr(poller.adapter, "fetch_orders", leaky)
        await app.run_once()
        status, body = await get(f"{app.inbound_url}/healthz")
        details = app.health()
    assert status == 503
    assert SECRET not in body
    assert json.loads(body) == {"status": "degraded", "failing": ["poller:shop"]}
    assert SECRET in details["failing"]["poller:shop"]  # kept for logs and the CLI


async def test_healthz_and_metrics_hide_the_store_error(tmp_path, monkeypatch):
    admin = {"listen": "127.0.0.1:0"}
    async with Harness(tmp_path) as h, h.app(settings=h.settings(admin=admin)) as app:

        async def down() -> None:
            raise StoreUnavailable(f"unable to open database file /srv/{SECRET}/relay.db")

        monkeypatch.setattr(app.store, "ping", down)
        monkeypatch.setattr(app.store, "stats", down)
        health = await get(f"{app.inbound_url}/healthz")
        metrics = await get(f"{app.admin_url}/metrics")  # the admin listener's
    assert health[0] == metrics[0] == 503
    assert SECRET not in health[1] and SECRET not in metrics[1]
    assert json.loads(health[1]) == {"status": "unavailable", "failing": ["store"]}


async def test_healthz_ok_lists_nothing(tmp_path):
    async with Harness(tmp_path) as h, h.app() as app:
        await app.run_once()
        status, body = await get(f"{app.inbound_url}/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok", "failing": []})
