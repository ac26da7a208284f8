"""Issue 13, items 3 and 4: the routing guards (margin, currency, approval, caps) hold an order with its
reason and figures; an operator's release places it once (the guards let that version through)."""

from __future__ import annotations

import time
from decimal import Decimal

from relay.domain.models import factory_order_key
from relay.store import SkuRecord
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

COSTS = [
    SkuRecord(sku="MUG-WHT", factory="bolt", unit_cost=Decimal("6.00"), currency="USD"),
    SkuRecord(sku="TEE-RED-M", factory="acme", unit_cost=Decimal("30"), currency="CNY"),
]


def shop(**guards: object) -> dict:
    return {"storefronts": {"shop": guards}}


async def release_and_place(app, order_id: int) -> None:
    assert await app.store.release_order(order_id, time.time())
    await app.run_once()
    await app.run_once()


async def test_margin_too_low_is_held_with_the_figures_and_placed_once_after_release(tmp_path):
    config = {**shop(min_margin="5.00"), "factories": {"bolt": {"shipping_cost": "2.00 USD"}}}
    async with Harness(tmp_path, config=config) as h:
        oid = h.storefront.add_order([SeedLine("MUG-WHT", 1, Decimal("10.00"))])
        async with h.app() as app:
            await app.store.import_skus(COSTS, time.time())
            await app.run_once()
            view = await app.store.find_order(1)
            assert (view.order.state, view.order.attention_reason) == ("held", "margin_too_low")
            assert view.order.attention_detail == (
                "paid 10.00 USD, cost 8.00 USD (factory 6.00 + shipping 2.00), margin 2.00 USD < required "
                "5.00 USD (min_margin 5.00)"
            )
            assert h.factories["bolt"].deliveries == {}
            await app.run_once()  # held stays held: nothing goes out on its own
            assert h.factories["bolt"].deliveries == {}

            await release_and_place(app, 1)
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "placed"
        assert h.factories["bolt"].deliveries == {factory_order_key("shop", oid, "bolt"): 1}


async def test_a_margin_percent_that_holds_passes_when_the_margin_is_enough(tmp_path):
    async with Harness(tmp_path, config=shop(min_margin_percent=30)) as h:
        h.storefront.add_order([SeedLine("MUG-WHT", 2, Decimal("10.00"))])  # 20 paid, 12 cost: 40 %
        h.storefront.add_order([SeedLine("MUG-WHT", 1, Decimal("8.00"))])  # 8 paid, 6 cost: 25 %
        async with h.app() as app:
            await app.store.import_skus(COSTS, time.time())
            await app.run_once()
            first, second = [await app.store.find_order(n) for n in (1, 2)]
        assert first.order.state == "placed"
        assert (second.order.state, second.order.attention_reason) == ("held", "margin_too_low")
        assert "margin 2.00 USD < required 2.40 USD (min_margin_percent 30%)" in second.order.attention_detail


async def test_a_cost_in_another_currency_needs_a_configured_rate(tmp_path):
    async with Harness(tmp_path, config=shop(min_margin="1")) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M", 1, Decimal("10.00"))])
        async with h.app() as app:
            await app.store.import_skus(COSTS, time.time())
            await app.run_once()
            view = await app.store.find_order(1)
        assert (view.order.state, view.order.attention_reason) == ("held", "currency_mismatch")
        assert "no rate CNY/USD in routing.rates" in view.order.attention_detail
        assert h.factories["acme"].deliveries == {}
        # With the rate (given the other way round), 30 CNY is 4.20 USD: margin 5.80, placed.
        settings = h.settings(routing={"rates": {"USD/CNY": "7.1428571"}})
        async with h.app(settings=settings) as app:
            assert await app.store.release_order(1, time.time())
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "placed"


async def test_auto_place_off_holds_every_order_until_released_then_places_it_once(tmp_path):
    async with Harness(tmp_path, config=shop(auto_place=False)) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await app.run_once()
            view = await app.store.find_order(1)
            assert (view.order.state, view.order.attention_reason) == ("held", "awaiting_approval")
            assert h.factories["acme"].deliveries == {}
            await release_and_place(app, 1)
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "placed"
        assert h.factories["acme"].deliveries == {factory_order_key("shop", oid, "acme"): 1}


async def test_an_order_edited_after_release_is_guarded_again(tmp_path):
    async with Harness(tmp_path, config=shop(auto_place=False)) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")], paid=False)
        async with h.app() as app:
            await app.run_once()
            assert (await app.store.find_order(1)).order.attention_reason == "unpaid"
            await app.store.release_order(1, time.time())  # the operator releases this (unpaid) version
            await app.run_once()
            assert (await app.store.find_order(1)).order.attention_reason == "unpaid"  # still unpaid
            h.storefront.mark_paid(oid)  # a new version: the release does not cover it
            await app.run_once()
            view = await app.store.find_order(1)
            assert (view.order.state, view.order.attention_reason) == ("held", "awaiting_approval")
        assert h.factories["acme"].deliveries == {}


async def test_caps_hold_the_excess_with_a_reason(tmp_path):
    async with Harness(tmp_path, config=shop(max_order_value="100", max_orders_per_hour=2)) as h:
        big = h.storefront.add_order([SeedLine("TEE-RED-M", 11, Decimal("10.00"))])
        small = [h.storefront.add_order([SeedLine("TEE-RED-M")]) for _ in range(3)]
        async with h.app() as app:
            await app.run_once()
            orders = {o.external_id: o for o in [(await app.store.find_order(n)).order for n in range(1, 5)]}
        assert (orders[big].attention_reason, orders[big].attention_detail) == (
            "order_value_cap",
            "order total 110.00 USD is over max_order_value 100",
        )
        assert [orders[oid].state for oid in small] == ["placed", "placed", "held"]
        assert orders[small[2]].attention_reason == "order_rate_cap"
        assert orders[small[2]].attention_detail == (
            "2 orders of shop routed in the last hour: max_orders_per_hour is 2"
        )
        assert h.factories["acme"].held == 2
