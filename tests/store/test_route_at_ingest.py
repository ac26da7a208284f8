"""Routing at ingest (issue 15): the poller's page and the routing of its new orders are one transaction,
with the router's catalogue; the router routes only what the hook declines. Both backends."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import structlog

from relay.domain.models import OrderLine
from relay.domain.routing import Guards, StorefrontGuards
from relay.loops.router import Router
from relay.store import DeliveryClaim, RouteJob, RoutePlan, RoutingSnapshot, SkuRecord, Store
from relay.testing.harness import Harness
from tests.unit.test_order_versions import SKUS, order

NOW = 1_700_000_100.0


def router(store: Store, guards: Guards | None = None) -> Router:
    return Router(
        store,
        {},
        owner="r",
        lease_s=30,
        batch_size=50,
        clock=lambda: NOW,
        log=structlog.get_logger(),
        guards=guards,
    )


async def state_of(store: Store, external_id: str) -> str:
    order_id = await store.find_order_id("shop", external_id)
    assert order_id is not None
    view = await store.find_order(order_id)
    assert view is not None
    return view.order.state


async def test_new_orders_are_stored_routed_once_the_router_holds_the_stores_catalogue(store: Store) -> None:
    await store.seed_skus_from_config(SKUS, NOW)
    r = router(store)

    # No catalogue loaded yet: the hook declines and the order waits for a router pass, as before.
    first = await store.ingest("shop", [order(external_id="1")], [], None, NOW, route=r.plan_at_ingest)
    assert first.new == 1 and first.routed == ()
    assert await state_of(store, "1") == "received"
    assert await r.run_pass() is False  # routes it and loads the catalogue
    assert await state_of(store, "1") == "routed"

    # Now a page's new orders are routed in the ingest's own transaction: placed, or held with a reason.
    unknown = OrderLine(line_id="z", sku="NOPE", quantity=1, unit_price=order().lines[0].unit_price)
    page = [order(external_id="2"), order(external_id="3", lines=(unknown,))]
    second = await store.ingest("shop", page, [], None, NOW, route=r.plan_at_ingest)
    assert second.new == 2
    assert {p.order_id: (bool(p.factory_orders), p.hold) for p in second.routed} == {
        await store.find_order_id("shop", "2"): (True, None),
        await store.find_order_id("shop", "3"): (False, "unknown_sku"),
    }
    assert await state_of(store, "2") == "routed"
    assert await state_of(store, "3") == "held"
    assert await store.claim_orders_to_route("r", NOW, 30, 50) == []  # nothing left for the router
    jobs = await store.claim_deliveries("f", ["acme", "bolt"], NOW, 30, 50)
    placed_id = await store.find_order_id("shop", "2")
    assert [(j.order_id, j.factory) for j in jobs if j.order_id == placed_id] == [(placed_id, "acme")]

    # A known order's new version is not routed at ingest, nor is an order already routed routed again.
    again = await store.ingest(
        "shop", [order(external_id="2", at=5, number="#2b")], [], None, NOW, route=r.plan_at_ingest
    )
    assert again.new == 0 and again.routed == ()


async def test_the_hook_declines_a_stale_catalogue_and_a_storefront_with_an_hourly_cap(store: Store) -> None:
    await store.seed_skus_from_config(SKUS, NOW)
    r = router(store)
    await store.ingest("shop", [order(external_id="1")], [], None, NOW)
    await r.run_pass()  # the catalogue, loaded

    await store.seed_skus_from_config({**SKUS, "D": "bolt"}, NOW)  # the store's catalogue moved on
    stale = await store.ingest("shop", [order(external_id="2")], [], None, NOW, route=r.plan_at_ingest)
    assert stale.routed == () and await state_of(store, "2") == "received"
    await r.run_pass()  # reloads, routes it
    assert await state_of(store, "2") == "routed"

    capped = router(store, Guards(storefronts={"shop": StorefrontGuards(max_orders_per_hour=100)}))
    await capped.run_pass()  # nothing to route, nothing loaded
    await store.ingest("shop", [order(external_id="3")], [], None, NOW)
    await capped.run_pass()  # loads the catalogue with this order
    result = await store.ingest("shop", [order(external_id="4")], [], None, NOW, route=capped.plan_at_ingest)
    assert result.routed == () and await state_of(store, "4") == "received"  # the cap counts at a pass


async def test_the_ingest_claims_deliveries_to_the_factories_it_routed_to_within_the_forwarders_room(
    store: Store,
) -> None:
    await store.seed_skus_from_config(SKUS, NOW)
    r = router(store)
    await store.ingest("shop", [order(external_id="0")], [], None, NOW)
    await r.run_pass()  # the catalogue, loaded; order 0's delivery to acme is due

    room = DeliveryClaim("f", 30, {"acme": 2, "bolt": 5}, total=10)
    page = [order(external_id=x) for x in "123"]  # all to acme
    result = await store.ingest("shop", page, [], None, NOW, route=r.plan_at_ingest, claim=room)
    assert len(result.routed) == 3
    assert [j.factory for j in result.claimed] == ["acme", "acme"]  # its room, the oldest due first
    assert all(j.lease_token >= 1 and j.attempts == 0 for j in result.claimed)
    zero = await store.find_order_id("shop", "0")
    assert result.claimed[0].order_id == zero
    left = await store.claim_deliveries("f", ["acme", "bolt"], NOW, 30, 50)
    assert sorted(j.order_id for j in [*result.claimed, *left]) == sorted(
        [zero, *[await store.find_order_id("shop", x) for x in "123"]]
    )  # each delivery claimed once

    none = await store.ingest(
        "shop",
        [order(external_id="4")],
        [],
        None,
        NOW,
        route=r.plan_at_ingest,
        claim=DeliveryClaim("f", 30, {"bolt": 5}, total=10),  # no room at acme
    )
    assert len(none.routed) == 1 and none.claimed == ()


async def test_an_order_relay_cannot_plan_is_held_with_a_reason_and_the_rest_are_routed(store: Store) -> None:
    """A total past Decimal's range made the margin guard raise: the whole batch failed on every pass, and
    at ingest the whole page (review of issue 15). Now that one order waits for a person."""
    await store.import_skus([SkuRecord("A", "acme", unit_cost=Decimal("0.5"), currency="USD")], NOW)
    guards = Guards(storefronts={"shop": StorefrontGuards(min_margin=Decimal(1))})
    r = router(store, guards)
    await store.ingest("shop", [order(external_id="0")], [], None, NOW)
    await r.run_pass()  # the catalogue, loaded
    page = [order(external_id="1", total=Decimal("-1e40")), order(external_id="2")]
    result = await store.ingest("shop", page, [], None, NOW, route=r.plan_at_ingest)
    assert result.new == 2
    assert await state_of(store, "1") == "held"
    assert await state_of(store, "2") != "received"  # planned with the page: placed or held by its margin
    poisoned = await store.find_order(await store.find_order_id("shop", "1") or 0)
    assert poisoned is not None and poisoned.order.attention_reason == "routing_failed"
    assert "InvalidOperation" in (poisoned.order.attention_detail or "")


async def test_a_failing_route_hook_leaves_the_page_stored_for_the_router(store: Store) -> None:
    def fails(snapshot: RoutingSnapshot, jobs: Sequence[RouteJob]) -> list[RoutePlan]:
        raise ArithmeticError("a bug in planning")

    result = await store.ingest("shop", [order(external_id="1")], [], None, NOW, route=fails)
    assert result.new == 1 and result.routed == ()
    assert await state_of(store, "1") == "received"


async def test_room_given_to_an_ingest_claim_is_held_until_the_claim_is_released(tmp_path: Path) -> None:
    """Each storefront's poller asks for room while the others' ingests wait for the writer: without the
    reservation every one of them (and a forwarder pass) was given the same room (review of issue 15)."""
    async with Harness(tmp_path, factories=("acme",), sku_map={"TEE-RED-M": "acme"}) as h:
        settings = h.settings(daemon={"batch_size": 10})
        async with h.app(settings=settings) as app:
            forwarder = app.forwarder
            first = forwarder.claim_at_ingest()
            assert first is not None and first.total == 10 and first.room == {"acme": 10}
            assert forwarder.claim_at_ingest() is None  # all of it is held by the first claim
            forwarder.release_claim(first)
            again = forwarder.claim_at_ingest()
            assert again is not None and again.room == {"acme": 10}
            forwarder.release_claim(again)
