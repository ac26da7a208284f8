"""Crash points: the daemon is a real subprocess, killed at random points many times, then the oracle.

Each run seeds a few new orders, then starts `relay run` with one crash point armed at a random hit
count (`RELAY_CRASH_AT=point@N`), or without one and SIGKILLs it from outside after a random delay.
A run whose point is not reached within its budget is SIGKILLed from outside as well. The factories
ship as soon as they hold an order and retry their callbacks until answered, so kills also land
between a callback's commit and its 2xx, and during tracking pushes. After the last run a clean daemon
settles everything; the oracle then checks the whole history.

Knobs: RELAY_FAULT_RUNS (default 300), RELAY_FAULT_SEED.
"""

from __future__ import annotations

import random
import re

from relay.faults import POINTS
from relay.store.sqlite import MIGRATIONS
from tests.fault.summary import env_int, record
from tests.fault.support import World

# Crash points with the range of hit counts to draw from (how often each is reached per second varies).
HIT_RANGES = {
    "before_factory_post": 4,
    "after_factory_post": 4,
    "mid_transaction": 40,
    "after_commit": 3,
    "during_push": 4,
    "after_claim": 4,
    "after_ingest": 5,
    "during_callback": 4,
}
EXTERNAL = "external SIGKILL"
RUN_BUDGET_S = 1.5


async def test_random_crashes_lose_and_duplicate_nothing(tmp_path, fault_seed):
    assert set(HIT_RANGES) | {"during_migration"} == set(POINTS), "a crash point is not exercised here"
    rng = random.Random(fault_seed)
    runs = env_int("RELAY_FAULT_RUNS", 300)
    per_class: dict[str, list[int]] = {}  # class -> [runs, reached]
    async with World(tmp_path) as world:
        # The first runs crash inside the migration, after a random statement: it must roll back whole.
        statements = sum(len(m.statements) for m in MIGRATIONS)
        for _ in range(min(5, max(1, runs // 40))):
            daemon = await world.start(crash_at=f"during_migration@{rng.randint(1, statements)}")
            rc = await daemon.wait(5)
            stats = per_class.setdefault("during_migration", [0, 0])
            stats[0] += 1
            stats[1] += rc == -9
            if rc is None:  # fewer statements were left to run than the drawn count: it started normally
                await daemon.kill()
            # Each migration is one transaction: the schema is exactly that of some version, never half of one.
            version = (world.query("SELECT MAX(version) FROM schema_version") or [(0,)])[0][0] or 0
            names = {name for (name,) in world.query("SELECT name FROM sqlite_master")}
            for m in MIGRATIONS:
                created = set(
                    re.findall(
                        r"CREATE (?:UNIQUE )?(?:TABLE|INDEX) (?:IF NOT EXISTS )?(\w+)",
                        "\n".join(m.statements),
                    )
                )
                expected = created if m.version <= version else set()
                assert created & names == expected, (
                    f"migration {m.version} half-applied after a crash (at {version})"
                )

        for run in range(runs):
            for _ in range(rng.randint(0, 3)):
                world.add_order(rng)
            kind = rng.choice([*HIT_RANGES, EXTERNAL, EXTERNAL])
            stats = per_class.setdefault(kind, [0, 0])
            stats[0] += 1
            if kind == EXTERNAL:
                daemon = await world.start()
                await daemon.wait(rng.uniform(0.0, RUN_BUDGET_S))
                rc = await daemon.kill()
                stats[1] += daemon.killed_by_us
            else:
                daemon = await world.start(crash_at=f"{kind}@{rng.randint(1, HIT_RANGES[kind])}")
                rc = await daemon.wait(RUN_BUDGET_S)
                if rc is None:
                    rc = await daemon.kill()
                else:
                    stats[1] += 1
            assert rc in (-9, 0), f"run {run} ({kind}): relay exited {rc}\n{world.log_tail()}"

        # A clean daemon settles everything; then it must stop cleanly on SIGTERM.
        daemon = await world.start()
        assert await world.wait_ready(daemon), world.log_tail()
        settled = await world.wait_settled(timeout=60 + len(world.seeded) * 0.05)
        daemon.term()
        rc = await daemon.wait(30)
        verdict = world.oracle()

    for kind, (n, reached) in per_class.items():
        record(f"crash: {kind}", runs=n, note=f"reached {reached}/{n}")
    record(
        "crash loop (all points)",
        orders=verdict.orders,
        lost=verdict.lost,
        duplicated=verdict.duplicated,
        note=f"{runs} runs + migration crashes, seed {fault_seed}",
    )
    assert verdict.lost == 0 and verdict.duplicated == 0 and not verdict.problems, (
        f"seed {fault_seed}: {verdict.report()}\n--- daemon log tail ---\n{world.log_tail()}"
    )
    assert settled, f"seed {fault_seed}: did not settle\n{world.log_tail()}"
    assert rc == 0, f"clean daemon exited {rc} on SIGTERM\n{world.log_tail()}"
    reached_total = sum(reached for kind, (_, reached) in per_class.items() if kind != EXTERNAL)
    assert reached_total >= runs // 4, "crash points were hardly ever reached: the loop tests little"
