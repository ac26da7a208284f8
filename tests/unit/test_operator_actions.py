"""Issue 12, operator actions on the store: hold, release, cancel, retry every dead letter. Each is one
transaction with an `actor: operator` history event, and refuses (changing nothing) what it does not apply to."""

from __future__ import annotations

from decimal import Decimal

import pytest

from relay.domain.models import AttentionReason, CancelState, FactoryOrderState, OrderLine, PushState
from relay.exceptions import IllegalTransition
from relay.store import ORDER_CANCELLED, DeliveryOutcome, OrderView, PushOutcome, Store
from tests.unit.test_order_versions import order, parcel, route

T0 = 1_700_000_000.0


def lines(sku: str) -> tuple[OrderLine, ...]:
    return (OrderLine(line_id="a", sku=sku, quantity=2, unit_price=Decimal(1)),)


async def new(store: Store, n: int = 1, sku: str = "A", **update: object) -> None:
    await store.ingest(
        "shop", [order(external_id=str(n), number=f"#{n}", lines=lines(sku), **update)], [], None, T0
    )


async def seen(store: Store, order_id: int = 1) -> OrderView:
    found = await store.find_order(order_id)
    assert found is not None
    return found


async def place(store: Store, now: float) -> list[str]:
    """Deliver every due order.created as placed; the keys sent."""
    jobs = [
        j
        for j in await store.claim_deliveries("f", ["acme", "bolt"], now, 30, 50)
        if j.kind != ORDER_CANCELLED
    ]
    await store.record_deliveries([DeliveryOutcome(j, FactoryOrderState.PLACED) for j in jobs], now)
    return [j.key for j in jobs]


def operator_events(view: OrderView) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.from_state, e.to_state) for e in view.events if e.detail.get("actor") == "operator"]


# --- hold and release ----------------------------------------------------------------------------------


async def test_a_held_received_order_is_never_routed_until_released_then_placed_once(store: Store) -> None:
    await new(store)
    assert await store.hold_order(1, "  customer asked to wait  ", T0 + 1) == [
        "order 1 held: nothing is sent until `relay release 1`"
    ]
    held = await seen(store)
    assert (held.order.state, held.order.attention_reason, held.order.attention_detail) == (
        "held",
        AttentionReason.OPERATOR_HOLD,
        "customer asked to wait",
    )
    assert await route(store, T0 + 2) == 0  # the router never sees it
    assert await place(store, T0 + 3) == []
    assert await store.release_order(1, T0 + 4) == ["order 1 released (operator_hold): back to routing"]
    jobs = await store.claim_orders_to_route("r", T0 + 5, 30, 50)
    assert [j.order_id for j in jobs] == [1]
    assert jobs[0].guards_waived  # the routing guards let the released version through once
    await store.release_leases("r")
    assert await route(store, T0 + 5) == 1
    assert len(await place(store, T0 + 6)) == 1
    assert await place(store, T0 + 7) == []
    done = await seen(store)
    assert done.order.state == "placed" and done.order.attention_reason is None
    assert operator_events(done) == [("held", "received", "held"), ("released", "held", "received")]
    assert [e.detail.get("detail") for e in done.events if e.kind in ("held", "released")] == [
        "customer asked to wait",
        "customer asked to wait",
    ]


async def test_holding_a_routed_order_drops_its_unsent_factory_orders(store: Store) -> None:
    await new(store)
    await route(store, T0)
    assert await store.hold_order(1, "fraud check", T0 + 1) == [
        "order 1 held (its unsent factory orders dropped): nothing is sent until `relay release 1`"
    ]
    assert (await seen(store)).factory_orders == ()
    assert await place(store, T0 + 2) == []
    await store.release_order(1, T0 + 3)
    await route(store, T0 + 4)
    assert len(await place(store, T0 + 5)) == 1
    assert [f.state for f in (await seen(store)).factory_orders] == ["placed"]


async def test_hold_refuses_orders_a_factory_may_have_and_changes_nothing(store: Store) -> None:
    await new(store, 1)
    await new(store, 2)
    await route(store, T0)
    claimed = await store.claim_deliveries("f", ["acme"], T0 + 1, 30, 1)  # order 1's delivery is in flight
    assert [j.order_id for j in claimed] == [1]
    before = await seen(store, 1)
    with pytest.raises(IllegalTransition, match="a factory may have it already: cancel it instead"):
        await store.hold_order(1, "stop", T0 + 2)
    assert await seen(store, 1) == before
    await store.record_deliveries([DeliveryOutcome(claimed[0], FactoryOrderState.PLACED)], T0 + 2)
    with pytest.raises(IllegalTransition, match="order 1 is placed: only orders no factory has yet"):
        await store.hold_order(1, "stop", T0 + 3)
    with pytest.raises(IllegalTransition, match="needs a reason"):
        await store.hold_order(2, "   ", T0 + 3)
    with pytest.raises(IllegalTransition, match="order 99 does not exist"):
        await store.hold_order(99, "stop", T0 + 3)
    with pytest.raises(IllegalTransition, match="only a held order can be released"):
        await store.release_order(2, T0 + 3)


