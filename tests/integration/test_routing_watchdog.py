"""Issue 13, item 6: the tracking watchdog, driven by an injected clock. A factory order placed
`no_tracking_after_days` ago with no parcel flags its order `no_tracking`; one shipped in part whose last
parcel is `tracking_stalled_after_days` old, `tracking_stalled`. Both show in `relay status` (the store's
status report) and in the metrics' counts, and clear once the parcels come."""

from __future__ import annotations

from relay.domain.models import factory_order_key
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine

DAY = 86400.0
RULES = {"factories": {"acme": {"no_tracking_after_days": 3, "tracking_stalled_after_days": 5}}}


async def parcel(fake, key: str, line_id: str, n: int) -> None:
    data = {
        "factory_order_key": key,
        "shipment_id": f"P{n}",
        "carrier": "SF Express",
        "tracking_number": f"SF{n:010d}",
        "lines": [{"line_id": line_id, "quantity": 1}],
    }
    assert await fake.send_event({"type": "shipment.created", "data": data}, f"m{n}", attempts=1) == 200


async def test_no_parcel_after_the_configured_days_flags_no_tracking_until_the_parcel_comes(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path, config=RULES) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme = h.factories["acme"]
        acme.clock = clock
        async with h.app(clock=clock) as app:
            await app.run_once()
            assert (await app.store.find_order(1)).order.state == "placed"
            clock.advance(2.9 * DAY)
            await app.run_once()
            assert (await app.store.find_order(1)).order.attention_reason is None

            clock.advance(0.2 * DAY)
            await app.run_once()
            view = await app.store.find_order(1)
            assert (view.order.state, view.order.attention_reason) == ("placed", "no_tracking")
            assert "acme (ACME-000001): placed " in view.order.attention_detail
            assert view.order.attention_detail.endswith(", 3 days ago, no parcel yet")
            status = await app.store.status(clock())
            assert [(a.order_id, a.reason) for a in status.attention] == [(1, "no_tracking")]
            assert (await app.store.stats()).attention == {"no_tracking": 1}
            events = [e for e in view.events if e.kind == "attention_flagged"]
            assert [e.detail["reason"] for e in events] == ["no_tracking"]
            await app.run_once()  # unchanged: no second event
            assert (
                len([e for e in (await app.store.find_order(1)).events if e.kind == "attention_flagged"]) == 1
            )

            await acme.ship_all()
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "completed" and view.order.attention_reason is None
        assert acme.deliveries == {factory_order_key("shop", oid, "acme"): 1}


async def test_a_partial_shipment_with_no_further_parcel_flags_tracking_stalled_then_clears(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path, config=RULES) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("TEE-BLU-L")])
        acme = h.factories["acme"]
        acme.clock = clock
        key = factory_order_key("shop", oid, "acme")
        first, second = h.storefront.line_ids(oid)
        async with h.app(clock=clock) as app:
            await app.run_once()
            clock.advance(1 * DAY)
            await parcel(acme, key, first, 1)
            await app.run_once()
            clock.advance(4.9 * DAY)  # 5.9 days after placement, 4.9 after the parcel
            await app.run_once()
            assert (await app.store.find_order(1)).order.attention_reason is None
            clock.advance(0.2 * DAY)
            await app.run_once()
            view = await app.store.find_order(1)
            assert (view.order.state, view.order.attention_reason) == (
                "partially_shipped",
                "tracking_stalled",
            )
            assert "lines still to ship" in view.order.attention_detail

            await parcel(acme, key, second, 2)
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "completed" and view.order.attention_reason is None


async def test_factories_without_thresholds_are_not_watched(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path, config=RULES) as h:
        h.storefront.add_order([SeedLine("MUG-WHT")])  # bolt: no thresholds
        h.factories["bolt"].clock = clock
        async with h.app(clock=clock) as app:
            await app.run_once()
            clock.advance(30 * DAY)
            await app.run_once()
            view = await app.store.find_order(1)
        assert (view.order.state, view.order.attention_reason) == ("placed", None)
