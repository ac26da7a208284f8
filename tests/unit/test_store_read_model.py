"""Issue 12, the store's read model: read-only opening, the schema check, `status()`, filtered listings,
order references, poll and circuit health."""

from __future__ import annotations

import json
import re
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from relay.domain.models import AttentionReason, FactoryOrderState, OrderLine, OrderState, PushState
from relay.exceptions import (
    DatabaseMissing,
    DatabaseNeedsMigration,
    ReadOnlyStore,
    UnsupportedDatabaseVersion,
)
from relay.store import DeliveryOutcome, OrderQuery, PushOutcome, Store, open_store
from relay.store.sqlite import QUERIES
from relay.store.sqlite.connector import MIGRATIONS
from tests.unit.schema_at import database_at
from tests.unit.test_order_versions import order, parcel, push_all, route

T0 = 1_700_000_000.0


def line(sku: str, line_id: str = "a") -> OrderLine:
    return OrderLine(line_id=line_id, sku=sku, quantity=1, unit_price=Decimal(1))


async def shop(store: Store, storefront: str, n: int, sku: str, now: float) -> None:
    """Ingest order `n` (number `#n`) of `storefront` with one line of `sku`."""
    await store.ingest(
        storefront, [order(external_id=str(n), number=f"#{n}", lines=(line(sku),))], [], None, now
    )


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- read-only opening and the schema check ----------------------------------------------------------


async def test_a_read_only_open_of_a_missing_file_raises_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "relay.db"
    for target in (path, tmp_path / "relay.db"):
        store = open_store(f"sqlite:///{target}", read_only=True)
        with pytest.raises(DatabaseMissing) as caught:
            await store.open()
        assert str(target) in str(caught.value)
        await store.close()
    assert files(tmp_path) == []  # no database, no -wal/-shm, no lock, no directory


async def test_a_read_only_store_reads_while_the_daemons_store_writes_and_refuses_writes(
    store_url: str, store: Store
) -> None:
    await shop(store, "shop", 1, "A", T0)
    reader = open_store(store_url, read_only=True)
    await reader.open()
    try:
        assert await reader.check_schema() == MIGRATIONS[-1].version
        assert (await reader.status(T0)).orders_by_state["received"] == 1
        await shop(store, "shop", 2, "A", T0 + 1)  # the writer goes on while the reader is open
        assert (await reader.status(T0 + 1)).orders_by_state["received"] == 2
        assert [o.id for o in await reader.list_orders(OrderQuery(), 10)] == [2, 1]
        before = await reader.status(T0 + 1)
        for write in (
            reader.migrate(),
            reader.hold_order(1, "check the address", T0),
            reader.record_poll("shop", True, None, T0),
            reader.ingest("shop", [order(external_id="3")], [], None, T0),
        ):
            with pytest.raises(ReadOnlyStore, match="read-only"):
                await write
        assert await reader.status(T0 + 1) == before
    finally:
        await reader.close()


