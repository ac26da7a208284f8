"""Issue 11, item 12 end to end: a factory's `Retry-After: 1e9` parks nothing for decades and its open
circuit shows in `/healthz`; hostile webhook headers on the wire get 401, never a 500."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import aiohttp
import pytest
import yarl

from adapters.webhook.fake import Fault
from relay.domain.retry import MAX_RETRY_AFTER_S
from relay.signing import signed_headers
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("hint", [1e9, float("inf")])
async def test_huge_retry_after_is_capped_and_the_open_circuit_is_reported(tmp_path, hint):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.factories["acme"].fail_next(Fault(status=503, retry_after=hint))
        async with h.app() as app:
            await app.run_once()
            status, body = await get(f"{app.inbound_url}/healthz")
            assert "factory:acme" in app.health()["failing"]
    assert status == 503
    assert body == {"status": "degraded", "failing": ["factory:acme"]}
    with sqlite3.connect(tmp_path / "relay.db") as db:
        (due,) = db.execute("SELECT next_attempt_at FROM factory_orders WHERE factory = 'acme'").fetchone()
    assert due is not None
    assert due <= time.time() + MAX_RETRY_AFTER_S + 5


async def raw_post(url: str, header_lines: list[bytes], body: bytes) -> int:
    """POST with header bytes exactly as given (clients refuse to send non-UTF-8 header values)."""
    parsed = yarl.URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    head = [
        f"POST {parsed.raw_path} HTTP/1.1".encode(),
        f"Host: {parsed.host}:{parsed.port}".encode(),
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        b"Connection: close",
        *header_lines,
    ]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


@pytest.mark.parametrize(
    "field",
    [
        ("webhook-timestamp", b"9" * 400),
        ("webhook-id", b"msg_\xff\xfe"),
        ("webhook-signature", b"v1,\xffabc"),
    ],
)
async def test_hostile_callback_headers_get_401_not_500(tmp_path, field):
    name, value = field
    async with Harness(tmp_path) as h, h.app() as app:
        body = json.dumps({"type": "shipment.created", "data": {}}).encode()
        secret = h.factories["acme"].callback_secret
        headers = signed_headers(secret, "msg_1", int(time.time()), body)
        headers[name] = "PLACEHOLDER"
        lines = [f"{k}: {v}".encode() if k != name else f"{k}: ".encode() + value for k, v in headers.items()]
        status = await raw_post(app.callback_url("acme"), lines, body)
    assert status == 401
