"""Crash points: the daemon is a real subprocess, killed at random points many times, then the oracle.

Each run seeds a few new orders, then starts `relay run` with one crash point armed at a random hit
count (`RELAY_CRASH_AT=point@N`), or without one and SIGKILLs it from outside after a random delay.
A run whose point is not reached within its budget is SIGKILLed from outside as well. The factories
ship as soon as they hold an order and retry their callbacks until answered, so kills also land
between a callback's commit and its 2xx, and during tracking pushes. After the last run a clean daemon
settles everything; the oracle then checks the whole history.

The second loop (`test_two_daemons_random_kills_cancellations_and_edits`) runs two daemons on one database
against the WooCommerce and Shopify fakes, with cancellations and edits in the workload (see its docstring).
The third (`test_random_crashes_with_a_1688_factory_lose_and_duplicate_nothing`) adds a 1688 seller (the
fake gateway, with its own faults and push messages) to the factories and cancellations to the workload.

Knobs: RELAY_FAULT_RUNS (default 300; the two-daemon loop runs a quarter of it per storefront, the 1688
loop a fifth), RELAY_FAULT_SEED.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from typing import Any

import pytest

from adapters.alibaba1688.client import FAST_CREATE_ORDER, GET_BUYER_ORDER_LIST
from adapters.alibaba1688.fake import Fake1688Gateway
from relay.faults import POINTS
from relay.store.sqlite import MIGRATIONS
from relay.testing.faultproxy import Toxic
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
    "after_storefront_write": 4,  # inside the storefront adapter: the tracking is written, not yet recorded
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
        dup_tracking=verdict.dup_tracking,
        stuck=verdict.stuck,
        note=f"{runs} runs + migration crashes, seed {fault_seed}",
    )
    assert verdict.lost == 0 and verdict.duplicated == 0 and not verdict.problems, (
        f"seed {fault_seed}: {verdict.report()}\n--- daemon log tail ---\n{world.log_tail()}"
    )
    assert settled, f"seed {fault_seed}: did not settle\n{world.log_tail()}"
    assert rc == 0, f"clean daemon exited {rc} on SIGTERM\n{world.log_tail()}"
    reached_total = sum(reached for kind, (_, reached) in per_class.items() if kind != EXTERNAL)
    assert reached_total >= runs // 4, "crash points were hardly ever reached: the loop tests little"


# --- two daemons on one database, WooCommerce and Shopify, cancellations and edits ------------------------

# Crash points drawn for the two-daemon loop (the migration ones are exercised above).
PAIR_POINTS = list(HIT_RANGES)
PAIR_RUN_S = (0.3, 2.0)  # how long both daemons run before the next kill


def shop_step(world: World, rng: random.Random, *, edits: bool = True) -> None:
    """The shop between two kills: new orders, a cancellation, an edit (the second edit of a pair lands in
    the same second as the first; `edits=False` for a storefront that cannot edit orders)."""
    for _ in range(rng.randint(0, 3)):
        world.add_order(rng)
    live = [o for o in world.seeded if o not in world.cancelled and not world.fulfilled_on_storefront(o)]
    if live and rng.random() < 0.35:
        world.cancel_order(rng.choice(live))
    editable = [o for o in live if o not in world.cancelled]
    if edits and editable and rng.random() < 0.35:
        oid = rng.choice(editable)
        for _ in range(rng.choice([1, 1, 2])):
            world.edit_order(rng, oid)


@pytest.mark.parametrize("storefront", ["woocommerce", "shopify"])
async def test_two_daemons_random_kills_cancellations_and_edits(tmp_path, fault_seed, storefront):
    """`relay run` twice on one database (as an operator would start it twice, or a supervisor restarts it
    while the old one still runs), against the WooCommerce / Shopify fakes. Each run the shop takes new
    orders, cancels some (at any time: before routing, while in flight, after a partial shipment) and edits
    the quantities of others (sometimes twice within one second); then one daemon, or both, is SIGKILLed
    (at an armed crash point, or from outside) and restarted. Factory `bolt` ships only after a second and
    sits behind a proxy that makes some of its answers slow, with a short lease, so claimed sends wait out
    their lease. After the last run one clean daemon settles everything and the oracle checks: nothing
    lost, nothing held twice at a factory, no parcel on the storefront twice, every cancellation reached
    its factory (or the order is flagged), every factory makes the current quantities (or the order is
    flagged), and no order is left in a non-final state without a reason.

    Knobs: RELAY_FAULT_RUNS (this loop runs a quarter of it per storefront), RELAY_FAULT_SEED.
    """
    rng = random.Random(fault_seed)
    runs = max(4, env_int("RELAY_FAULT_RUNS", 300) // 4)
    kills = {"external": 0, "crash point": 0}
    config = {
        "daemon": {"lease_s": 4.0},
        "factories": {"bolt": {"concurrency": 2}},
    }
    async with World(
        tmp_path,
        storefront=storefront,
        ship_after_s={"acme": 0.0, "bolt": 1.0},
        proxy_factories=True,
        config=config,
    ) as world:
        slots: list[Any] = [None, None]
        for run in range(runs):
            shop_step(world, rng)
            # A slow factory now and then: its answers take longer than the rest of the run.
            world.proxies["bolt"].default = (
                Toxic.latency(rng.uniform(0.2, 0.8), direction="upstream") if rng.random() < 0.3 else None
            )
            # Both daemons run (the second waits as a standby while the first holds the database).
            for i, daemon in enumerate(slots):
                if daemon is None or not daemon.alive():
                    if rng.random() < 0.5:
                        kind = rng.choice(PAIR_POINTS)
                        slots[i] = await world.start(crash_at=f"{kind}@{rng.randint(1, HIT_RANGES[kind])}")
                    else:
                        slots[i] = await world.start()
            await asyncio.sleep(rng.uniform(*PAIR_RUN_S))
            for i in rng.sample([0, 1], rng.choice([1, 1, 2])):
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
        world.proxies["bolt"].default = None

        # One clean daemon and a standby next to it settle everything, then both stop on SIGTERM.
        daemon = await world.start()
        assert await world.wait_ready(daemon), world.log_tail()
        waiting = world.log_text().count("database_locked_by_another_daemon")
        standby = await world.start()
        # Shopify's cost bucket paces tracking pushes (two lookups and a mutation each): allow for it.
        per_order_s = 1.5 if storefront == "shopify" else 0.1
        settled = await world.wait_settled(timeout=90 + len(world.seeded) * per_order_s)
        for _ in range(100):  # SIGTERM only once it waits as a standby (not while Python still starts)
            if world.log_text().count("database_locked_by_another_daemon") > waiting or not standby.alive():
                break
            await asyncio.sleep(0.1)
        standby.term()
        daemon.term()
        rcs = (await daemon.wait(30), await standby.wait(30))
        verdict = world.oracle()

    record(
        f"two daemons: {storefront}",
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
    assert rcs == (0, 0), f"clean daemons exited {rcs} on SIGTERM\n{world.log_tail()}"


# --- a 1688 factory among the factories --------------------------------------------------------------


def inject_1688_fault(ali: Fake1688Gateway, rng: random.Random) -> str | None:
    """Arm one of 1688's own faults for the next matching gateway call (at most three armed at a time)."""
    if len(ali.faults) + len(ali.pay_faults) >= 3:
        return None
    fault = rng.choice([*ALI_FAULTS, None, None])
    if fault == "flow control on create":
        ali.flow_control_next(times=rng.randint(1, 3), api=FAST_CREATE_ORDER)
    elif fault == "flow control on listing":
        ali.flow_control_next(times=rng.randint(1, 4), api=GET_BUYER_ORDER_LIST)
    elif fault == "create times out after the order was made":
        ali.lose_answer_next("timeout", api=FAST_CREATE_ORDER)
    elif fault == "write reset after acting":
        ali.lose_answer_next("reset")
    elif fault == "token expired":
        ali.expire_token()
    elif fault == "pay answer lost":
        ali.lose_pay_answer_next()
    return fault


