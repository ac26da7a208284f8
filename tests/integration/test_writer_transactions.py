"""Issue 11, item 13: "cannot start a transaction within a transaction" on the writer connection.

The interleaving: at shutdown the supervisor cancels the quick loops (pollers, router) at once while the
shipper and forwarder drain and commit. A poller cancelled while its `BEGIN IMMEDIATE` was in flight
released the connection lock at once, but aiosqlite still ran the `BEGIN` in its thread afterwards: the
connection stayed inside a transaction nobody owned, and the next write (the shipper's commit) failed
with "cannot start a transaction within a transaction" (and so did every write after it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.store.manager import RelayStore
from relay.store.sqlite import SQLiteConnector


async def _store(tmp_path: Path) -> RelayStore:
    store = RelayStore(SQLiteConnector(str(tmp_path / "relay.db")))
    await store.open()
    await store.migrate()
    return store


async def test_a_write_cancelled_during_begin_leaves_the_writer_out_of_any_transaction(
    tmp_path: Path,
) -> None:
    store = await _store(tmp_path)
    try:
        for _ in range(3):  # cancelled at its first await: the BEGIN IMMEDIATE still runs in the thread
            task = asyncio.create_task(store.set_factory_cursor("acme", "lost", 1.0))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await store.set_factory_cursor("acme", "c2", 2.0)  # before the fix: StoreError, nested transaction
        assert await store.get_factory_cursor("acme") == "c2"
        assert not store.connector.db.in_transaction  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_a_write_cancelled_twice_is_rolled_back_before_the_writer_is_released(tmp_path: Path) -> None:
    """A second cancellation (the grace period ran out) during the ROLLBACK no longer releases the lock
    first: the next writer starts only once the connection is out of the transaction."""
    store = await _store(tmp_path)
    connector = store.connector
    inside = asyncio.Event()

    async def stuck_write() -> None:
        async with connector.write() as tx:
            await tx.execute("set_factory_cursor", name="acme", cursor="rolled back", now=1.0)
            inside.set()
            await asyncio.sleep(60)

    try:
        task = asyncio.create_task(stuck_write())
        await inside.wait()
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()  # again, while the rollback is awaited
        await asyncio.gather(task, return_exceptions=True)
        await store.set_factory_cursor("bolt", "kept", 2.0)
        assert await store.get_factory_cursor("acme") is None
        assert await store.get_factory_cursor("bolt") == "kept"
    finally:
        await store.close()


async def test_reads_never_run_on_the_writer_connection(tmp_path: Path) -> None:
    """A read while a write transaction is open neither waits for it nor sees its uncommitted rows: it
    runs on its own query-only connection, so it cannot interleave with the writer's transaction."""
    store = await _store(tmp_path)
    connector = store.connector
    await store.set_factory_cursor("acme", "committed", 1.0)
    try:
        async with connector.write() as tx:
            await tx.execute("set_factory_cursor", name="acme", cursor="uncommitted", now=2.0)
            read = await asyncio.wait_for(store.get_factory_cursor("acme"), 1)
            assert read == "committed"
        assert await store.get_factory_cursor("acme") == "uncommitted"
    finally:
        await store.close()
