"""The outbox engine shared by the forwarder and the shipper.

An `OutboxLoop` claims due rows under a lease, sends them concurrently (bounded per destination),
and group-commits outcomes: whatever finished while the previous commit ran goes into the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from relay.exceptions import StoreUnavailable
from relay.faults import crash_point
from relay.loops.base import Loop

Job = TypeVar("Job")
Outcome = TypeVar("Outcome")


class OutboxLoop(Loop, Generic[Job, Outcome]):
    """Claim → send concurrently → group-commit outcomes. Subclasses supply the four operations."""

    idle_poll_s = 5.0

    def __init__(
        self, *, batch_size: int, concurrency: dict[str, int], clock: Callable[[], float], log: Any
    ) -> None:
        super().__init__(interval=self.idle_poll_s, clock=clock, log=log)
        self.batch_size = batch_size
        self._limits = {dest: asyncio.Semaphore(n) for dest, n in concurrency.items()}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._pending: list[Outcome] = []
        self._committer: asyncio.Task[None] | None = None
        self._claimed: set[int] = set()

    # subclass hooks ---------------------------------------------------------------------------------
    def destinations(self) -> Sequence[str]:
        raise NotImplementedError

    async def claim(self, destinations: Sequence[str], limit: int) -> list[Job]:
        raise NotImplementedError

    async def send(self, job: Job) -> Outcome:
        raise NotImplementedError

    async def commit(self, outcomes: list[Outcome]) -> None:
        raise NotImplementedError

    def destination_of(self, job: Job) -> str:
        raise NotImplementedError

    def job_id(self, job: Job) -> int:
        raise NotImplementedError

    async def after_commit(self, outcomes: list[Outcome]) -> None:
        """Hook after outcomes are durable (e.g. wake the next loop)."""

    async def next_due(self) -> float | None:
        return None

    # engine ---------------------------------------------------------------------------------------
    async def run_pass(self) -> bool:
        room = self.batch_size - len(self._in_flight)
        destinations = self.destinations()
        if room <= 0 or not destinations:
            return False
        jobs = [j for j in await self.claim(destinations, room) if self.job_id(j) not in self._claimed]
        if jobs:
            crash_point("after_claim")
        for job in jobs:
            self._claimed.add(self.job_id(job))
            task = asyncio.create_task(self._run_job(job), name=f"relay:{self.label}:send")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(jobs) == room

    async def next_wait(self, started: float) -> float:
        """Until the next row is due (reads the store), at most one idle interval, at least 50 ms."""
        due = await self.next_due()
        wait = self.interval if due is None else due - self.clock()
        return min(self.interval, max(0.05, wait))

    async def _run_job(self, job: Job) -> None:
        limit = self._limits.get(self.destination_of(job))
        try:
            if limit is None:
                outcome = await self.send(job)
            else:
                async with limit:
                    if self._stopping is not None and self._stopping.is_set():
                        # Claimed but still queued behind the concurrency limit when the stop came:
                        # start nothing new. The lease is freed by the next start (or lapses).
                        self._claimed.discard(self.job_id(job))
                        return
                    outcome = await self.send(job)
        except asyncio.CancelledError:
            # Shutdown past the grace period: nothing recorded, the lease lapses, the job is resent.
            self._claimed.discard(self.job_id(job))
            raise
        except Exception:
            # `send` maps every expected failure to an outcome; this is a bug. The lease lapses and
            # the job is tried again later, with the same key.
            self.log.exception("send_crashed", loop=self.name)
            self._claimed.discard(self.job_id(job))
            return
        self._pending.append(outcome)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending(), name=f"relay:{self.label}:commit")

    async def _commit_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.commit(batch)
            except StoreUnavailable as exc:
                # Outcomes stay owed: the rows keep their leases and are resent after expiry, same key.
                self.health.failed(self.clock(), exc, "store_unavailable")
                self._release(batch)
                return
            except Exception as exc:
                # A bug in `commit`. As above, and the committer must not die holding the batch's ids:
                # they would never be claimed again by this process, and `flush()` would raise.
                self.log.exception("commit_failed", loop=self.name)
                self.health.failed(self.clock(), exc)
                self._release(batch)
                return
            self._release(batch)
            try:
                await self.after_commit(batch)
            except Exception:
                self.log.exception("after_commit_failed", loop=self.name)  # outcomes are durable already

    def _release(self, batch: list[Outcome]) -> None:
        for outcome in batch:
            self._claimed.discard(self.job_id(outcome.job))  # type: ignore[attr-defined]

    async def flush(self) -> None:
        """Wait for in-flight sends and for their outcomes to be committed (cancelling the wait cancels
        the sends too)."""
        while self._in_flight or (self._committer and not self._committer.done()):
            if self._in_flight:
                await asyncio.gather(*list(self._in_flight), return_exceptions=True)
            if self._committer:
                await self._committer

    async def drain(self) -> None:
        """On stop: let in-flight sends finish and commit their outcomes (queued ones are not started)."""
        await self.flush()

    async def abort(self) -> None:
        """Cancel in-flight sends (grace period over); commit whatever already finished."""
        for task in list(self._in_flight):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        if self._committer:
            with contextlib.suppress(Exception):
                await self._committer


async def run_until_idle(outbox: OutboxLoop[Any, Any]) -> None:
    """Claim and send until nothing more is due now, committing every outcome."""
    while True:
        more = await outbox.safe_pass()
        await outbox.flush()
        if not more:
            return
