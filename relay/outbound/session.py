"""Outbound HTTP: sessions that follow the egress policy, and one mapping from status to error.

In-call retries live in `relay.outbound.retries`.

Every request to a storefront or factory goes through a session from `new_session`, which
never follows redirects, applies connect and total timeouts, and refuses addresses the
egress policy forbids (see `relay.outbound.policy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp.client_middlewares import ClientMiddlewareType

from relay.config import EgressSettings
from relay.exceptions import (
    AdapterError,
    AuthError,
    EndpointGone,
    FatalAdapterError,
    RetriableAdapterError,
)
from relay.outbound.policy import SafeResolver, egress_middleware
from relay.outbound.retries import parse_retry_after

MAX_QUOTED_BODY = 2048
MAX_CONNECTIONS = 256
"""Connections one session keeps open at most: the highest `concurrency` a factory may be given."""


def new_session(
    egress: EgressSettings, *, middlewares: Sequence[ClientMiddlewareType] = (), **kwargs: Any
) -> aiohttp.ClientSession:
    """An aiohttp session bound to the egress policy. Callers close it. `middlewares` run outside the
    egress middleware, first outermost (e.g. `Metrics.request_timer`)."""
    timeout = aiohttp.ClientTimeout(
        total=kwargs.pop("total_timeout_s", egress.total_timeout_s),
        connect=kwargs.pop("connect_timeout_s", egress.connect_timeout_s),
    )
    # One session per adapter, so one pool per peer: connections are kept alive and reused (aiohttp's
    # keep-alive, 15 s idle). The pool holds as many as the highest factory `concurrency` (256): a
    # delivery never waits inside the session for a connection, a wait its total timeout would count.
    connector = aiohttp.TCPConnector(
        resolver=SafeResolver(allow_private=egress.allow_private_addresses),
        limit=kwargs.pop("limit", MAX_CONNECTIONS),
        ttl_dns_cache=60,
    )
    middleware = egress_middleware(
        allow_plain_http=egress.allow_plain_http,
        allow_private=egress.allow_private_addresses,
        max_response_bytes=egress.max_response_bytes,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        middlewares=(*middlewares, middleware),
        raise_for_status=False,
        **kwargs,
    )


def error_for_status(status: int, body: str, headers: Mapping[str, str]) -> AdapterError:
    """Map a non-2xx response to the error tree. Redirects are failures and are never followed."""
    quoted = body[:MAX_QUOTED_BODY]
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status in (401, 403):
        return AuthError(f"HTTP {status}: credentials refused", status=status, body=quoted)
    if status == 410:
        return EndpointGone(f"HTTP {status}: endpoint gone", status=status, body=quoted)
    if status in (408, 425, 429) or status >= 500:
        return RetriableAdapterError(f"HTTP {status}", status=status, body=quoted, retry_after=retry_after)
    return FatalAdapterError(f"HTTP {status}: rejected", status=status, body=quoted)
