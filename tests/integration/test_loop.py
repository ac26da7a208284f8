"""The whole loop against fake storefront and factories over real loopback HTTP."""

from __future__ import annotations

import json
import sqlite3
import time

import aiohttp
import pytest

from adapters.webhook.fake import Fault
from relay.domain.models import factory_order_key
from relay.signing import signed_headers
from relay.store import OrderQuery
from relay.store.transitions.orders import UNSTORABLE_TEXT
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine


async def post_event(app, factory: str, secret: str, event: dict, message_id: str, *, ts: int | None = None):
    body = json.dumps(event).encode()
    headers = signed_headers(secret, message_id, ts or int(time.time()), body)
    async with (
        aiohttp.ClientSession() as s,
        s.post(app.callback_url(factory), data=body, headers=headers) as r,
    ):
        return r.status, await r.json()


def shipment(key: str, lines: list[tuple[str, int]], parcel: str = "P1") -> dict:
    return {
        "type": "shipment.created",
        "data": {
            "factory_order_key": key,
            "shipment_id": parcel,
            "carrier": "SF Express",
            "tracking_number": f"SF-{parcel}-{key[-6:]}",
            "lines": [{"line_id": lid, "quantity": q} for lid, q in lines],
        },
    }


async def test_order_split_across_two_factories_is_placed_shipped_and_completed(tmp_path):
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M", 2), SeedLine("MUG-WHT", 1)])
        async with h.app() as app:
            await app.run_once()
            assert {f: fake.held for f, fake in h.factories.items()} == {"acme": 1, "bolt": 1}
            acme_order = next(iter(h.factories["acme"].orders.values())).payload
            assert [line["sku"] for line in acme_order["lines"]] == ["TEE-RED-M"]
            assert acme_order["shipping_address"]["city"] == "Shenzhen"
            for fake in h.factories.values():
                assert await fake.ship_all() == 1
            await app.run_once()
            view = await app.store.find_order(await app.store.find_order_id("shop", oid))
        assert view.order.state == "completed"
        assert {fo.state for fo in view.factory_orders} == {"shipped"}
        assert len(h.storefront.fulfilments(oid)) == 2
        kinds = [e.kind for e in view.events]
        assert kinds[:2] == ["received", "routed"] and kinds[-1] == "completed"
        assert kinds.count("factory_accepted") == 2 and kinds.count("tracking_pushed") == 2


async def test_unknown_sku_holds_the_order_visibly_until_mapped(tmp_path):
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("NOPE-42")])
        async with h.app() as app:
            await app.run_once()
            held = await app.store.list_orders(OrderQuery(state="held"), 10)
            stats = await app.store.stats()
        assert [(o.external_id, o.attention_reason) for o in held] == [(oid, "unknown_sku")]
        assert "NOPE-42" in held[0].attention_detail
        assert stats.attention == {"unknown_sku": 1}
        assert sum(f.held for f in h.factories.values()) == 0
        # The operator maps the SKU and retries: the order goes through, nothing was lost.
        settings = h.settings(routing={"skus": {**h.sku_map, "NOPE-42": "bolt"}})
        async with h.app(settings=settings) as app:
            assert await app.store.retry_order(held[0].id, time.time()) == ["order requeued for routing"]
            await app.run_once()
            state = (await app.store.find_order(held[0].id)).order.state
        assert state == "placed"
        assert (h.factories["acme"].held, h.factories["bolt"].held) == (1, 1)


async def test_factory_503_then_200_places_once_with_the_same_key(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme = h.factories["acme"]
        acme.fail_next(Fault(status=503, retry_after=7))
        async with h.app(clock=clock) as app:
            await app.run_once()
            view = await app.store.find_order(1)
            fo = view.factory_orders[0]
            assert (fo.state, fo.attempts) == ("pending", 1)
            assert fo.next_attempt_at >= clock.now + 7
            await app.run_once()  # not due yet: nothing is sent
            assert sum(acme.deliveries.values()) == 1
            clock.advance(7.5)
            await app.run_once()
            view = await app.store.find_order(1)
        key = factory_order_key("shop", oid, "acme")
        assert acme.deliveries == {key: 2}
        assert acme.held == 1
        assert view.factory_orders[0].state == "placed"
        assert [e.kind for e in view.events].count("delivery_failed") == 1


async def test_factory_400_dead_letters_with_the_response_quoted(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.factories["acme"].fail_next(Fault(status=400, body='{"error": "address incomplete"}'))
        async with h.app() as app:
            await app.run_once()
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "failed"
        assert view.order.attention_reason == "factory_rejected"
        fo = view.factory_orders[0]
        assert fo.state == "dead" and fo.dead_reason == "factory_rejected"
        assert "address incomplete" in fo.last_error
        assert sum(h.factories["acme"].deliveries.values()) == 1


async def test_callbacks_are_authenticated_deduplicated_and_scoped_to_their_factory(tmp_path):
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("MUG-WHT")])
        acme, bolt = h.factories["acme"], h.factories["bolt"]
        async with h.app() as app:
            await app.run_once()
            acme_key = factory_order_key("shop", oid, "acme")
            line = h.storefront.line_ids(oid)[0]
            event = shipment(acme_key, [(line, 1)])

            status, _ = await post_event(app, "acme", "wrong-secret", event, "m1")
            assert status == 401
            status, _ = await post_event(
                app, "acme", acme.callback_secret, event, "m1", ts=int(time.time()) - 3600
            )
            assert status == 401
            # Factory B, correctly signed with its own secret, cannot touch factory A's order.
            status, _ = await post_event(app, "bolt", bolt.callback_secret, event, "m1")
            assert status == 404
            assert (await app.store.find_order(1)).shipments == ()

            assert await post_event(app, "acme", acme.callback_secret, event, "m1") == (
                200,
                {"status": "accepted"},
            )
            assert await post_event(app, "acme", acme.callback_secret, event, "m1") == (
                200,
                {"status": "duplicate"},
            )
            # The same parcel under a new message id is still one parcel.
            assert (await post_event(app, "acme", acme.callback_secret, event, "m2"))[0] == 200
            await app.run_once()
            view = await app.store.find_order(1)
        assert len(view.shipments) == 1
        assert len(h.storefront.fulfilments(oid)) == 1
        assert view.order.state == "partially_shipped"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b'{"type": "shipment.created", "data": {}}', 422),
        (b'{"type": "order.eaten", "data": {}}', 422),
        (b"[" * 5000 + b"]" * 5000, 400),
    ],
)
async def test_malformed_callbacks_get_4xx_and_change_nothing(tmp_path, body, status):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await app.run_once()
            before = await app.store.stats()
            headers = signed_headers(h.factories["acme"].callback_secret, "bad-1", int(time.time()), body)
            async with (
                aiohttp.ClientSession() as s,
                s.post(app.callback_url("acme"), data=body, headers=headers) as r,
            ):
                assert r.status == status
            assert await app.store.stats() == before


