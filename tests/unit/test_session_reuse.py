"""Outbound sessions keep connections to a peer alive and reuse them (issue 15: connection reuse per
peer), and hold as many as the highest factory `concurrency`, so no delivery waits for a connection; the
egress check of a peer, remembered once passed, never remembers a refusal."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from relay.config import EgressSettings, FactorySettings
from relay.exceptions import UnsafeURL
from relay.outbound.session import MAX_CONNECTIONS, new_session


async def test_a_session_reuses_its_connections_to_a_peer() -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    opened: list[object] = []
    trace = aiohttp.TraceConfig()

    async def connection_opened(*_: object) -> None:
        opened.append(_)

    trace.on_connection_create_end.append(connection_opened)
    egress = EgressSettings(allow_plain_http=True, allow_private_addresses=True)
    try:
        async with new_session(egress, trace_configs=[trace]) as session:

            async def post() -> int:
                async with session.post(url, data=b"{}") as resp:
                    await resp.read()
                    return resp.status

            assert [await post() for _ in range(20)] == [200] * 20
            assert len(opened) == 1  # one after the other: one connection, kept alive
            for _ in range(3):
                assert await asyncio.gather(*(post() for _ in range(16))) == [200] * 16
            assert len(opened) <= 16  # 48 concurrent requests, never more connections than in flight
    finally:
        await runner.cleanup()


def test_the_pool_holds_the_highest_factory_concurrency() -> None:
    highest = FactorySettings.model_fields["concurrency"].metadata
    assert any(getattr(bound, "le", None) == MAX_CONNECTIONS for bound in highest)


async def test_a_refused_peer_stays_refused() -> None:
    egress = EgressSettings(allow_plain_http=True, allow_private_addresses=False)
    async with new_session(egress) as session:
        for _ in range(2):  # a refusal is never remembered as a pass
            with pytest.raises(UnsafeURL, match="address not allowed"):
                await session.get("https://10.1.2.3:9/orders")
            with pytest.raises(UnsafeURL, match="plain http is only allowed to loopback"):
                await session.get("http://10.1.2.3:9/orders")
