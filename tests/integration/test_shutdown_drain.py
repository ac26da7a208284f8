"""Regression: on stop, deliveries claimed but still queued behind a factory's concurrency limit are not
started during the drain (only sends already in flight finish). Before the fix all of them were sent."""

from __future__ import annotations

import asyncio

from relay.testing.faultproxy import FaultProxy, Toxic
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


async def test_stop_drains_in_flight_sends_and_starts_no_queued_ones(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        host, port = acme.url.removeprefix("http://").split("/")[0].split(":")
        proxy = FaultProxy(host, int(port))
        await proxy.start()
        proxy.default = Toxic.latency(0.3)  # the factory answers slowly
        for _ in range(4):
            h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings(
            daemon={"shutdown_grace_s": 30},
            factories={"acme": {"url": proxy.url("/orders"), "concurrency": 1}},
        )
        try:
            async with h.app(settings=settings) as app:
                runner = asyncio.create_task(app.run())
                while not acme.deliveries:
                    await asyncio.sleep(0.01)
                app.stop()
                await runner
                states = []
                for order_id in range(1, 5):
                    view = await app.store.find_order(order_id)
                    states += [fo.state for fo in view.factory_orders]
        finally:
            await proxy.close()
    assert sum(acme.deliveries.values()) == 1
    assert sorted(states) == ["pending", "pending", "pending", "placed"]
