"""Issue 15: where a poll starts listing.

The stored cursor stays `CURSOR_MARGIN_S` behind relay's clock (issue 11, item 9), so a poll from it lists
the last minute again; at 200 orders/s every poll re-listed and re-ingested thousands of orders. Polls
between sweeps now list from the newest stamp the poller has listed; a sweep, at least once per
`CURSOR_MARGIN_S`, lists from a margin and an interval before the stored cursor, so it still finds an order
a wrong stamp made the poller skip, or one that showed up on the storefront late (within the margin)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from relay.loops.order_poller import CURSOR_MARGIN_S
from relay.outbound.retries import ATTEMPTS
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine

NO_OVERLAP = {"storefronts": {"shop": {"cursor_overlap_s": 0}}}


def spy_listings(h: Harness) -> list[float]:
    """The `updated_since` of every listing request the storefront fake answers (as a timestamp)."""
    since: list[float] = []
    fake: Any = h.storefront
    answer = fake._list

    async def listing(request: web.Request) -> web.StreamResponse:
        if "cursor" not in request.query:  # the first page of a listing
            stamp = request.query["updated_since"].replace("Z", "+00:00")
            since.append(datetime.fromisoformat(stamp).timestamp())
        return await answer(request)  # type: ignore[no-any-return]

    fake._list = listing
    return since


async def test_a_poll_lists_from_the_newest_stamp_listed_not_the_last_minute(tmp_path):
    h = Harness(tmp_path)
    since = spy_listings(h)
    async with h:
        first_at = time.time() - 5
        first = h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=first_at)
        async with h.app(settings=h.settings(**NO_OVERLAP)) as app:
            await app.run_once()  # the first poll: a sweep
            second = h.storefront.add_order([SeedLine("TEE-BLU-L")])
            await app.run_once()
        placed = sorted(o.payload["order_id"] for o in h.factories["acme"].orders.values())
    assert placed == sorted([first, second])
    assert since[0] < first_at  # the sweep: from the start point, a minute back
    assert since[1] >= first_at - 0.001  # then from what was listed (the first order's stamp, to the µs)


async def test_an_order_skipped_behind_a_wrong_stamp_is_listed_by_the_next_sweep(tmp_path):
    # The storefront's clock is 30 s behind relay's, and one order carries a stamp 20 s ahead of the
    # storefront's clock (10 s behind relay's: no future stamp for relay). Polls between sweeps list from
    # that stamp, so an order updated afterwards at the storefront's own time is behind it.
    clock = ManualClock(time.time() + 30)
    async with Harness(tmp_path) as h:
        async with h.app(clock=clock, settings=h.settings(**NO_OVERLAP)) as app:
            ahead = h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=time.time() + 20)
            await app.run_once()
            behind = h.storefront.add_order([SeedLine("TEE-BLU-L")])  # the storefront's now
            await app.run_once()
            clock.advance(CURSOR_MARGIN_S)
            await app.run_once()  # a sweep is due: from the stored cursor, a minute behind relay's clock
        placed = sorted(o.payload["order_id"] for o in h.factories["acme"].orders.values())
    assert placed == sorted([ahead, behind])


async def test_an_order_visible_late_behind_the_delta_start_is_listed_by_the_next_sweep(tmp_path):
    # An order stamped 20 s before the first sweep appears on the storefront just after it (a replica's
    # lag: visible 21 s after its stamp, within the margin). The polls in between list from a newer stamp,
    # and one of them moves the stored cursor past the order's stamp: the next sweep must still list it.
    clock = ManualClock(time.time())
    start = clock.now
    async with Harness(tmp_path) as h:
        async with h.app(clock=clock, settings=h.settings(**NO_OVERLAP)) as app:
            listed = h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=start - 10)
            await app.run_once()  # the first sweep
            late = h.storefront.add_order([SeedLine("TEE-BLU-L")], updated_at=start - 20)
            newer = h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=start - 5)
            clock.advance(CURSOR_MARGIN_S - 10)
            await app.run_once()  # from the newest stamp listed: not `late`; the cursor moves to start - 10
            assert await app.store.get_cursor("shop") == datetime.fromtimestamp(start - 10, UTC)
            assert await app.store.find_order_id("shop", late) is None
            clock.advance(10)
            await app.run_once()  # the next sweep, due one margin after the first
        placed = sorted(o.payload["order_id"] for o in h.factories["acme"].orders.values())
    assert placed == sorted([listed, late, newer])


async def test_a_poll_outcome_is_recorded_at_once_when_it_changes_and_a_success_at_most_once_a_second(
    tmp_path,
):
    """`record_poll` was a write transaction on every poll (20 a second at a 50 ms interval)."""
    clock = ManualClock()
    async with Harness(tmp_path) as h, h.app(clock=clock) as app:
        poller = app.pollers[0]

        async def last_ok() -> float | None:
            return (await app.store.status(clock.now)).storefronts[0].last_poll_ok_at

        await poller.safe_pass()
        first = clock.now
        assert await last_ok() == first
        clock.advance(0.5)
        await poller.safe_pass()
        assert await last_ok() == first  # a success after a recorded success, within the second
        clock.advance(0.6)
        await poller.safe_pass()
        assert await last_ok() == clock.now
        h.storefront.fail_next(503, times=ATTEMPTS)  # every attempt of the next poll
        clock.advance(0.1)
        await poller.safe_pass()
        failing = (await app.store.status(clock.now)).storefronts[0]
        assert failing.failing and failing.last_poll_error_at == clock.now  # a failure: at once
        clock.advance(0.1)
        await poller.safe_pass()
        assert await last_ok() == clock.now  # the first success after a failure: at once
