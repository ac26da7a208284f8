"""Three daemons on one PostgreSQL database, each SIGKILLed at random and restarted (issue 16).

Today one daemon per database is active and the others are hot standbys (ADR 13): this loop checks that
failover between three `relay run` processes on PostgreSQL keeps the promise, the same oracle as the
SQLite loops: nothing lost, nothing held twice at a factory, no parcel on the storefront twice, every
cancellation and edit reached its factory or flagged the order. Each run the shop takes new orders, cancels
and edits some; one, two or all three daemons are SIGKILLed (at an armed crash point, or from outside)
and restarted; a standby takes over each time the active one dies. Several ACTIVE daemons at once need
the rest of issue 16 (poller leases, LISTEN/NOTIFY); the same loop will then show it.

Knobs: RELAY_FAULT_RUNS (this loop runs a quarter of it), RELAY_FAULT_SEED.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tests.fault.summary import env_int, record
from tests.fault.support import World
from tests.fault.test_crash import HIT_RANGES, PAIR_POINTS, PAIR_RUN_S, shop_step


async def test_three_daemons_on_postgresql_random_kills_cancellations_and_edits(
    tmp_path, fault_seed, postgres_url
):
    rng = random.Random(fault_seed)
    runs = max(4, env_int("RELAY_FAULT_RUNS", 300) // 4)
    kills = {"external": 0, "crash point": 0}
    config = {"daemon": {"lease_s": 4.0}, "factories": {"bolt": {"concurrency": 2}}}
    async with World(
        tmp_path,
        storefront="woocommerce",
        ship_after_s={"acme": 0.0, "bolt": 1.0},
        config=config,
        database_url=postgres_url,
    ) as world:
        slots: list[Any] = [None, None, None]
        for run in range(runs):
            shop_step(world, rng)
            for i, daemon in enumerate(slots):
                if daemon is None or not daemon.alive():
                    if rng.random() < 0.5:
                        kind = rng.choice(PAIR_POINTS)
                        slots[i] = await world.start(crash_at=f"{kind}@{rng.randint(1, HIT_RANGES[kind])}")
                    else:
                        slots[i] = await world.start()
            await asyncio.sleep(rng.uniform(*PAIR_RUN_S))
            for i in rng.sample([0, 1, 2], rng.choice([1, 1, 2, 3])):
                daemon = slots[i]
                if daemon.alive():
                    kills["external"] += 1
                    rc = await daemon.kill()
                else:
                    kills["crash point"] += 1
                    rc = await daemon.wait()
                assert rc in (-9, 0), f"run {run}: relay exited {rc}\n{world.log_tail()}"
        for daemon in slots:
            if daemon is not None:
                rc = await daemon.kill()
                assert rc in (-9, 0), f"relay exited {rc}\n{world.log_tail()}"

        # One clean daemon and two standbys settle everything, then all stop on SIGTERM.
        daemon = await world.start()
        assert await world.wait_ready(daemon), world.log_tail()
        waiting = world.log_text().count("database_locked_by_another_daemon")
        standbys = [await world.start(), await world.start()]
        settled = await world.wait_settled(timeout=90 + len(world.seeded) * 0.1)
        for _ in range(100):  # SIGTERM only once they wait as standbys (not while Python still starts)
            if world.log_text().count("database_locked_by_another_daemon") >= waiting + 2:
                break
            await asyncio.sleep(0.1)
        for standby in standbys:
            standby.term()
        daemon.term()
        rcs = (await daemon.wait(30), *[await s.wait(30) for s in standbys])
        verdict = world.oracle()

    record(
        "three daemons on PostgreSQL: woocommerce",
        runs=runs,
        orders=verdict.orders,
        lost=verdict.lost,
        duplicated=verdict.duplicated,
        dup_tracking=verdict.dup_tracking,
        stuck=verdict.stuck,
        note=(
            f"{len(world.cancelled)} cancelled, {len(world.edited)} edited; kills: {kills['external']} "
            f"external, {kills['crash point']} at crash points; seed {fault_seed}"
        ),
    )
    assert not verdict.problems, (
        f"seed {fault_seed}: {verdict.report()}\n--- daemon log tail ---\n{world.log_tail()}"
    )
    assert settled, f"seed {fault_seed}: did not settle\n{world.log_tail()}"
    assert rcs == (0, 0, 0), f"clean daemons exited {rcs} on SIGTERM\n{world.log_tail()}"
