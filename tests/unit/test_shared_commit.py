"""Issue 15: write units queued behind a running one share its transaction (one COMMIT, one fsync), each in a
savepoint: one that fails is undone alone, and nobody hears of a result before the COMMIT."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.exceptions import StoreError, StoreUnavailable
from relay.store.connector import Transaction
from relay.store.manager import RelayStore
from relay.store.sqlite import SQLiteConnector

Unit = Callable[[Transaction], Awaitable[Any]]


class Writer:
    """A migrated store's connector, whose writer thread can be held while units queue up behind it."""

    def __init__(self, path: Path) -> None:
        self.store = RelayStore(SQLiteConnector(str(path)))
        self.traced: list[str] = []
        self._go_on = threading.Event()

    @property
    def connector(self) -> SQLiteConnector:
        assert isinstance(self.store.connector, SQLiteConnector)
        return self.store.connector

    async def __aenter__(self) -> Writer:
        await self.store.open()
        await self.store.migrate()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._go_on.set()
        await self.store.close()

    async def queued_behind_a_held_writer(self, units: list[Unit]) -> list[Any]:
        """Hold the writer's thread, hand `units` over in order, let it go: each unit's result or error."""
        await self.connector.on_writer(lambda db: db.set_trace_callback(self.traced.append))
        inside = threading.Event()

        def hold(db: object) -> None:
            inside.set()
            self._go_on.wait(10)

        held = asyncio.create_task(self.connector.on_writer(hold))
        assert await asyncio.to_thread(inside.wait, 10)
        tasks = []
        for unit in units:
            tasks.append(asyncio.create_task(self.connector.run_write(unit)))
            await asyncio.sleep(0)  # handed over in this order
        self._go_on.set()
        await held
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await self.connector.on_writer(lambda db: db.set_trace_callback(None))
        return results

    async def cursors(self) -> dict[str, str]:
        """The factory cursors committed, by factory."""

        def committed(db: Any) -> dict[str, str]:
            return dict(db.execute("SELECT name, shipment_cursor FROM factories").fetchall())

        return await self.connector.on_writer(committed)

    def count(self, statement: str) -> int:
        return sum(1 for s in self.traced if s == statement)


def sets(name: str, *, then: BaseException | None = None) -> Unit:
    """A unit that sets factory `name`'s cursor to `name` and answers it, or raises `then` afterwards."""

    async def unit(tx: Transaction) -> str:
        await tx.execute("set_factory_cursor", name=name, cursor=name, now=1.0)
        if then is not None:
            raise then
        return name

    return unit


async def test_units_queued_behind_a_running_one_share_one_commit(tmp_path: Path) -> None:
    async with Writer(tmp_path / "relay.db") as w:
        results = await w.queued_behind_a_held_writer([sets(f"f{i}") for i in range(5)])
        assert results == [f"f{i}" for i in range(5)]
        assert (w.count("BEGIN IMMEDIATE"), w.count("COMMIT")) == (1, 1)
        assert w.count("SAVEPOINT unit") == 4  # the first unit needs none: undoing it undoes everything
        assert await w.cursors() == {f"f{i}": f"f{i}" for i in range(5)}


async def test_a_unit_that_fails_in_a_shared_transaction_is_undone_alone(tmp_path: Path) -> None:
    async with Writer(tmp_path / "relay.db") as w:

        async def bad_sql(tx: Transaction) -> None:
            await tx.execute("set_factory_cursor", name="bad-sql", cursor="x", now=1.0)
            await tx.execute_statement("INSERT INTO no_such_table VALUES (1)")

        results = await w.queued_behind_a_held_writer(
            [sets("a"), sets("b", then=ValueError("b broke")), sets("c"), bad_sql, sets("d")]
        )
        assert results[0] == "a" and results[2] == "c" and results[4] == "d"
        assert isinstance(results[1], ValueError) and str(results[1]) == "b broke"
        assert isinstance(results[3], StoreError) and not isinstance(results[3], StoreUnavailable)
        assert "no such table" in str(results[3]) and results[3].__cause__ is not None
        assert (w.count("BEGIN IMMEDIATE"), w.count("COMMIT")) == (1, 1)
        assert await w.cursors() == {"a": "a", "c": "c", "d": "d"}


async def test_when_the_first_unit_fails_the_rest_go_on_in_a_transaction_of_their_own(tmp_path: Path) -> None:
    async with Writer(tmp_path / "relay.db") as w:
        results = await w.queued_behind_a_held_writer(
            [sets("a", then=ValueError("a broke")), sets("b"), sets("c")]
        )
        assert isinstance(results[0], ValueError) and results[1:] == ["b", "c"]
        assert w.count("BEGIN IMMEDIATE") == 2 and w.count("COMMIT") == 1
        assert await w.cursors() == {"b": "b", "c": "c"}


async def test_a_lost_shared_transaction_fails_every_unit_in_it_and_keeps_nothing(tmp_path: Path) -> None:
    # SQLite rolls a whole transaction back on its own for some errors (disk full, I/O): here a unit
    # does it. The units before it did nothing wrong, but nothing of theirs happened either.
    async with Writer(tmp_path / "relay.db") as w:

        async def rolls_back(tx: Transaction) -> None:
            await tx.execute_statement("ROLLBACK")

        results = await w.queued_behind_a_held_writer([sets("a"), sets("b"), rolls_back, sets("c")])
        assert all(isinstance(r, StoreUnavailable) for r in results[:2]), results
        assert "shared transaction was lost" in str(results[0])
        assert isinstance(results[2], StoreError)
        assert results[3] == "c"  # taken by the next transaction
        assert await w.cursors() == {"c": "c"}


async def test_a_first_unit_whose_transaction_was_rolled_back_under_it_does_not_succeed(
    tmp_path: Path,
) -> None:
    async with Writer(tmp_path / "relay.db") as w:

        async def writes_then_loses_it(tx: Transaction) -> str:
            await tx.execute("set_factory_cursor", name="a", cursor="a", now=1.0)
            await tx.execute_statement("ROLLBACK")
            return "done"

        (result,) = await w.queued_behind_a_held_writer([writes_then_loses_it])
        assert isinstance(result, StoreUnavailable), result
        assert await w.cursors() == {}


async def test_a_unit_cancelled_while_queued_is_left_out_of_the_shared_transaction(tmp_path: Path) -> None:
    async with Writer(tmp_path / "relay.db") as w:
        await w.connector.on_writer(lambda db: db.set_trace_callback(w.traced.append))
        inside, go_on = threading.Event(), threading.Event()

        def hold(db: object) -> None:
            inside.set()
            go_on.wait(10)

        held = asyncio.create_task(w.connector.on_writer(hold))
        assert await asyncio.to_thread(inside.wait, 10)
        first = asyncio.create_task(w.connector.run_write(sets("a")))
        dropped = asyncio.create_task(w.connector.run_write(sets("b")))
        last = asyncio.create_task(w.connector.run_write(sets("c")))
        await asyncio.sleep(0)
        dropped.cancel()
        await asyncio.sleep(0)
        go_on.set()
        await held
        assert await first == "a" and await last == "c"
        with pytest.raises(asyncio.CancelledError):
            await dropped
        assert await w.cursors() == {"a": "a", "c": "c"}
