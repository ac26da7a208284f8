"""Issue 13, item 2: fallback factories by catalogue priority, against real HTTP fakes.

A primary that answers out of stock never holds the order: its factory order is closed and a new one (its
own idempotency key) goes to the next factory; the history says why. A disabled primary, or one failing for
longer than `fallback_after_s`, gets no new orders while another factory makes the SKU.
"""

from __future__ import annotations

import time

from adapters.webhook.fake import Fault
from relay.domain.models import factory_order_key
from relay.store import SkuRecord
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine

# MUG-WHT: bolt first, acme second. TEE-RED-M: acme only.
CATALOGUE = [
    SkuRecord(sku="MUG-WHT", factory="bolt", priority=0),
    SkuRecord(sku="MUG-WHT", factory="acme", priority=1),
    SkuRecord(sku="TEE-RED-M", factory="acme", priority=0),
]


async def test_primary_out_of_stock_goes_to_the_fallback_which_places_it_once(tmp_path):
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("MUG-WHT", 2)])
        bolt, acme = h.factories["bolt"], h.factories["acme"]
        bolt.out_of_stock("MUG-WHT")
        async with h.app() as app:
            await app.store.import_skus(CATALOGUE, time.time())
            await app.run_once()
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "placed" and view.order.attention_reason is None
        # The primary was asked once and holds nothing; the fallback holds it once, under its own key.
        assert bolt.held == 0 and bolt.deliveries == {factory_order_key("shop", oid, "bolt"): 1}
        assert acme.deliveries == {factory_order_key("shop", oid, "acme"): 1}
        assert [ln["sku"] for ln in acme.orders[factory_order_key("shop", oid, "acme")].payload["lines"]] == [
            "MUG-WHT"
        ]
        states = {fo.factory: (fo.state, fo.last_error) for fo in view.factory_orders}
        assert states["acme"] == ("placed", None)
        assert states["bolt"][0] == "cancelled" and "out of stock" in states["bolt"][1]
        fallback = next(e for e in view.events if e.kind == "fallback")
        assert fallback.detail["factory"] == "bolt" and fallback.detail["why"] == "out_of_stock"
        assert list(fallback.detail["to"]) == ["acme"]
        assert "out of stock" in fallback.detail["detail"]


async def test_out_of_stock_with_no_other_factory_fails_the_order_visibly(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.factories["acme"].out_of_stock("TEE-RED-M")
        async with h.app() as app:
            await app.store.import_skus(CATALOGUE, time.time())
            await app.run_once()
            view = await app.store.find_order(1)
        assert (view.order.state, view.order.attention_reason) == ("failed", "out_of_stock")
        assert [(fo.factory, fo.state) for fo in view.factory_orders] == [("acme", "dead")]
        assert h.factories["acme"].held == 0 and h.factories["bolt"].deliveries == {}


async def test_a_disabled_primary_gets_no_new_orders_while_another_factory_makes_the_sku(tmp_path):
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("MUG-WHT")])
        async with h.app() as app:
            await app.store.import_skus(CATALOGUE, time.time())
            await app.store.disable_factory("bolt", "closed for holiday", time.time())
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "placed"
        assert h.factories["bolt"].deliveries == {}
        assert h.factories["acme"].deliveries == {factory_order_key("shop", oid, "acme"): 1}
        routed = next(e for e in view.events if e.kind == "routed")
        assert routed.detail["fallbacks"] == ["MUG-WHT: bolt disabled -> acme"]


async def test_a_primary_failing_past_fallback_after_s_hands_over_only_what_it_never_got(tmp_path):
    clock = ManualClock()
    harness = Harness(tmp_path, config={"factories": {"bolt": {"fallback_after_s": 600}}})
    async with harness as h:
        first = h.storefront.add_order([SeedLine("MUG-WHT")])
        bolt, acme = h.factories["bolt"], h.factories["acme"]
        bolt.fail_next(Fault(status=503), times=50)
        for fake in h.factories.values():
            fake.clock = clock  # they check relay's signature timestamps against the same clock
        async with h.app(clock=clock) as app:
            await app.store.import_skus(CATALOGUE, clock())
            await app.run_once()  # the first order reaches bolt (503): bolt's circuit opens
            second = h.storefront.add_order([SeedLine("MUG-WHT")])
            clock.advance(60)
            await app.run_once()  # routed to bolt, not sent: the circuit lets one probe through at a time
            assert acme.deliveries == {}
            clock.advance(600)
            await app.run_once()
            views = [await app.store.find_order(n) for n in (1, 2)]
        # The second order was never sent to bolt: it moved to acme. The first may have reached bolt (an
        # answer can be lost), so it stays with bolt and waits for it.
        assert acme.deliveries == {factory_order_key("shop", second, "acme"): 1}
        assert factory_order_key("shop", second, "bolt") not in bolt.deliveries
        assert factory_order_key("shop", first, "bolt") in bolt.deliveries
        assert [fo.factory for fo in views[0].factory_orders] == ["bolt"]
        assert views[1].order.state == "placed"
        fallback = next(e for e in views[1].events if e.kind == "fallback")
        assert fallback.detail["why"].startswith("failing for")
