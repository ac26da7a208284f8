"""Graceful shutdown of the real daemon: SIGTERM while factories answer slowly.

Within the grace period in-flight deliveries finish and are recorded, nothing new is started, and
the daemon exits 0. Past the grace period in-flight sends are cancelled (exit 0 too) and the orders
are sent again by the next daemon with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import random

from relay.domain.models import factory_order_key
from relay.testing.faultproxy import Toxic
from tests.fault.support import World
from tests.fault.test_network import settle_and_check

ORDERS = 4


async def until(predicate, timeout: float = 60.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def delivered(world: World) -> int:
    return sum(world.factories["acme"].deliveries.values())


def fo_rows(world: World) -> dict[str, tuple[str, int]]:
    return {
        key: (state, attempts)
        for key, state, attempts in world.query(
            "SELECT key, state, attempts FROM factory_orders WHERE factory = 'acme'"
        )
    }


async def test_sigterm_drains_in_flight_deliveries_and_starts_nothing_new(tmp_path):
    config = {"daemon": {"shutdown_grace_s": 30.0}, "factories": {"acme": {"concurrency": 1}}}
    async with World(tmp_path, proxy_factories=True, ship_after_s=None, config=config) as world:
        rng = random.Random(31)
        for _ in range(ORDERS):
            world.add_order(rng, ["TEE-RED-M"])
        world.proxies["acme"].default = Toxic.latency(1.0)  # the factory answers slowly
        daemon = await world.start()
        assert await until(lambda: delivered(world) >= 1), world.log_tail()
        daemon.term()
        in_flight = delivered(world)
        rc = await daemon.wait(60)
        assert rc == 0, world.log_tail()
        assert delivered(world) == in_flight, "a delivery was started after SIGTERM"
        rows = fo_rows(world)
        placed = [k for k, (state, _) in rows.items() if state == "placed"]
        assert sorted(placed) == sorted(world.factories["acme"].deliveries), (
            "an in-flight delivery was not recorded"
        )
        assert all(attempts == 0 for k, (state, attempts) in rows.items() if state == "pending")
        world.proxies["acme"].default = None
        await settle_and_check(world, "shutdown: SIGTERM drains in-flight", runs=1)
        assert all(n == 1 for n in world.factories["acme"].deliveries.values())


async def test_grace_period_over_cancels_sends_which_are_resent_with_the_same_key(tmp_path):
    config = {"daemon": {"shutdown_grace_s": 0.5}, "factories": {"acme": {"timeout_s": 30.0}}}
    async with World(tmp_path, proxy_factories=True, ship_after_s=None, config=config) as world:
        rng = random.Random(32)
        oids = [world.add_order(rng, ["TEE-RED-M"]) for _ in range(ORDERS)]
        world.proxies["acme"].default = Toxic.timeout(0, "downstream")  # placed, but the answer never comes
        daemon = await world.start()
        assert await until(lambda: delivered(world) >= ORDERS), world.log_tail()
        daemon.term()
        rc = await daemon.wait(30)
        assert rc == 0, world.log_tail()
        assert "grace_period_over" in world.log_tail(200)
        assert all(state == "pending" for state, _ in fo_rows(world).values())
        world.proxies["acme"].default = None
        await settle_and_check(world, "shutdown: grace period over, resent", runs=1)
        acme = world.factories["acme"]
        assert {k: acme.deliveries[k] for k in acme.orders} == {
            factory_order_key("shop", oid, "acme"): 2 for oid in oids
        }
