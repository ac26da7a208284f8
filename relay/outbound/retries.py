"""In-call retries: seconds-scale waits inside one HTTP call (a page fetch, one push, one delivery).

This is the one in-call retry policy; every adapter builds its retries with `in_call_retries`, varying
only what the vendor makes necessary (what to retry, where a wait hint comes from, how many attempts).
Long waits are not slept here: they go to the persisted schedule (`relay.domain.retry`) or the next poll.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from relay.domain.retry import cap_retry_after
from relay.exceptions import ResponseTooLarge, RetriableAdapterError

T = TypeVar("T")

ATTEMPTS = 5
"""Default attempts per call (the first plus four retries)."""

MAX_WAIT_S = 30.0
"""Default longest single wait slept in-call; a longer server hint ends the call at once."""

BACKOFF = wait_random_exponential(multiplier=0.5, max=8.0)
"""Full-jitter exponential backoff when the server gives no hint: up to 1 s, 2 s, 4 s, then 8 s."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None.

    At most `relay.domain.retry.MAX_RETRY_AFTER_S` (1 hour): a longer wait, `1e9` or `inf`, is read as the cap. A
    negative number, NaN or garbage is no hint at all (None); a date in the past is 0.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or seconds < 0:
            return None
        return cap_retry_after(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return cap_retry_after(when.timestamp() - (time.time() if now is None else now))


def is_retriable_in_call(exc: BaseException) -> bool:
    """The default `retry_on`: relay's retriable errors, except an oversized answer (the same request
    gets the same answer within seconds; the persisted schedule retries it later)."""
    return isinstance(exc, RetriableAdapterError) and not isinstance(exc, ResponseTooLarge)


def retry_after_of(exc: BaseException) -> float | None:
    """The default `wait_hint`: the error's `retry_after` (from Retry-After), if any, capped."""
    value = getattr(exc, "retry_after", None)
    return cap_retry_after(float(value)) if isinstance(value, int | float) else None


def in_call_retries(
    sleep: Callable[[float], Awaitable[None]],
    *,
    attempts: int | Callable[[BaseException], int] = ATTEMPTS,
    max_wait_s: float = MAX_WAIT_S,
    retry_on: Callable[[BaseException], bool] = is_retriable_in_call,
    wait_hint: Callable[[BaseException], float | None] = retry_after_of,
    before_sleep: Callable[[RetryCallState], Any] | None = None,
) -> AsyncRetrying:
    """The tenacity policy for seconds-scale failures inside one call.

    Retries exceptions for which `retry_on` is true. Waits exactly the server's hint when
    `wait_hint` gives one (Retry-After, a rate-limit bucket's refill time), otherwise `BACKOFF`.
    Gives up, re-raising the last error, after `attempts` (a number, or a function of the error, for
    vendors whose throttling deserves more patience than their outages), or at once when the wait
    would exceed `max_wait_s`: the error's `retry_after` then tells the core when to come back.
    `before_sleep` is called before each wait (to log it).

    Use as `async for attempt in in_call_retries(...): with attempt: ...`, or call it with a coroutine
    function: `await in_call_retries(...)(fn, *args)`.
    """

    def error_of(state: RetryCallState) -> BaseException | None:
        return state.outcome.exception() if state.outcome is not None else None

    def wait(state: RetryCallState) -> float:
        exc = error_of(state)
        hint = wait_hint(exc) if exc is not None else None
        return hint if hint is not None else float(BACKOFF(state))

    def stop(state: RetryCallState) -> bool:
        exc = error_of(state)
        if exc is None:  # not asked after a success; stop rather than loop if it ever is
            return True
        limit = attempts if isinstance(attempts, int) else attempts(exc)
        hint = wait_hint(exc)
        return state.attempt_number >= limit or (hint is not None and hint > max_wait_s)

    return AsyncRetrying(
        retry=retry_if_exception(retry_on),
        stop=stop,
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


async def attempt_then_retry(call: Callable[[], Awaitable[T]], retrying: Callable[[], AsyncRetrying]) -> T:
    """`await call()`, with the in-call retries only once it failed: the policy `retrying()` (an
    `in_call_retries`) is built then and takes that failure as its first attempt, so attempts, waits, hints,
    `before_sleep` and the error that ends the call are as if it had made every attempt itself.

    tenacity builds and inspects its callbacks on every call (35-40 µs, per request on the hot path); most
    calls succeed at once and need none of it (issue 15).
    """
    try:
        return await call()
    except Exception as exc:
        failure: Exception | None = exc
    async for attempt in retrying():
        with attempt:
            if failure is not None:
                first, failure = failure, None
                raise first
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover - tenacity re-raises the last error
