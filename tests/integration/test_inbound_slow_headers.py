"""Issue 11, item 12 (inbound part): the inbound server had no deadline for a request's headers and no
cap on connections, so clients dripping header bytes held connections open for as long as they liked
(200 of them stayed open 40 s). Now a request head must be in within `inbound.header_timeout_s` and at
most `inbound.max_connections` are open; real sockets, a short deadline, a normal callback meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

DEADLINE_S = 0.5
PARTIAL_HEAD = b"POST /v1/factories/acme/events HTTP/1.1\r\nHost: relay\r\n"


async def slow_client(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[None]]:
    """Connect, send part of a request head, and keep dripping one header byte every 50 ms."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(PARTIAL_HEAD)

    async def drip() -> None:
        try:
            while True:
                await asyncio.sleep(0.05)
                writer.write(b"X")
                await writer.drain()
        except (ConnectionError, RuntimeError):
            return

    return reader, writer, asyncio.create_task(drip())


async def closed_after(reader: asyncio.StreamReader) -> float:
    """Read until the server closes the connection; the time that took."""
    started = time.monotonic()
    try:
        while await reader.read(1024):
            pass
    except ConnectionError:
        pass
    return time.monotonic() - started


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def ship_one_callback(h: Harness, place: Callable[[], Awaitable[None]]) -> int:
    """Place an order, then have the factory report its parcel once (no retries); relay's answer."""
    await place()
    h.factories["acme"].callback_attempts = 1
    await h.factories["acme"].ship_all()
    return next(iter(h.factories["acme"].acked.values()), 0)


async def noop() -> None:
    return None


async def test_slow_header_connections_are_closed_at_the_deadline_while_a_callback_succeeds(tmp_path):
    deadline_s = 1.0  # long enough to open all 200 before the first is cut off, even on a slow machine
    inbound = {"header_timeout_s": deadline_s, "max_connections": 256}
    async with Harness(tmp_path, config={"inbound": inbound}) as h, h.app() as app:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        await app.run_once()  # the order is placed: the factory has a parcel to report
        clients = [await slow_client(app.inbound_url) for _ in range(200)]
        try:
            waits = [asyncio.ensure_future(closed_after(reader)) for reader, _, _ in clients]
            await until(lambda: app.inbound_guard is not None and app.inbound_guard.open == 200)
            status = await ship_one_callback(h, noop)  # while 200 connections drip headers
            lifetimes = await asyncio.wait_for(asyncio.gather(*waits), 5)
        finally:
            for _, writer, drip in clients:
                drip.cancel()
                writer.close()
        assert status == 200
        assert max(lifetimes) < deadline_s + 1.0  # before: still open after 5 s (no deadline at all)
        await until(lambda: app.inbound_guard is not None and app.inbound_guard.open == 0)
        assert app.inbound_guard.refused == 0


async def test_connections_over_the_cap_get_503_and_slots_free_up_at_the_deadline(tmp_path):
    inbound = {"header_timeout_s": DEADLINE_S, "max_connections": 5}
    async with Harness(tmp_path, config={"inbound": inbound}) as h, h.app() as app:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        clients = [await slow_client(app.inbound_url) for _ in range(5)]
        try:
            await until(lambda: app.inbound_guard is not None and app.inbound_guard.open == 5)
            reader, writer = await asyncio.open_connection(
                *app.inbound_url.removeprefix("http://").split(":")
            )
            status_line = await asyncio.wait_for(reader.readline(), 2)  # at once, not after the deadline
            writer.close()
            assert status_line.split(b" ")[1] == b"503"
            assert app.inbound_guard.refused == 1
            await asyncio.wait_for(asyncio.gather(*(closed_after(r) for r, _, _ in clients)), 5)
            status = await ship_one_callback(h, app.run_once)  # the attackers' slots are free again
        finally:
            for _, w, drip in clients:
                drip.cancel()
                w.close()
        assert status == 200


async def test_a_kept_alive_connection_dripping_its_next_head_is_closed_at_the_deadline(tmp_path):
    async with Harness(tmp_path, config={"inbound": {"header_timeout_s": DEADLINE_S}}) as h, h.app() as app:
        host, port = app.inbound_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        assert (await reader.readline()).split(b" ")[1] == b"200"
        await reader.readuntil(b"\r\n\r\n")
        writer.write(PARTIAL_HEAD)  # the next request's head, never finished
        try:
            lifetime = await asyncio.wait_for(closed_after(reader), 5)
        finally:
            writer.close()
        assert lifetime < DEADLINE_S + 1.0
