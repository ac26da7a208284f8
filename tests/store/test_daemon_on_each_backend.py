"""The whole daemon on each backend (issue 16): the loops, the inbound server and the CLI's store calls know
nothing of the backend; the same assertions hold on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap

import pytest
from structlog.testing import capture_logs

from adapters.webhook.fake import Fault
from relay.cli.daemon import _run
from relay.domain.models import factory_order_key
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine
from tests.integration.test_loop import post_event, shipment


async def test_an_order_split_over_two_factories_is_placed_shipped_pushed_and_completed(tmp_path, store_url):
    async with Harness(tmp_path) as h:
        h.database = store_url
        oid = h.storefront.add_order([SeedLine("TEE-RED-M", 2), SeedLine("MUG-WHT", 1)])
        async with h.app() as app:
            await app.run_once()
            assert {f: fake.held for f, fake in h.factories.items()} == {"acme": 1, "bolt": 1}
            for fake in h.factories.values():
                assert await fake.ship_all() == 1
            await app.run_once()
            view = await app.store.find_order(await app.store.find_order_id("shop", oid))
        assert view.order.state == "completed"
        assert {fo.state for fo in view.factory_orders} == {"shipped"}
        assert len(h.storefront.fulfilments(oid)) == 2
        kinds = [e.kind for e in view.events]
        assert kinds.count("factory_accepted") == 2 and kinds.count("tracking_pushed") == 2


async def test_a_retried_delivery_and_a_duplicate_callback_place_and_ship_once(tmp_path, store_url):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        h.database = store_url
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme = h.factories["acme"]
        acme.fail_next(Fault(status=503, retry_after=7))
        async with h.app(clock=clock) as app:
            await app.run_once()
            clock.advance(7.5)
            await app.run_once()
            key = factory_order_key("shop", oid, "acme")
            event = shipment(key, [(h.storefront.line_ids(oid)[0], 1)])
            first = await post_event(app, "acme", acme.callback_secret, event, "m-1")
            again = await post_event(app, "acme", acme.callback_secret, event, "m-1")
            await app.run_once()
            view = await app.store.find_order(1)
        assert acme.deliveries == {key: 2} and acme.held == 1
        assert first[0] == again[0] == 200
        assert view.order.state == "completed"
        assert len(h.storefront.fulfilments(oid)) == 1


async def test_a_second_daemon_waits_as_a_standby_and_takes_over_when_the_first_dies(tmp_path, store_url):
    """One active daemon per database, the others standbys (the current state on PostgreSQL too): the first
    is a process holding the daemon lock; SIGKILL frees it (the OS closes the file, or the server ends the
    session), the standby starts."""
    async with Harness(tmp_path) as h:
        h.database = store_url
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings()
        holder = subprocess.Popen(  # noqa: ASYNC220 - a process that only holds the lock
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    import asyncio
                    from relay.store import open_store

                    async def hold():
                        assert await open_store({store_url!r}).daemon_lock().try_acquire()
                        print("locked", flush=True)
                        await asyncio.sleep(60)

                    asyncio.run(hold())
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
                for _ in range(400):
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


def test_relay_demo_checks_exactly_once_on_each_backend(store_url, capsys):
    """`relay demo --database URL`: every order reaches its factory exactly once and gets tracking back."""
    from relay.cli import main

    database = store_url.removeprefix("sqlite:///")  # a path for SQLite, the URL for PostgreSQL
    assert main(["demo", "--orders", "30", "--database", database]) == 0
    assert "OK: every order reached its factory exactly once" in capsys.readouterr().out
