"""The machinery shared by every loop: stop/wake handling and health transitions.

A `Loop` runs passes until stopped. It sleeps until its next tick, an explicit `wake()` (another loop or
the inbound server has work for it), or the stop event, whichever comes first. Ticks are drift-free: a
pass's own duration is subtracted from the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from relay.exceptions import StoreUnavailable


class Health:
    """Logs a component's healthy→failing transition once and its recovery once (not every failure)."""

    def __init__(self, log: Any, **context: Any) -> None:
        self._log = log.bind(**context)
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.failures = 0

    def failed(self, now: float, error: BaseException | str, event: str = "failing") -> None:
        self.failures += 1
        self.last_error = str(error)
        if self.failing_since is None:
            self.failing_since = now
            self._log.error(event, error=self.last_error)
        else:
            self._log.debug("still_failing", error=self.last_error)

    def ok(self, now: float) -> None:
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

    def wake(self) -> None:
        self._wake.set()

    async def run_pass(self) -> bool:
        raise NotImplementedError

    async def next_wait(self, started: float) -> float:
        """Seconds until the next pass; by default one drift-free interval after `started`."""
        return max(0.0, started + self.interval - self.clock())

    async def safe_pass(self) -> bool:
        """One pass; store outages and unexpected errors are logged (once) and retried, never fatal."""
        failures = self.health.failures
        try:
            busy = await self.run_pass()
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            self.health.failed(self.clock(), exc, "store_unavailable")
            return False
        except Exception as exc:
            self.log.exception("pass_failed", loop=self.name)
            self.health.failed(self.clock(), exc)
            return False
        if self.health.failures == failures:  # a pass that reported its own failure is no recovery
            self.health.ok(self.clock())
        return busy

    async def run(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        while not stopping.is_set():
            started = self.clock()
            self._wake.clear()
            if await self.safe_pass():
                await asyncio.sleep(0)
                continue
            wait = await self.next_wait(started)
            await wait_any(stopping, self._wake, timeout=wait)
        await self.drain()

    async def drain(self) -> None:
        """Called once after the stop event: finish in-flight work (bounded by the caller's grace period)."""


async def wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Return when any event is set or `timeout` seconds pass."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
