"""Poller leases (issue 16, ADR 14), on both backends with the same assertions: one owner at a time per
lease, renewed by its owner and by its fenced writes, taken over once expired (by the caller's clock) under
a new token, after which the old owner's fenced writes raise `LeaseLost` and change nothing; released
leases are free at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import structlog

from relay.domain.models import FactoryOrderNotice
from relay.exceptions import LeaseLost
from relay.loops.poller_lease import LeasedPoller
from relay.store import PollerLease, Store, open_store
from tests.unit.test_order_versions import order

NAME = "storefront:shop"


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[list[Store]]:
    """Two stores on one database, as two daemons would have (migrated)."""
    opened = [open_store(store_url) for _ in range(2)]
    for s in opened:
        await s.open()
    await opened[0].migrate()
    yield opened
    for s in opened:
        await s.close()


def stamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def test_one_owner_at_a_time_renewed_by_its_owner_and_taken_over_once_expired(
    stores: list[Store],
) -> None:
    a, b = stores
    first = await a.acquire_poller_lease(NAME, "a", 30, 100.0)
    assert first is not None and (first.owner, first.token, first.expires_at) == ("a", 1, 130.0)
    assert await b.acquire_poller_lease(NAME, "b", 30, 129.0) is None  # live: a's
    renewed = await a.acquire_poller_lease(NAME, "a", 30, 120.0)
    assert renewed is not None and (renewed.token, renewed.expires_at) == (1, 150.0)  # same token
    assert await b.acquire_poller_lease(NAME, "b", 30, 140.0) is None
    taken = await b.acquire_poller_lease(NAME, "b", 30, 150.0)  # expired by b's clock
    assert taken is not None and (taken.owner, taken.token, taken.expires_at) == ("b", 2, 180.0)
    assert await a.acquire_poller_lease(NAME, "a", 30, 151.0) is None
    other = await a.acquire_poller_lease("factory:acme", "a", 30, 151.0)  # leases are per name
    assert other is not None and other.token == 1


async def test_a_stale_fenced_ingest_raises_lease_lost_and_changes_nothing(stores: list[Store]) -> None:
    a, b = stores
    stale = await a.acquire_poller_lease(NAME, "a", 30, 100.0)
    assert stale is not None
    await a.ingest("shop", [order(external_id="1")], [], stamp(1000), 101.0, fence=stale)
    newer = await b.acquire_poller_lease(NAME, "b", 30, 140.0)  # a paused past its lease
    assert newer is not None and newer.token == 2
    await b.ingest("shop", [], [], stamp(2000), 141.0, fence=newer)
    with pytest.raises(LeaseLost):  # a, resumed, writes under its old token
        await a.ingest("shop", [order(external_id="2")], [], stamp(3000), 142.0, fence=stale)
    assert await a.get_cursor("shop") == stamp(2000)
    assert await a.find_order_id("shop", "1") is not None
    assert await a.find_order_id("shop", "2") is None
    assert sum((await a.stats()).orders.values()) == 1


async def test_a_fenced_write_renews_the_lease(stores: list[Store]) -> None:
    a, b = stores
    lease = await a.acquire_poller_lease(NAME, "a", 30, 100.0)
    assert lease is not None
    await a.ingest("shop", [], [], stamp(1000), 120.0, fence=lease)  # now runs to 150
    assert await b.acquire_poller_lease(NAME, "b", 30, 140.0) is None
    taken = await b.acquire_poller_lease(NAME, "b", 30, 150.0)
    assert taken is not None and taken.token == 2


async def test_fenced_factory_cursor_and_notices_refuse_a_lease_taken_over(stores: list[Store]) -> None:
    a, b = stores
    name = "factory:acme"
    stale = await a.acquire_poller_lease(name, "a", 30, 100.0)
    assert stale is not None
    await a.set_factory_cursor("acme", "c1", 101.0, fence=stale)
    newer = await b.acquire_poller_lease(name, "b", 30, 131.0)
    assert newer is not None
    await b.set_factory_cursor("acme", "c2", 132.0, fence=newer)
    with pytest.raises(LeaseLost):
        await a.set_factory_cursor("acme", "c0", 133.0, fence=stale)
    notice = FactoryOrderNotice(factory_order_key="nowhere", detail="paid")
    with pytest.raises(LeaseLost):
        await a.apply_factory_notices("acme", [notice], 133.0, fence=stale)
    assert await a.apply_factory_notices("acme", [notice], 133.0, fence=newer) == 0  # unknown order
    assert await a.get_factory_cursor("acme") == "c2"


async def test_a_released_lease_is_free_at_once_and_a_stale_release_leaves_the_new_owner_alone(
    stores: list[Store],
) -> None:
    a, b = stores
    lease = await a.acquire_poller_lease(NAME, "a", 30, 100.0)
    assert lease is not None
    await a.release_poller_lease(lease)
    with pytest.raises(LeaseLost):  # released: no longer a's to write under
        await a.ingest("shop", [], [], stamp(1000), 101.0, fence=lease)
    taken = await b.acquire_poller_lease(NAME, "b", 30, 101.0)  # long before 130
    assert taken is not None and (taken.owner, taken.token) == ("b", 2)
    await a.release_poller_lease(lease)  # a's old lease: b's stays
    assert await a.acquire_poller_lease(NAME, "a", 30, 102.0) is None
    again = await a.acquire_poller_lease(NAME, "a", 30, 131.0)
    assert again is not None and again.token == 3  # a new owner since: a new token


async def test_release_leases_frees_the_owners_poller_leases_and_release_all_frees_every_one(
    stores: list[Store],
) -> None:
    a, b = stores
    assert await a.acquire_poller_lease("storefront:shop", "a", 30, 100.0) is not None
    assert await b.acquire_poller_lease("factory:acme", "b", 30, 100.0) is not None
    await a.release_leases("a")
    assert await b.acquire_poller_lease("storefront:shop", "b", 30, 101.0) is not None
    assert await a.acquire_poller_lease("factory:acme", "a", 30, 101.0) is None  # b's own
    assert await a.release_all_leases() == 2
    assert await a.acquire_poller_lease("factory:acme", "a", 30, 102.0) is not None


async def test_daemons_taking_one_lease_at_once_get_it_once(stores: list[Store]) -> None:
    a, b = stores
    got = await asyncio.gather(
        *(s.acquire_poller_lease(NAME, owner, 30, 100.0) for owner, s in (("a", a), ("b", b)) * 3)
    )
    assert len({lease.owner for lease in got if lease is not None}) == 1


async def test_a_fenced_write_sets_the_expiry_from_its_own_clock_even_below_an_earlier_one(
    stores: list[Store],
) -> None:
    a, b = stores
    ahead = await a.acquire_poller_lease(NAME, "a", 30, 1000.0)  # a's clock ran ahead, then was corrected
    assert ahead is not None and ahead.expires_at == 1030.0
    await a.ingest("shop", [], [], stamp(1000), 100.0, fence=ahead)  # now runs to 130, not 1030
    assert await b.acquire_poller_lease(NAME, "b", 30, 129.0) is None
    taken = await b.acquire_poller_lease(NAME, "b", 30, 130.0)
    assert taken is not None and taken.token == 2


class HourlyPoller(LeasedPoller):
    """A poller whose passes are an hour apart: only its lease renewals run during the test."""

    name = "poller"

    def __init__(self, store: Store, lease_s: float) -> None:
        super().__init__(
            store,
            NAME,
            owner="a",
            lease_s=lease_s,
            interval=3600,
            clock=time.time,
            log=structlog.get_logger(),
        )
        self.polls = 0

    async def poll_under(self, lease: PollerLease) -> None:
        self.polls += 1


async def test_a_poller_polling_less_often_than_poller_lease_s_keeps_its_lease_between_passes(
    stores: list[Store],
) -> None:
    """A 1 s lease and a pass every hour: the poller renews the lease between its passes, so the other
    daemon never takes it while the poller runs (without the renewal it lapses after 1 s), and frees it
    when the poller stops."""
    a, b = stores
    poller, stopping = HourlyPoller(a, lease_s=1.0), asyncio.Event()
    running = asyncio.create_task(poller.run(stopping))
    try:
        for _ in range(5):  # 2.5 s: the lease's period two and a half times over
            await asyncio.sleep(0.5)
            assert await b.acquire_poller_lease(NAME, "b", 1.0, time.time()) is None
        assert poller.polls == 1 and poller.lease.lease is not None and poller.lease.lease.token == 1
    finally:
        stopping.set()
        await running
    taken = await b.acquire_poller_lease(NAME, "b", 1.0, time.time())  # released when it stopped
    assert taken is not None and taken.token == 2
