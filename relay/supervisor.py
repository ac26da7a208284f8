"""Runs the daemon's loops as tasks and shuts them down in order, whatever ends the run.

A run ends in one of three ways, and all three end the same way:

* **stop** (`App.stop()`, SIGTERM, SIGINT): the stop event is set;
* **a loop crashes** (its task ends with an error, or ends before the stop): `loop_crashed` is logged
  with the loop and the error, and the stop is requested as if by SIGTERM;
* **cancellation** of the task awaiting `run()` (an embedding program, `asyncio.run` on Ctrl-C): the
  stop is requested; the supervision runs in its own task, so the cancellation does not interrupt it.

The orderly shutdown: quick loops (pollers, router; their work is transactional) are cancelled at
once; draining loops (forwarder, shipper) finish their in-flight sends for up to the grace period and
are then aborted. When `run()` returns or raises, no loop task, send or commit is left running.
Afterwards a crash raises `LoopCrashed` (`relay run` exits EX_SOFTWARE, so a service manager restarts
it) and a cancellation re-raises `CancelledError`. Cancelling again during the shutdown cuts the grace
period short; the shutdown still completes before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from relay.loops.base import Loop


class LoopCrashed(Exception):
    """A loop task failed; the other loops were shut down cleanly before this was raised."""

    def __init__(self, loop: str, error: str) -> None:
        super().__init__(f"loop {loop} crashed: {error}")
        self.loop = loop
        self.error = error


class Supervisor:
    """Runs `quick` and `draining` loops until `stopping` is set, a loop crashes, or `run()` is cancelled.

    `request_stop` is called (once per cause) to set `stopping`; it is `App.stop`, which logs it.
    `grace_s` bounds the drain of the draining loops; 0 means no bound. `on_started` is called once every
    loop task has been started (the daemon then tells systemd it is ready).
    """

    def __init__(
        self,
        *,
        quick: Sequence[Loop],
        draining: Sequence[Loop],
        stopping: asyncio.Event,
        request_stop: Callable[[], None],
        grace_s: float,
        log: Any,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self.quick = list(quick)
        self.draining = list(draining)
        self.stopping = stopping
        self.request_stop = request_stop
        self.grace_s = grace_s
        self.log = log
        self.on_started = on_started
        self.crashes: list[LoopCrashed] = []
        self._hurry = asyncio.Event()
        self._labels: dict[asyncio.Task[None], str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def alive(self) -> bool:
        """True while every loop task runs and no stop was requested (the systemd watchdog pings only then)."""
        return bool(self._tasks) and not self.stopping.is_set() and not any(t.done() for t in self._tasks)

    async def run(self) -> None:
        """Supervise until the end of the run; see the module docstring for what ends it and how."""
        supervision = asyncio.create_task(self._supervise(), name="relay:supervisor")
        try:
            await asyncio.wait([supervision])
        except asyncio.CancelledError:
            self.log.info("run_cancelled")
            self.request_stop()
            while not supervision.done():
                try:
                    await asyncio.wait([supervision])
                except asyncio.CancelledError:
                    self._hurry.set()  # cancelled again: skip the rest of the grace period
            error = None if supervision.cancelled() else supervision.exception()
            if error is not None and not isinstance(error, LoopCrashed):  # a crash was logged already
                self.log.error("supervisor_failed", error=repr(error))
            raise
        supervision.result()

    # --- inside the supervision task -----------------------------------------------------------------

    async def _supervise(self) -> None:
        quick = [self._start(loop) for loop in self.quick]
        draining = [self._start(loop) for loop in self.draining]
        tasks = self._tasks = quick + draining
        if self.on_started is not None:
            self.on_started()
        try:
            stop = asyncio.create_task(self.stopping.wait(), name="relay:stop-waiter")
            try:
                done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            finally:
                await self._cancel([stop])
            self._check(task for task in done if task is not stop)
            self.request_stop()
            await self._shutdown(quick, draining)
        finally:
            if not all(task.done() for task in tasks):  # only if the shutdown itself failed
                await self._abort(tasks)
        self._check(tasks)
        if self.crashes:
            raise self.crashes[0]

    def _start(self, loop: Loop) -> asyncio.Task[None]:
        task = asyncio.create_task(loop.run(self.stopping), name=f"relay:{loop.label}")
        self._labels[task] = loop.label
        return task

    async def _shutdown(self, quick: list[asyncio.Task[None]], draining: list[asyncio.Task[None]]) -> None:
        for task in quick:
            task.cancel()
        if quick:
            await asyncio.wait(quick)
        pending = [t for t in draining if not t.done()]
        if not pending:
            return
        drained = asyncio.Event()
        remaining = set(pending)

        def finished(task: asyncio.Task[None]) -> None:
            remaining.discard(task)
            if not remaining:
                drained.set()

        for task in pending:
            task.add_done_callback(finished)
        waiters = [asyncio.create_task(drained.wait()), asyncio.create_task(self._hurry.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.grace_s or None, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._cancel(waiters)
        pending = [t for t in pending if not t.done()]
        if pending:
            self.log.warning("grace_period_over", cancelled=len(pending))
            await self._abort(pending)

    async def _abort(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel the draining loops' in-flight sends, then `tasks` themselves, and wait for all of it."""
        for loop in self.draining:
            try:
                await loop.abort()
            except Exception:
                self.log.exception("abort_failed", loop=loop.label)
        await self._cancel(tasks)

    async def _cancel(self, tasks: Sequence[asyncio.Task[Any]]) -> None:
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def _check(self, tasks: Any) -> None:
        """Record (and log, once) every task in `tasks` that ended in a crash."""
        for task in tasks:
            if not task.done() or task not in self._labels:
                continue  # still running, or already checked
            label = self._labels.pop(task)
            if task.cancelled():
                if self.stopping.is_set():
                    continue  # cancelled by the shutdown
                error = "cancelled"
            elif (exc := task.exception()) is not None:
                error = repr(exc)
            elif not self.stopping.is_set():
                error = "returned before stop"
            else:
                continue
            self.log.error("loop_crashed", loop=label, error=error)
            self.crashes.append(LoopCrashed(label, error))
