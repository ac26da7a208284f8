"""Outbound HTTP: sessions that follow the egress policy, and one mapping from status to error.

Every request to a storefront or factory goes through a session from `new_session`, which
never follows redirects, applies connect and total timeouts, and refuses addresses the
egress policy forbids (see `relay.egress`).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from relay.config import EgressSettings
from relay.egress import SafeResolver, egress_middleware
from relay.exceptions import (
    AdapterError,
    AuthError,
    EndpointGone,
    FatalAdapterError,
    RetriableAdapterError,
)

MAX_QUOTED_BODY = 2048


def new_session(egress: EgressSettings, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session bound to the egress policy. Callers close it."""
    timeout = aiohttp.ClientTimeout(
        total=kwargs.pop("total_timeout_s", egress.total_timeout_s),
        connect=kwargs.pop("connect_timeout_s", egress.connect_timeout_s),
    )
    connector = aiohttp.TCPConnector(
        resolver=SafeResolver(allow_private=egress.allow_private_addresses),
        limit=kwargs.pop("limit", 100),
        ttl_dns_cache=60,
    )
    middleware = egress_middleware(
        allow_plain_http=egress.allow_plain_http,
        allow_private=egress.allow_private_addresses,
        max_response_bytes=egress.max_response_bytes,
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, middlewares=(middleware,), raise_for_status=False, **kwargs
    )


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


def error_for_status(status: int, body: str, headers: Mapping[str, str]) -> AdapterError:
    """Map a non-2xx response to the error tree. Redirects are failures and are never followed."""
    quoted = body[:MAX_QUOTED_BODY]
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status in (401, 403):
        return AuthError(f"HTTP {status}: credentials refused", status=status, body=quoted)
    if status == 410:
        return EndpointGone(f"HTTP {status}: endpoint gone", status=status, body=quoted)
    if status in (408, 425, 429) or status >= 500:
        return RetriableAdapterError(
            f"HTTP {status}", status=status, body=quoted, retry_after=retry_after
        )
    return FatalAdapterError(f"HTTP {status}: rejected", status=status, body=quoted)


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
