"""Issue 15: urgent writes (an order's way to its factory: ingest, routing, delivery claims) do not queue
behind a backlog of other writes on the SQLite writer; the two kinds are taken in turn, each in order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from relay.store.connector import Transaction
from relay.store.manager import RelayStore
from relay.store.sqlite import SQLiteConnector


async def test_urgent_writes_are_taken_in_turn_with_the_rest_each_kind_in_order(tmp_path: Path) -> None:
    connector = SQLiteConnector(str(tmp_path / "relay.db"))
    store = RelayStore(connector)
    await store.open()
    await store.migrate()
    ran: list[str] = []
    inside, go_on = threading.Event(), threading.Event()

    async def blocking(tx: Transaction) -> None:
        inside.set()
        go_on.wait(10)

    def unit(name: str) -> Callable[[Transaction], Awaitable[None]]:
        async def run(tx: Transaction) -> None:
            ran.append(name)

        return run

    try:
        first = asyncio.create_task(connector.run_write(blocking))
        assert await asyncio.to_thread(inside.wait, 10)
        queued = []
        for name in ("rest1", "rest2", "urgent1", "rest3", "urgent2", "urgent3"):
            write = connector.run_write(unit(name), urgent=name.startswith("urgent"))
            queued.append(asyncio.create_task(write))
            await asyncio.sleep(0)  # handed over in this order
        go_on.set()
        await asyncio.gather(first, *queued)
    finally:
        go_on.set()
        await store.close()
    assert ran == ["urgent1", "rest1", "urgent2", "rest2", "urgent3", "rest3"]
