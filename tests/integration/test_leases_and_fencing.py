"""Issue 11, items 1 and 2: a queued send must not outlive its lease, outcomes are fenced by a per-claim
token, start-up never frees a live process's leases, and one daemon at a time works on a database."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.app import App
from relay.cli import main
from relay.cli.common import EX_OK, EX_TEMPFAIL
from relay.cli.daemon import _run
from relay.config import StorefrontSettings
from relay.domain.models import FactoryOrderState, PushState, Shipment, ShipmentLine
from relay.store import DeliveryOutcome, PushOutcome, open_store
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine

# Orders seeded before the first poll are picked up (item 8 made "now" the default start point).
SHOP: dict[str, Any] = (
    {"storefronts": {"shop": {"start_from": "2020-01-01"}}}
    if "start_from" in StorefrontSettings.model_fields
    else {}
)


def _fo_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT o.external_id, f.state, f.lease_owner, f.lease_expires_at, f.lease_token"
            " FROM factory_orders f JOIN orders o ON o.id = f.order_id ORDER BY o.id"
        ).fetchall()


async def _poll_and_route(app: App) -> None:
    for poller in app.pollers:
        await poller.safe_pass()
    while await app.router.safe_pass():
        pass


# --- item 1: a queued send outlives its lease ---------------------------------------------------------


async def test_a_send_slower_than_its_lease_keeps_its_claim_and_its_outcome_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory (or a rate-limited shop) answers after longer than a lease. The sender renews the lease
    while the send is under way, so the row is not claimed again meanwhile and the outcome is recorded.
    Before the heartbeat, the next pass re-claimed the row (a new fencing token), the answer was ignored
    as stale, and the order was sent again: under a shop's cost bucket every push outlived its lease and
    none was ever recorded."""
    clock = ManualClock()
    config = {**SHOP, "daemon": {"lease_s": 0.3}, "factories": {"acme": {"concurrency": 4}}}
    async with Harness(tmp_path, config=config) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        factory = h.factories["acme"]
        async with h.app(clock=clock) as app:
            adapter = app.forwarder.factories["acme"]
            submit, gate, started = adapter.submit, asyncio.Event(), asyncio.Event()

            async def slow_submit(order: Any) -> Any:
                started.set()
                await gate.wait()
                return await submit(order)

            monkeypatch.setattr(adapter, "submit", slow_submit)
            await _poll_and_route(app)
            await app.forwarder.safe_pass()
            await started.wait()
            for _ in range(4):  # four lease-thirds of relay time, each with a heartbeat's worth of real time
                clock.advance(0.15)
                await asyncio.sleep(0.15)
            with capture_logs() as logs:
                await app.forwarder.safe_pass()  # the lease was renewed: nothing to claim again
                gate.set()
                await app.forwarder.flush()
            view = await app.store.find_order(1)
    assert view is not None
    [fo] = view.factory_orders
    assert (fo.state, fo.attempts) == ("placed", 1)
    assert not [e for e in logs if e["event"] == "stale_outcome_ignored"]
    assert factory.deliveries[fo.key] == 1


