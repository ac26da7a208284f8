"""The webhook adapter's fake: an in-process factory that takes signed orders and ships them back.

It behaves like a careful real factory (docs/factory-api.md): it verifies the Standard Webhooks signature
(with `relay.signing`, like relay itself), keeps one order per idempotency key however often it is
delivered (201 for a new order, 200 with the same reference for a repeat), and reports parcels to relay's
callback endpoint (signed with its own secret), retrying its callbacks until relay answers 2xx. It takes
`order.cancelled` on the same endpoint: a held, unshipped order is cancelled; a shipped one gets 409
`already_shipped`; an unknown key is remembered, so an `order.created` arriving after its cancellation is
refused with 409 `cancelled`. `clock` (time.time by default) signs and checks timestamps, so a test
driving relay with a manual clock moves the factory's clock with it.

It implements `relay.testing.vendor.FakeFactoryServer` (registered as `relay.fakes` -> `webhook`).
Faults are scripted per request, in order: `fail_next(503, retry_after=2)` or `fail_next(Fault(...))`,
`hang_next()`, `lose_answer_next("reset" | "timeout")`, and `reject_credentials()` for every request.
`out_of_stock("SKU", ...)` makes it refuse every new order with a line of those SKUs: 409
`{"error": "out_of_stock", "lines": [line ids]}`, holding nothing.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from relay.signing import SignatureError, signed_headers, verify


@dataclass
class HeldOrder:
    key: str
    payload: dict[str, Any]
    reference: str
    shipped: bool = False
    cancelled: bool = False


@dataclass
class Fault:
    """What to do with one incoming request instead of answering normally."""

    status: int | None = None
    retry_after: float | None = None
    hang: bool = False  # never answer (until the fake closes), without acting
    accept_then_drop: bool = False  # act on the message, then cut the connection before answering
    accept_then_hang: bool = False  # act on the message, then never answer (the client times out)
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"error": "injected"}'


class FakeFactory:
    """A running fake factory. `ship_after_s=None` means it never ships on its own."""

    adapter = "webhook"

    def __init__(
        self,
        name: str = "acme",
        *,
        signing_secret: str | None = None,
        callback_secret: str | None = None,
        ship_after_s: float | None = 0.0,
        split_parcels: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.signing_secret = signing_secret or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.callback_secret = callback_secret or secrets.token_urlsafe(24)
        self.ship_after_s = ship_after_s
        self.split_parcels = split_parcels
        self.callback_url: str | None = None
        # Valid, signed POSTs per message id (order.created and .cancel), faulted ones included.
        self.deliveries: Counter[str] = Counter()
        self.bodies: dict[str, bytes] = {}  # message id -> the raw body of its last valid, signed POST
        self.orders: dict[str, HeldOrder] = {}
        self.cancellations: Counter[str] = Counter()  # valid order.cancelled messages per factory order key
        self.cancelled_lines: dict[str, list[dict[str, Any]]] = {}  # key -> the last order.cancelled's lines
        self.cancelled_unknown: set[str] = set()  # keys cancelled before (or without) their order.created
        self.clock: Callable[[], float] = time.time
        self.rejected_signatures = 0
        self.callbacks_sent: Counter[int] = Counter()  # by relay's answer status
        self.acked: dict[str, int] = {}  # callback message id -> the 2xx status relay answered
        self.callback_attempts = 50  # per parcel, before the factory gives up on a callback
        self.faults: list[Fault] = []
        self.auth_status: int | None = None  # set by reject_credentials(): refuse every request
        self.sold_out: set[str] = set()  # SKUs it is out of stock of (`out_of_stock`)
        self._closing = asyncio.Event()
        self._refs = itertools.count(1)
        self._host = host
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, 0).start()
        self.url = f"http://{self._host}:{self._runner.addresses[0][1]}/orders"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    def add_routes(self, app: web.Application) -> None:
        """The endpoints this fake serves (subclasses add theirs)."""
        app.router.add_post("/orders", self._receive)

    async def close(self) -> None:
        self._closing.set()  # releases hung requests
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    def adapter_options(self, url: str | None = None) -> dict[str, Any]:
        """The webhook adapter's keys for this fake (or for `url`, e.g. a fault proxy in front of it)."""
        return {"url": url or self.url, "signing_secret": self.signing_secret}

    def factory_config(self, url: str | None = None) -> dict[str, Any]:
        """The `[factories.NAME]` table that points relay at this fake (or at `url`, e.g. a fault proxy
        in front of it): the adapter, its keys, and the callback secret the core verifies."""
        return {
            "adapter": self.adapter,
            **self.adapter_options(url),
            "callback_secrets": [self.callback_secret],
        }

    # --- fault knobs (relay.testing.vendor.FakeFactoryServer) -----------------------------------

    def fail_next(self, *faults: Fault | int, times: int = 1, retry_after: float | None = None) -> None:
        """Script the next requests: each `Fault` as given, each status as `Fault(status, retry_after)`;
        every item `times` times."""
        for fault in faults:
            item = fault if isinstance(fault, Fault) else Fault(status=fault, retry_after=retry_after)
            self.faults.extend([item] * times)

    def hang_next(self, *, times: int = 1) -> None:
        self.faults.extend([Fault(hang=True)] * times)

    def lose_answer_next(self, how: str = "reset", *, times: int = 1) -> None:
        if how not in ("reset", "timeout"):
            raise ValueError(f"how must be 'reset' or 'timeout', not {how!r}")
        fault = Fault(accept_then_drop=True) if how == "reset" else Fault(accept_then_hang=True)
        self.faults.extend([fault] * times)

    def reject_credentials(self, status: int = 401) -> None:
        self.auth_status = status

    def out_of_stock(self, *skus: str) -> None:
        """Refuse new orders with a line of these SKUs (409 `out_of_stock`, nothing held)."""
        self.sold_out.update(skus)

    # --- what the factory holds -----------------------------------------------------------------

    def held_keys(self) -> list[str]:
        return list(self.orders)

    def deliveries_of(self, key: str) -> int:
        return self.deliveries[key]

    def is_cancelled(self, key: str) -> bool:
        held = self.orders.get(key)
        return held.cancelled if held is not None else key in self.cancelled_unknown

    def mark_shipped(self, key: str) -> None:
        self.orders[key].shipped = True

    @property
    def held(self) -> int:
        return len(self.orders)

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        if self.auth_status is not None:
            return web.json_response({"error": "credentials refused"}, status=self.auth_status)
        body = await request.read()
        try:
            message_id, _ = verify(
                [self.signing_secret], request.headers, body, now=self.clock(), tolerance_s=300
            )
        except SignatureError as exc:
            self.rejected_signatures += 1
            return web.json_response({"error": str(exc)}, status=401)
        if request.headers.get("Idempotency-Key") != message_id:
            return web.json_response({"error": "Idempotency-Key must equal webhook-id"}, status=400)
        self.deliveries[message_id] += 1
        self.bodies[message_id] = body
        fault = self.faults.pop(0) if self.faults else None
        if fault and fault.hang:
            await self._closing.wait()
            return web.Response(status=503)
        if fault and fault.status is not None:
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            return web.Response(
                status=fault.status, text=fault.body, headers=headers, content_type="application/json"
            )
        response = self._act(message_id, json.loads(body))
        if fault and fault.accept_then_drop:
            assert request.transport is not None
            request.transport.close()
        elif fault and fault.accept_then_hang:
            await self._closing.wait()
        return response

    def _act(self, message_id: str, message: dict[str, Any]) -> web.Response:
        """Take one valid message: cancel, refuse a cancelled key, or hold the order (once per key)."""
        if message.get("type") == "order.cancelled":
            self.cancelled_lines[message["data"]["key"]] = list(message["data"].get("lines") or [])
            return self._cancel(message["data"]["key"])
        if message_id in self.cancelled_unknown:
            return web.json_response({"error": "cancelled"}, status=409)
        held = self.orders.get(message_id)
        if held is not None:
            return web.json_response({"reference": held.reference}, status=200)
        short = [ln["line_id"] for ln in message["data"]["lines"] if ln.get("sku") in self.sold_out]
        if short:
            return web.json_response({"error": "out_of_stock", "lines": short}, status=409)
        held = HeldOrder(message_id, message["data"], f"{self.name.upper()}-{next(self._refs):06d}")
        self.orders[message_id] = held
        if self.ship_after_s is not None and self.callback_url:
            self._spawn(self._ship(held))
        return web.json_response({"reference": held.reference}, status=201)

    def _cancel(self, key: str) -> web.Response:
        self.cancellations[key] += 1
        held = self.orders.get(key)
        if held is None:
            self.cancelled_unknown.add(key)
            return web.json_response({"status": "not_held"})
        if held.shipped:
            return web.json_response({"error": "already_shipped"}, status=409)
        held.cancelled = True
        return web.json_response({"status": "cancelled"})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def parcels(self, held: HeldOrder) -> list[list[dict[str, Any]]]:
        lines = [{"line_id": li["line_id"], "quantity": li["quantity"]} for li in held.payload["lines"]]
        if self.split_parcels and len(lines) > 1:
            half = len(lines) // 2
            return [lines[:half], lines[half:]]
        return [lines]

    async def ship_all(self) -> int:
        """Ship every held, unshipped order now (for tests that run with `ship_after_s=None`)."""
        todo = [held for held in self.orders.values() if not held.shipped and not held.cancelled]
        for held in todo:
            await self._send_parcels(held)
        return len(todo)

    async def _ship(self, held: HeldOrder) -> None:
        await asyncio.sleep(self.ship_after_s or 0)
        if not held.cancelled:
            await self._send_parcels(held)

    async def _send_parcels(self, held: HeldOrder) -> None:
        for n, lines in enumerate(self.parcels(held), 1):
            shipment = {
                "factory_order_key": held.key,
                "shipment_id": f"{held.reference}-P{n}",
                "carrier": "SF Express",
                "tracking_number": f"SF{abs(hash((held.key, n))) % 10**12:012d}",
                "tracking_url": None,
                "lines": lines,
            }
            await self.send_event(
                {"type": "shipment.created", "data": shipment},
                f"{held.reference}-P{n}",
                attempts=self.callback_attempts,
            )
        held.shipped = True

    async def send_event(self, event: dict[str, Any], message_id: str, *, attempts: int = 50) -> int:
        """POST a signed event to relay, retrying until it answers 2xx or 4xx. Returns the last status."""
        assert self._session is not None and self.callback_url is not None
        body = json.dumps(event).encode()
        status = 0
        for attempt in range(attempts):
            headers = signed_headers(self.callback_secret, message_id, int(self.clock()), body)
            headers["Content-Type"] = "application/json"
            try:
                async with self._session.post(self.callback_url, data=body, headers=headers) as resp:
                    status = resp.status
                    self.callbacks_sent[status] += 1
                    if 200 <= status < 300:
                        self.acked[message_id] = status
                    if status < 500:
                        return status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        return status
