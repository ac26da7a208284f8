"""`attempt_then_retry` (issue 15): the first attempt runs without tenacity; once it fails, relay's one
in-call policy takes over and counts that failure as its first attempt, so the call ends as it would
have with the policy from the start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from tenacity import AsyncRetrying, RetryCallState

from relay.exceptions import AuthError, RetriableAdapterError
from relay.outbound.retries import attempt_then_retry, in_call_retries


class Script:
    """A call failing with the scripted errors first, then answering `"ok"`; counts attempts and policies."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.attempts = 0
        self.policies = 0
        self.sleeps: list[float] = []
        self.logged: list[int] = []

    async def call(self) -> str:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    def retrying(self, attempts: int = 3) -> Callable[[], AsyncRetrying]:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        def log(state: RetryCallState) -> None:
            self.logged.append(state.attempt_number)

        def build() -> AsyncRetrying:
            self.policies += 1
            return in_call_retries(sleep, attempts=attempts, before_sleep=log)

        return build


def run(script: Script, retrying: Callable[[], AsyncRetrying]) -> Awaitable[str]:
    return attempt_then_retry(script.call, retrying)


async def test_a_call_that_succeeds_at_once_builds_no_policy() -> None:
    script = Script()
    assert await run(script, script.retrying()) == "ok"
    assert (script.attempts, script.policies, script.sleeps) == (1, 0, [])


async def test_a_first_failure_counts_as_the_policys_first_attempt() -> None:
    busy = RetriableAdapterError("busy", retry_after=2.0)
    script = Script(busy, busy)
    assert await run(script, script.retrying(attempts=3)) == "ok"
    assert (script.attempts, script.policies) == (3, 1)
    assert script.sleeps == [2.0, 2.0]  # the hint of each failure, the first one included
    assert script.logged == [1, 2]  # before_sleep saw attempts 1 and 2


async def test_the_attempts_are_the_policys_in_all_and_the_last_error_ends_the_call() -> None:
    errors = [RetriableAdapterError(f"down {n}", retry_after=0.0) for n in range(5)]
    script = Script(*errors)
    with pytest.raises(RetriableAdapterError, match="down 2"):
        await run(script, script.retrying(attempts=3))
    assert script.attempts == 3 and len(script.sleeps) == 2


async def test_an_error_the_policy_does_not_retry_ends_the_call_at_once() -> None:
    script = Script(AuthError("bad key"))
    with pytest.raises(AuthError):
        await run(script, script.retrying())
    assert (script.attempts, script.sleeps) == (1, [])