ALI_FAULTS = (
    "flow control on create",
    "flow control on listing",
    "create times out after the order was made",
    "write reset after acting",
    "token expired",
    "pay answer lost",
)


async def test_random_crashes_with_a_1688_factory_lose_and_duplicate_nothing(tmp_path, fault_seed):
    """The crash loop with a 1688 seller (`ali`, the fake gateway) next to the webhook factories: each run
    the shop takes new orders and sometimes cancels one, one of 1688's faults is armed (flow control,
    a create or a pay whose answer is lost after 1688 acted, an expired token), and the daemon is SIGKILLed
    at a crash point or from outside. Protocol pay is on, the seller ships paid orders one parcel per line,
    and 1688 pushes "paid" and "sent" to the daemon twice each (when one is up: they only wake its poller).
    After the last run a clean daemon settles everything; the oracle counts every 1688 order the fake
    created: 0 duplicates per `outOrderId`, every expected order held once, every parcel on the
    storefront once, nothing left non-final without an attention reason.

    Knobs: RELAY_FAULT_RUNS (this loop runs a fifth of it), RELAY_FAULT_SEED.
    """
    rng = random.Random(fault_seed)
    runs = max(4, env_int("RELAY_FAULT_RUNS", 300) // 5)
    faults: Counter[str] = Counter()
    kills = {"external": 0, "crash point": 0}
    async with World(tmp_path, alibaba1688=True) as world:
        ali = world.ali
        assert ali is not None
        for run in range(runs):
            shop_step(world, rng, edits=False)
            fault = inject_1688_fault(ali, rng)
            if fault:
                faults[fault] += 1
            kind = rng.choice([*HIT_RANGES, EXTERNAL, EXTERNAL])
            if kind == EXTERNAL:
                daemon = await world.start()
                await daemon.wait(rng.uniform(0.0, RUN_BUDGET_S))
                rc = await daemon.kill()
            else:
                daemon = await world.start(crash_at=f"{kind}@{rng.randint(1, HIT_RANGES[kind])}")
                rc = await daemon.wait(RUN_BUDGET_S)
                if rc is None:
                    rc = await daemon.kill()
            kills["external" if daemon.killed_by_us else "crash point"] += 1
            assert rc in (-9, 0), f"run {run} ({kind}): relay exited {rc}\n{world.log_tail()}"

        # A clean daemon settles everything (1688's faults still armed fire on it too).
        daemon = await world.start()
        assert await world.wait_ready(daemon), world.log_tail()
        settled = await world.wait_settled(timeout=60 + len(world.seeded) * 0.1)
        daemon.term()
        rc = await daemon.wait(30)
        verdict = world.oracle()
        made = len(ali.orders)
        shipped = sum(len(o.parcels) for o in ali.orders.values())
        refreshes = ali.token_refreshes
        pushed = sum(status == 200 for _, status in ali.pushes)

    record(
        "crash loop with a 1688 factory",
        runs=runs,
        orders=verdict.orders,
        lost=verdict.lost,
        duplicated=verdict.duplicated,
        dup_tracking=verdict.dup_tracking,
        stuck=verdict.stuck,
        note=(
            f"{made} 1688 orders, {shipped} parcels, {len(world.cancelled)} cancelled, "
            f"{sum(faults.values())} 1688 faults, {refreshes} token refreshes, {pushed} pushes taken; "
            f"kills: {kills['external']} "
            f"external, {kills['crash point']} at crash points; seed {fault_seed}"
        ),
    )
    assert not verdict.problems, (
        f"seed {fault_seed}: {verdict.report()}\n--- daemon log tail ---\n{world.log_tail()}"
    )
    assert settled, f"seed {fault_seed}: did not settle\n{world.log_tail()}"
    assert rc == 0, f"clean daemon exited {rc} on SIGTERM\n{world.log_tail()}"
    assert made and shipped, "no 1688 order was made or shipped: the loop tests little"


# --- issue 15: a first attempt writes without looking; a crash before its commit ----------------------


@pytest.mark.parametrize("storefront", ["demo", "woocommerce", "shopify"])
async def test_crashes_right_after_the_storefront_write_duplicate_no_tracking(
    tmp_path, fault_seed, storefront
):
    """A tracking push's first attempt writes at once, without looking. The daemon is killed between each
    adapter's storefront write and its commit (`after_storefront_write`), again and again: the claim counted
    the attempt, so the next one looks first and finds the parcel. The oracle: no parcel twice on the
    storefront, nothing lost, nothing stuck. Knobs: RELAY_FAULT_RUNS (a tenth of it per storefront)."""
    rng = random.Random(fault_seed)
    runs = max(3, env_int("RELAY_FAULT_RUNS", 300) // 10)
    reached = 0
    async with World(tmp_path, storefront=storefront) as world:
        for run in range(runs):
            for _ in range(rng.randint(1, 3)):
                world.add_order(rng)
            daemon = await world.start(crash_at=f"after_storefront_write@{rng.randint(1, 3)}")
            rc = await daemon.wait(15)
            if rc is None:
                rc = await daemon.kill()
            else:
                reached += 1
            assert rc in (-9, 0), f"run {run}: relay exited {rc}\n{world.log_tail()}"
        daemon = await world.start()
        assert await world.wait_ready(daemon), world.log_tail()
        settled = await world.wait_settled(timeout=60 + len(world.seeded) * 0.05)
        daemon.term()
        rc = await daemon.wait(30)
        verdict = world.oracle()
    record(
        f"after storefront write: {storefront}",
        runs=runs,
        orders=verdict.orders,
        lost=verdict.lost,
        duplicated=verdict.duplicated,
        dup_tracking=verdict.dup_tracking,
        stuck=verdict.stuck,
        note=f"reached {reached}/{runs}; seed {fault_seed}",
    )
    assert verdict.lost == 0 and verdict.duplicated == 0 and not verdict.problems, (
        f"seed {fault_seed}: {verdict.report()}\n--- daemon log tail ---\n{world.log_tail()}"
    )
    assert settled, f"seed {fault_seed}: did not settle\n{world.log_tail()}"
    assert rc == 0, f"clean daemon exited {rc} on SIGTERM\n{world.log_tail()}"
    assert reached >= runs // 2, f"the crash point was reached {reached}/{runs} times: the loop tests little"