async def test_check_schema_names_the_migration_for_an_older_database_and_never_migrates(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old = database_at(path, MIGRATIONS[-1].version - 1)
    old.commit()
    old.close()
    store = open_store(f"sqlite:///{path}", read_only=True)
    await store.open()
    try:
        with pytest.raises(DatabaseNeedsMigration, match="relay migrate"):
            await store.check_schema()
        assert await store.schema_version() == MIGRATIONS[-1].version - 1
    finally:
        await store.close()
    newer = sqlite3.connect(path)
    with newer:
        newer.execute("INSERT INTO schema_version VALUES (?, 0)", (MIGRATIONS[-1].version + 1,))
    newer.close()
    store = open_store(f"sqlite:///{path}", read_only=True)
    await store.open()
    try:
        with pytest.raises(UnsupportedDatabaseVersion):
            await store.check_schema()
    finally:
        await store.close()


async def test_an_empty_file_needs_migration(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    store = open_store(f"sqlite:///{path}", read_only=True)
    await store.open()
    try:
        with pytest.raises(DatabaseNeedsMigration):
            await store.check_schema()
    finally:
        await store.close()


# --- status --------------------------------------------------------------------------------------------


async def test_status_counts_every_state_lists_attention_and_dead_letters_and_ages(store: Store) -> None:
    empty = await store.status(T0)
    assert empty.orders_by_state == {s.value: 0 for s in OrderState}
    assert empty.oldest_pending_age_s is None
    assert empty.attention == [] and empty.dead_letters == [] and empty.placed_per_minute == []

    await shop(store, "shop", 1, "A", T0)  # placed at acme
    await shop(store, "shop", 2, "ZZZ", T0)  # held: unknown SKU
    await shop(store, "shop", 3, "B", T0)  # rejected by bolt: dead letter
    await route(store, T0 + 10)
    jobs = await store.claim_deliveries("f", ["acme", "bolt"], T0 + 20, 30, 50)
    outcomes = []
    for job in jobs:
        if job.factory == "acme":
            outcomes.append(DeliveryOutcome(job, FactoryOrderState.PLACED, reference="A-1"))
        else:
            outcomes.append(
                DeliveryOutcome(
                    job,
                    FactoryOrderState.DEAD,
                    error="422: no such SKU",
                    reason=AttentionReason.FACTORY_REJECTED,
                    status=422,
                    response="no such SKU",
                )
            )
    await store.record_deliveries(outcomes, T0 + 20)
    await shop(store, "shop", 4, "A", T0 + 100)  # received, not routed yet

    report = await store.status(T0 + 400)
    assert report.orders_by_state == {s.value: 0 for s in OrderState} | {
        "placed": 1,
        "held": 1,
        "failed": 1,
        "received": 1,
    }
    assert report.factory_orders_by_state["placed"] == 1
    assert report.factory_orders_by_state["dead"] == 1
    assert report.factory_orders_by_state["pending"] == 0
    assert report.pushes_by_state == {"pending": 0, "done": 0, "dead": 0}
    assert {(a.order_id, a.state, a.reason) for a in report.attention} == {
        (2, "held", "unknown_sku"),
        (3, "failed", "factory_rejected"),
    }
    assert [(d.kind, d.order_id, d.number, d.destination, d.attempts) for d in report.dead_letters] == [
        ("delivery", 3, "#3", "bolt", 1)
    ]
    assert report.dead_letters[0].last_error == "422: no such SKU"
    assert report.oldest_pending_age_s == 300.0  # order 4, received at T0 + 100
    minute = int((T0 + 20) // 60 * 60)
    assert report.placed_per_minute == [(minute, 1)]
    assert report.pushed_per_minute == []
    # the window bounds the chart
    assert (await store.status(T0 + 20 + 7 * 3600, hours=6)).placed_per_minute == []
    json.dumps(report.to_json())


async def test_status_shows_the_oldest_owed_work_and_pushes_per_minute(store: Store) -> None:
    await shop(store, "shop", 1, "A", T0)
    await route(store, T0)
    assert (await store.status(T0 + 50)).oldest_pending_age_s == 50.0  # the factory order is owed
    jobs = await store.claim_deliveries("f", ["acme"], T0 + 60, 30, 50)
    await store.record_deliveries([DeliveryOutcome(jobs[0], FactoryOrderState.PLACED)], T0 + 60)
    assert (await store.status(T0 + 70)).oldest_pending_age_s is None
    await store.record_shipment("acme", "m1", parcel(jobs[0].key, "p1", a=1), T0 + 120)
    assert (await store.status(T0 + 130)).oldest_pending_age_s == 10.0  # the tracking push is owed
    await push_all(store, T0 + 180)
    report = await store.status(T0 + 190)
    assert report.oldest_pending_age_s is None
    assert report.orders_by_state["completed"] == 1
    assert report.pushed_per_minute == [(int((T0 + 180) // 60 * 60), 1)]


async def test_poll_and_circuit_health_are_recorded_and_shown(store: Store) -> None:
    await store.ingest("shop", [], [], order().updated_at, T0)  # a cursor
    await store.record_poll("shop", True, None, T0 + 1)
    await store.record_poll("other", False, "GET https://x.test/o?access_token=sekrit: 503", T0 + 2)
    await store.record_factory_health("acme", T0 + 3, T0 + 33, "503 Service Unavailable", T0 + 3)
    report = await store.status(T0 + 5)
    by_name = {s.name: s for s in report.storefronts}
    assert by_name["shop"].last_poll_ok_at == T0 + 1 and not by_name["shop"].failing
    assert by_name["shop"].cursor == order().updated_at.isoformat()
    assert by_name["other"].failing and by_name["other"].last_poll_error_at == T0 + 2
    assert "sekrit" not in (by_name["other"].last_error or "")
    acme = {f.name: f for f in report.factories}["acme"]
    assert (acme.failing_since, acme.next_probe_at, acme.last_error) == (
        T0 + 3,
        T0 + 33,
        "503 Service Unavailable",
    )
    await store.record_poll("other", True, None, T0 + 6)
    await store.record_factory_health("acme", None, None, None, T0 + 7)
    report = await store.status(T0 + 8)
    assert not {s.name: s for s in report.storefronts}["other"].failing
    acme = {f.name: f for f in report.factories}["acme"]
    assert (acme.failing_since, acme.next_probe_at, acme.last_error) == (None, None, None)
    assert json.loads(json.dumps(report.to_json()))["storefronts"][1]["failing"] is False


# --- listings and references ---------------------------------------------------------------------------


async def test_list_orders_combines_filters(store: Store) -> None:
    await shop(store, "shop", 1, "A", T0)
    await shop(store, "shop", 2, "B", T0)
    await shop(store, "other", 3, "A", T0)
    await shop(store, "other", 4, "ZZZ", T0 + 50)
    await route(store, T0 + 60)

    async def ids(limit: int = 10, **filters: object) -> list[int]:
        return [o.id for o in await store.list_orders(OrderQuery(**filters), limit)]  # type: ignore[arg-type]

    assert await ids() == [4, 3, 2, 1]
    assert await ids(limit=2) == [4, 3]
    assert await ids(state="routed") == [3, 2, 1]
    assert await ids(state="routed", storefront="other") == [3]
    assert await ids(factory="acme") == [3, 1]
    assert await ids(factory="acme", storefront="shop") == [1]
    assert await ids(storefront="other") == [4, 3]
    assert await ids(reason="unknown_sku") == [4]
    assert await ids(reason="unknown_sku", storefront="shop") == []
    assert await ids(state="held", reason="unknown_sku", factory="acme") == []
    assert await ids(since=T0 + 60) == [4, 3, 2, 1]  # routing changed them all
    assert await ids(since=T0 + 61) == []
    held = (await store.list_orders(OrderQuery(state="held"), 10))[0]
    assert (held.number, held.attention_reason, held.created_at) == ("#4", "unknown_sku", T0 + 50)
    json.dumps(held.to_json())


async def test_an_unknown_state_or_reason_names_the_valid_ones(store: Store) -> None:
    with pytest.raises(ValueError, match="valid states: received, held, routed") as caught:
        await store.list_orders(OrderQuery(state="hold"), 10)
    assert "'hold'" in str(caught.value) and "cancelled" in str(caught.value)
    with pytest.raises(ValueError, match="unknown_sku"):
        await store.list_orders(OrderQuery(reason="nope"), 10)


async def test_resolve_order_by_id_reference_and_number(store: Store) -> None:
    await shop(store, "shop", 1, "A", T0)
    await shop(store, "shop", 2, "A", T0)
    await shop(store, "other", 2, "A", T0)  # the same number at another storefront
    assert await store.resolve_order("1") == [1]  # id 1, numbered #1
    assert await store.resolve_order("#1") == [1]
    assert await store.resolve_order("shop:2") == [2]
    assert await store.resolve_order("other:2") == [3]
    assert await store.resolve_order("#2") == [2, 3]  # ambiguous: the caller asks which
    assert await store.resolve_order("2") == [2, 3]
    assert await store.resolve_order("3") == [3]  # relay's id 3 (no order is numbered 3)
    assert await store.resolve_order("shop:9") == []
    assert await store.resolve_order("#9") == []
    assert await store.resolve_order("  ") == []


# --- the read model's queries stay indexed -------------------------------------------------------------

INDEXED = [
    "list_orders_by_state",
    "list_orders_by_reason",
    "list_orders_by_factory",
    "list_orders_by_storefront",
    "orders_by_number",
    "attention_orders",
    "dead_letters",
    "oldest_pending",
    "events_per_minute",
    "order_state_counts",
]


@pytest.mark.parametrize("name", INDEXED)
async def test_read_model_queries_never_scan_a_big_table(tmp_path: Path, name: str) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'plans.db'}")
    await store.open()
    await store.migrate()
    await store.close()
    db = sqlite3.connect(tmp_path / "plans.db")
    try:
        sql = QUERIES[name]
        params = {p: None for p in set(re.findall(r":([a-z_]+)", sql))}
        params |= {k: v for k, v in {"limit": 10, "numbers": "[]", "kind": "x"}.items() if k in params}
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        db.close()
    full_scans = [
        step
        for step in plan
        if step.startswith("SCAN")
        and any(t in step.split() for t in ("orders", "o", "factory_orders", "f", "storefront_pushes", "p"))
        and "INDEX" not in step
    ]
    assert full_scans == [], plan


# --- history: every attempt with the remote end's status and answer ------------------------------------


async def test_every_attempt_is_in_the_history_with_its_status_and_answer(store: Store) -> None:
    await shop(store, "shop", 1, "A", T0)
    await route(store, T0)
    [job] = await store.claim_deliveries("f", ["acme"], T0 + 1, 30, 50)
    gone = DeliveryOutcome(
        job, FactoryOrderState.PENDING, error="410", attempted=False, status=410, response="gone"
    )
    await store.record_deliveries([gone], T0 + 1)
    [job] = await store.claim_deliveries("f", ["acme"], T0 + 2, 30, 50)
    busy = DeliveryOutcome(
        job, FactoryOrderState.PENDING, next_attempt_at=T0 + 3, error="503", status=503, response="busy"
    )
    await store.record_deliveries([busy], T0 + 2)
    [job] = await store.claim_deliveries("f", ["acme"], T0 + 3, 30, 50)
    await store.record_deliveries([DeliveryOutcome(job, FactoryOrderState.PLACED, reference="A-1")], T0 + 3)
    await store.record_shipment("acme", "m1", parcel(job.key, "p1", a=1), T0 + 4)
    [push] = await store.claim_pushes("s", ["shop"], T0 + 5, 30, 50)
    throttled = PushOutcome(
        push, PushState.PENDING, next_attempt_at=T0 + 6, error="429", attempted=False, status=429
    )
    await store.record_pushes([throttled], T0 + 5)
    [push] = await store.claim_pushes("s", ["shop"], T0 + 6, 30, 50)
    failed = PushOutcome(
        push, PushState.PENDING, next_attempt_at=T0 + 7, error="500", status=500, response="oops"
    )
    await store.record_pushes([failed], T0 + 6)
    [push] = await store.claim_pushes("s", ["shop"], T0 + 7, 30, 50)
    await store.record_pushes([PushOutcome(push, PushState.DONE, reference="F-1")], T0 + 7)
    history = await store.find_order(1)
    assert history is not None
    attempts = [
        (e.at - T0, e.kind, e.detail.get("status"), e.detail.get("response"))
        for e in history.events
        if e.kind not in ("received", "routed", "placed", "shipped", "completed")
    ]
    assert attempts == [
        (1, "factory_gone", 410, "gone"),
        (2, "delivery_failed", 503, "busy"),
        (3, "factory_accepted", None, None),
        (4, "shipment_received", None, None),
        (5, "push_throttled", 429, None),
        (6, "push_failed", 500, "oops"),
        (7, "tracking_pushed", None, None),
    ]
