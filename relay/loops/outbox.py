"""The outbox engine shared by the forwarder and the shipper.

An `OutboxLoop` claims due rows under a lease, sends them concurrently (bounded per destination),
and group-commits outcomes: whatever finished while the previous commit ran goes into the next one.

Leases (issue 11, item 1; ADR 11). A claimed row waits for one of its destination's concurrency slots,
and its lease runs meanwhile: a storefront cancellation arriving after the lease lapsed treats the factory
order as never sent (cancels it locally, queues no `order.cancelled`), so a send that then still went out
would make an order relay shows as cancelled. Two guards:

* a destination never has more claimed than it can send within one lease: `concurrency * lease_s /
  send_budget_s` (the longest one send may take: the configured timeout; once sends were seen, four
  times their moving average if that is less, so a healthy destination is not throttled by a timeout it
  never reaches), at most `batch_size`. A destination at its cap is refilled once half of that has
  finished (one claim per refill, not one per send);
* just before a send, with its slot held, the rows about to go are checked in one batch (`confirm`):
  still pending, still leased under the job's fencing token. A row that moved on (cancelled, claimed by
  someone else) is not sent; a row whose lease has less than `2 * send_budget_s` left is renewed first,
  in one write under the same condition, so a cancellation from then on sees it in flight.

The check, not the cap, is what keeps the promise: a job that waited past its lease (a destination that
suddenly slowed down) is renewed or, if its row moved on meanwhile, not sent. The cap keeps that rare.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
        self,
        *,
        batch_size: int,
        concurrency: dict[str, int],
        clock: Callable[[], float],
        log: Any,
        lease_s: float | None = None,
        send_budget_s: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(interval=self.idle_poll_s, clock=clock, log=log)
        self.batch_size = batch_size
        self._limits = {dest: asyncio.Semaphore(n) for dest, n in concurrency.items()}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._pending: list[Outcome] = []
        self._committer: asyncio.Task[None] | None = None
        self._claimed: set[int] = set()
        # Per destination: how many may be claimed at once, how much lease a send needs (module docstring).
        self._lease_s = lease_s
        self._concurrency = dict(concurrency)
        self._budgets = {dest: b for dest, b in (send_budget_s or {}).items() if b > 0}
        self._send_s: dict[str, float] = {}  # moving average of recent send durations (wall clock)
        self._need_s = {dest: 2 * budget for dest, budget in self._budgets.items()}
        self._outstanding: Counter[str] = Counter()  # claimed, not finished, per destination
        self._full: set[str] = set()  # at their cap: not claimed for until half of it has finished
        self.capped = False  # the last pass skipped a destination at its cap
        self._to_confirm: list[tuple[Job, asyncio.Future[bool]]] = []
        self._confirmer: asyncio.Task[None] | None = None
        self._sending: dict[int, Job] = {}  # sends under way, whose leases `_keep_leases` renews
        self._heartbeat: asyncio.Task[None] | None = None
        # Room handed to claims made in another loop's transaction (`reserve`), until they are settled.
        self._reserved: Counter[str] = Counter()
        self._reserved_total = 0

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

    async def confirm(self, jobs: list[Job]) -> list[Job]:
        """The pre-send check (module docstring): the `jobs` still ours to send. By default all of them."""
        return jobs

    async def renew(self, jobs: list[Job]) -> None:
        """Extend the leases of `jobs`, sends under way, by a full lease (only while the rows are still
        ours under the jobs' fencing tokens). By default nothing: the engine without leases."""

    def unsent(self, job: Job) -> Outcome | None:
        """The outcome for a job the pre-send check refused: an unattempted one that only frees the
        lease (a stale one changes nothing), or None to record nothing."""
        return None

    # engine ---------------------------------------------------------------------------------------
    def cap(self, destination: str) -> int:
        """How many jobs of `destination` may be claimed and unfinished at once: what its slots send
        within one lease, one send taking the configured timeout (or, once sends were seen, four times
        their moving average if that is less), at most `batch_size`."""
        budget = self._budgets.get(destination)
        if not self._lease_s or budget is None:
            return self.batch_size
        seen = self._send_s.get(destination)
        if seen is not None:
            budget = min(budget, max(4 * seen, 0.001))
        per_lease = max(1, int(self._lease_s // budget))
        return min(self.batch_size, self._concurrency.get(destination, 1) * per_lease)

    def _observe(self, destination: str, seconds: float) -> None:
        seen = self._send_s.get(destination)
        self._send_s[destination] = seconds if seen is None else 0.8 * seen + 0.2 * seconds

    def _free(self) -> int:
        """Jobs the batch can still take: not in flight, not reserved (`reserve`)."""
        return self.batch_size - len(self._in_flight) - self._reserved_total

    def _free_for(self, dest: str, room: int) -> int:
        """Jobs `dest` can still take within `room`: below its cap with those outstanding or reserved."""
        return min(room, self.cap(dest) - self._outstanding[dest] - self._reserved[dest])

    async def run_pass(self) -> bool:
        room = self._free()
        destinations = self.destinations()
        if room <= 0 or not destinations:
            return False
        more = False
        self.capped = False
        for dest in destinations:
            limit = self._free_for(dest, room)
            if dest in self._full or limit <= 0:
                self.capped = True  # work may be left for it: a finishing send wakes the loop
                continue
            claimed = await self.claim([dest], limit)
            jobs = [j for j in claimed if self.job_id(j) not in self._claimed]
            if jobs:
                crash_point("after_claim")
            for job in jobs:
                self._start(job)
            room -= len(jobs)
            if self._outstanding[dest] >= self.cap(dest):
                self._full.add(dest)
            if len(claimed) == limit:
                more = True
            if room <= 0:
                return True
        return more

    def room(self) -> tuple[dict[str, int], int]:
        """How many jobs each destination, and all of them together, could take now, as a pass would claim
        them (none while stopping or at its cap), less what is reserved (`reserve`)."""
        if self._stopping is not None and self._stopping.is_set():
            return {}, 0
        total = self._free()
        room = {dest: self._free_for(dest, total) for dest in self.destinations() if dest not in self._full}
        return {dest: n for dest, n in room.items() if n > 0}, total

    def reserve(self, room: Mapping[str, int], total: int) -> None:
        """Hold room for a claim another transaction makes for this loop (`Store.ingest(claim=...)`): no
        pass, and no other such claim, is given it until `unreserve`."""
        self._reserved.update(room)
        self._reserved_total += total

    def unreserve(self, room: Mapping[str, int], total: int) -> None:
        """The claim held by `reserve` is settled: its jobs are taken (`take`), or it failed."""
        self._reserved.subtract(room)
        self._reserved_total -= total

    def take(self, jobs: Sequence[Job]) -> None:
        """Send `jobs`, claimed for this loop by someone else's transaction (`Store.ingest(claim=...)`),
        as if this loop's own pass had claimed them."""
        for job in jobs:
            if self.job_id(job) not in self._claimed:
                self._start(job)
        for dest in {self.destination_of(job) for job in jobs}:
            if self._outstanding[dest] >= self.cap(dest):
                self._full.add(dest)

    def _start(self, job: Job) -> None:
        self._claimed.add(self.job_id(job))
        self._outstanding[self.destination_of(job)] += 1
        task = asyncio.create_task(self._run_job(job), name=f"relay:{self.label}:send")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _finished(self, job: Job) -> None:
        dest = self.destination_of(job)
        self._outstanding[dest] -= 1
        if dest in self._full and self._outstanding[dest] <= self.cap(dest) // 2:
            self._full.discard(dest)
            self.wake()

    async def next_wait(self, started: float) -> float:
        """Until the next row is due (reads the store), at most one idle interval, at least 50 ms. While
        every destination is at its cap, one interval: a finishing send wakes the loop."""
        destinations = self.destinations()
        if destinations and all(dest in self._full for dest in destinations):
            return self.interval
        due = await self.next_due()
        wait = self.interval if due is None else due - self.clock()
        return min(self.interval, max(0.05, wait))

    async def _confirmed(self, job: Job) -> bool:
        """Whether `job` is still ours to send; jobs that reach this point together share one check."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._to_confirm.append((job, waiter))
        if self._confirmer is None or self._confirmer.done():
            self._confirmer = asyncio.create_task(self._confirm_pending(), name=f"relay:{self.label}:confirm")
        return await waiter

    async def _confirm_pending(self) -> None:
        while self._to_confirm:
            batch, self._to_confirm = self._to_confirm, []
            jobs = [job for job, waiter in batch if not waiter.done()]
            try:
                ok = {self.job_id(j) for j in await self.confirm(jobs)} if jobs else set()
            except StoreUnavailable as exc:
                # Not known to be ours: send nothing. The leases lapse and the rows are claimed again.
                self.health.failed(self.clock(), exc, "store_unavailable")
                ok = set()
            except Exception as exc:
                self.log.exception("confirm_failed", loop=self.name)
                self.health.failed(self.clock(), exc)
                ok = set()
            for job, waiter in batch:
                if not waiter.done():
                    waiter.set_result(self.job_id(job) in ok)

    async def _keep_leases(self) -> None:
        """While sends are under way, renew their leases every third of a lease: a send that waits on a
        slow or rate-limited peer (a storefront's cost bucket, a factory's slow answer) keeps its claim,
        so its outcome is not stale and the work is not done again (ADR 11)."""
        period = (self._lease_s or 0.0) / 3
        while self._sending and period > 0:
            await asyncio.sleep(period)
            jobs = list(self._sending.values())
            if not jobs:
                return
            try:
                await self.renew(jobs)
            except StoreUnavailable as exc:  # the leases may lapse: the outcomes are then stale, not lost
                self.health.failed(self.clock(), exc, "store_unavailable")
            except Exception as exc:
                self.log.exception("renew_failed", loop=self.name)
                self.health.failed(self.clock(), exc)

    async def _run_job(self, job: Job) -> None:
        try:
            await self._run_job_in_slot(job)
        finally:
            self._finished(job)

    async def _run_job_in_slot(self, job: Job) -> None:
        limit = self._limits.get(self.destination_of(job))
        try:
            async with limit if limit is not None else contextlib.nullcontext():
                if self._stopping is not None and self._stopping.is_set():
                    # Claimed but still queued behind the concurrency limit when the stop came:
                    # start nothing new. The lease is freed when this process closes (or lapses).
                    self._claimed.discard(self.job_id(job))
                    return
                if await self._confirmed(job):
                    started = time.monotonic()
                    self._sending[self.job_id(job)] = job
                    if self._lease_s and (self._heartbeat is None or self._heartbeat.done()):
                        self._heartbeat = asyncio.create_task(
                            self._keep_leases(), name=f"relay:{self.label}:heartbeat"
                        )
                    try:
                        outcome = await self.send(job)
                    finally:
                        self._sending.pop(self.job_id(job), None)
                        if not self._sending and self._heartbeat is not None:
                            self._heartbeat.cancel()  # nothing left to keep alive: no task outlives the sends
                    self._observe(self.destination_of(job), time.monotonic() - started)
                else:
                    self.log.info(
                        "send_skipped_claim_moved_on", loop=self.name, key=getattr(job, "key", None)
                    )
                    unsent = self.unsent(job)
                    if unsent is None:
                        self._claimed.discard(self.job_id(job))
                        return
                    outcome = unsent
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
        if self._confirmer:
            with contextlib.suppress(Exception):
                await self._confirmer
        if self._heartbeat:
            self._heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await self._heartbeat
        if self._committer:
            with contextlib.suppress(Exception):
                await self._committer


async def run_until_idle(outbox: OutboxLoop[Any, Any]) -> None:
    """Claim and send until nothing more is due now, committing every outcome."""
    while True:
        more = await outbox.safe_pass()
        await outbox.flush()
        if not more and not outbox.capped:  # a capped destination has room again after the flush
            return
