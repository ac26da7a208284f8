"""Issue 11, item 11 (and matrix row 20): no configured secret ever leaves the process.

A realistic run with every kind of configured secret (a storefront token, two WooCommerce stores on
`query_string_auth`, factory signing secrets and callback secrets) and the failures that quote URLs:
a WooCommerce host whose every answer is a redirect echoing the request URL (consumer key and secret in
its query), a proxy in front of a working store that starts redirecting mid-run (so a tracking push fails
with it and its error is stored), a store that is down, a factory whose answer is a redirect to a URL with
credentials, and a factory whose error body quotes one. Then every captured log line (structlog and
stdlib), every TEXT value in every table of the database, and every HTTP response body the daemon served
(callbacks, `/healthz`, the admin listener's `/metrics`) is scanned for each secret, raw and in its usual encodings.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from adapters.webhook.fake import Fault
from adapters.woocommerce.fake import FakeWooCommerce
from relay import logging as relay_logging
from relay.inbound.callbacks import FactoryCallbacks
from relay.inbound.ops import OpsEndpoints
from relay.signing import signed_headers
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


class RedirectingProxy:
    """In front of a store: forwards requests, or (while `redirecting`) answers 301 with the request URL,
    query string and all, on another host, as a WordPress site moved to https or www does."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.redirecting = False
        self.redirects = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.redirecting or not self.upstream:
            self.redirects += 1
            raise web.HTTPMovedPermanently(location=f"https://www.shop.example{request.path_qs}")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=await request.read()
        ) as upstream:
            body = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=body,
                headers={k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "link")}
                | {k: v for k, v in upstream.headers.items() if k.lower().startswith("x-wp-")},
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def encodings(secret: str) -> set[str]:
    """A secret as it could appear: raw, URL-quoted, base64 (`whsec_` body), inside HTTP Basic auth."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    forms.add(secret.removeprefix("whsec_"))
    forms.add(base64.b64encode(secret.encode()).decode())
    return {f for f in forms if len(f) >= 8}


def database_text(path: Path) -> list[tuple[str, str, str]]:
    """(table, column, value) for every non-NULL value of every column of every table, as text."""
    out = []
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                query = f'SELECT CAST("{column}" AS TEXT) FROM "{table}" WHERE "{column}" IS NOT NULL'
                out += [(table, column, value) for (value,) in db.execute(query)]
    return out


async def test_no_configured_secret_reaches_logs_database_or_responses(tmp_path, monkeypatch, caplog):  # noqa: PLR0915
    served: list[str] = []
    statuses: list[int] = []

    def recording(handler: Any) -> Any:
        async def wrapped(self: Any, request: web.Request) -> web.StreamResponse:
            response = await handler(self, request)
            body = getattr(response, "body", None) or getattr(response, "text", "") or b""
            served.append(body.decode(errors="replace") if isinstance(body, bytes) else str(body))
            return response

        return wrapped

    monkeypatch.setattr(FactoryCallbacks, "factory_event", recording(FactoryCallbacks.factory_event))
    monkeypatch.setattr(OpsEndpoints, "healthz", recording(OpsEndpoints.healthz))
    monkeypatch.setattr(OpsEndpoints, "metrics", recording(OpsEndpoints.metrics))
    caplog.set_level(logging.DEBUG)
    buf = io.StringIO()
    relay_logging.configure("json", "debug", stream=buf)

    woo = FakeWooCommerce(
        consumer_key="ck_5e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f",
        consumer_secret="cs_7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b",  # noqa: S106 (the fake's key)
    )
    moved_key, moved_secret = (
        "ck_0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
        "cs_f0e1d2c3b4a5968778695a4b3c2d1e0f98765432",
    )
    down_key, down_secret = (
        "ck_aa11bb22cc33dd44ee55ff6677889900aabbccdd",
        "cs_99887766554433221100ffeeddccbbaa00112233",
    )
    moved = RedirectingProxy("")  # every answer a redirect
    proxy = RedirectingProxy("")
    try:
        async with Harness(tmp_path) as h:
            await woo.start()
            await moved.start()
            proxy.upstream = woo.url
            await proxy.start()
            stores = {
                "woo": {
                    "adapter": "woocommerce",
                    **woo.adapter_options(),
                    "store_url": proxy.url,
                    "query_string_auth": True,
                },
                "moved": {
                    "adapter": "woocommerce",
                    "store_url": moved.url,
                    "consumer_key": moved_key,
                    "consumer_secret": moved_secret,
                    "query_string_auth": True,
                },
                "down": {
                    "adapter": "woocommerce",
                    "store_url": f"http://127.0.0.1:{free_port()}",
                    "consumer_key": down_key,
                    "consumer_secret": down_secret,
                    "query_string_auth": True,
                },
            }
            settings = h.settings(storefronts=stores, admin={"listen": "127.0.0.1:0"})
            acme, bolt = h.factories["acme"], h.factories["bolt"]
            secrets = [
                h.storefront.token,
                woo.consumer_key,
                woo.consumer_secret,
                moved_key,
                moved_secret,
                down_key,
                down_secret,
                acme.signing_secret,
                acme.callback_secret,
                bolt.signing_secret,
                bolt.callback_secret,
            ]
            h.storefront.add_order([SeedLine("TEE-RED-M")])
            h.storefront.add_order([SeedLine("MUG-WHT")])
            woo.add_order([SeedLine("TEE-BLU-L")])
            woo.add_order([SeedLine("CAP-BLK")])
            # bolt: first a redirect to a URL with credentials, then an error body quoting one.
            bolt.fail_next(
                Fault(
                    status=302,
                    headers={
                        "Location": f"https://ops:{bolt.callback_secret}@bolt-new.example/orders"
                        f"?token={bolt.signing_secret}"
                    },
                ),
                Fault(
                    status=502,
                    body=f'{{"error": "upstream https://ops:{bolt.callback_secret}@10.0.0.9/orders'
                    f'?signature={bolt.signing_secret}"}}',
                ),
                times=3,
            )
            async with h.app(settings=settings) as app:
                await app.run_once()
                await acme.ship_all()
                proxy.redirecting = True  # the store moves: the tracking push meets a redirect
                await app.run_once()
                assert proxy.redirects > 0
                # Callbacks: a bad signature, hostile headers, a replay; health and metrics.
                body = b'{"type": "shipment.created"}'
                async with aiohttp.ClientSession() as s:
                    for headers in (
                        signed_headers("wrong-secret-value", "m1", int(time.time()), body),
                        {
                            **signed_headers(acme.callback_secret, "m2", int(time.time()), body),
                            "webhook-timestamp": "9" * 400,
                        },
                        signed_headers(
                            acme.callback_secret, "m3", int(time.time()), body
                        ),  # 422: not an event
                    ):
                        async with s.post(app.callback_url("acme"), data=body, headers=headers) as r:
                            statuses.append(r.status)
                    for url in (
                        f"{app.inbound_url}/healthz",
                        f"{app.admin_url}/healthz",
                        f"{app.admin_url}/metrics",
                    ):
                        async with s.get(url) as r:
                            await r.read()
                failing = app.health()["failing"]
    finally:
        structlog.reset_defaults()
        await proxy.close()
        await moved.close()
        await woo.close()

    logs = buf.getvalue().splitlines() + [r.getMessage() for r in caplog.records]
    rows = database_text(tmp_path / "relay.db")
    hits = []
    for secret in secrets:
        for form in encodings(secret):
            hits += [f"log: {line[:200]}" for line in logs if form in line]
            hits += [f"db {t}.{c}: {v[:200]}" for t, c, v in rows if form in v]
            hits += [f"response: {b[:200]}" for b in served if form in b]
    assert not hits, f"{len(hits)} leaks:\n" + "\n".join(hits[:40])
    # The failures really happened and were recorded (scrubbed), so the scan above means something.
    assert len(logs) > 20 and len(rows) > 50 and len(served) >= 5
    assert any("www.shop.example" in line and "[redacted]" in line for line in logs)
    assert any(col == "last_error" and "[redacted]" in value for _, col, value in rows)
    assert {"poller:moved", "poller:down", "factory:bolt"} <= set(failing)
    assert statuses == [401, 401, 422]
