"""Several active daemons on one database (issue 16, ADR 14): each storefront is polled by one of them at a
time, under its poller lease; another takes the poll over once the lease expires (or at once when the
holder stops in order), and a holder paused past its lease records nothing when it resumes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from relay.cli.daemon import _run
from relay.exceptions import StoreUnavailable
from relay.store import open_store
from relay.store.manager import RelayStore
from relay.store.postgres import connector as postgres_connector
from relay.testing.harness import Harness, ManualClock
from relay.testing.postgres import raw_sql
from relay.testing.vendor import SeedLine

LEASE_S = 30.0


def listings(h: Harness) -> int:
    """How many order listings the fake storefront answered so far."""
    return sum(1 for method, path in h.storefront.requests if method == "GET" and path == "/api/orders")


async def test_one_daemon_polls_a_storefront_another_takes_over_and_the_paused_one_records_nothing(
    tmp_path, store_url
):
    """Two Apps on one database, each with its own clock (`a`'s stands still while it is "paused")."""
    clock_a, clock_b = ManualClock(), ManualClock()
    clock_b.now = clock_a.now
    async with Harness(tmp_path, config={"daemon": {"poller_lease_s": LEASE_S}}) as h:
        h.database = store_url
        first = h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app(clock=clock_a) as a, h.app(clock=clock_b) as b:
            poll_a, poll_b = a.pollers[0], b.pollers[0]
            with capture_logs() as logs:
                await poll_a.run_pass()  # a takes the storefront's lease and polls
                before = listings(h)
                await poll_b.run_pass()
                await poll_b.run_pass()
                assert listings(h) == before  # b stands by: it does not even list
                assert b.health()["failing"] == {}  # a standby poller is no failure
                assert await a.store.find_order_id("shop", first) is not None

                clock_b.advance(LEASE_S + 1)  # a is paused (SIGSTOP) past its lease; b takes over
                await poll_b.run_pass()
                cursor = await b.store.get_cursor("shop")
                second = h.storefront.add_order([SeedLine("TEE-BLU-L")])
                await poll_a.run_pass()  # a resumes mid-pass: by its clock the lease is fresh, it lists...
                assert await a.store.find_order_id("shop", second) is None  # ...and records nothing
                assert await a.store.get_cursor("shop") == cursor
                await poll_b.run_pass()
                assert await b.store.find_order_id("shop", second) is not None

                clock_a.now = clock_b.now  # a's clock catches up: it asks, and stands by
                before = listings(h)
                await poll_a.run_pass()
                await poll_a.run_pass()
                assert listings(h) == before
            events = [(e["event"], e.get("token")) for e in logs if e["event"].startswith("poller_lease")]
            assert events == [
                ("poller_lease_acquired", 1),  # a
                ("poller_lease_held_elsewhere", None),  # b, logged once for two passes
                ("poller_lease_acquired", 2),  # b, after a's lease expired
                ("poller_lease_lost", None),  # a's fenced ingest: the token moved (a then stands by)
            ]
            assert a.health()["failing"] == {}
        # b closed in order (its leases released): a would take the storefront at once, long before expiry
        async with h.app(clock=clock_a) as c:
            with capture_logs() as logs:
                await c.pollers[0].run_pass()
            assert ("poller_lease_acquired", 3) in [(e["event"], e.get("token")) for e in logs]


async def test_two_daemons_on_postgresql_both_run_and_run_once_works_next_to_them(tmp_path, postgres_url):
    """`relay run` twice on one PostgreSQL database: neither waits as a standby, one polls the storefront,
    the order is placed once; `relay run --once` next to them exits 0 without polling what they hold; stopped,
    they hand their poller leases back."""
    async with Harness(tmp_path) as h:
        h.database = postgres_url
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings()
        with capture_logs() as logs:
            daemons = [
                asyncio.create_task(
                    _run(settings, h.registry, once=False, sleep=h.sleep, install_signal_handlers=False)
                )
                for _ in range(2)
            ]
            try:
                for _ in range(400):
                    if h.factories["acme"].held and sum(e["event"] == "relay_started" for e in logs) == 2:
                        break
                    await asyncio.sleep(0.05)
                assert h.factories["acme"].held == 1
                assert await _run(settings, h.registry, once=True, sleep=h.sleep) == 0
                # before stopping them: the first daemon to stop hands its lease back, and the other's
                # pass in progress may take it then
                holders = [
                    e
                    for e in logs
                    if e["event"] == "poller_lease_acquired" and e["lease"] == "storefront:shop"
                ]
            finally:
                for daemon in daemons:
                    daemon.cancel()
                await asyncio.gather(*daemons, return_exceptions=True)
        names = [e["event"] for e in logs]
        assert "database_locked_by_another_daemon" not in names
        assert names.count("relay_started") == 2
        assert len(holders) == 1  # one poller for the storefront; the other daemon and --once stood by
        assert [e for e in logs if e["event"] == "poller_lease_held_elsewhere"] != []
        assert h.factories["acme"].deliveries_of(h.factories["acme"].held_keys()[0]) == 1
        # stopped in order: every poller lease was handed back (another daemon would take it at once)
        assert raw_sql(postgres_url, "SELECT name FROM poller_leases WHERE owner IS NOT NULL") == []
        assert raw_sql(postgres_url, "SELECT name FROM poller_leases") != []


async def test_a_daemon_paused_inside_a_write_stalls_the_others_only_until_the_server_ends_it(
    postgres_url, monkeypatch
):
    """A daemon SIGSTOPped mid-transaction holds the writer lock: the server ends its idle session after
    `IDLE_IN_TRANSACTION_MS` (shortened here), another daemon's write goes through, and the paused unit,
    resumed, is unavailable with nothing committed."""
    monkeypatch.setattr(postgres_connector, "IDLE_IN_TRANSACTION_MS", 300)
    paused, other = open_store(postgres_url), open_store(postgres_url)
    for s in (paused, other):
        await s.open()
    try:
        await paused.migrate()
        assert isinstance(paused, RelayStore)

        async def write_then_pause(tx):
            await tx.execute("record_poll_ok", name="paused", now=1.0)
            await asyncio.sleep(1.0)  # the process is stopped: nothing happens on its session

        stalled = asyncio.create_task(paused.connector.run_write(write_then_pause))
        await asyncio.sleep(0.1)  # it holds the writer lock now
        await other.record_poll("shop", True, None, 2.0)  # waits at most ~0.3 s, then goes through
        with pytest.raises(StoreUnavailable):
            await stalled
        assert [s.name for s in (await other.status(3.0)).storefronts] == ["shop"]
    finally:
        for s in (paused, other):
            await s.close()


async def test_a_daemon_resumed_with_a_failed_listing_records_nothing_over_the_new_holders_poll(
    tmp_path, store_url
):
    """`a`'s listing is in flight while it is paused past its lease (its clock jumps on the way) and fails;
    `b` took the storefront over and polled meanwhile: `relay status` keeps `b`'s successful poll."""
    clock_a, clock_b = ManualClock(), ManualClock()
    clock_b.now = clock_a.now
    h = Harness(tmp_path, config={"daemon": {"poller_lease_s": LEASE_S}})
    fake: Any = h.storefront
    answer, paused = fake._list, []

    async def listing(request: web.Request) -> web.StreamResponse:
        if paused:  # a's request: the process stops while it waits, and the storefront fails
            paused.clear()
            clock_a.advance(3 * LEASE_S)
            return web.json_response({"error": "injected fault"}, status=401)
        return await answer(request)  # type: ignore[no-any-return]

    fake._list = listing
    async with h:
        h.database = store_url
        async with h.app(clock=clock_a) as a, h.app(clock=clock_b) as b:
            await a.pollers[0].run_pass()  # a holds the storefront
            clock_b.advance(LEASE_S + 1)  # a is paused; b takes the storefront over and polls
            await b.pollers[0].run_pass()
            (polled,) = (await b.store.status(clock_b.now)).storefronts
            assert polled.last_poll_ok_at == clock_b.now and not polled.failing
            paused.append(True)
            await a.pollers[0].run_pass()  # a resumes: its listing fails after its lease ran out
            (status,) = (await b.store.status(clock_a.now)).storefronts
    assert not status.failing and status.last_error is None
    assert status.last_poll_ok_at == polled.last_poll_ok_at
