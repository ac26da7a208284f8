"""Issue 14 (core support): money and the payment deadline per factory order, `awaiting_payment` on the order
(not sticky), and notices from a polled factory (`ShipmentPage.notices`, `Store.apply_factory_notices`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import structlog
from structlog.testing import capture_logs

from relay.contracts import ShipmentPage
from relay.domain.models import (
    AttentionReason,
    FactoryOrderNotice,
    FactoryOrderState,
    OrderLine,
    Placement,
)
from relay.domain.routing import plan_route
from relay.loops.shipment_poller import ShipmentPoller
from relay.store import DeliveryOutcome, RouteJob, Store, open_store
from relay.store.sqlite.connector import MIGRATIONS
from relay.testing.postgres import raw_sql
from tests.unit.schema_at import database_at
from tests.unit.test_order_versions import SKUS, order, parcel, route, view

DEADLINE = datetime(2026, 9, 22, 2, 13, tzinfo=UTC)


async def place(store: Store, now: float, factory: str, placement: Placement) -> None:
    """Deliver `factory`'s due factory orders, placed as `placement` says (as the forwarder does)."""
    jobs = await store.claim_deliveries("f", [factory], now, 30, 50)
    assert jobs
    await store.record_deliveries(
        [
            DeliveryOutcome(
                job,
                FactoryOrderState.PLACED,
                reference=placement.reference,
                amount=placement.amount,
                currency=placement.currency,
                pay_deadline=placement.pay_deadline,
                attention=placement.attention,
            )
            for job in jobs
        ],
        now,
    )


UNPAID = Placement(
    reference="1688:1; waitbuyerpay; CNY 0.10",
    amount=Decimal("0.10"),
    currency="CNY",
    pay_deadline=DEADLINE,
    attention=AttentionReason.AWAITING_PAYMENT,
)


async def test_a_placement_records_its_money_exactly_and_flags_the_order_until_paid(
    store_url: str, store: Store
) -> None:
    lines = (
        OrderLine(line_id="a", sku="A", quantity=2, unit_price=Decimal(1)),
        OrderLine(line_id="b", sku="B", quantity=1, unit_price=Decimal(1)),
    )
    await store.ingest("shop", [order(lines=lines)], [], None, 1.0)  # one line at acme, one at bolt
    await route(store, 1.0)
    await place(store, 2.0, "acme", UNPAID)
    routed = await view(store)
    await place(store, 3.0, "bolt", Placement(reference="B-1"))  # the order moves on: the flag stays
    placed = await view(store)
    applied = await store.apply_factory_notices(
        "acme", [FactoryOrderNotice(factory_order_key=routed.factory_orders[0].key, detail="paid")], 4.0
    )
    paid = await view(store)
    stored = raw_sql(store_url, "SELECT amount, currency FROM factory_orders ORDER BY id")
    assert stored == [("0.10", "CNY"), (None, None)], "exact decimal TEXT, never a float"
    acme = routed.factory_orders[0]
    assert (acme.amount, acme.currency, acme.pay_deadline, acme.attention) == (
        Decimal("0.10"),
        "CNY",
        DEADLINE,
        "awaiting_payment",
    )
    assert routed.order.state == "routed" and routed.order.attention_reason == "awaiting_payment"
    assert "acme" in (routed.order.attention_detail or "") and "2026-09-22T02:13" in (
        routed.order.attention_detail or ""
    )
    accepted = [e for e in routed.events if e.kind == "factory_accepted"]
    assert accepted[0].detail["amount"] == "0.10" and accepted[0].detail["attention"] == "awaiting_payment"
    assert placed.order.state == "placed" and placed.order.attention_reason == "awaiting_payment"
    assert applied == 1
    assert paid.order.attention_reason is None and paid.factory_orders[0].attention is None
    assert paid.factory_orders[0].amount == Decimal("0.10")
    assert [e.kind for e in paid.events][-2:] == ["factory_order_paid", "attention_cleared"]
    assert paid.to_json()["factory_orders"][0]["amount"] == "0.10"


async def test_a_shipment_clears_awaiting_payment_and_notices_that_change_nothing_are_skipped(
    store: Store,
) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 1.0)
    await place(store, 2.0, "acme", UNPAID)
    key = (await view(store)).factory_orders[0].key
    due = FactoryOrderNotice(factory_order_key=key, reason=AttentionReason.AWAITING_PAYMENT, detail="due")
    assert await store.apply_factory_notices("acme", [due], 3.0) == 0, "already flagged: a re-poll"
    unknown = FactoryOrderNotice(factory_order_key="fo_unknown", reason=AttentionReason.PAYMENT_EXPIRED)
    assert await store.apply_factory_notices("acme", [unknown], 3.0) == 0
    assert await store.apply_factory_notices("bolt", [due], 3.0) == 0, "another factory's key"
    await store.record_shipment("acme", "m1", parcel(key, "s1", a=2), 4.0)
    shipped = await view(store)
    assert shipped.order.state == "shipped"
    assert shipped.order.attention_reason is None, "shipped: nothing left to pay"
    assert await store.apply_factory_notices("acme", [due], 5.0) == 0, "shipped: not flagged again"


