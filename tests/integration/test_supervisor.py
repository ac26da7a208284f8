"""The daemon's lifecycle: whatever ends `App.run()` (stop, a crashed loop, cancellation), the rest shuts
down in order, in-flight sends drain, and no task is left behind.

Each test here failed before the supervisor (relay/supervisor.py): a store error in a loop's wait ended
every loop and `relay run` exited 0; cancelling `run()` left the loops running; an externally cancelled
loop task escaped as a CancelledError; signal handlers were reset to SIG_DFL instead of restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from relay.cli.common import EX_SOFTWARE
from relay.cli.daemon import _run
from relay.exceptions import StoreUnavailable
from relay.loops.base import Loop
from relay.loops.order_poller import OrderPoller
from relay.testing.faultproxy import FaultProxy, Toxic
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

RELAY = Path(__file__).resolve().parents[2] / "relay"


def relay_tasks() -> list[asyncio.Task[object]]:
    """Tasks running relay's own code (loops, sends, commits, the supervisor), not the test's or a fake's."""
    found = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        path = Path(code.co_filename) if code else Path("/")
        ours = path.is_relative_to(RELAY) and not path.is_relative_to(RELAY / "testing")
        if ours or task.get_name().startswith("relay:"):
            found.append(task)
    return found


def loop_task(loop: Loop) -> asyncio.Task[object] | None:
    """The task running `loop.run()`, if there is one."""
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and frame.f_locals.get("self") is loop and frame.f_code.co_name == "run":
            return task
    return None


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def slow_acme(h: Harness, toxic: Toxic) -> AsyncIterator[FaultProxy]:
    """Put a fault proxy in front of the `acme` fake factory."""
    host, port = h.factories["acme"].url.removeprefix("http://").split("/")[0].split(":")
    proxy = FaultProxy(host, int(port))
    await proxy.start()
    proxy.default = toxic
    try:
        yield proxy
    finally:
        await proxy.close()


