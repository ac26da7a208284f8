"""A thin WooCommerce REST client: HTTP in, parsed JSON and headers out. Knows nothing about relay.

Monetary numbers are exact. WooCommerce sends amounts as strings ("29.35"), except a line item's `price`,
a JSON number. A body is parsed with orjson when none of its numbers has more than 15 significant digits
(no run of 16 digits and dots in the body): a float then holds exactly the number that was sent, and
`Decimal(repr(value))` gives it back (any decimal of at most 15 significant digits in the normal range
survives the round trip through a float; PHP, like Python, prints the shortest such text). Otherwise, or
when orjson refuses the body, it is parsed with `json.loads(parse_float=Decimal)`, straight from the text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

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


_DIGITS_AS_ZERO = bytes(
    ord("0") if b in b"0123456789." else ord("x") if b == ord("0") else b for b in range(256)
)
"""A `bytes.translate` table: digits and the decimal point become `0`, no other byte does."""
_LONG_NUMBER = b"0" * 16
"""16 digits and dots in a row: a number that may not survive a float (or text that looks like one)."""


def parse_json(body: bytes, charset: str = "utf-8") -> Any:
    """The JSON value of `body` with exact numbers (see the module docstring); `ValueError` if not JSON."""
    if charset.lower() in ("utf-8", "utf8") and _LONG_NUMBER not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # NaN, integers beyond 64 bits, invalid UTF-8, ...: as the standard parser says
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    # NaN and ±Infinity too as `Decimal`s: a float NaN would serialise as `null` (orjson) and let the
    # adapter's mapping cache take a changed record for the one it mapped (`_map`).
    return json.loads(text, parse_float=Decimal, parse_constant=Decimal)


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


def _text(raw: bytes, resp: aiohttp.ClientResponse) -> str:
    """A body as text for an error, in the response's charset (UTF-8 when it names none or an unknown one)."""
    try:
        return raw.decode(resp.charset or "utf-8", errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


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
        # The request headers without and with a JSON body, built once: aiohttp copies them into each
        # request's own headers and never changes these.
        self._headers: dict[str, str] = {} if query_string_auth else {"Authorization": f"Basic {token}"}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}

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
        if self._query_string_auth:
            query.update(consumer_key=self._key, consumer_secret=self._secret)
        headers = self._headers
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers = self._json_headers
        async with self._session.request(
            method,
            f"{self._root}/{namespace}/{path}",
            params=query,
            data=data,
            headers=headers,
            allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            answer = resp.headers.copy()  # case-insensitive, outlives the response
            if not 200 <= resp.status < 300:
                raise WooCommerceError(resp.status, _text(raw, resp), answer)
        try:
            parsed = parse_json(raw, resp.charset or "utf-8") if raw.strip() else None
        except ValueError:
            raise WooCommerceError(resp.status, _text(raw, resp), answer) from None
        return Response(parsed, answer)

    async def list_orders(self, params: Mapping[str, str]) -> Response:
        return await self.request("GET", CORE, "orders", params=params)

    async def get_order(self, order_id: str, params: Mapping[str, str] | None = None) -> Response:
        return await self.request("GET", CORE, f"orders/{order_id}", params=params)

    async def update_order(
        self, order_id: str, changes: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> Response:
        return await self.request("PUT", CORE, f"orders/{order_id}", params=params, body=dict(changes))

    async def batch_orders(self, changes: Mapping[str, Any]) -> Response:
        """`POST orders/batch`: `{"create": [...], "update": [...], "delete": [...]}` in one request."""
        return await self.request("POST", CORE, "orders/batch", body=dict(changes))

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
