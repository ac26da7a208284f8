"""`Metrics.request_timer`: every outbound request of an adapter session lands in
`relay_http_request_duration_seconds` once, by role, peer and status class (`none`: no HTTP answer)."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from relay.config import EgressSettings
from relay.exceptions import RetriableAdapterError
from relay.observability.metrics import Metrics
from relay.outbound.session import new_session

LOOPBACK = EgressSettings(allow_plain_http=True, allow_private_addresses=True)


def count(metrics: Metrics, status_class: str) -> float | None:
    return metrics.registry.get_sample_value(
        "relay_http_request_duration_seconds_count",
        {"role": "storefront", "peer": "shop", "status_class": status_class},
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_each_request_is_timed_once_by_status_class() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def busy(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async def moved(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://127.0.0.1/elsewhere"})

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/busy", busy)
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    root = f"http://127.0.0.1:{runner.addresses[0][1]}"
    metrics = Metrics()
    try:
        async with new_session(LOOPBACK, middlewares=[metrics.request_timer("storefront", "shop")]) as s:
            for _ in range(2):
                async with s.get(f"{root}/ok") as r:
                    assert await r.json() == {"ok": True}
            async with s.get(f"{root}/busy") as r:
                assert r.status == 503
            # A redirect the egress policy refuses, and a refused connection: no HTTP answer either way.
            for url, error in (
                (f"{root}/moved", RetriableAdapterError),
                (f"http://127.0.0.1:{closed_port()}/", aiohttp.ClientConnectorError),
            ):
                with pytest.raises(error):
                    async with s.get(url):
                        pass
    finally:
        await runner.cleanup()
    assert count(metrics, "2xx") == 2
    assert count(metrics, "5xx") == 1
    assert count(metrics, "none") == 2