def factory_order_states(tmp_path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        return sorted(state for (state,) in db.execute("SELECT state FROM factory_orders"))


# --- bug 1: a store error in next_wait() is a failed pass, not a dead loop ---------------------------


async def test_a_store_outage_while_computing_the_next_wait_is_retried_not_fatal(tmp_path, monkeypatch):
    async with Harness(tmp_path) as h, h.app() as app:
        calls = 0

        async def next_due() -> float | None:
            nonlocal calls
            calls += 1
            raise StoreUnavailable("database is locked")

        monkeypatch.setattr(app.forwarder, "next_due", next_due)
        monkeypatch.setattr(app.forwarder, "interval", 0.05)  # retry the wait quickly
        runner = asyncio.create_task(app.run())
        await until(lambda: calls >= 3 or runner.done())
        assert not runner.done()  # failed three times, and every loop kept going
        forwarder = loop_task(app.forwarder)
        assert forwarder is not None and not forwarder.done()
        assert app.health()["failing"] == {"forwarder": "database is locked"}
        assert app.forwarder.health.failures >= 3
        app.stop()
        await asyncio.wait_for(runner, 10)  # a clean stop: no LoopCrashed
        assert relay_tasks() == []


# --- bug 2: a crashed loop → clean shutdown of the rest → exit EX_SOFTWARE ----------------------------


async def test_a_crashed_loop_drains_the_rest_and_relay_run_exits_ex_software(tmp_path, monkeypatch):
    async with Harness(tmp_path) as h, slow_acme(h, Toxic.latency(0.3)) as proxy:
        acme = h.factories["acme"]
        for _ in range(4):
            h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings(
            daemon={"shutdown_grace_s": 30},
            factories={"acme": {"url": proxy.url("/orders"), "concurrency": 1}},
        )
        async with h.app(settings=settings) as app:  # ingest and route; deliveries are left to `relay run`
            await app.pollers[0].safe_pass()
            while await app.router.safe_pass():
                pass

        async def crash_once_a_delivery_is_in_flight(self: OrderPoller, stopping: asyncio.Event) -> None:
            await until(lambda: bool(acme.deliveries))
            raise RuntimeError("poller bug")

        monkeypatch.setattr(OrderPoller, "run", crash_once_a_delivery_is_in_flight)
        with capture_logs() as logs:
            rc = await asyncio.wait_for(_run(settings, h.registry, once=False), 30)
        assert rc == EX_SOFTWARE
        crashed = [e for e in logs if e["event"] == "loop_crashed"]
        assert [(e["loop"], e["error"]) for e in crashed] == [("poller:shop", "RuntimeError('poller bug')")]
        assert [e["event"] for e in logs if e["event"] in ("stopping", "relay_stopped")] == [
            "stopping",
            "relay_stopped",
        ]
        assert "grace_period_over" not in [e["event"] for e in logs]
        # As on SIGTERM: the send in flight finished and was recorded; the queued ones were not started.
        assert sum(acme.deliveries.values()) == 1
        assert factory_order_states(tmp_path) == ["pending", "pending", "pending", "placed"]
        assert relay_tasks() == []


async def test_a_loop_task_cancelled_from_outside_is_a_crash_and_stops_the_rest(tmp_path):
    async with Harness(tmp_path) as h, h.app() as app:
        runner = asyncio.create_task(app.run())
        await until(lambda: loop_task(app.router) is not None)
        router = loop_task(app.router)
        assert router is not None
        with capture_logs() as logs:
            router.cancel()
            with pytest.raises(Exception, match="router crashed: cancelled"):
                await asyncio.wait_for(runner, 10)
        assert ("router", "cancelled") in [
            (e["loop"], e["error"]) for e in logs if e["event"] == "loop_crashed"
        ]
        assert relay_tasks() == []


# --- bug 3: cancelling run() → stop() → the same orderly shutdown → CancelledError ---------------------


async def test_cancelling_run_drains_in_flight_sends_and_leaves_no_task_behind(tmp_path):
    async with Harness(tmp_path) as h, slow_acme(h, Toxic.latency(0.3)) as proxy:
        acme = h.factories["acme"]
        for _ in range(4):
            h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings(
            daemon={"shutdown_grace_s": 30},
            factories={"acme": {"url": proxy.url("/orders"), "concurrency": 1}},
        )
        async with h.app(settings=settings) as app:
            runner = asyncio.create_task(app.run())
            await until(lambda: bool(acme.deliveries))
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            assert relay_tasks() == []
        assert factory_order_states(tmp_path) == ["pending", "pending", "pending", "placed"]
        assert sum(acme.deliveries.values()) == 1


async def test_cancelling_twice_cuts_the_grace_period_short_and_still_leaves_nothing(tmp_path):
    async with Harness(tmp_path) as h, slow_acme(h, Toxic.timeout(0, "downstream")) as proxy:
        acme = h.factories["acme"]
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings(
            daemon={"shutdown_grace_s": 30},  # the answer never comes: one cancel would wait 30 s
            factories={"acme": {"url": proxy.url("/orders"), "timeout_s": 30}},
        )
        async with h.app(settings=settings) as app:
            runner = asyncio.create_task(app.run())
            await until(lambda: bool(acme.deliveries))
            with capture_logs() as logs:
                runner.cancel()
                await asyncio.sleep(0.1)
                assert not runner.done()  # draining
                started = time.monotonic()
                runner.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await runner
            assert time.monotonic() - started < 5
            assert "grace_period_over" in [e["event"] for e in logs]
            assert relay_tasks() == []
        assert factory_order_states(tmp_path) == ["pending"]  # sent again later, with the same key


# --- other holes of the same kind ---------------------------------------------------------------------


async def test_stop_before_run_makes_run_return_without_a_pass(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            app.stop()
            await asyncio.wait_for(app.run(), 5)
            assert relay_tasks() == []
        assert h.storefront.requests == []  # not even one poll


@pytest.mark.parametrize("ending", ["sigterm", "crash"])
async def test_signal_handlers_are_restored_however_the_run_ends(tmp_path, monkeypatch, ending):
    def previous(signum, frame):  # an embedding program's own handler
        pass

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in saved:
        signal.signal(sig, previous)
    try:
        async with Harness(tmp_path) as h, h.app(install_signal_handlers=True) as app:
            if ending == "crash":

                async def crash(self: OrderPoller, stopping: asyncio.Event) -> None:
                    raise RuntimeError("poller bug")

                monkeypatch.setattr(OrderPoller, "run", crash)
            runner = asyncio.create_task(app.run())
            await asyncio.sleep(0.05)
            if ending == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # handled by the App: stop() and drain
                await asyncio.wait_for(runner, 10)
            else:
                with pytest.raises(Exception, match="poller bug"):
                    await asyncio.wait_for(runner, 10)
        assert signal.getsignal(signal.SIGTERM) is previous
        assert signal.getsignal(signal.SIGINT) is previous
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
