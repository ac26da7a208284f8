"""Network faults between the daemon (a real subprocess) and its factories and storefront.

A `FaultProxy` sits in front of each factory and the storefront; the factories' own scripted faults
(`Fault`) and the storefront's (`fail_next`) cover answers that are wrong rather than broken.
Every scenario ends with the exactly-once oracle.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from adapters.webhook.fake import Fault
from relay.testing.faultproxy import Toxic
from tests.fault.summary import env_int, record
from tests.fault.support import World

ORDERS = 12

# name -> (toxic for the factory connections, how many connections)
FACTORY_TOXICS = {
    "factory hangs before reading (timeout, upstream)": (Toxic.timeout(0, "upstream"), 3),
    "factory hangs after placing (timeout, downstream)": (Toxic.timeout(0, "downstream"), 3),
    "factory closes after placing (timeout 0.3s, downstream)": (Toxic.timeout(0.3, "downstream"), 3),
    "reset before the request arrives (reset_peer, upstream)": (Toxic.reset_peer(0, "upstream"), 4),
    "reset mid-response (reset_peer after 20 B)": (Toxic.reset_peer(20, "downstream"), 4),
    "response cut short (limit_data 40 B)": (Toxic.limit_data(40, "downstream"), 4),
    "request cut short (limit_data 100 B, upstream)": (Toxic.limit_data(100, "upstream"), 4),
    "slow answer (latency 0.5s)": (Toxic.latency(0.5), 6),
    "slow drip answer (slicer 16 B / 20 ms)": (Toxic.slicer(16, 0.02), 4),
}


async def settle_and_check(world: World, fault_class: str, runs: int, seed: int | None = None) -> None:
    daemon = await world.start()
    assert await world.wait_ready(daemon), world.log_tail()
    if any(f.ship_after_s is None for f in world.factories.values()):
        # Let every order be placed first (so lost answers are visibly resent), then ship.
        deadline = asyncio.get_running_loop().time() + 60
        while set(world.order_states().values()) != {"placed"} or len(world.order_states()) < len(
            world.seeded
        ):
            assert asyncio.get_running_loop().time() < deadline, world.log_tail()
            await asyncio.sleep(0.1)
        for f in world.factories.values():
            await f.ship_all()
    settled = await world.wait_settled(timeout=90)
    daemon.term()
    rc = await daemon.wait(30)
    verdict = world.oracle()
    record(fault_class, runs=runs, orders=verdict.orders, lost=verdict.lost, duplicated=verdict.duplicated)
    where = f"seed {seed}: " if seed is not None else ""
    assert verdict.lost == 0 and verdict.duplicated == 0 and not verdict.problems, (
        f"{where}{verdict.report()}\n{world.log_tail()}"
    )
    assert settled, f"{where}did not settle\n{world.log_tail()}"
    assert rc == 0, f"relay exited {rc} on SIGTERM\n{world.log_tail()}"


@pytest.mark.parametrize("name", list(FACTORY_TOXICS))
async def test_factory_link_faults(tmp_path, name):
    toxic, times = FACTORY_TOXICS[name]
    rng = random.Random(7)
    async with World(tmp_path, proxy_factories=True) as world:
        for _ in range(ORDERS):
            world.add_order(rng)
        for proxy in world.proxies.values():
            proxy.next_connections(toxic, times=times)
        await settle_and_check(world, f"network: {name}", runs=2 * times)
        applied = sum(p.toxics_applied.get(toxic.kind, 0) for p in world.proxies.values())
    assert applied >= 2, "the toxic never applied: the scenario tested nothing"


async def test_factory_accepts_then_drops_the_connection(tmp_path):
    rng = random.Random(8)
    async with World(tmp_path, ship_after_s=None) as world:
        for _ in range(ORDERS):
            world.add_order(rng)
        for f in world.factories.values():
            f.fail_next(*[Fault(accept_then_drop=True)] * 4)
        await settle_and_check(world, "network: factory 2xx, connection dropped before read", runs=8)
        resent = sum(n - 1 for f in world.factories.values() for n in f.deliveries.values())
    assert resent >= 2, "no order was resent: the fault did not bite"


async def test_factory_5xx_and_429_with_retry_after(tmp_path):
    rng = random.Random(9)
    async with World(tmp_path) as world:
        for _ in range(ORDERS):
            world.add_order(rng)
        for f in world.factories.values():
            f.fail_next(
                Fault(status=503, retry_after=0.3),
                Fault(status=429, retry_after=0.2),
                Fault(status=500),
                Fault(status=502),
                Fault(status=504),
            )
        await settle_and_check(world, "network: factory 5xx/429 bursts", runs=10)


async def test_storefront_429_and_5xx_bursts(tmp_path):
    rng = random.Random(10)
    async with World(tmp_path, split_parcels=True) as world:
        for _ in range(ORDERS):
            world.add_order(rng)
        world.storefront.fail_next(429, times=6, retry_after=0.05)
        world.storefront.fail_next(503, times=6)
        world.storefront.fail_next(500, times=6)
        await settle_and_check(world, "network: storefront 429/5xx bursts", runs=18)


async def test_storefront_link_resets_and_hangs(tmp_path):
    rng = random.Random(11)
    async with World(tmp_path, proxy_storefront=True) as world:
        for _ in range(ORDERS):
            world.add_order(rng)
        proxy = world.proxies["storefront"]
        for toxic in (Toxic.reset_peer(30), Toxic.timeout(0), Toxic.limit_data(50), Toxic.latency(0.3)):
            proxy.next_connections(toxic, times=2)
        await settle_and_check(world, "network: storefront link resets/hangs", runs=8)


async def test_random_network_chaos(tmp_path, fault_seed):
    """Every connection to a factory or the storefront draws a random toxic (or none)."""
    rng = random.Random(fault_seed)
    connections = env_int("RELAY_FAULT_NET_CONNS", 60)
    choices = [
        None,
        None,
        None,
        Toxic.reset_peer(0, "upstream"),
        Toxic.reset_peer(rng.randint(1, 80)),
        Toxic.limit_data(rng.randint(1, 80)),
        Toxic.timeout(0.2),
        Toxic.latency(0.2),
        Toxic.slicer(64, 0.005),
    ]
    async with World(tmp_path, proxy_factories=True, proxy_storefront=True) as world:
        for _ in range(ORDERS * 2):
            world.add_order(rng)
        injected = 0
        for proxy in world.proxies.values():
            for _ in range(connections // len(world.proxies)):
                toxic = rng.choice(choices)
                injected += toxic is not None
                proxy.next_connections(toxic)
        await settle_and_check(world, "network: random chaos", runs=injected, seed=fault_seed)