async def test_oversized_callback_gets_413(tmp_path):
    async with Harness(tmp_path) as h, h.app() as app:
        body = b'{"pad": "' + b"x" * 70_000 + b'"}'
        headers = signed_headers(h.factories["acme"].callback_secret, "big", int(time.time()), body)
        async with (
            aiohttp.ClientSession() as s,
            s.post(app.callback_url("acme"), data=body, headers=headers) as r,
        ):
            assert r.status == 413


async def test_storefront_push_failure_retries_then_completes(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app(clock=clock) as app:
            await app.run_once()
            await h.factories["acme"].ship_all()
            h.storefront.fail_next(500, times=10)  # the next poll and push each outlast their in-call retries
            await app.run_once()
            assert (await app.store.find_order(1)).order.state == "shipped"
            # 5 attempts each, so 4 backoff waits each: asked for (jittered, growing), never really slept.
            assert len(h.sleep.calls) == 8 and all(0 < s <= 10.0 for s in h.sleep.calls)
            clock.advance(3600)
            await app.run_once()
            assert (await app.store.find_order(1)).order.state == "completed"
            assert len(h.sleep.calls) == 8  # the persisted retry went through at its first attempt
        assert len(h.storefront.fulfilments(oid)) == 1


async def test_unpaid_and_test_orders_are_held_with_reasons_and_unpaid_is_placed_once_paid(tmp_path):
    async with Harness(tmp_path) as h:
        unpaid = h.storefront.add_order([SeedLine("TEE-RED-M")], paid=False)
        h.storefront.add_order([SeedLine("TEE-RED-M")], test=True)
        async with h.app() as app:
            await app.run_once()
            reasons = {
                o.external_id: o.attention_reason
                for o in await app.store.list_orders(OrderQuery(state="held"), 10)
            }
            assert sorted(reasons.values()) == ["test_order", "unpaid"]
            h.storefront.mark_paid(unpaid)
            await app.run_once()
            await app.run_once()
        assert h.factories["acme"].held == 1
        assert h.factories["acme"].deliveries == {factory_order_key("shop", unpaid, "acme"): 1}


async def test_cancelled_before_placement_is_never_placed(tmp_path):
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")], paid=False)
        async with h.app() as app:
            await app.run_once()
            h.storefront.cancel(oid)
            h.storefront.mark_paid(oid)
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "cancelled"
        assert h.factories["acme"].held == 0


async def test_malformed_storefront_order_is_quarantined_and_the_rest_flow(tmp_path):
    async with Harness(tmp_path) as h:
        bad = h.storefront.add_malformed_order()
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await app.run_once()
            stats = await app.store.stats()
        assert stats.quarantined == 1
        assert stats.orders == {"placed": 1}
        assert bad not in {o.payload["order_id"] for o in h.factories["acme"].orders.values()}


async def test_order_whose_text_cannot_be_stored_is_quarantined_and_the_rest_flow(tmp_path):
    # A JSON parser reads a lone surrogate from its escape ("\\ud800"); UTF-8, and so the database, cannot
    # hold it. Written as it came, it failed the whole page's transaction on every pass.
    async with Harness(tmp_path) as h:
        bad = h.storefront.add_order([SeedLine("TEE-\ud800")])
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await app.run_once()
            await app.run_once()
            stats = await app.store.stats()
        assert stats.quarantined == 1
        assert stats.orders == {"placed": 1}
        with sqlite3.connect(tmp_path / "relay.db") as db:
            ((external_id, reason, raw),) = db.execute("SELECT external_id, reason, raw FROM quarantine")
        assert (external_id, reason) == (bad, UNSTORABLE_TEXT)
        assert json.loads(raw)["lines"][0]["sku"] == "TEE-\ud800"


async def test_metrics_and_health_endpoints(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("NOPE")])
        async with h.app(settings=h.settings(admin={"listen": "127.0.0.1:0"})) as app:
            await app.run_once()
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{app.admin_url}/metrics") as r:
                    text = await r.text()
                async with s.get(f"{app.inbound_url}/healthz") as r:
                    health = await r.json()
        assert 'relay_orders{state="held"} 1.0' in text
        assert 'relay_orders_needing_attention{reason="unknown_sku"} 1.0' in text
        assert health["status"] == "ok"
