"""A thin WooCommerce REST client: HTTP in, parsed JSON and headers out. Knows nothing about relay.

Monetary numbers are parsed as `Decimal` straight from the JSON text (`parse_float=Decimal`), so a
line item's `price` (a JSON number in WooCommerce) never passes through a float.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp

API_PREFIX = "wp-json"
CORE = "wc/v3"
SHIPMENT_TRACKING = "wc-shipment-tracking/v3"


class WooCommerceError(Exception):
    """A non-2xx answer, or a 2xx whose body is not JSON. Carries what the caller needs to classify it."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.retry_after = headers.get("Retry-After")
        self.code, self.message = _error_fields(body)
        super().__init__(f"HTTP {status}" + (f" {self.code}: {self.message}" if self.code else ""))


@dataclass(frozen=True)
class Response:
    data: Any
    headers: Mapping[str, str]


def _error_fields(body: str) -> tuple[str | None, str | None]:
    """WooCommerce/WordPress errors are `{"code", "message", "data": {"status"}}`."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    code, message = parsed.get("code"), parsed.get("message")
    return (code if isinstance(code, str) else None), (message if isinstance(message, str) else None)


class WooCommerceClient:
    """Calls `/wp-json/...` on one store with its consumer key and secret (HTTP Basic, or query string)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        store_url: str,
        consumer_key: str,
        consumer_secret: str,
        *,
        query_string_auth: bool = False,
    ) -> None:
        self._session = session
        self._root = f"{store_url.rstrip('/')}/{API_PREFIX}"
        self._key = consumer_key
        self._secret = consumer_secret
        self._query_string_auth = query_string_auth
        token = base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"

    async def request(
        self,
        method: str,
        namespace: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Response:
        """One request. Raise `WooCommerceError` on non-2xx; aiohttp errors and timeouts propagate."""
        query = dict(params or {})
        auth_header = {}
        if self._query_string_auth:
            query.update(consumer_key=self._key, consumer_secret=self._secret)
        else:
            auth_header["Authorization"] = self._authorization
        async with self._session.request(
            method,
            f"{self._root}/{namespace}/{path}",
            params=query,
            json=body,
            headers=auth_header,
            allow_redirects=False,
        ) as resp:
            text = await resp.text(errors="replace")
            headers = resp.headers.copy()  # case-insensitive, outlives the response
            if not 200 <= resp.status < 300:
                raise WooCommerceError(resp.status, text, headers)
        try:
            data = json.loads(text, parse_float=Decimal) if text.strip() else None
        except ValueError:
            raise WooCommerceError(resp.status, text, headers) from None
        return Response(data, headers)

    async def list_orders(self, params: Mapping[str, str]) -> Response:
        return await self.request("GET", CORE, "orders", params=params)

    async def get_order(self, order_id: str, params: Mapping[str, str] | None = None) -> Response:
        return await self.request("GET", CORE, f"orders/{order_id}", params=params)

    async def update_order(
        self, order_id: str, changes: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> Response:
        return await self.request("PUT", CORE, f"orders/{order_id}", params=params, body=dict(changes))

    async def list_notes(self, order_id: str, params: Mapping[str, str] | None = None) -> Response:
        return await self.request("GET", CORE, f"orders/{order_id}/notes", params=params)

    async def create_note(self, order_id: str, note: str, *, customer_note: bool) -> Response:
        return await self.request(
            "POST", CORE, f"orders/{order_id}/notes", body={"note": note, "customer_note": customer_note}
        )

    async def list_trackings(self, order_id: str) -> Response:
        return await self.request("GET", SHIPMENT_TRACKING, f"orders/{order_id}/shipment-trackings")

    async def create_tracking(self, order_id: str, item: Mapping[str, str]) -> Response:
        return await self.request(
            "POST", SHIPMENT_TRACKING, f"orders/{order_id}/shipment-trackings", body=dict(item)
        )
