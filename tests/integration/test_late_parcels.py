"""Issue 11, items 6 and 7 end to end: a late parcel on a cancelled factory order got HTTP 500 forever,
and a cancellation after a partial shipment was never sent."""

from __future__ import annotations

from adapters.factory_poll.fake import FakePolledFactory
from relay.domain.models import factory_order_key
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine
from tests.integration.factory_helpers import events, post_event, shipment


async def test_a_late_parcel_after_a_confirmed_cancellation_is_answered_200_pushed_and_flagged(tmp_path):
    """Split order: acme ships its line and the tracking is pushed; the customer cancels; bolt confirms the
    cancellation (the order is completed); then bolt's parcel arrives anyway. Before: HTTP 500 (an
    IllegalTransition completed -> shipped) on every retry of the callback."""
    async with Harness(tmp_path, sku_map={"A": "acme", "B": "bolt"}) as h:
        acme, bolt = h.factories["acme"], h.factories["bolt"]
        oid = h.storefront.add_order([SeedLine("A"), SeedLine("B")])
        line_a, line_b = h.storefront.line_ids(oid)
        key_a, key_b = (factory_order_key("shop", oid, f) for f in ("acme", "bolt"))
        async with h.app() as app:
            await app.run_once()
            assert await acme.send_event(shipment(key_a, [(line_a, 1)], "A1"), "a-1") == 200
            await app.run_once()
            h.storefront.cancel(oid)
            await app.run_once()
            assert bolt.is_cancelled(key_b)
            assert (await app.store.find_order(1)).order.state == "completed"
            late = shipment(key_b, [(line_b, 1)], "B1")
            answer = await post_event(app, "bolt", bolt.callback_secret, late, "b-1", ts=app.clock())
            assert answer == (200, {"status": "accepted"})
            await app.run_once()
            view = await app.store.find_order(1)
        assert len(h.storefront.fulfilments(oid)) == 2  # the late parcel's tracking reached the shop
        assert (view.order.state, view.order.attention_reason) == ("completed", "shipped_after_cancel")
        assert "shipped_after_cancel" in events(view)


async def test_a_cancellation_after_a_partial_shipment_reaches_the_factory_with_the_unshipped_lines(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M", quantity=2), SeedLine("TEE-BLU-L")])
        red, blue = h.storefront.line_ids(oid)
        key = factory_order_key("shop", oid, "acme")
        async with h.app() as app:
            await app.run_once()
            assert await acme.send_event(shipment(key, [(red, 1)], "P1"), "p-1") == 200
            await app.run_once()
            h.storefront.cancel(oid)
            await app.run_once()
            view = await app.store.find_order(1)
        assert acme.is_cancelled(key)  # before: no order.cancelled; the factory made the rest
        assert acme.cancelled_lines[key] == [
            {"line_id": red, "quantity": 1},
            {"line_id": blue, "quantity": 1},
        ]
        assert view.order.state == "completed" and view.factory_orders[0].cancel_state == "done"
        assert len(h.storefront.fulfilments(oid)) == 1


async def test_a_late_polled_parcel_does_not_block_the_factory_cursor(tmp_path):
    """The same late parcel from a factory that is polled: before, the poller's page raised on every
    poll and the cursor never moved past it."""
    slow = FakePolledFactory("slow", page_size=2)
    await slow.start()
    try:
        async with Harness(
            tmp_path,
            factories=("acme",),
            sku_map={"TEE-RED-M": "acme", "MUG-WHT": "slow"},
            config={"factories": {"slow": slow.factory_config()}},
        ) as h:
            oid = h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("MUG-WHT")])
            red, _ = h.storefront.line_ids(oid)
            key_red, key_mug = (factory_order_key("shop", oid, f) for f in ("acme", "slow"))
            async with h.app() as app:
                await app.run_once()
                assert await h.factories["acme"].send_event(shipment(key_red, [(red, 1)], "R1"), "r-1") == 200
                await app.run_once()
                h.storefront.cancel(oid)
                await app.run_once()
                assert slow.is_cancelled(key_mug)
                slow.orders[key_mug].cancelled = False  # it ships all the same
                assert await slow.ship_all() == 1
                await app.run_once()
                cursor = await app.store.get_factory_cursor("slow")
                await app.run_once()
                view = await app.store.find_order(1)
        assert cursor == "1"
        assert len(h.storefront.fulfilments(oid)) == 2
        assert (view.order.state, view.order.attention_reason) == ("completed", "shipped_after_cancel")
    finally:
        await slow.close()