async def test_payment_expired_flags_and_a_duplicate_is_sticky(store: Store) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 1.0)
    await place(store, 2.0, "acme", UNPAID)
    key = (await view(store)).factory_orders[0].key
    expired = FactoryOrderNotice(
        factory_order_key=key, reason=AttentionReason.PAYMENT_EXPIRED, detail="1688 order 1 closed unpaid"
    )
    assert await store.apply_factory_notices("acme", [expired], 3.0) == 1
    flagged = await view(store)
    dup = FactoryOrderNotice(
        factory_order_key=key, reason=AttentionReason.DUPLICATE_AT_FACTORY, detail="1, 2"
    )
    assert await store.apply_factory_notices("acme", [dup, dup], 4.0) == 1
    await store.record_shipment("acme", "m1", parcel(key, "s1", a=2), 5.0)
    duplicated = await view(store)
    assert flagged.order.attention_reason == "payment_expired"
    assert flagged.factory_orders[0].attention == "payment_expired"
    assert "closed unpaid" in (flagged.order.attention_detail or "")
    assert duplicated.order.attention_reason == "duplicate_at_factory", "sticky through the shipment"
    assert duplicated.order.attention_detail == "acme: 1, 2"


async def test_the_poller_applies_a_pages_notices_before_storing_its_cursor(store: Store) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 1.0)
    await place(store, 2.0, "acme", UNPAID)
    key = (await view(store)).factory_orders[0].key

    class Source:
        async def fetch_shipments(self, since: str | None) -> AsyncIterator[ShipmentPage]:
            yield ShipmentPage([], "c1", [FactoryOrderNotice(factory_order_key=key, detail="paid")])

    with capture_logs() as logs:
        poller = ShipmentPoller(
            store,
            "acme",
            Source(),
            interval=1,
            clock=lambda: 3.0,
            log=structlog.get_logger(),
            owner="test",
            lease_s=30,
        )
        await poller.run_pass()
    assert [e["applied"] for e in logs if e["event"] == "factory_notices_applied"] == [1]
    paid = await view(store)
    assert await store.get_factory_cursor("acme") == "c1"
    assert paid.order.attention_reason is None
    assert "factory_order_paid" in [e.kind for e in paid.events]


async def test_schema_version_6_upgrades_a_database_with_orders_in_flight(tmp_path) -> None:
    """Migration 0006 on a database written by schema 5: a placed factory order keeps its reference, has no
    money recorded (NULL, not zero), and takes a notice."""
    path = tmp_path / "relay.db"
    con = database_at(path, 5)
    with con:
        stored = order()
        con.execute(
            "INSERT INTO orders (storefront, external_id, number, state, source_updated_iso, payload, "
            "created_at, updated_at) VALUES ('shop', '1', '#1', 'placed', ?, ?, 1, 1)",
            (stored.updated_at.isoformat(), stored.model_dump_json()),
        )
        fo = plan_route(RouteJob(1, "shop", stored), SKUS, now=0).factory_orders[0]
        con.execute(
            "INSERT INTO factory_orders (order_id, factory, key, state, payload, reference, created_at, "
            "updated_at) VALUES (1, 'acme', ?, 'placed', ?, '1688:7; waitbuyerpay; CNY 9.90', 1, 1)",
            (fo.key, fo.model_dump_json()),
        )
        con.execute(
            "INSERT INTO order_lines (order_id, line_id, sku, quantity, factory_order_id) VALUES (1, 'a', 'A', 2, 1)"
        )
    con.close()
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.migrate() == MIGRATIONS[-1].version >= 6
        before = await view(store)
        notice = FactoryOrderNotice(
            factory_order_key=fo.key, reason=AttentionReason.AWAITING_PAYMENT, detail="due"
        )
        assert await store.apply_factory_notices("acme", [notice], 2.0) == 1
        after = await view(store)
    finally:
        await store.close()
    [upgraded] = before.factory_orders
    assert upgraded.reference == "1688:7; waitbuyerpay; CNY 9.90"
    assert (upgraded.amount, upgraded.currency, upgraded.pay_deadline, upgraded.attention) == (None,) * 4
    assert before.order.attention_reason is None
    assert after.order.attention_reason == "awaiting_payment"
