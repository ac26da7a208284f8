"""The whole daemon on each backend (issue 16): the loops, the inbound server and the CLI's store calls know
nothing of the backend; the same assertions hold on SQLite and on PostgreSQL."""

from __future__ import annotations

from adapters.webhook.fake import Fault
from relay.domain.models import factory_order_key
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine
from tests.integration.test_loop import post_event, shipment


async def test_an_order_split_over_two_factories_is_placed_shipped_pushed_and_completed(tmp_path, store_url):
    async with Harness(tmp_path) as h:
        h.database = store_url
        oid = h.storefront.add_order([SeedLine("TEE-RED-M", 2), SeedLine("MUG-WHT", 1)])
        async with h.app() as app:
            await app.run_once()
            assert {f: fake.held for f, fake in h.factories.items()} == {"acme": 1, "bolt": 1}
            for fake in h.factories.values():
                assert await fake.ship_all() == 1
            await app.run_once()
            view = await app.store.find_order(await app.store.find_order_id("shop", oid))
        assert view.order.state == "completed"
        assert {fo.state for fo in view.factory_orders} == {"shipped"}
        assert len(h.storefront.fulfilments(oid)) == 2
        kinds = [e.kind for e in view.events]
        assert kinds.count("factory_accepted") == 2 and kinds.count("tracking_pushed") == 2


async def test_a_retried_delivery_and_a_duplicate_callback_place_and_ship_once(tmp_path, store_url):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        h.database = store_url
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme = h.factories["acme"]
        acme.fail_next(Fault(status=503, retry_after=7))
        async with h.app(clock=clock) as app:
            await app.run_once()
            clock.advance(7.5)
            await app.run_once()
            key = factory_order_key("shop", oid, "acme")
            event = shipment(key, [(h.storefront.line_ids(oid)[0], 1)])
            first = await post_event(app, "acme", acme.callback_secret, event, "m-1")
            again = await post_event(app, "acme", acme.callback_secret, event, "m-1")
            await app.run_once()
            view = await app.store.find_order(1)
        assert acme.deliveries == {key: 2} and acme.held == 1
        assert first[0] == again[0] == 200
        assert view.order.state == "completed"
        assert len(h.storefront.fulfilments(oid)) == 1


def test_relay_demo_checks_exactly_once_on_each_backend(store_url, capsys):
    """`relay demo --database URL`: every order reaches its factory exactly once and gets tracking back."""
    from relay.cli import main

    database = store_url.removeprefix("sqlite:///")  # a path for SQLite, the URL for PostgreSQL
    assert main(["demo", "--orders", "30", "--database", database]) == 0
    assert "OK: every order reached its factory exactly once" in capsys.readouterr().out
