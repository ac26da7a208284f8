"""The machinery shared by every loop: stop/wake handling and health transitions.

A `Loop` runs passes until stopped. It sleeps until its next tick, an explicit `wake()` (another loop or
the inbound server has work for it), or the stop event, whichever comes first. Ticks are drift-free: a
pass's own duration is subtracted from the wait. Everything a loop does between passes that can fail
(the pass itself, and `next_wait()`, which may read the store) is guarded: a failure is logged once,
counted in `health`, and retried; it never ends the loop. `relay.supervisor` runs the loops as tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from relay.exceptions import StoreUnavailable

T = TypeVar("T")


SUMMARY_EVERY_S = 300.0
"""While a component keeps failing, one `still_failing` line at most this often (not one per failure)."""


class Health:
    """Logs a component's healthy→failing transition once, a `still_failing` summary (failures counted
    since the last line) at most every `SUMMARY_EVERY_S` while it keeps failing, and its recovery once."""

    def __init__(self, log: Any, **context: Any) -> None:
        self._log = log.bind(**context)
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._unlogged = 0  # failures since the last line about this component
        self._logged_at = 0.0

    def failed(self, now: float, error: BaseException | str, event: str = "failing") -> None:
        """Count a failure; log `event` at error level on the healthy→failing transition only, then a
        `still_failing` summary at warning level at most every `SUMMARY_EVERY_S`."""
        self.failures += 1
        self.last_error = str(error)
        if self.failing_since is None:
            self.failing_since = self._logged_at = now
            self._unlogged = 0
            self._log.error(event, error=self.last_error)
            return
        self._unlogged += 1
        if now - self._logged_at >= SUMMARY_EVERY_S:
            self._log.warning(
                "still_failing",
                failing=event,
                failures=self._unlogged,
                failing_for_s=round(now - self.failing_since, 3),
                error=self.last_error,
            )
            self._logged_at, self._unlogged = now, 0

    def ok(self, now: float) -> None:
        """A success: log `recovered` once if the component was failing."""
        if self.failing_since is not None:
            self._log.info("recovered", failed_for_s=round(now - self.failing_since, 3))
            self.failing_since = None
            self.last_error = None


class Loop:
    """Base class: subclasses implement `run_pass()`, returning True when more work is ready now."""

    name = "loop"

    def __init__(self, *, interval: float, clock: Callable[[], float], log: Any) -> None:
        self.interval = interval
        self.clock = clock
        self.log = log
        self._wake = asyncio.Event()
        self._stopping: asyncio.Event | None = None
        self.health = Health(log, loop=self.name)

    @property
    def label(self) -> str:
        """The loop's name in logs, health and task names: `forwarder`, or `poller:shop` for a per-adapter loop."""
        adapter = getattr(getattr(self, "adapter", None), "name", None)
        return f"{self.name}:{adapter}" if adapter else self.name

    def wake(self) -> None:
        """Run the next pass now (another component has work for this loop)."""
        self._wake.set()

    async def run_pass(self) -> bool:
        """One pass of work; True when more work is ready now (the loop then runs again at once)."""
        raise NotImplementedError

    async def next_wait(self, started: float) -> float:
        """Seconds until the next pass; by default one drift-free interval after `started`."""
        return max(0.0, started + self.interval - self.clock())

    async def safe_pass(self) -> bool:
        """One pass; store outages and unexpected errors are logged (once) and retried, never fatal."""
        failures = self.health.failures
        busy = await self._guarded(self.run_pass(), False, "pass_failed")
        self._ok_unless_failed_since(failures)
        return busy

    async def run(self, stopping: asyncio.Event) -> None:
        """Run passes until `stopping` is set, then `drain()`. Only a bug in this machinery ends it early.

        A pass and the `next_wait()` after it are one step for `health`: it recovers only when both work.
        """
        self._stopping = stopping
        while not stopping.is_set():
            started = self.clock()
            self._wake.clear()
            failures = self.health.failures
            if await self._guarded(self.run_pass(), False, "pass_failed"):
                self._ok_unless_failed_since(failures)
                await asyncio.sleep(0)
                continue
            wait = await self._guarded(self.next_wait(started), self.interval, "next_wait_failed")
            self._ok_unless_failed_since(failures)
            await wait_any(stopping, self._wake, max_wait_s=wait)
        await self.drain()

    async def _guarded(self, step: Awaitable[T], default: T, event: str) -> T:
        """Await `step`; a store outage or an unexpected error is counted in `health` and gives `default`."""
        try:
            return await step
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            self.health.failed(self.clock(), exc, "store_unavailable")
        except Exception as exc:
            self.log.exception(event, loop=self.name)
            self.health.failed(self.clock(), exc)
        return default

    def _ok_unless_failed_since(self, failures: int) -> None:
        if self.health.failures == failures:  # a pass that reported its own failure is no recovery
            self.health.ok(self.clock())

    async def drain(self) -> None:
        """Called once after the stop event: finish in-flight work (bounded by the caller's grace period)."""

    async def abort(self) -> None:
        """The grace period is over: cancel in-flight work now (the supervisor then cancels `run()`)."""


async def wait_any(*events: asyncio.Event, max_wait_s: float) -> None:
    """Return when any event is set or `max_wait_s` seconds pass."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=max_wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
