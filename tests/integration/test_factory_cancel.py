"""Storefront cancellations reaching the factory: never placed, `order.cancelled`, or too late (already shipped)."""

from __future__ import annotations

import json

import aiohttp

from adapters.webhook.fake import Fault
from relay.domain.models import factory_order_key
from relay.signing import signed_headers
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine
from tests.integration.factory_helpers import events, post_event, shipment


async def test_cancelled_while_a_retry_is_scheduled_is_never_placed(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        key = factory_order_key("shop", oid, "acme")
        acme.fail_next(Fault(status=503))
        async with h.app(clock=clock) as app:
            await app.run_once()
            assert (await app.store.find_order(1)).factory_orders[0].next_attempt_at is not None
            h.storefront.cancel(oid)
            await app.run_once()
            clock.advance(3600)
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "cancelled"
        assert view.factory_orders[0].state == "cancelled"
        assert acme.held == 0
        assert acme.deliveries[key] == 1  # the order itself was never sent again
        # It had been attempted once (a 503 may still have been taken): the factory is told, to be sure.
        assert acme.cancellations == {key: 1}


async def test_cancelled_before_any_attempt_is_never_sent_at_all(tmp_path):
    async with Harness(tmp_path, config={"factories": {"acme": {"concurrency": 1}}}) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await app.pollers[0].safe_pass()
            await app.router.safe_pass()  # routed: a factory order is pending, due now
            h.storefront.cancel(oid)
            await app.run_once()
            view = await app.store.find_order(1)
        assert (view.order.state, view.factory_orders[0].state) == ("cancelled", "cancelled")
        assert acme.deliveries == {} and acme.cancellations == {}


async def test_cancelled_after_placement_the_factory_gets_a_signed_order_cancelled(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        key = factory_order_key("shop", oid, "acme")
        async with h.app() as app:
            await app.run_once()
            assert (await app.store.find_order(1)).order.state == "placed"
            h.storefront.cancel(oid)
            await app.run_once()
            await app.run_once()  # nothing more is owed: the cancellation is not sent twice
            view = await app.store.find_order(1)
        # The fake checked the Standard Webhooks signature and that Idempotency-Key == webhook-id.
        assert acme.deliveries == {key: 1, f"{key}.cancel": 1}
        assert acme.cancellations == {key: 1} and acme.orders[key].cancelled
        assert acme.rejected_signatures == 0
        fo = view.factory_orders[0]
        assert (fo.state, fo.cancel_state) == ("cancelled", "done")
        assert view.order.state == "cancelled"
        assert {"cancel_requested", "cancel_queued", "factory_cancelled"} <= set(events(view))


async def test_cancellation_failures_are_retried_on_the_schedule(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        key = factory_order_key("shop", oid, "acme")
        async with h.app(clock=clock) as app:
            await app.run_once()
            h.storefront.cancel(oid)
            acme.fail_next(Fault(status=502))
            await app.run_once()
            fo = (await app.store.find_order(1)).factory_orders[0]
            assert (fo.state, fo.cancel_state) == ("placed", "pending")
            clock.advance(6)
            await app.run_once()
            fo = (await app.store.find_order(1)).factory_orders[0]
        assert (fo.state, fo.cancel_state) == ("cancelled", "done")
        assert acme.deliveries[f"{key}.cancel"] == 2 and acme.cancellations == {key: 1}


async def test_already_shipped_answer_keeps_the_shipment_flowing_back(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        key = factory_order_key("shop", oid, "acme")
        async with h.app() as app:
            await app.run_once()
            acme.orders[key].shipped = True  # it has left the factory; its callback has not reached us yet
            h.storefront.cancel(oid)
            await app.run_once()
            fo = (await app.store.find_order(1)).factory_orders[0]
            assert (fo.state, fo.cancel_state) == ("placed", "refused")
            line = h.storefront.line_ids(oid)[0]
            assert await acme.send_event(shipment(key, [(line, 1)], "P1"), "ship-1") == 200
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "completed"
        assert len(h.storefront.fulfilments(oid)) == 1
        assert "cancel_refused_already_shipped" in events(view)


async def test_a_parcel_reported_after_the_factory_cancelled_is_still_accepted_and_pushed(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        key = factory_order_key("shop", oid, "acme")
        async with h.app() as app:
            await app.run_once()
            h.storefront.cancel(oid)
            await app.run_once()
            assert (await app.store.find_order(1)).order.state == "cancelled"
            line = h.storefront.line_ids(oid)[0]
            event = shipment(key, [(line, 1)], "P1")
            assert await post_event(app, "acme", acme.callback_secret, event, "late-1", ts=app.clock()) == (
                200,
                {"status": "accepted"},
            )
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "cancelled"  # terminal; the parcel is real all the same
        assert view.factory_orders[0].state == "shipped"
        assert len(h.storefront.fulfilments(oid)) == 1


async def test_an_order_created_arriving_after_its_cancellation_is_refused_by_the_factory(tmp_path):
    """A cancellation can overtake its order (unordered, at-least-once delivery): the factory remembers it."""
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        key = factory_order_key("shop", oid, "acme")
        acme.fail_next(Fault(status=503))
        async with h.app(clock=clock) as app:
            await app.run_once()
            h.storefront.cancel(oid)
            await app.run_once()
            assert (
                acme.cancellations == {}
            )  # the circuit is open: nothing before the failed probe's retry time
            clock.advance(6)
            await app.run_once()
            assert acme.cancellations == {key: 1}
        # The first attempt, delayed in transit, arrives after its cancellation: nothing is made.
        body = json.dumps({"type": "order.created", "data": {"key": key, "lines": []}}).encode()
        headers = signed_headers(acme.signing_secret, key, int(clock()), body) | {"Idempotency-Key": key}
        async with (
            aiohttp.ClientSession() as session,
            session.post(acme.url, data=body, headers=headers) as r,
        ):
            assert (r.status, await r.json()) == (409, {"error": "cancelled"})
        assert acme.held == 0


async def test_a_rejected_cancellation_flags_the_order_for_a_person_and_stays_flagged(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        key = factory_order_key("shop", oid, "acme")
        async with h.app() as app:
            await app.run_once()
            h.storefront.cancel(oid)
            acme.fail_next(Fault(status=400, body='{"error": "cannot cancel: in production"}'))
            await app.run_once()
            view = await app.store.find_order(1)
            assert view.factory_orders[0].cancel_state == "dead"
            assert view.order.attention_reason == "cancel_rejected"
            assert "in production" in view.order.attention_detail
            assert (await app.store.stats()).attention == {"cancel_rejected": 1}
            # The factory ships anyway: the parcel flows back, and the order stays flagged.
            line = h.storefront.line_ids(oid)[0]
            assert await acme.send_event(shipment(key, [(line, 1)], "P1"), "ship-1") == 200
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "completed"
        assert view.order.attention_reason == "cancel_rejected"
        assert "cancel_dead_lettered" in events(view)
