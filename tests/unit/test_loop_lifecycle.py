"""The loop machinery's failure guards and the supervisor, on toy loops (no store, no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import structlog
from structlog.testing import capture_logs

from relay.exceptions import StoreUnavailable
from relay.loops.base import Loop
from relay.loops.outbox import OutboxLoop
from relay.supervisor import LoopCrashed, Supervisor

LOG = structlog.get_logger("test")


class Ticker(Loop):
    """Counts passes; `next_wait` fails as scripted."""

    name = "ticker"

    def __init__(self, wait_failures: Sequence[Exception] = ()) -> None:
        super().__init__(interval=0.001, clock=lambda: 0.0, log=LOG)
        self.passes = 0
        self.five_passes = asyncio.Event()
        self.wait_failures = list(wait_failures)

    async def run_pass(self) -> bool:
        self.passes += 1
        if self.passes == 5:
            self.five_passes.set()
        return False

    async def next_wait(self, started: float) -> float:
        if self.wait_failures:
            raise self.wait_failures.pop(0)
        return 0.001


async def test_a_failing_next_wait_is_logged_once_and_the_loop_goes_on():
    loop = Ticker([StoreUnavailable("locked"), StoreUnavailable("locked"), RuntimeError("bug")])
    stopping = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(loop.run(stopping))
        await asyncio.wait(
            [task, asyncio.create_task(loop.five_passes.wait())], timeout=5, return_when="FIRST_COMPLETED"
        )
        stopping.set()
        await task  # before the fix: StoreUnavailable escaped run() after the first pass
    assert loop.passes >= 5
    assert loop.health.failures == 3
    # Logged on the transition (not per failure), the unexpected error with its traceback, one recovery
    # once a pass *and* its wait worked.
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == [
        "store_unavailable",
        "next_wait_failed",
        "recovered",
    ]


@dataclass
class Outcome:
    job: int


class Outbox(OutboxLoop[int, Outcome]):
    """Every job is due again until committed; `commit` fails as scripted."""

    name = "outbox"

    def __init__(self, commit_failures: Sequence[Exception] = ()) -> None:
        super().__init__(batch_size=10, concurrency={"d": 2}, clock=lambda: 0.0, log=LOG)
        self.due = {1, 2}
        self.sent: list[int] = []
        self.commit_failures = list(commit_failures)

    def destinations(self) -> Sequence[str]:
        return ["d"]

    def destination_of(self, job: int) -> str:
        return "d"

    def job_id(self, job: int) -> int:
        return job

    async def claim(self, destinations: Sequence[str], limit: int) -> list[int]:
        return sorted(self.due)[:limit]

    async def send(self, job: int) -> Outcome:
        self.sent.append(job)
        return Outcome(job)

    async def commit(self, outcomes: list[Outcome]) -> None:
        if self.commit_failures:
            raise self.commit_failures.pop(0)
        self.due -= {o.job for o in outcomes}


async def test_a_commit_bug_releases_the_batch_so_its_jobs_are_sent_again():
    outbox = Outbox([RuntimeError("commit bug")])
    with capture_logs() as logs:
        await outbox.safe_pass()
        await outbox.flush()  # before the fix: raised RuntimeError, and jobs 1 and 2 stayed claimed forever
        assert outbox.health.failures == 1
        await outbox.safe_pass()
        await outbox.flush()
    assert outbox.sent == [1, 2, 1, 2]  # resent (same key, in the real loops)
    assert outbox.due == set()
    assert "commit_failed" in [e["event"] for e in logs]


async def test_a_loop_that_returns_before_the_stop_is_a_crash():
    class Quitter(Ticker):
        name = "quitter"

        async def run(self, stopping: asyncio.Event) -> None:
            return

    stopping = asyncio.Event()
    other = Ticker()
    supervisor = Supervisor(
        quick=[Quitter(), other],
        draining=[],
        stopping=stopping,
        request_stop=stopping.set,
        grace_s=1,
        log=LOG,
    )
    with capture_logs() as logs, pytest.raises(LoopCrashed, match="quitter crashed: returned before stop"):
        await supervisor.run()
    assert stopping.is_set()
    assert [(e["event"], e["loop"]) for e in logs] == [("loop_crashed", "quitter")]


async def test_the_grace_period_bounds_a_drain_that_does_not_finish():
    class Stuck(Ticker):
        name = "stuck"
        aborted = False

        async def drain(self) -> None:
            await asyncio.Event().wait()

        async def abort(self) -> None:
            self.aborted = True

    stopping = asyncio.Event()
    stuck = Stuck()
    supervisor = Supervisor(
        quick=[], draining=[stuck], stopping=stopping, request_stop=stopping.set, grace_s=0.05, log=LOG
    )
    runner = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.01)
    with capture_logs() as logs:
        stopping.set()
        await asyncio.wait_for(runner, 5)  # a drain cut short by the grace period is no crash
    assert stuck.aborted
    assert [e["event"] for e in logs] == ["grace_period_over"]
