"""Thin client for the demo storefront API. Imports nothing from relay."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp

_DECODER = json.JSONDecoder(parse_float=Decimal)
"""`json.loads(text, parse_float=Decimal)` builds a decoder (and its scanner) on every call; built once."""


def _loads(text: str) -> Any:
    """`json.loads(text, parse_float=Decimal)`: the same values, the same errors."""
    if text.startswith("\ufeff"):
        return json.loads(text, parse_float=Decimal)  # refused by `json.loads` itself, before decoding
    return _DECODER.decode(text)


class DemoAPIError(Exception):
    def __init__(self, status: int, body: str, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = headers


@dataclass(frozen=True)
class OrdersPage:
    orders: list[dict[str, Any]]
    next_cursor: str | None


class DemoClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        extra = kwargs.pop("headers", None)
        # aiohttp copies the headers into the request's own; the shared `_auth` dict is never changed.
        headers = self._auth if extra is None else self._auth | extra
        async with self._session.request(
            method, self._base + path, headers=headers, allow_redirects=False, **kwargs
        ) as resp:
            text = await resp.text(errors="replace")
            if resp.status >= 300:
                raise DemoAPIError(resp.status, text, dict(resp.headers))
            return _loads(text)

    async def list_orders(self, updated_since: str | None, limit: int, cursor: str | None) -> OrdersPage:
        params: dict[str, str] = {"limit": str(limit)}
        if updated_since:
            params["updated_since"] = updated_since
        if cursor:
            params["cursor"] = cursor
        data = await self._call("GET", "/api/orders", params=params)
        return OrdersPage(orders=list(data["orders"]), next_cursor=data.get("next_cursor"))

    async def create_fulfilment(self, order_id: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/api/orders/{order_id}/fulfillments", json=body, headers={"Idempotency-Key": key}
        )
        return result
