"""A thin client for the Shopify Admin GraphQL API.

It knows HTTP and Shopify's response envelope, nothing about relay: it posts one GraphQL document,
returns the `data` object, and raises the small exceptions below, which carry everything a caller
needs to decide on a retry (status, body, Retry-After, throttle status, error codes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import aiohttp

MAX_QUOTED_BODY = 2048


class ShopifyError(Exception):
    """A call to the Shopify Admin API failed."""


class ShopifyConnectionError(ShopifyError):
    """No answer: connection refused or reset, or a timeout."""


class ShopifyHTTPError(ShopifyError):
    """A non-2xx answer (or a 2xx whose body is not a GraphQL envelope).

    `cost` is the body's `extensions.cost` when it has one (a 429 may carry the throttle status).
    """

    def __init__(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body[:MAX_QUOTED_BODY]
        self.headers = dict(headers)
        self.cost = _cost_of(body)


class ShopifyGraphQLError(ShopifyError):
    """The response carried top-level `errors` (syntax, access denied, cost limits...)."""

    def __init__(self, errors: list[dict[str, Any]], cost: Mapping[str, Any] | None) -> None:
        messages = "; ".join(str(e.get("message", e)) for e in errors) or "GraphQL error"
        super().__init__(messages)
        self.errors = errors
        self.cost = dict(cost or {})
        self.codes = frozenset(
            str((e.get("extensions") or {}).get("code") or "") for e in errors if isinstance(e, Mapping)
        ) - {""}


class ShopifyThrottled(ShopifyGraphQLError):
    """The leaky bucket had too few points for this query (`THROTTLED`); nothing was executed.

    `wait_s` is how long until the bucket holds the requested cost again; `retry_after` is the raw
    Retry-After header, should the answer carry one too.
    """

    def __init__(
        self, errors: list[dict[str, Any]], cost: Mapping[str, Any] | None, retry_after: str | None = None
    ) -> None:
        super().__init__(errors, cost)
        self.wait_s = throttle_wait(self.cost)
        self.retry_after = retry_after


def throttle_wait(cost: Mapping[str, Any]) -> float:
    """Seconds until the bucket can pay `requestedQueryCost`, from `extensions.cost`.

    (requestedQueryCost - currentlyAvailable) / restoreRate, rounded up to the millisecond;
    1 second when the throttle data is missing or unusable.
    """
    status = cost.get("throttleStatus") or {}
    try:
        requested = float(cost["requestedQueryCost"])
        available = float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return 1.0
    if rate <= 0 or not all(map(math.isfinite, (requested, available, rate))):
        return 1.0
    return math.ceil(round(max(0.0, requested - available) / rate * 1000, 6)) / 1000


def _cost_of(body: str) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except ValueError:
        return {}
    extensions = envelope.get("extensions") if isinstance(envelope, dict) else None
    cost = extensions.get("cost") if isinstance(extensions, dict) else None
    return dict(cost) if isinstance(cost, dict) else {}


def _is_throttle(error: Any) -> bool:
    """Shopify marks throttling with `extensions.code == "THROTTLED"` (older answers: message only)."""
    if not isinstance(error, dict):
        return False
    extensions = error.get("extensions") or {}
    return extensions.get("code") == "THROTTLED" or error.get("message") == "Throttled"


class ShopifyClient:
    """Posts GraphQL documents to one shop's Admin API endpoint over a caller-owned session."""

    def __init__(
        self, session: aiohttp.ClientSession, shop_url: str, api_version: str, access_token: str
    ) -> None:
        self._session = session
        self.endpoint = f"{shop_url.rstrip('/')}/admin/api/{api_version}/graphql.json"
        self._headers = {
            "X-Shopify-Access-Token": access_token,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self.last_cost: dict[str, Any] = {}
        """`extensions.cost` of the last answer (requested/actual cost, throttle status)."""

    async def execute(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run one query or mutation and return its `data`; raise a `ShopifyError` otherwise."""
        payload = {"query": query, "variables": dict(variables or {})}
        try:
            async with self._session.post(self.endpoint, json=payload, headers=self._headers) as resp:
                text = await resp.text()
                status, headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ShopifyConnectionError(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= status < 300:
            raise ShopifyHTTPError(status, text, headers)
        try:
            envelope = json.loads(text)
        except ValueError:
            raise ShopifyHTTPError(status, text, headers) from None
        if not isinstance(envelope, dict):
            raise ShopifyHTTPError(status, text, headers)
        extensions = envelope.get("extensions") or {}
        cost = extensions.get("cost") if isinstance(extensions, dict) else None
        self.last_cost = dict(cost or {})
        errors = envelope.get("errors")
        if errors:
            errors = errors if isinstance(errors, list) else [{"message": str(errors)}]
            if any(_is_throttle(e) for e in errors):
                raise ShopifyThrottled(errors, cost, headers.get("Retry-After"))
            raise ShopifyGraphQLError(errors, cost)
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise ShopifyHTTPError(status, text, headers)
        return data
