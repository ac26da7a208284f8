"""Shipment callbacks: partial and multiple parcels, lines that are not the factory's, inbound hardening."""

from __future__ import annotations

import aiohttp

from relay.domain.models import factory_order_key
from relay.signing import signed_headers
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine
from tests.integration.factory_helpers import post_event, shipment


async def test_two_parcels_make_two_pushes_and_the_order_completes_after_the_second(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M", 2), SeedLine("TEE-BLU-L", 1)])
        key = factory_order_key("shop", oid, "acme")
        red, blue = h.storefront.line_ids(oid)
        async with h.app() as app:
            await app.run_once()
            secret = acme.callback_secret
            # Parcel 1: one of the two red tees.
            assert (
                await post_event(app, "acme", secret, shipment(key, [(red, 1)], "P1"), "m1", ts=app.clock())
            )[0] == 200
            await app.run_once()
            view = await app.store.find_order(1)
            assert (view.order.state, view.factory_orders[0].state) == (
                "partially_shipped",
                "partially_shipped",
            )
            assert len(h.storefront.fulfilments(oid)) == 1
            # Parcel 2: the rest.
            event = shipment(key, [(red, 1), (blue, 1)], "P2")
            assert (await post_event(app, "acme", secret, event, "m2", ts=app.clock()))[0] == 200
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "completed"
        assert view.factory_orders[0].state == "shipped"
        pushed = h.storefront.fulfilments(oid)
        assert [(f.tracking_number, f.line_ids, f.quantities) for f in pushed] == [
            ("SF-P1", (red,), (1,)),
            ("SF-P2", (red, blue), (1, 1)),
        ]
        assert [s.push_state for s in view.shipments] == ["done", "done"]


async def test_a_shipment_for_lines_not_in_that_factory_order_is_rejected_and_changes_nothing(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("MUG-WHT")])
        key = factory_order_key("shop", oid, "acme")
        tee, mug = h.storefront.line_ids(oid)  # the mug is bolt's
        async with h.app() as app:
            await app.run_once()
            before = (await app.store.stats(), await app.store.find_order(1))
            for lines in ([(mug, 1)], [("no-such-line", 1)], [(tee, 2)]):  # not acme's, unknown, too many
                status, answer = await post_event(
                    app, "acme", acme.callback_secret, shipment(key, lines, "P1"), "bad-1", ts=app.clock()
                )
                # Each is refused on its merits: a rejected message id is not remembered as processed.
                assert (status, answer["error"]) == (422, "invalid shipment lines")
            assert (await app.store.stats(), await app.store.find_order(1)) == before
            # Corrected, the parcel goes through.
            event = shipment(key, [(tee, 1)], "P1")
            assert await post_event(app, "acme", acme.callback_secret, event, "bad-1", ts=app.clock()) == (
                200,
                {"status": "accepted"},
            )


async def test_processed_message_ids_survive_a_restart(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M", 2)])
        key = factory_order_key("shop", oid, "acme")
        line = h.storefront.line_ids(oid)[0]
        async with h.app() as app:
            await app.run_once()
            first = shipment(key, [(line, 1)], "P1")
            assert (await post_event(app, "acme", acme.callback_secret, first, "m1", ts=app.clock()))[
                0
            ] == 200
        async with h.app() as app:
            # The same message id with a different parcel: a replay, no second effect.
            again = shipment(key, [(line, 1)], "P2")
            assert await post_event(app, "acme", acme.callback_secret, again, "m1", ts=app.clock()) == (
                200,
                {"status": "duplicate"},
            )
            view = await app.store.find_order(1)
        assert [s.shipment_id for s in view.shipments] == ["P1"]


async def test_timestamps_within_five_minutes_are_accepted_and_beyond_are_refused(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M", 4)])
        key = factory_order_key("shop", oid, "acme")
        line = h.storefront.line_ids(oid)[0]
        acme.clock = clock
        async with h.app(clock=clock) as app:
            await app.run_once()
            secret = acme.callback_secret
            for n, (skew, status) in enumerate([(-299, 200), (299, 200), (-301, 401), (301, 401)]):
                event = shipment(key, [(line, 1)], f"P{n}")
                assert (await post_event(app, "acme", secret, event, f"m{n}", ts=clock.now + skew))[
                    0
                ] == status
            view = await app.store.find_order(1)
        assert [s.shipment_id for s in view.shipments] == ["P0", "P1"]


async def test_malformed_json_of_every_kind_gets_a_4xx_never_a_5xx(tmp_path):
    bodies = [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"1e999999",
        b"{" * 100,
        b'{"type": "shipment.created"}',
        b'{"type": "shipment.created", "data": {"lines": "not a list"}}',
        b"\x00\x01",
        '{"é": 1}'.encode("utf-16"),
        b'{"type": "shipment.created", "data": {"factory_order_key": "x", "shipment_id": "p", "carrier": "c",'
        b' "tracking_number": "t", "lines": [{"line_id": "l", "quantity": -1}]}}',
    ]
    async with Harness(tmp_path) as h, h.app() as app:
        secret = h.factories["acme"].callback_secret
        async with aiohttp.ClientSession() as session:
            for n, body in enumerate(bodies):
                headers = signed_headers(secret, f"junk-{n}", int(app.clock()), body)
                async with session.post(app.callback_url("acme"), data=body, headers=headers) as r:
                    assert 400 <= r.status < 500, (body, r.status)
