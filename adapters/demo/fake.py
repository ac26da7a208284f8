"""The demo storefront: an in-process aiohttp server with a small, documented order API.

API (see adapters/demo/README.md):
  GET  /api/orders?updated_since=ISO&limit=N&cursor=TOKEN   keyset-paginated by (updated_at, id)
  POST /api/orders/{id}/fulfillments                        Idempotency-Key header; 201 new, 200 replay
Auth: `Authorization: Bearer <token>`. 429 answers carry Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from relay.testing.vendor import RecordedFulfilment, SeedLine


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class _Order:
    id: str
    number: str
    created_at: float
    updated_at: float
    lines: list[dict[str, Any]]
    currency: str = "USD"
    paid: bool = True
    test: bool = False
    cancelled_at: float | None = None
    malformed: bool = False
    fulfilled_by_hand: bool = False  # the merchant fulfilled it outside relay
    fulfilments: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fulfillment_status(self) -> str | None:
        """The demo API's `fulfillment_status`: fulfilled (every line), partial (some) or None."""
        if self.fulfilled_by_hand:
            return "fulfilled"
        done: dict[str, int] = {}
        for record in self.fulfilments.values():
            for item in record["line_items"]:
                done[item["id"]] = done.get(item["id"], 0) + item["quantity"]
        if not done:
            return None
        return "fulfilled" if all(done.get(li["id"], 0) >= li["quantity"] for li in self.lines) else "partial"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "number": self.number,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "currency": self.currency,
            "email": f"customer{self.id}@example.com",
            "financial_status": "paid" if self.paid else "pending",
            "test": self.test,
            "cancelled_at": _iso(self.cancelled_at) if self.cancelled_at else None,
            "fulfillment_status": self.fulfillment_status(),
            "tags": [],
            "shipping_address": {
                "name": "Ada Customer",
                "address1": "1 Demo Street",
                "city": "Shenzhen",
                "zip": "518000",
                "country_code": "CN",
                "phone": "+86 755 0000 0000",
            },
            "line_items": self.lines,
        }
        if self.malformed:
            body["line_items"] = [{"id": "broken", "sku": "X"}]  # no quantity, no price
        return body


