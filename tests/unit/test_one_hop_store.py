"""ADR 12: a store transaction is one unit on the writer connection's thread; reads on the reader's."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from relay.exceptions import ReadOnlyStore, StoreError, StoreUnavailable
from relay.store.connector import Transaction
from relay.store.manager import RelayStore
from relay.store.sqlite import SQLiteConnector


async def _connector(path: Path, **kwargs: object) -> SQLiteConnector:
    store = RelayStore(SQLiteConnector(str(path), **kwargs))  # type: ignore[arg-type]
    await store.open()
    await store.migrate()
    assert isinstance(store.connector, SQLiteConnector)
    return store.connector


async def test_a_write_runs_whole_on_the_writer_thread_and_a_read_on_the_reader_thread(
    tmp_path: Path,
) -> None:
    connector = await _connector(tmp_path / "relay.db")
    seen: list[tuple[str, bool]] = []
    traced: list[str] = []

    async def write(tx: Transaction) -> int:
        seen.append((threading.current_thread().name, True))
        await tx.execute("set_factory_cursor", name="acme", cursor="c1", now=1.0)
        seen.append((threading.current_thread().name, True))
        return 7

    async def read(tx: Transaction) -> str:
        seen.append((threading.current_thread().name, False))
        row = await tx.fetch_one("get_factory_cursor", name="acme")
        assert row is not None
        return str(row["shipment_cursor"])

    try:
        await connector.on_writer(lambda db: db.set_trace_callback(traced.append))
        assert await connector.run_write(write) == 7
        await connector.on_writer(lambda db: db.set_trace_callback(None))
        assert await connector.run_read(read) == "c1"
    finally:
        await connector.close()
    assert seen == [("relay-db-writer", True), ("relay-db-writer", True), ("relay-db-reader", False)]
    assert threading.current_thread().name not in {name for name, _ in seen}
    assert traced[0] == "BEGIN IMMEDIATE" and traced[-1] == "COMMIT" and len(traced) == 3


async def test_a_failing_unit_is_rolled_back_and_driver_errors_are_translated(tmp_path: Path) -> None:
    connector = await _connector(tmp_path / "relay.db")

    async def then_fails(tx: Transaction) -> None:
        await tx.execute("set_factory_cursor", name="acme", cursor="gone", now=1.0)
        raise ValueError("a bug in a transition")

    async def bad_sql(tx: Transaction) -> None:
        await tx.execute("set_factory_cursor", name="acme", cursor="gone too", now=1.0)
        await tx.execute_statement("INSERT INTO no_such_table VALUES (1)")

    async def cursor(tx: Transaction) -> object:
        return await tx.fetch_one("get_factory_cursor", name="acme")

    try:
        with pytest.raises(ValueError, match="a bug"):
            await connector.run_write(then_fails)
        with pytest.raises(StoreError, match="no such table") as caught:
            await connector.run_write(bad_sql)
        assert not isinstance(caught.value, StoreUnavailable)
        assert isinstance(caught.value.__cause__, sqlite3.Error)
        assert await connector.run_read(cursor) is None
        assert not await connector.on_writer(lambda db: db.in_transaction)
    finally:
        await connector.close()


async def test_a_write_behind_a_foreign_lock_is_unavailable_and_rolled_back(tmp_path: Path) -> None:
    connector = await _connector(tmp_path / "relay.db", busy_timeout_ms=100)
    foreign = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    foreign.execute("BEGIN IMMEDIATE")

    async def write(tx: Transaction) -> None:
        await tx.execute("set_factory_cursor", name="acme", cursor="c", now=1.0)

    try:
        with pytest.raises(StoreUnavailable):
            await connector.run_write(write)
        foreign.execute("ROLLBACK")
        await connector.run_write(write)  # recovered
    finally:
        foreign.close()
        await connector.close()


async def test_a_read_only_store_refuses_writes_and_a_closed_one_everything(tmp_path: Path) -> None:
    await (await _connector(tmp_path / "relay.db")).close()
    reader = SQLiteConnector(str(tmp_path / "relay.db"), read_only=True)
    await reader.open()

    async def ping(tx: Transaction) -> int:
        return len(await tx.fetch("ping"))

    try:
        assert await reader.run_read(ping) == 1
        with pytest.raises(ReadOnlyStore):
            await reader.run_write(ping)
    finally:
        await reader.close()
    with pytest.raises(StoreError, match="not open"):
        await reader.run_read(ping)


async def test_an_in_memory_store_reads_on_its_writer(tmp_path: Path) -> None:
    store = RelayStore(SQLiteConnector(":memory:"))
    await store.open()
    try:
        await store.migrate()
        await store.set_factory_cursor("acme", "c1", 1.0)
        assert await store.get_factory_cursor("acme") == "c1"
    finally:
        await store.close()


async def test_a_set_based_batch_has_the_effect_of_its_rows_run_in_order(tmp_path: Path) -> None:
    """`execute_many` runs a query with a set-based form (rows.sql) as ONE statement, with the effect of its
    rows run one by one: inserts in order, the last update of a row wins, increments add up."""
    connector = await _connector(tmp_path / "relay.db")
    traced: list[str] = []
    order = {"storefront": "s", "state": "received", "source_updated_iso": "2026-01-01T00:00:00+00:00"}

    async def batch(tx: Transaction) -> None:
        await tx.execute_many(
            "insert_order",
            [
                {
                    **order,
                    "external_id": f"e{i}",
                    "number": f"#{i}",
                    "payload": "{}",
                    "content_hash": "h",
                    "now": 1.0,
                }
                for i in range(3)
            ],
        )
        await tx.execute_many(
            "insert_order_line",
            [
                {"storefront": "s", "external_id": f"e{i}", "line_id": "L1", "sku": "TEE", "quantity": 5}
                for i in range(2)
            ],
        )
        await tx.execute_many(
            "add_shipped_quantity",
            [
                {"quantity": 1, "order_id": 1, "line_id": "L1"},
                {"quantity": 2, "order_id": 1, "line_id": "L1"},
                {"quantity": 1, "order_id": 2, "line_id": "L1"},
            ],
        )
        await tx.execute_many(
            "set_order_state",
            [
                {"state": "held", "reason": "operator_hold", "detail": "first", "now": 2.0, "order_id": 1},
                {"state": "routed", "reason": None, "detail": None, "now": 3.0, "order_id": 1},
                {"state": "held", "reason": "operator_hold", "detail": "only", "now": 4.0, "order_id": 2},
            ],
        )
        await tx.execute_many(
            "insert_event",
            [
                {"order_id": i, "at": 5.0, "kind": kind, "from_state": None, "to_state": None, "detail": None}
                for i, kind in ((3, "c"), (1, "a"), (2, "b"))
            ],
        )

    def read(db: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
        return [
            [tuple(r) for r in db.execute(sql).fetchall()]
            for sql in (
                "SELECT external_id, number FROM orders ORDER BY id",
                "SELECT order_id, shipped_quantity FROM order_lines ORDER BY order_id",
                "SELECT id, state, attention_reason, attention_detail, updated_at FROM orders ORDER BY id",
                "SELECT order_id, kind FROM order_events ORDER BY id",
            )
        ]

    try:
        await connector.on_writer(lambda db: db.set_trace_callback(traced.append))
        await connector.run_write(batch)
        await connector.on_writer(lambda db: db.set_trace_callback(None))
        names, shipped, states, events = await connector.on_writer(read)
    finally:
        await connector.close()
    assert len(traced) == 2 + 5  # BEGIN, one statement per batch, COMMIT
    assert names == [("e0", "#0"), ("e1", "#1"), ("e2", "#2")]
    assert shipped == [(1, 3), (2, 1)]
    assert states == [
        (1, "routed", None, None, 3.0),
        (2, "held", "operator_hold", "only", 4.0),
        (3, "received", None, None, 1.0),
    ]
    assert events == [(3, "c"), (1, "a"), (2, "b")]
