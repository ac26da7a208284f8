"""Issue 11, items 3 to 7 and 14: order versions, the router's plan against the version it planned, edits
after routing, cancellations after a partial shipment, late parcels, and `order.created`'s timestamp."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from adapters.webhook.adapter import order_cancelled_body, order_created_body
from relay.domain.models import (
    Address,
    CancelState,
    FactoryOrderState,
    Order,
    OrderLine,
    PushState,
    Shipment,
    ShipmentLine,
)
from relay.domain.routing import plan_route
from relay.store import (
    ORDER_CANCELLED,
    DeliveryOutcome,
    PushOutcome,
    RouteJob,
    ShipmentVerdict,
    Store,
    open_store,
)
from relay.store.sqlite.connector import MIGRATIONS
from tests.unit.schema_at import database_at

SKUS = {"A": "acme", "B": "bolt", "C": "acme"}
T0 = 1_700_000_000


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def order(*, at: float = 0, **update: object) -> Order:
    base = Order(
        external_id="1",
        number="#1",
        created_at=when(0),
        updated_at=when(at),
        currency="USD",
        shipping_address=Address(name="Ada", line1="12 St James's Square", country_code="GB"),
        lines=(OrderLine(line_id="a", sku="A", quantity=2, unit_price=Decimal(1)),),
    )
    return base.model_copy(update=update)


async def route(store: Store, now: float) -> int:
    jobs = await store.claim_orders_to_route("r", now, 30, 50)
    return await store.apply_routing([plan_route(j, SKUS, now=now) for j in jobs], now)


async def deliver(store: Store, now: float, state: object = None) -> list:
    jobs = await store.claim_deliveries("f", ["acme", "bolt"], now, 30, 50)
    outcomes = []
    for job in jobs:
        if job.kind == ORDER_CANCELLED:
            outcomes.append(DeliveryOutcome(job, state or CancelState.DONE))
        else:
            outcomes.append(DeliveryOutcome(job, FactoryOrderState.PLACED))
    await store.record_deliveries(outcomes, now)
    return jobs


async def push_all(store: Store, now: float) -> None:
    pushes = await store.claim_pushes("s", ["shop"], now, 30, 50)
    await store.record_pushes([PushOutcome(p, PushState.DONE) for p in pushes], now)


def parcel(key: str, shipment_id: str, **lines: int) -> Shipment:
    return Shipment(
        factory_order_key=key,
        shipment_id=shipment_id,
        carrier="SF",
        tracking_number=f"T-{shipment_id}",
        lines=tuple(ShipmentLine(line_id=lid, quantity=q) for lid, q in lines.items()),
    )


async def view(store: Store):
    found = await store.find_order(1)
    assert found is not None
    return found


# --- item 3: same-second versions ------------------------------------------------------------------------


async def test_a_payment_in_the_same_second_as_the_stored_version_is_applied(store: Store) -> None:
    await store.ingest("shop", [order(paid=False)], [], None, 1.0)
    await route(store, 2.0)
    assert (await view(store)).order.state == "held"
    result = await store.ingest("shop", [order(paid=True)], [], None, 3.0)  # same updated_at, paid now
    assert (result.updated, result.requeued) == (1, 1)
    await route(store, 4.0)
    routed = await view(store)
    assert routed.order.state == "routed"
    assert [fo.factory for fo in routed.factory_orders] == ["acme"]


async def test_a_cancellation_in_the_same_second_as_the_stored_version_is_applied(store: Store) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 2.0)
    await deliver(store, 3.0)
    result = await store.ingest("shop", [order(cancelled=True)], [], None, 4.0)
    assert result.cancelled == 1
    jobs = await deliver(store, 5.0)
    assert [j.kind for j in jobs] == [ORDER_CANCELLED]


async def test_a_same_second_copy_never_takes_a_one_way_flag_back(store: Store) -> None:
    await store.ingest("shop", [order(cancelled=True, paid=True)], [], None, 1.0)
    result = await store.ingest("shop", [order(cancelled=False, paid=False)], [], None, 2.0)
    assert result.updated == 0
    assert (await view(store)).order.payload.cancelled
    older = await store.ingest("shop", [order(at=-5, email="x@example.com")], [], None, 3.0)
    assert older.updated == 0  # an older stamp is never applied


# --- item 4: the router applies only the version it planned --------------------------------------------


async def test_a_plan_for_a_version_changed_since_the_claim_is_dropped_and_the_order_rerouted(
    store: Store,
) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    jobs = await store.claim_orders_to_route("r", 2.0, 30, 50)
    plans = [plan_route(j, SKUS, now=2.0) for j in jobs]
    await store.ingest("shop", [order(at=1, cancelled=True)], [], None, 3.0)  # the poller, mid-routing
    assert await store.apply_routing(plans, 4.0) == 0
    stale = await view(store)
    assert stale.order.state == "received" and stale.factory_orders == ()
    assert [e.kind for e in stale.events][-1] == "route_plan_stale"
    assert await route(store, 5.0) == 1  # lease freed: the next pass plans the stored version at once
    final = await view(store)
    assert final.order.state == "cancelled" and final.factory_orders == ()
    assert await store.claim_deliveries("f", ["acme", "bolt"], 6.0, 30, 50) == []


async def test_a_line_changed_between_claim_and_apply_is_routed_with_the_new_lines(store: Store) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    jobs = await store.claim_orders_to_route("r", 2.0, 30, 50)
    plans = [plan_route(j, SKUS, now=2.0) for j in jobs]
    extra = OrderLine(line_id="b", sku="B", quantity=1, unit_price=Decimal(1))
    await store.ingest("shop", [order(at=1, lines=(*order().lines, extra))], [], None, 3.0)
    assert await store.apply_routing(plans, 4.0) == 0
    await route(store, 5.0)
    assert sorted(fo.factory for fo in (await view(store)).factory_orders) == ["acme", "bolt"]


# --- item 5: edits after routing are never silent ------------------------------------------------------


async def test_an_edit_after_placement_flags_the_order_and_names_what_changed(store: Store) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 2.0)
    await deliver(store, 3.0)
    moved = Address(name="Ada", line1="1 New Street", country_code="GB")
    smaller = (OrderLine(line_id="a", sku="A", quantity=1, unit_price=Decimal(1)),)
    await store.ingest("shop", [order(at=5, shipping_address=moved, lines=smaller)], [], None, 4.0)
    flagged = await view(store)
    assert flagged.order.state == "placed"
    assert flagged.order.attention_reason == "changed_after_placement"
    assert "shipping address (line1)" in (flagged.order.attention_detail or "")
    event = [e for e in flagged.events if e.kind == "changed_after_placement"][-1]
    assert event.detail["changes"] == ["line a quantity 2 -> 1", "shipping address (line1)"]
    # The flag stays while the order moves on.
    await store.record_shipment("acme", "m1", parcel(flagged.factory_orders[0].key, "P1", a=2), 5.0)
    assert (await view(store)).order.attention_reason == "changed_after_placement"


async def test_an_edit_before_any_factory_order_was_sent_is_planned_again(store: Store) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 2.0)
    assert (await view(store)).order.state == "routed"
    three = (OrderLine(line_id="a", sku="A", quantity=3, unit_price=Decimal(1)),)
    result = await store.ingest("shop", [order(at=5, lines=three)], [], None, 3.0)
    assert result.requeued == 1
    replanned = await view(store)
    assert replanned.order.state == "received" and replanned.factory_orders == ()
    await route(store, 4.0)
    jobs = await store.claim_deliveries("f", ["acme"], 5.0, 30, 50)
    assert [line.quantity for line in jobs[0].order.lines] == [3]


async def test_an_edit_after_a_claim_is_flagged_not_planned_again(store: Store) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 2.0)
    await store.claim_deliveries("f", ["acme"], 3.0, 30, 50)  # in flight: it may reach the factory
    await store.release_leases("f")  # even after its lease is gone
    await store.ingest("shop", [order(at=5, email="new@example.com")], [], None, 4.0)
    flagged = await view(store)
    assert flagged.order.state == "routed" and len(flagged.factory_orders) == 1
    assert flagged.order.attention_reason == "changed_after_placement"


# --- item 6: cancelling after a partial shipment -------------------------------------------------------


def two_lines(**update: object) -> Order:
    lines = (
        OrderLine(line_id="a", sku="A", quantity=2, unit_price=Decimal(1)),
        OrderLine(line_id="c", sku="C", quantity=1, unit_price=Decimal(1)),
    )
    return order(lines=lines, **update)


async def test_cancelling_after_a_partial_shipment_sends_order_cancelled_for_the_unshipped_lines(
    store: Store,
) -> None:
    await store.ingest("shop", [two_lines()], [], None, 1.0)
    await route(store, 2.0)
    [job] = await deliver(store, 3.0)
    assert (await store.record_shipment("acme", "m1", parcel(job.key, "P1", a=1), 4.0)).verdict == "accepted"
    await push_all(store, 5.0)
    await store.ingest("shop", [two_lines(at=10, cancelled=True)], [], None, 6.0)
    [cancel] = await store.claim_deliveries("f", ["acme"], 7.0, 30, 50)
    assert cancel.kind == ORDER_CANCELLED and cancel.key == f"{job.key}.cancel"
    assert [(ln.line_id, ln.quantity) for ln in cancel.order.lines] == [("a", 1), ("c", 1)]
    body = json.loads(order_cancelled_body(cancel.order, when(10)))
    assert body["data"]["lines"] == [{"line_id": "a", "quantity": 1}, {"line_id": "c", "quantity": 1}]
    await store.record_deliveries([DeliveryOutcome(cancel, CancelState.DONE)], 8.0)
    done = await view(store)
    assert done.order.state == "completed"  # what shipped is pushed, the rest will never ship
    assert done.factory_orders[0].state == "shipped"
    assert done.order.attention_reason is None


async def test_a_refused_cancellation_after_a_partial_shipment_flags_the_order(store: Store) -> None:
    await store.ingest("shop", [two_lines()], [], None, 1.0)
    await route(store, 2.0)
    [job] = await deliver(store, 3.0)
    await store.record_shipment("acme", "m1", parcel(job.key, "P1", a=1), 4.0)
    await store.ingest("shop", [two_lines(at=10, cancelled=True)], [], None, 6.0)
    await deliver(store, 7.0, CancelState.REFUSED)
    refused = await view(store)
    assert refused.order.state == "partially_shipped"
    assert refused.order.attention_reason == "cancel_rejected"
    assert "refused" in (refused.order.attention_detail or "")
    # The rest ships after all: accepted, pushed, and the order completes (still flagged).
    assert (
        await store.record_shipment("acme", "m2", parcel(job.key, "P2", a=1, c=1), 8.0)
    ).verdict == "accepted"
    await push_all(store, 9.0)
    final = await view(store)
    assert final.order.state == "completed" and final.order.attention_reason == "cancel_rejected"


async def test_a_parcel_for_the_cancelled_rest_is_accepted_and_flagged(store: Store) -> None:
    await store.ingest("shop", [two_lines()], [], None, 1.0)
    await route(store, 2.0)
    [job] = await deliver(store, 3.0)
    await store.record_shipment("acme", "m1", parcel(job.key, "P1", a=1), 4.0)
    await store.ingest("shop", [two_lines(at=10, cancelled=True)], [], None, 5.0)
    await deliver(store, 6.0)  # the factory confirms: the rest will not be made
    result = await store.record_shipment("acme", "m2", parcel(job.key, "P2", c=1), 7.0)
    assert result.verdict is ShipmentVerdict.ACCEPTED
    await push_all(store, 8.0)
    final = await view(store)
    assert (final.order.state, final.order.attention_reason) == ("completed", "shipped_after_cancel")
    assert [s.push_state for s in final.shipments] == ["done", "done"]


# --- item 7: a late parcel on a cancelled factory order ----------------------------------------------


async def test_a_late_parcel_on_a_cancelled_factory_order_of_a_completed_order_is_accepted_and_flagged(
    store: Store,
) -> None:
    """Split order: acme ships and its tracking is pushed, bolt confirms the cancellation (the order is
    completed), then bolt's parcel arrives anyway. This raised IllegalTransition completed -> shipped: an
    HTTP 500 for every retry of the callback, and a blocked cursor for a polled factory."""
    lines = (
        OrderLine(line_id="a", sku="A", quantity=1, unit_price=Decimal(1)),
        OrderLine(line_id="b", sku="B", quantity=1, unit_price=Decimal(1)),
    )
    await store.ingest("shop", [order(lines=lines)], [], None, 1.0)
    await route(store, 2.0)
    jobs = {j.factory: j for j in await deliver(store, 3.0)}
    await store.record_shipment("acme", "m1", parcel(jobs["acme"].key, "P1", a=1), 4.0)
    await push_all(store, 5.0)
    await store.ingest("shop", [order(at=10, lines=lines, cancelled=True)], [], None, 6.0)
    await deliver(store, 7.0)  # bolt: cancelled
    assert (await view(store)).order.state == "completed"
    result = await store.record_shipment("bolt", "m2", parcel(jobs["bolt"].key, "P2", b=1), 8.0)
    assert result.verdict is ShipmentVerdict.ACCEPTED
    late = await view(store)
    assert late.order.state == "completed"
    assert late.order.attention_reason == "shipped_after_cancel"
    assert [s.push_state for s in late.shipments] == ["done", "pending"]  # its tracking goes to the shop
    assert [e.kind for e in late.events if e.kind == "shipped_after_cancel"] == ["shipped_after_cancel"]
    again = await store.record_shipment("bolt", "m2", parcel(jobs["bolt"].key, "P2", b=1), 9.0)
    assert again.verdict is ShipmentVerdict.DUPLICATE


async def test_a_late_parcel_on_a_cancelled_order_is_accepted_pushed_and_flagged(store: Store) -> None:
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 2.0)
    [job] = await deliver(store, 3.0)
    await store.ingest("shop", [order(at=10, cancelled=True)], [], None, 4.0)
    await deliver(store, 5.0)
    assert (await view(store)).order.state == "cancelled"
    result = await store.record_shipment("acme", "m1", parcel(job.key, "P1", a=1), 6.0)
    assert result.verdict is ShipmentVerdict.ACCEPTED
    late = await view(store)
    assert (late.order.state, late.order.attention_reason) == ("cancelled", "shipped_after_cancel")
    pushes = await store.claim_pushes("s", ["shop"], 7.0, 30, 50)
    assert [p.push.tracking_number for p in pushes] == ["T-P1"]


# --- item 14: order.created carries the order's creation time ------------------------------------------


async def test_order_created_carries_the_orders_creation_time_not_the_routing_time(store: Store) -> None:
    created = datetime(2025, 3, 14, 10, 26, 53, tzinfo=UTC)
    await store.ingest("shop", [order(created_at=created)], [], None, 1.0)
    await route(store, T0 + 86_400.0)  # routed a day later
    [job] = await store.claim_deliveries("f", ["acme"], T0 + 86_401.0, 30, 50)
    assert job.order.created_at == created
    body = json.loads(order_created_body(job.order))
    assert body["timestamp"] == body["data"]["created_at"] == "2025-03-14T10:26:53Z"


def test_the_documented_messages_have_the_fields_relay_sends() -> None:
    """docs/factory-api.md §2 and §3: the example bodies name exactly the fields relay sends."""
    doc = (Path(__file__).parents[2] / "docs" / "factory-api.md").read_text(encoding="utf-8")
    examples = {}
    for block in doc.split("```json\n")[1:]:
        message = json.loads(block.split("```", 1)[0])
        if isinstance(message, dict) and "type" in message:
            examples[message["type"]] = message
    created = plan_route(RouteJob(1, "shop", order()), SKUS, now=0).factory_orders[0]
    sent = {
        "order.created": json.loads(order_created_body(created)),
        "order.cancelled": json.loads(order_cancelled_body(created, when(10))),
    }
    for kind, body in sent.items():
        assert set(body) == set(examples[kind]), kind
        assert set(body["data"]) == set(examples[kind]["data"]), kind
    assert sent["order.cancelled"]["data"]["lines"] == [{"line_id": "a", "quantity": 2}]


async def test_schema_version_4_upgrades_a_database_with_orders_in_flight(tmp_path) -> None:
    """Migration 0004 on a database written by the previous schema: a factory order that existed before
    counts as claimed (it may have reached its factory: a crash after the send, leases released at start),
    and stored orders keep their versions."""
    path = tmp_path / "relay.db"
    con = database_at(path, 3)
    with con:
        stored = order()
        con.execute(
            "INSERT INTO orders (storefront, external_id, number, state, source_updated_iso, payload, "
            "created_at, updated_at) VALUES ('shop', '1', '#1', 'routed', ?, ?, 1, 1)",
            (stored.updated_at.isoformat(), stored.model_dump_json()),
        )
        fo = plan_route(RouteJob(1, "shop", stored), SKUS, now=0).factory_orders[0]
        con.execute(
            "INSERT INTO factory_orders (order_id, factory, key, state, payload, next_attempt_at, created_at, "
            "updated_at) VALUES (1, 'acme', ?, 'pending', ?, 1, 1, 1)",
            (fo.key, fo.model_dump_json()),
        )
        con.execute(
            "INSERT INTO order_lines (order_id, line_id, sku, quantity, factory_order_id) VALUES (1, 'a', 'A', 2, 1)"
        )
    con.close()
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.migrate() == MIGRATIONS[-1].version
        # The same content again is no new version; an edit is flagged, not planned again.
        assert (await store.ingest("shop", [order(at=3)], [], None, 3.0)).updated == 0
        await store.ingest("shop", [order(at=4, email="new@example.com")], [], None, 4.0)
        upgraded = await view(store)
        assert upgraded.order.attention_reason == "changed_after_placement"
        assert len(upgraded.factory_orders) == 1
    finally:
        await store.close()


async def test_a_cancellation_after_a_claim_whose_attempt_was_never_recorded_is_sent_to_the_factory(
    store: Store,
) -> None:
    """A daemon killed mid-send records no attempt and its lease is freed at restart, yet the factory may
    hold the order (the 1688 crash loop found it): the cancellation must still be sent."""
    await store.ingest("shop", [order()], [], None, 1.0)
    await route(store, 2.0)
    [job] = await store.claim_deliveries("f", ["acme"], 3.0, 30, 50)  # sent, then the process is killed
    await store.release_all_leases()  # the next daemon frees the orphaned lease
    await store.ingest("shop", [order(at=5, cancelled=True)], [], None, 6.0)
    [cancel] = await store.claim_deliveries("f", ["acme"], 7.0, 30, 50)
    assert cancel.kind == ORDER_CANCELLED and cancel.key == f"{job.key}.cancel"
