"""Several processes on one database (issue 16), on both backends with the same assertions: migrations run
once when stores start together, a newer database is refused, claims by two stores never overlap, an
expired lease is taken over and the older claim's late outcome changes nothing (fencing), a renewed lease
is not, and one daemon at a time holds SQLite's daemon lock (PostgreSQL's is shared: ADR 14)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from relay.domain.models import FactoryOrderState, OrderLine
from relay.exceptions import StoreError, UnsupportedDatabaseVersion
from relay.store import DeliveryOutcome, Store, open_store
from relay.store.sqlite import MIGRATIONS  # both backends have the same versions (test_store_contract)
from relay.testing.postgres import raw_sql
from tests.unit.test_order_versions import order, route

LATEST = MIGRATIONS[-1].version


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[list[Store]]:
    """Three stores on one database, as three daemons would have (opened, not migrated)."""
    opened = [open_store(store_url) for _ in range(3)]
    for s in opened:
        await s.open()
    yield opened
    for s in opened:
        await s.close()


async def orders_to_deliver(store: Store, n: int, now: float) -> None:
    await store.ingest("shop", [order(external_id=str(i), number=f"#{i}") for i in range(n)], [], None, now)
    assert await route(store, now) == n


async def test_stores_starting_together_migrate_the_database_once(
    store_url: str, stores: list[Store]
) -> None:
    versions = await asyncio.gather(*(s.migrate() for s in stores))
    assert versions == [LATEST] * 3
    assert raw_sql(store_url, "SELECT version FROM schema_version ORDER BY version") == [
        (m.version,) for m in MIGRATIONS
    ]
    assert [await s.check_schema() for s in stores] == [LATEST] * 3


async def test_a_database_newer_than_the_code_is_refused_and_left_unchanged(
    store_url: str, stores: list[Store]
) -> None:
    await stores[0].migrate()
    raw_sql(store_url, f"INSERT INTO schema_version (version, applied_at) VALUES ({LATEST + 1}, 0)")
    for call in (stores[1].migrate(), stores[1].check_schema()):
        with pytest.raises(UnsupportedDatabaseVersion, match="newer than this relay"):
            await call
    assert await stores[2].schema_version() == LATEST + 1


async def test_two_daemons_claiming_at_once_never_get_the_same_row(stores: list[Store]) -> None:
    a, b, _ = stores
    await a.migrate()
    await orders_to_deliver(a, 40, 1.0)
    claims = await asyncio.gather(
        *(
            s.claim_deliveries(owner, ["acme"], 2.0, 30, 7)
            for _ in range(3)
            for owner, s in (("a", a), ("b", b))
        )
    )
    ids = [job.id for jobs in claims for job in jobs]
    assert len(ids) == len(set(ids)) == 40  # 6 claims of up to 7: every row once, none twice
    assert await a.claim_deliveries("a", ["acme"], 2.0, 30, 7) == []  # all leased


async def test_an_expired_lease_is_taken_over_and_the_late_outcome_changes_nothing(
    stores: list[Store],
) -> None:
    a, b, _ = stores
    await a.migrate()
    await orders_to_deliver(a, 1, 1.0)
    [old] = await a.claim_deliveries("a", ["acme"], 2.0, 30, 10)
    assert await b.claim_deliveries("b", ["acme"], 31.0, 30, 10) == []  # still leased to a
    [new] = await b.claim_deliveries("b", ["acme"], 33.0, 30, 10)  # a's lease lapsed (a paused, or died)
    assert (new.id, new.lease_token) == (old.id, old.lease_token + 1)
    assert await a.confirm_deliveries([old], 34.0, 30, 10) == []  # a, resumed, must not send
    stale = DeliveryOutcome(old, FactoryOrderState.DEAD, error="late")
    assert await a.record_deliveries([stale], 35.0) == [stale]  # fenced: returned, nothing recorded
    assert (await a.find_order(1)).factory_orders[0].state == "pending"  # type: ignore[union-attr]
    assert await b.record_deliveries([DeliveryOutcome(new, FactoryOrderState.PLACED)], 36.0) == []
    view = await a.find_order(1)
    assert view is not None and view.factory_orders[0].state == "placed" and view.order.state == "placed"


async def test_a_claim_takes_the_rows_due_first_and_none_of_a_disabled_factory(
    stores: list[Store],
) -> None:
    a = stores[0]
    await a.migrate()
    lines = (OrderLine(line_id="b", sku="B", quantity=1, unit_price=Decimal(1)),)
    for i, at in enumerate((3.0, 1.0, 2.0)):  # an acme and a bolt row made due at `at`
        await a.ingest("shop", [order(external_id=f"a{i}", number=f"#a{i}")], [], None, at)
        await a.ingest("shop", [order(external_id=f"b{i}", number=f"#b{i}", lines=lines)], [], None, at)
        assert await route(a, at) == 2
    assert await a.disable_factory("bolt", "paused", 4.0)
    jobs = await a.claim_deliveries("a", ["bolt", "acme"], 5.0, 30, 2)  # the two due first, bolt's none
    assert sorted((j.factory, j.order.order_number) for j in jobs) == [("acme", "#a1"), ("acme", "#a2")]
    assert await a.claim_deliveries("a", ["bolt"], 5.0, 30, 10) == []
    assert await a.enable_factory("bolt", 6.0)
    jobs = await a.claim_deliveries("a", ["bolt"], 7.0, 30, 2)
    assert sorted(j.order.order_number for j in jobs) == ["#b1", "#b2"]


async def test_a_renewed_lease_keeps_the_row_from_other_daemons(stores: list[Store]) -> None:
    a, b, _ = stores
    await a.migrate()
    await orders_to_deliver(a, 1, 1.0)
    [job] = await a.claim_deliveries("a", ["acme"], 2.0, 30, 10)
    assert await a.confirm_deliveries([job], 25.0, 30, 10) == [job]  # 7 s left < 10 s needed: renewed to 55
    assert await b.claim_deliveries("b", ["acme"], 40.0, 30, 10) == []
    assert [j.id for j in await b.claim_deliveries("b", ["acme"], 56.0, 30, 10)] == [job.id]


async def test_sqlite_holds_one_daemon_at_a_time_postgresql_every_daemon(
    store_url: str, stores: list[Store]
) -> None:
    first, second = stores[0].daemon_lock(), stores[1].daemon_lock()
    exclusive = store_url.startswith("sqlite")  # PostgreSQL: every daemon works (ADR 14)
    assert first.exclusive is second.exclusive is exclusive
    assert await first.try_acquire()
    try:
        assert await first.try_acquire()  # already held: still True
        assert await second.try_acquire() is not exclusive
        assert bool(await second.holder()) is exclusive  # who holds it, as it described itself
    finally:
        await first.release()
        await second.release()
    assert await second.try_acquire()
    await second.release()


async def test_backup_of_a_postgresql_database_names_pg_dump(postgres_url: str, tmp_path) -> None:
    store = open_store(postgres_url)
    await store.open()
    try:
        with pytest.raises(StoreError, match="pg_dump"):
            await store.backup(str(tmp_path / "copy.db"))
    finally:
        await store.close()
    assert not (tmp_path / "copy.db").exists()