async def test_a_routing_hold_can_be_taken_over_and_release_replans_with_current_routing(
    store: Store,
) -> None:
    await new(store, sku="UNMAPPED")
    await route(store, T0)
    assert (await seen(store)).order.attention_reason == "unknown_sku"
    await store.hold_order(1, "waiting for the supplier", T0 + 1)
    assert (await seen(store)).order.attention_reason == "operator_hold"
    await store.release_order(1, T0 + 2)
    await route(store, T0 + 3)  # still unmapped: routing holds it again, for its own reason
    again = await seen(store)
    assert (again.order.state, again.order.attention_reason) == ("held", "unknown_sku")


async def test_a_storefront_edit_keeps_an_operator_hold_but_a_cancellation_cancels(store: Store) -> None:
    await new(store)
    await store.hold_order(1, "check address", T0)
    await store.ingest("shop", [order(at=5, lines=lines("B"))], [], None, T0 + 1)
    edited = await seen(store)
    assert (edited.order.state, edited.order.attention_reason) == ("held", "operator_hold")
    assert edited.order.payload.lines[0].sku == "B"
    await store.ingest("shop", [order(at=9, lines=lines("B"), cancelled=True)], [], None, T0 + 2)
    await route(store, T0 + 3)
    assert (await seen(store)).order.state == "cancelled"


# --- cancel --------------------------------------------------------------------------------------------


async def test_cancelling_an_order_not_sent_anywhere_cancels_it_here(store: Store) -> None:
    await new(store, 1)
    await new(store, 2)
    await route(store, T0)  # order 2 is routed, never sent
    await new(store, 3)  # order 3 received
    assert await store.cancel_order(3, T0 + 1) == ["order 3 cancelled"]
    assert await store.cancel_order(2, T0 + 1) == ["order 2 cancelled"]
    assert [f.state for f in (await seen(store, 2)).factory_orders] == ["cancelled"]
    assert [j.order_id for j in await store.claim_deliveries("f", ["acme"], T0 + 2, 30, 50)] == [1]
    assert ("cancel_requested", "routed", "routed") in operator_events(await seen(store, 2))
    with pytest.raises(IllegalTransition, match="order 3 is cancelled: nothing to cancel"):
        await store.cancel_order(3, T0 + 3)


async def test_cancelling_a_placed_order_sends_order_cancelled_like_a_storefront_cancellation(
    store: Store,
) -> None:
    await new(store)
    await route(store, T0)
    [key] = await place(store, T0 + 1)
    assert await store.cancel_order(1, T0 + 2) == ["order.cancelled queued for acme"]
    jobs = await store.claim_deliveries("f", ["acme"], T0 + 3, 30, 50)
    assert [(j.kind, j.key, [line.quantity for line in j.order.lines]) for j in jobs] == [
        (ORDER_CANCELLED, f"{key}.cancel", [2])
    ]
    with pytest.raises(IllegalTransition, match="nothing left to cancel"):
        await store.cancel_order(1, T0 + 3)  # already asked
    await store.record_deliveries([DeliveryOutcome(jobs[0], CancelState.DONE)], T0 + 4)
    assert (await seen(store)).order.state == "cancelled"


async def test_a_shipped_order_cannot_be_cancelled(store: Store) -> None:
    await new(store)
    await route(store, T0)
    [key] = await place(store, T0 + 1)
    await store.record_shipment("acme", "m1", parcel(key, "p1", a=2), T0 + 2)
    before = await seen(store)
    assert before.order.state == "shipped"
    with pytest.raises(IllegalTransition, match="nothing left to cancel"):
        await store.cancel_order(1, T0 + 3)
    assert await seen(store) == before


# --- retry every dead letter ---------------------------------------------------------------------------


async def test_retry_all_dead_requeues_every_dead_delivery_and_push(store: Store) -> None:
    for n in (1, 2, 3):
        await new(store, n)
    await new(store, 4, sku="UNMAPPED")  # held: left alone
    await route(store, T0)
    jobs = {j.order_id: j for j in await store.claim_deliveries("f", ["acme"], T0 + 1, 30, 50)}
    await store.record_deliveries(
        [
            DeliveryOutcome(
                jobs[1], FactoryOrderState.DEAD, error="422", reason=AttentionReason.FACTORY_REJECTED
            ),
            DeliveryOutcome(jobs[2], FactoryOrderState.PLACED),
            DeliveryOutcome(jobs[3], FactoryOrderState.PLACED),
        ],
        T0 + 1,
    )
    await store.record_shipment("acme", "m1", parcel(jobs[2].key, "p1", a=2), T0 + 2)
    [push] = await store.claim_pushes("s", ["shop"], T0 + 3, 30, 50)
    await store.record_pushes([PushOutcome(push, PushState.DEAD, error="404")], T0 + 3)
    assert [d.order_id for d in (await store.status(T0 + 4)).dead_letters] == [2, 1]
    assert await store.retry_all_dead(T0 + 5) == [1, 2]
    report = await store.status(T0 + 6)
    assert report.dead_letters == []
    assert report.orders_by_state["held"] == 1
    assert [j.order_id for j in await store.claim_deliveries("f", ["acme"], T0 + 6, 30, 50)] == [1]
    assert [p.order_id for p in await store.claim_pushes("s", ["shop"], T0 + 6, 30, 50)] == [2]
    assert await store.retry_all_dead(T0 + 7) == []