async def test_a_send_queued_past_its_lease_is_not_sent_after_a_cancellation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three orders for one factory with one slot. The first send hangs past the lease while the other two
    wait for the slot; the storefront cancels the second meanwhile, and relay (lease lapsed: "not in
    flight") cancels it locally and tells the factory nothing. Before the fix the queued send of the
    cancelled order still went out: the factory made an order relay shows as cancelled."""
    clock = ManualClock()
    async with Harness(tmp_path, config={**SHOP, "factories": {"acme": {"concurrency": 1}}}) as h:
        ids = [h.storefront.add_order([SeedLine("TEE-RED-M")]) for _ in range(3)]
        factory = h.factories["acme"]
        async with h.app(clock=clock) as app:
            adapter = app.forwarder.factories["acme"]
            submit, gate, first = adapter.submit, asyncio.Event(), asyncio.Event()

            async def slow_submit(order: Any) -> Any:
                if not first.is_set():
                    first.set()
                    await gate.wait()  # the factory is slow: this send outlives the lease
                return await submit(order)

            monkeypatch.setattr(adapter, "submit", slow_submit)
            await _poll_and_route(app)
            await app.forwarder.safe_pass()
            await first.wait()
            clock.advance(app.settings.daemon.lease_s + 1)
            h.storefront.cancel(ids[1])
            for poller in app.pollers:
                await poller.safe_pass()
            view = await app.store.find_order(int((await app.store.find_order_id("shop", ids[1])) or 0))
            assert view is not None and view.order.state == "cancelled"
            gate.set()
            await app.forwarder.flush()
            keys = [fo.key for fo in view.factory_orders]
            # The cancelled order never reached the factory (or, if it had, the factory was told).
            assert all(k not in factory.orders or factory.is_cancelled(k) for k in keys), factory.held_keys()
            # The other two were sent, the one queued past its lease after renewing it.
            assert factory.held == 2
            await app.run_once()
            for order_id in (ids[0], ids[2]):
                found = await app.store.find_order(
                    int((await app.store.find_order_id("shop", order_id)) or 0)
                )
                assert found is not None and found.order.state == "placed"


async def test_a_destination_is_not_claimed_beyond_what_its_slots_can_send_within_a_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot, a 15 s send timeout and a 30 s lease: at most 2 claimed at a time (it was 200)."""
    async with Harness(
        tmp_path,
        config={
            **SHOP,
            "daemon": {"lease_s": 30},
            "factories": {"acme": {"concurrency": 1, "timeout_s": 15}},
        },
    ) as h:
        for _ in range(5):
            h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            adapter = app.forwarder.factories["acme"]
            gate = asyncio.Event()
            submit = adapter.submit

            async def slow_submit(order: Any) -> Any:
                await gate.wait()
                return await submit(order)

            monkeypatch.setattr(adapter, "submit", slow_submit)
            await _poll_and_route(app)
            await app.forwarder.safe_pass()
            await app.forwarder.safe_pass()  # the cap holds across passes
            with sqlite3.connect(tmp_path / "relay.db") as db:
                [(leased,)] = db.execute("SELECT COUNT(*) FROM factory_orders WHERE lease_owner IS NOT NULL")
            assert leased == 2
            gate.set()
            await app.run_once()
            assert h.factories["acme"].held == 5


# --- item 2: fencing ----------------------------------------------------------------------------------


async def test_an_outcome_recorded_after_someone_else_claimed_the_row_changes_nothing(tmp_path: Path) -> None:
    """Two claims of one row (the first lease lapsed): only the newer claim's outcomes count. Before, the
    first claimant's outcome was recorded over the second's lease (and two pushes wrote two notes)."""
    async with Harness(tmp_path, config=SHOP) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await _poll_and_route(app)
        store = open_store(h.database)
        await store.open()
        try:
            [a] = await store.claim_deliveries("a", ["acme"], 1e10, 30, 10)
            [b] = await store.claim_deliveries("b", ["acme"], 1e10 + 31, 30, 10)  # a's lease lapsed
            assert b.lease_token > a.lease_token
            stale = await store.record_deliveries([DeliveryOutcome(a, FactoryOrderState.PLACED)], 1e10 + 32)
            assert [o.job for o in stale] == [a]
            [(_, state, owner, _, token)] = _fo_rows(tmp_path / "relay.db")
            assert (state, owner, token) == ("pending", "b", b.lease_token)  # untouched: b still holds it
            assert (
                await store.record_deliveries([DeliveryOutcome(b, FactoryOrderState.PLACED)], 1e10 + 33) == []
            )
            assert _fo_rows(tmp_path / "relay.db")[0][1] == "placed"
        finally:
            await store.close()
        store = open_store(h.database)
        await store.open()
        try:
            with sqlite3.connect(tmp_path / "relay.db") as db:
                fo_key, line_id = db.execute(
                    "SELECT f.key, l.line_id FROM factory_orders f JOIN order_lines l ON l.factory_order_id = f.id"
                ).fetchone()
            await store.record_shipment(
                "acme",
                "m-1",
                Shipment(
                    factory_order_key=fo_key,
                    shipment_id="p1",
                    carrier="UPS",
                    tracking_number="1Z",
                    lines=[ShipmentLine(line_id=line_id, quantity=1)],
                ),
                1e10 + 40,
            )
            [pa] = await store.claim_pushes("a", ["shop"], 1e10 + 41, 30, 10)
            [pb] = await store.claim_pushes("b", ["shop"], 1e10 + 72, 30, 10)
            assert await store.confirm_pushes([pa], 1e10 + 72, 30, 10) == []  # a must not push any more
            assert await store.confirm_pushes([pb], 1e10 + 72, 30, 10) == [pb]
            stale = await store.record_pushes([PushOutcome(pa, PushState.DONE, reference="n1")], 1e10 + 73)
            assert len(stale) == 1
            assert (
                await store.record_pushes([PushOutcome(pb, PushState.DONE, reference="n2")], 1e10 + 74) == []
            )
            view = await store.find_order(1)
            assert view is not None
            assert [(s.push_state, s.push_reference) for s in view.shipments] == [("done", "n2")]
        finally:
            await store.close()


async def test_starting_a_second_process_does_not_free_the_first_ones_leases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same `instance_id` (the hostname by default): the second process's start-up used to release every
    lease of that name, freeing the first one's in-flight sends for a second delivery."""
    async with Harness(tmp_path, config=SHOP) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as first:
            await _poll_and_route(first)
            [job] = await first.store.claim_deliveries(first.owner, ["acme"], first.clock(), 120, 10)
            async with h.app() as second:
                assert second.owner != first.owner
                assert (
                    await second.store.claim_deliveries(second.owner, ["acme"], second.clock(), 120, 10) == []
                )
            [(_, _, owner, _, token)] = _fo_rows(tmp_path / "relay.db")
            assert (owner, token) == (first.owner, job.lease_token)


async def test_run_once_next_to_a_running_daemon_exits_tempfail_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Harness(tmp_path, config=SHOP) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings()
        daemon = open_store(h.database).daemon_lock()  # the running daemon
        assert await daemon.try_acquire()
        try:
            with capture_logs() as logs:
                rc = await _run(settings, h.registry, once=True, sleep=h.sleep, install_signal_handlers=False)
        finally:
            await daemon.release()
        assert rc == EX_TEMPFAIL
        err = capsys.readouterr().err
        assert "in use by another daemon" in err and f"pid={os.getpid()}" in err
        assert [e["holder"] for e in logs if e["event"] == "database_locked_by_another_daemon"] != []
        assert h.factories["acme"].held == 0  # no pass ran
        # Read-only commands do not take the lock.
        assert await daemon.try_acquire()
        try:
            config = h.write_config(tmp_path / "relay.toml")
            assert await asyncio.to_thread(main, ["-c", str(config), "migrate"]) == EX_OK  # no pass made it
            assert await asyncio.to_thread(main, ["-c", str(config), "orders"]) == EX_OK
            assert await asyncio.to_thread(main, ["-c", str(config), "status"]) == EX_OK
        finally:
            await daemon.release()
        # Once the daemon is gone, --once runs.
        rc = await _run(settings, h.registry, once=True, sleep=h.sleep, install_signal_handlers=False)
        assert rc == EX_OK and h.factories["acme"].held == 1


async def test_a_second_daemon_waits_as_a_standby_and_takes_over_when_the_first_dies(tmp_path: Path) -> None:
    """The first daemon is a process holding the lock; SIGKILL frees it (the OS does), the standby starts."""
    async with Harness(tmp_path, config=SHOP) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings()
        db_path = settings.daemon.database.removeprefix("sqlite:///")
        holder = subprocess.Popen(  # noqa: ASYNC220 - a process that only holds the lock
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    import asyncio, sys, time
                    from relay.store.sqlite.connector import FlockDaemonLock
                    assert asyncio.run(FlockDaemonLock({db_path + ".lock"!r}).try_acquire())
                    print("locked", flush=True)
                    time.sleep(60)
                    """
                ),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
            with capture_logs() as logs:
                standby = asyncio.create_task(
                    _run(
                        settings,
                        h.registry,
                        once=False,
                        standby_poll_s=0.05,
                        sleep=h.sleep,
                        install_signal_handlers=False,
                    )
                )
                await asyncio.sleep(0.5)
                assert not standby.done()
                assert h.factories["acme"].held == 0  # standing by: not running
                waiting = [e for e in logs if e["event"] == "database_locked_by_another_daemon"]
                assert len(waiting) == 1 and f"pid={holder.pid}" in waiting[0]["holder"]
                holder.send_signal(signal.SIGKILL)
                for _ in range(200):
                    if h.factories["acme"].held:
                        break
                    await asyncio.sleep(0.05)
                assert h.factories["acme"].held == 1  # took over
                standby.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await standby
            assert "database_lock_acquired" in [e["event"] for e in logs]
        finally:
            holder.kill()
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