class FakeDemoStorefront:
    """A running demo storefront (implements `relay.testing.vendor.FakeStorefront`)."""

    adapter = "demo"

    def __init__(self, *, page_size: int = 50, host: str = "127.0.0.1", port: int = 0) -> None:
        self.page_size = page_size
        self.token = secrets.token_urlsafe(16)
        self._host, self._port = host, port
        self._orders: dict[str, _Order] = {}
        self._ids = itertools.count(1001)
        self._faults: list[tuple[str, int, float | None]] = []
        self._auth_status: int | None = None
        self._requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # hung requests wait for it
        self.url = ""

    # lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/orders", self._list)
        app.router.add_post("/api/orders/{id}/fulfillments", self._fulfil)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"

    async def close(self) -> None:
        self._closing.set()
        if self._runner:
            await self._runner.cleanup()

    def adapter_options(self) -> dict[str, Any]:
        return {"url": self.url, "token": self.token, "page_size": self.page_size}

    # seeding ----------------------------------------------------------------------------------------
    def add_order(
        self,
        lines: list[SeedLine],
        *,
        paid: bool = True,
        test: bool = False,
        currency: str = "USD",
        updated_at: float | None = None,
    ) -> str:
        n = next(self._ids)
        now = time.time() if updated_at is None else updated_at
        order_id = str(n)
        self._orders[order_id] = _Order(
            id=order_id,
            number=f"#{n}",
            created_at=now,
            updated_at=now,
            currency=currency,
            paid=paid,
            test=test,
            lines=[
                {
                    "id": f"{order_id}-{i}",
                    "sku": line.sku,
                    "variant_id": f"v-{line.sku}" if line.sku else None,
                    "title": f"Item {line.sku}",
                    "quantity": line.quantity,
                    "price": str(line.unit_price),
                    "properties": dict(line.properties),
                }
                for i, line in enumerate(lines, 1)
            ],
        )
        return order_id

    def add_malformed_order(self) -> str:
        order_id = self.add_order([SeedLine("X")])
        self._orders[order_id].malformed = True
        return order_id

    def line_ids(self, order_id: str) -> list[str]:
        return [line["id"] for line in self._orders[order_id].lines]

    def touch(self, order_id: str, *, updated_at: float | None = None) -> None:
        self._orders[order_id].updated_at = time.time() if updated_at is None else updated_at

    def mark_paid(self, order_id: str) -> None:
        self._orders[order_id].paid = True
        self.touch(order_id)

    def cancel(self, order_id: str) -> None:
        self._orders[order_id].cancelled_at = time.time()
        self.touch(order_id)

    def mark_fulfilled(self, order_id: str, *, updated_at: float | None = None) -> None:
        """The merchant fulfilled the order outside relay (by hand, or with another tool)."""
        self._orders[order_id].fulfilled_by_hand = True
        self.touch(order_id, updated_at=updated_at)

    def fulfilments(self, order_id: str) -> list[RecordedFulfilment]:
        return [
            RecordedFulfilment(
                order_id=order_id,
                carrier=f["tracking_company"],
                tracking_number=f["tracking_number"],
                line_ids=tuple(li["id"] for li in f["line_items"]),
                quantities=tuple(li["quantity"] for li in f["line_items"]),
            )
            for f in self._orders[order_id].fulfilments.values()
        ]

    # faults -----------------------------------------------------------------------------------------
    def fail_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        self._faults.extend([("status", status, retry_after)] * times)

    def hang_next(self, *, times: int = 1) -> None:
        self._faults.extend([("hang", 0, None)] * times)

    def reject_credentials(self, status: int = 401) -> None:
        self._auth_status = status

    @property
    def requests(self) -> list[tuple[str, str]]:
        return list(self._requests)

    # handlers ---------------------------------------------------------------------------------------
    async def _gate(self, request: web.Request) -> web.Response | None:
        self._requests.append((request.method, request.path))
        if self._faults:
            kind, status, retry_after = self._faults.pop(0)
            if kind == "hang":  # no answer until the fake closes
                await self._closing.wait()
                return web.json_response({"error": "closing"}, status=503)
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return web.json_response({"error": "injected fault"}, status=status, headers=headers)
        if self._auth_status or request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "invalid token"}, status=self._auth_status or 401)
        return None

    async def _list(self, request: web.Request) -> web.Response:
        if (fault := await self._gate(request)) is not None:
            return fault
        try:
            limit = min(int(request.query.get("limit", self.page_size)), 250)
            since = request.query.get("updated_since")
            since_ts = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() if since else None
            after = (
                json.loads(base64.urlsafe_b64decode(request.query["cursor"]))
                if "cursor" in request.query
                else None
            )
        except (ValueError, KeyError) as exc:
            return web.json_response({"error": f"bad query: {exc}"}, status=400)
        rows = sorted(self._orders.values(), key=lambda o: (o.updated_at, int(o.id)))
        if since_ts is not None:
            rows = [o for o in rows if o.updated_at >= since_ts]
        if after is not None:
            rows = [o for o in rows if (o.updated_at, int(o.id)) > (after[0], after[1])]
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = base64.urlsafe_b64encode(
                json.dumps([last.updated_at, int(last.id)]).encode()
            ).decode()
        return web.json_response({"orders": [o.to_json() for o in page], "next_cursor": next_cursor})

    async def _fulfil(self, request: web.Request) -> web.Response:  # noqa: PLR0911 (one answer per check)
        if (fault := await self._gate(request)) is not None:
            return fault
        order = self._orders.get(request.match_info["id"])
        if order is None:
            return web.json_response({"error": "order not found"}, status=404)
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return web.json_response({"error": "Idempotency-Key header required"}, status=400)
        if key in order.fulfilments:
            return web.json_response(order.fulfilments[key], status=200)
        try:
            body = await request.json()
            items = [{"id": str(li["id"]), "quantity": int(li["quantity"])} for li in body["line_items"]]
            record = {
                "id": f"F{len(order.fulfilments) + 1}-{order.id}",
                "tracking_company": str(body["tracking_company"]),
                "tracking_number": str(body["tracking_number"]),
                "tracking_url": body.get("tracking_url"),
                "line_items": items,
            }
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad fulfilment: {exc}"}, status=422)
        known = {li["id"] for li in order.lines}
        if any(li["id"] not in known for li in items):
            return web.json_response({"error": "unknown line item"}, status=422)
        order.fulfilments[key] = record
        return web.json_response(record, status=201)
