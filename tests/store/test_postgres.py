"""What only the PostgreSQL backend has: its shared daemon lock, its writer lock's timeout, a missing
database (issue 16, ADR 13, ADR 14)."""

from __future__ import annotations

import asyncio
import os
import urllib.parse

import psycopg
import pytest

from relay.exceptions import DatabaseMissing, StoreUnavailable
from relay.store import open_store
from relay.store.postgres import connector as postgres_connector
from relay.store.postgres.connector import WRITER_LOCK_CLASS, lock_key, parse_url


async def test_the_daemon_lock_is_shared_every_daemon_works(postgres_url: str) -> None:
    """ADR 14: PostgreSQL's daemon lock keeps no daemon off (every daemon is active), so none may treat
    another's leases as orphaned at start-up."""
    first, second = open_store(postgres_url).daemon_lock(), open_store(postgres_url).daemon_lock()
    assert await first.try_acquire() and await second.try_acquire()
    assert not first.exclusive and not second.exclusive
    assert await second.holder() is None
    await first.release()
    await second.release()


async def test_a_write_that_waits_too_long_for_the_writer_lock_is_unavailable(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_connector, "LOCK_TIMEOUT_MS", 300)  # 5 s in production
    store = open_store(postgres_url)
    await store.open()
    try:
        await store.migrate()
        conninfo, _ = parse_url(postgres_url)
        with psycopg.connect(conninfo, autocommit=True) as other:  # another process holds the writer lock
            schema = other.execute("SELECT current_schema()").fetchone()
            assert schema is not None
            other.execute("SELECT pg_advisory_lock(%s, %s)", (WRITER_LOCK_CLASS, lock_key(schema[0])))
            with pytest.raises(StoreUnavailable):
                await store.record_poll("shop", True, None, 1.0)
            assert (await store.status(1.0)).storefronts == []  # reads never wait for it
        await store.record_poll("shop", True, None, 2.0)
        assert [s.name for s in (await store.status(2.0)).storefronts] == ["shop"]
    finally:
        await store.close()


async def test_a_missing_database_is_named_and_nothing_is_created(postgres_url: str) -> None:
    parts = urllib.parse.urlsplit(postgres_url)
    missing = urllib.parse.urlunsplit(parts._replace(path="/relay_no_such_database"))
    store = open_store(missing, read_only=True)
    with pytest.raises(DatabaseMissing, match="relay_no_such_database"):
        await store.open()


async def test_a_caller_cancelled_mid_unit_gets_the_cancellation_only_once_the_unit_ended(
    postgres_url: str,
) -> None:
    """P1's cancellation contract (issue 15) on PostgreSQL: the unit runs to its COMMIT (or ROLLBACK), the
    connection goes back to the pool clean, and only then does the caller see the cancellation."""
    store = open_store(postgres_url)
    await store.open()
    try:
        await store.migrate()
        conninfo, _ = parse_url(postgres_url)
        with psycopg.connect(conninfo, autocommit=True) as other:
            schema = other.execute("SELECT current_schema()").fetchone()
            assert schema is not None
            key = (WRITER_LOCK_CLASS, lock_key(schema[0]))
            other.execute("SELECT pg_advisory_lock(%s, %s)", key)
            write = asyncio.create_task(store.record_poll("shop", True, None, 1.0))
            await asyncio.sleep(0.2)  # the unit waits for the writer lock
            write.cancel()
            await asyncio.sleep(0.2)
            assert not write.done()  # the caller waits for its unit
            other.execute("SELECT pg_advisory_unlock(%s, %s)", key)
            with pytest.raises(asyncio.CancelledError):
                await write
        assert [s.name for s in (await store.status(2.0)).storefronts] == ["shop"]  # it committed
        await store.record_poll("shop", True, None, 3.0)  # and the pool is fine
    finally:
        await store.close()


async def test_connections_cut_by_the_server_are_unavailable_once_then_replaced(postgres_url: str) -> None:
    """A server restart (or a network cut) kills the pool's sessions: a unit on a dead connection raises
    `StoreUnavailable` (the loops retry it), the pool drops that connection and the next units work."""
    store = open_store(postgres_url)
    await store.open()
    try:
        await store.migrate()
        await store.record_poll("shop", True, None, 1.0)
        conninfo, _ = parse_url(postgres_url)
        with psycopg.connect(conninfo, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE %s",
                (f"relay pool pid={os.getpid()} %",),
            ).fetchone()
            assert killed is not None and killed[0] >= 1
        outcomes = []
        for attempt in range(12):  # at most pool_max_size dead connections, then fresh ones
            try:
                await store.record_poll("shop", True, None, 2.0 + attempt)
            except StoreUnavailable:
                outcomes.append("unavailable")
            else:
                outcomes.append("ok")
        assert outcomes[-1] == "ok" and "ok" in outcomes
        assert (await store.status(20.0)).storefronts[0].last_poll_ok_at is not None
    finally:
        await store.close()


async def test_insert_returns_the_new_rows_id_and_messages_never_show_a_password(postgres_url: str) -> None:
    from relay.store.manager import RelayStore
    from relay.store.postgres.connector import describe

    store = open_store(postgres_url)
    assert isinstance(store, RelayStore)
    await store.open()
    try:
        await store.migrate()

        async def add(tx, external_id: str) -> int:
            return await tx.insert(
                "insert_order",
                storefront="shop",
                external_id=external_id,
                number=f"#{external_id}",
                state="received",
                source_updated_iso="2026-01-01T00:00:00+00:00",
                payload="{}",
                content_hash=None,
                now=1.0,
            )

        first = await store.connector.run_write(lambda tx: add(tx, "a"))
        second = await store.connector.run_write(lambda tx: add(tx, "b"))
        assert (first, second) == (1, 2)
        assert await store.find_order_id("shop", "b") == 2
    finally:
        await store.close()
    assert describe("postgresql://relay:s3cr%40t@db:5432/relay") == "postgresql://relay:***@db:5432/relay"
    assert describe("postgresql://relay@db/relay") == "postgresql://relay@db/relay"
