"""Issue 11, item 13: "cannot start a transaction within a transaction" on the writer connection.

The interleaving: at shutdown the supervisor cancels the quick loops (pollers, router) at once while the
shipper and forwarder drain and commit. A poller cancelled while its `BEGIN IMMEDIATE` was in flight
released the connection lock at once, but aiosqlite still ran the `BEGIN` in its thread afterwards: the
connection stayed inside a transaction nobody owned, and the next write (the shipper's commit) failed
with "cannot start a transaction within a transaction" (and so did every write after it).

Since ADR 12 a whole transaction is one unit on the writer's thread: a cancelled caller's unit either
never starts or ends (commit or rollback) before the cancellation goes on."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from relay.exceptions import StoreError
from relay.store.connector import Transaction
from relay.store.manager import RelayStore
from relay.store.sqlite import SQLiteConnector


async def _store(tmp_path: Path) -> RelayStore:
    store = RelayStore(SQLiteConnector(str(tmp_path / "relay.db")))
    await store.open()
    await store.migrate()
    return store


def _connector(store: RelayStore) -> SQLiteConnector:
    assert isinstance(store.connector, SQLiteConnector)
    return store.connector


async def _in_transaction(store: RelayStore) -> bool:
    return await _connector(store).on_writer(lambda db: db.in_transaction)


async def test_a_write_cancelled_during_begin_leaves_the_writer_out_of_any_transaction(
    tmp_path: Path,
) -> None:
    store = await _store(tmp_path)
    try:
        for _ in range(3):  # cancelled at its first await: the unit is withdrawn or runs to its end
            task = asyncio.create_task(store.set_factory_cursor("acme", "lost", 1.0))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await store.set_factory_cursor("acme", "c2", 2.0)  # before the fix: StoreError, nested transaction
        assert await store.get_factory_cursor("acme") == "c2"
        assert not await _in_transaction(store)
    finally:
        await store.close()


async def test_a_caller_cancelled_while_its_transaction_runs_returns_only_once_it_ended(
    tmp_path: Path,
) -> None:
    """Cancelled (twice) while its unit runs on the writer's thread, the caller waits for the unit's end:
    when the cancellation reaches it, the transaction is committed and the writer is free."""
    store = await _store(tmp_path)
    connector = _connector(store)
    inside = threading.Event()
    go_on = threading.Event()

    async def slow(tx: Transaction) -> None:
        await tx.execute("set_factory_cursor", name="acme", cursor="committed late", now=1.0)
        inside.set()
        go_on.wait(10)  # blocks the writer's thread, like a long statement would

    try:
        task = asyncio.create_task(connector.run_write(slow))
        assert await asyncio.to_thread(inside.wait, 10)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()  # again, while it waits for the unit's end
        await asyncio.sleep(0.01)
        assert not task.done()  # the unit still runs: the caller has not returned
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await _in_transaction(store)
        assert await store.get_factory_cursor("acme") == "committed late"
    finally:
        go_on.set()
        await store.close()


async def test_a_unit_queued_behind_another_is_withdrawn_when_its_caller_is_cancelled(
    tmp_path: Path,
) -> None:
    store = await _store(tmp_path)
    connector = _connector(store)
    inside = threading.Event()
    go_on = threading.Event()

    async def blocking(tx: Transaction) -> None:
        inside.set()
        go_on.wait(10)

    try:
        first = asyncio.create_task(connector.run_write(blocking))
        assert await asyncio.to_thread(inside.wait, 10)
        queued = asyncio.create_task(store.set_factory_cursor("acme", "never", 1.0))
        await asyncio.sleep(0.01)
        queued.cancel()
        await asyncio.sleep(0.01)
        go_on.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await store.get_factory_cursor("acme") is None  # withdrawn: it never ran
    finally:
        go_on.set()
        await store.close()


async def test_a_unit_that_suspends_is_rolled_back_and_refused(tmp_path: Path) -> None:
    """Nothing on the writer's thread may await the caller's loop: a unit that suspends (here on a sleep)
    is closed and rolled back, and the writer goes on with the next one."""
    store = await _store(tmp_path)
    connector = _connector(store)

    async def suspends(tx: Transaction) -> None:
        await tx.execute("set_factory_cursor", name="acme", cursor="rolled back", now=1.0)
        await asyncio.sleep(0)

    try:
        with pytest.raises(StoreError, match="suspended"):
            await connector.run_write(suspends)
        assert not await _in_transaction(store)
        await store.set_factory_cursor("bolt", "kept", 2.0)
        assert await store.get_factory_cursor("acme") is None
        assert await store.get_factory_cursor("bolt") == "kept"
    finally:
        await store.close()


async def test_reads_never_run_on_the_writer_connection(tmp_path: Path) -> None:
    """A read while a write transaction is open neither waits for it nor sees its uncommitted rows: it
    runs on its own query-only connection (and thread), so it cannot interleave with the writer's
    transaction."""
    store = await _store(tmp_path)
    connector = _connector(store)
    await store.set_factory_cursor("acme", "committed", 1.0)
    inside = threading.Event()
    go_on = threading.Event()

    async def uncommitted(tx: Transaction) -> None:
        await tx.execute("set_factory_cursor", name="acme", cursor="uncommitted", now=2.0)
        inside.set()
        go_on.wait(10)

    try:
        write = asyncio.create_task(connector.run_write(uncommitted))
        assert await asyncio.to_thread(inside.wait, 10)
        assert await asyncio.wait_for(store.get_factory_cursor("acme"), 5) == "committed"
        go_on.set()
        await write
        assert await store.get_factory_cursor("acme") == "uncommitted"
    finally:
        go_on.set()
        await store.close()
