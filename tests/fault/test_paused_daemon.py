"""A daemon paused with SIGSTOP (a VM freeze, a GC pause, a debugger) while it holds a delivery in flight
and the storefront's poller lease, next to two others on one PostgreSQL database (issue 16, ADR 11, 14).

Knobs: none (one scenario, ~20 s).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable

from relay.domain.models import factory_order_key
from tests.fault.summary import record
from tests.fault.support import World, overlapping

LEASE_S = 2.5  # delivery claims and poller leases alike


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_paused_daemon_loses_its_leases_and_its_late_answer_records_nothing(tmp_path, postgres_url):
    """Daemon A runs alone on the database: it polls the storefront (its poller lease), routes an order and
    sends it to factory `acme`, which holds that delivery unanswered. A is SIGSTOPped while it waits for
    the answer; daemons B and C start next to it. Once A's leases (`lease_s`, `poller_lease_s`: 2.5 s) have
    lapsed, B or C takes the storefront's polling over (a second order reaches the factory) and claims the
    held order again, under a new fencing token, and sends it with the same idempotency key; the factory
    holds that second delivery too. Then the factory answers A's delivery with a refusal (422), A is
    SIGCONTed and records its late outcome: `stale_outcome_ignored`, nothing written. Then the factory takes
    the newer delivery. The checks: the factory holds the order once (two deliveries of one key); the
    store's factory order is `placed` with the factory's reference, one attempt counted, claimed at least
    twice; the order's history has one `factory_accepted` and no `dead_lettered` / `delivery_failed`; the
    poller lease went from A to B or C; no two daemons listed the storefront at overlapping times (the three
    run side by side for another 5 s after the order is placed); all three stop cleanly on SIGTERM.

    Without the mechanisms it proves, it fails: without fencing tokens A's late 422 lands while the row is
    pending under the newer claim, so it is recorded (the factory order dead-lettered, a `dead_lettered`
    event) and the newer success then finds the row no longer pending and records nothing: the factory
    makes an order the store says is dead. Without poller leases B and C list the storefront side by side
    from their start (every listing takes 50 ms here, every 0.2 s): overlapping listings. Without claim
    leases that lapse (one daemon holding the database, or claims without expiry) nobody takes A's work over
    while it is paused: the second delivery never arrives.
    """
    rng = random.Random(16)
    config = {
        "daemon": {"lease_s": LEASE_S, "poller_lease_s": LEASE_S, "log_level": "info"},
        "factories": {"acme": {"timeout_s": 30.0}},  # A's held send must not time out: it is answered late
    }
    async with World(
        tmp_path, daemons=3, database_url=postgres_url, ship_after_s=None, config=config
    ) as world:
        acme = world.factories["acme"]
        first = world.add_order(rng, ["TEE-RED-M"])
        key = factory_order_key("shop", first, "acme")
        late, newer = acme.hold(key), acme.hold(key)

        a = await world.start(slot=0)
        assert await until(late.arrived.is_set, 30), f"A never sent the order\n{world.log_tail()}"
        a.proc.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        poller = world.query("SELECT owner FROM poller_leases WHERE name = 'storefront:shop'")
        assert late.slot == 0 and poller and poller[0][0].startswith("fault-suite-0/"), (late.slot, poller)

        b, c = await world.start(slot=1), await world.start(slot=2)
        assert await world.wait_ready(b) and await world.wait_ready(c), world.log_tail()
        second = world.add_order(rng, ["TEE-BLU-L"])
        assert await until(newer.arrived.is_set, 30), f"nobody took A's delivery over\n{world.log_tail()}"
        assert await until(lambda: any(h.payload["order_id"] == second for h in acme.orders.values()), 30), (
            f"nobody took A's polling over\n{world.log_tail()}"
        )
        poller = world.query("SELECT owner FROM poller_leases WHERE name = 'storefront:shop'")

        late.release(422)  # A's answer, read when it resumes: recorded, it would dead-letter the order
        a.proc.send_signal(signal.SIGCONT)
        assert await until(lambda: stale_outcomes(world, key) > 0, 30), (
            f"A's late outcome was not ignored as stale\n{world.log_tail()}"
        )
        newer.release()  # the factory takes the newer delivery
        placed = await until(lambda: state_of(world, key) == "placed", 30)
        await asyncio.sleep(2 * LEASE_S)  # all three side by side a while: still no overlapping listings
        for daemon in (a, b, c):
            daemon.term()
        rcs = tuple([await daemon.wait(30) for daemon in (a, b, c)])

        row = world.query(
            "SELECT state, reference, attempts, lease_token FROM factory_orders WHERE key = ?", (key,)
        )
        kinds = [
            kind
            for (kind,) in world.query(
                "SELECT e.kind FROM order_events e JOIN orders o ON o.id = e.order_id"
                " WHERE o.external_id = ? ORDER BY e.id",
                (first,),
            )
        ]
        held = [h for h in acme.orders.values() if h.payload["order_id"] == first]
        listings = world.storefront_hits("list")
        overlaps = overlapping(listings)

    record(
        "paused daemon (SIGSTOP) on PostgreSQL",
        runs=1,
        orders=2,
        duplicated=max(0, len(held) - 1),
        note=(
            f"delivery taken over by slot {newer.slot}, poller by {poller[0][0].split('/')[0]}; "
            f"{len(listings)} listings, {len(overlaps)} overlapping"
        ),
    )
    assert placed, f"the order never became placed: {row}\n{world.log_tail()}"
    assert newer.slot in (1, 2), newer.slot
    assert len(held) == 1 and held[0].key == key, f"the factory holds {len(held)} orders for it"
    ((state, reference, attempts, token),) = row
    assert (state, reference, attempts) == ("placed", held[0].reference, 1), row
    assert token >= 2, f"claimed once only (token {token}): nobody took A's claim over"
    assert kinds.count("factory_accepted") == 1 and not {"dead_lettered", "delivery_failed"} & set(kinds), (
        kinds
    )
    assert poller[0][0].split("/")[0] in ("fault-suite-1", "fault-suite-2"), poller
    assert {h.slot for h in listings if h.start < paused_at} == {0}
    assert any(h.slot != 0 and h.start > paused_at for h in listings), "B and C never listed the storefront"
    assert not overlaps, f"two daemons listed the storefront at once: {overlaps[:3]}"
    assert rcs == (0, 0, 0), f"daemons exited {rcs} on SIGTERM\n{world.log_tail()}"


def stale_outcomes(world: World, key: str) -> int:
    """`stale_outcome_ignored` log lines about factory order `key`."""
    return sum(1 for line in world.log_text().splitlines() if "stale_outcome_ignored" in line and key in line)


def state_of(world: World, key: str) -> str | None:
    rows = world.query("SELECT state FROM factory_orders WHERE key = ?", (key,))
    return rows[0][0] if rows else None
