"""Persisted retry decisions: when to try a failed delivery or push again, or to give up.

Nothing sleeps on these: the decision's `retry_at` is written to the outbox row, so a restart
resumes the schedule where it was.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.exceptions import RetriableAdapterError

MAX_RETRY_AFTER_S = 3600.0
"""The longest server `Retry-After` relay honours (1 hour). A longer, infinite or NaN hint counts as
this long: a factory's `Retry-After: 1e9` must not park its orders (and open its circuit) for decades."""

STANDARD_WEBHOOKS_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry_at: float


@dataclass(frozen=True)
class RetryPolicy:
    """`schedule[n]` is the delay before attempt n+1 (`schedule[0]`, "immediately", is the first attempt).

    After the n-th failed attempt the next one is due `schedule[n]` later; after `len(schedule)`
    attempts the policy gives up (Standard Webhooks: 10 attempts over about 75.6 hours).

    Waits get ±`jitter` (a fraction) so a recovering endpoint is not hit by every order at once, and
    never fall below a server's `Retry-After` (capped at `MAX_RETRY_AFTER_S`).
    """

    schedule: Sequence[float] = STANDARD_WEBHOOKS_SCHEDULE
    jitter: float = 0.1
    clock: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random

    def decide(self, error: Exception, attempts: int) -> RetryDecision | None:
        """`attempts` counts attempts made so far, including the one that just failed.
        None means give up: the error is not retriable, or the schedule is exhausted."""
        if not isinstance(error, RetriableAdapterError) or attempts >= len(self.schedule):
            return None
        delay = self.schedule[attempts]
        delay *= 1 + self.jitter * (2 * self.rand() - 1)
        if error.retry_after is not None:
            delay = max(delay, cap_retry_after(error.retry_after))
        return RetryDecision(retry_at=self.clock() + delay)


def cap_retry_after(seconds: float) -> float:
    """A server's wait hint bounded to [0, `MAX_RETRY_AFTER_S`]; NaN and infinity count as the cap."""
    if math.isnan(seconds) or seconds > MAX_RETRY_AFTER_S:
        return MAX_RETRY_AFTER_S
    return max(0.0, seconds)
