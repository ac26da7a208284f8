"""In-call retries: seconds-scale waits inside one HTTP call (a page fetch, one push, one delivery).

Long waits are not slept here: they go to the persisted schedule (`relay.domain.retry`) or the next poll.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from relay.exceptions import RetriableAdapterError


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def in_call_retries(
    sleep: Callable[[float], Awaitable[None]], *, attempts: int = 5, max_wait_s: float = 30.0
) -> AsyncRetrying:
    """Tenacity policy for seconds-scale failures inside one call (a page fetch, one push).

    Retries `RetriableAdapterError` with jittered exponential backoff, never sooner than the server's
    Retry-After; gives up (re-raising) after `attempts`, or at once when Retry-After exceeds `max_wait_s`
    (the persisted schedule or the next poll handles long waits).
    """

    def wait(state: RetryCallState) -> float:
        base: float = _backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return max(base, retry_after) if retry_after is not None else base

    def too_long(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return retry_after is not None and retry_after > max_wait_s

    return AsyncRetrying(
        retry=retry_if_exception_type(RetriableAdapterError),
        stop=stop_after_attempt(attempts) | too_long,
        wait=wait,
        sleep=sleep,
        reraise=True,
    )


_backoff = wait_random_exponential(multiplier=0.25, max=10.0)
