"""Inbound HTTP server: factories report shipments here; operators read health and metrics.

`POST /v1/factories/{factory}/events` takes a Standard Webhooks-signed JSON event (see
docs/factory-api.md). The raw body is verified before it is parsed; the message id is recorded in the
same transaction as the shipment, so a replay has no second effect. Every bad input gets a 4xx and
changes nothing; only a store outage answers 503 (the factory retries later).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from relay.exceptions import StoreUnavailable
from relay.faults import crash_point
from relay.models import Shipment
from relay.signing import SignatureError, verify
from relay.store import ShipmentVerdict, Store

BODY_READ_TIMEOUT_S = 10.0
MAX_JSON_DEPTH = 32


class ShipmentEvent(BaseModel):
    """The envelope a factory sends: Standard Webhooks' {type, timestamp, data}."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["shipment.created"]
    timestamp: str | None = None
    data: Shipment


def _problem(status: int, title: str, detail: Any = None, **headers: str) -> web.Response:
    body: dict[str, Any] = {"error": title}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


def _too_deep(value: Any, depth: int = 0) -> bool:
    if depth > MAX_JSON_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_too_deep(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_too_deep(v, depth + 1) for v in value)
    return False


class InboundServer:
    """The aiohttp application and its handlers."""

    def __init__(
        self,
        store: Store,
        callback_secrets: Mapping[str, Sequence[str]],
        *,
        clock: Callable[[], float],
        tolerance_s: float,
        max_body_bytes: int,
        log: Any,
        on_shipment: Callable[[], None] = lambda: None,
        stats: Callable[[], Any] | None = None,
    ) -> None:
        self.store = store
        self.secrets = callback_secrets
        self.clock = clock
        self.tolerance_s = tolerance_s
        self.log = log
        self.on_shipment = on_shipment
        self.stats = stats
        self.max_body_bytes = max_body_bytes
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_post("/v1/factories/{factory}/events", self.factory_event)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/metrics", self.metrics)

    async def factory_event(self, request: web.Request) -> web.Response:
        factory = request.match_info["factory"]
        secrets = self.secrets.get(factory)
        if secrets is None:
            return _problem(404, "unknown factory")
        if (request.content_length or 0) > self.max_body_bytes:  # refuse at once, don't wait for the body
            return _problem(413, "body too large", f"limit is {self.max_body_bytes} bytes")
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, "body too large", f"limit is {self.max_body_bytes} bytes")
        except TimeoutError:
            return _problem(408, "body not received in time")
        log = self.log.bind(factory=factory)
        try:
            message_id, _ = verify(secrets, request.headers, body, now=self.clock(), tolerance_s=self.tolerance_s)
        except SignatureError as exc:
            log.warning("callback_unauthenticated", reason=str(exc))
            return _problem(401, "invalid signature", str(exc))
        try:
            raw = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            return _problem(400, "body is not valid JSON", str(exc)[:200])
        except ValueError as exc:  # e.g. integers with too many digits
            return _problem(400, "body is not valid JSON", str(exc)[:200])
        if _too_deep(raw):
            return _problem(400, "JSON nested too deeply")
        try:
            event = ShipmentEvent.model_validate(raw)
        except ValidationError as exc:
            errors = [
                {"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            return _problem(422, "invalid event", errors[:20])
        try:
            result = await self.store.record_shipment(factory, message_id, event.data, self.clock())
        except StoreUnavailable as exc:
            log.error("callback_store_unavailable", error=str(exc))
            return _problem(503, "temporarily unavailable", None, **{"Retry-After": "5"})
        crash_point("during_callback")
        log = log.bind(order_id=result.order_id, message_id=message_id, shipment_id=event.data.shipment_id)
        if result.verdict is ShipmentVerdict.UNKNOWN_ORDER:
            log.warning("callback_unknown_order", key=event.data.factory_order_key)
            return _problem(404, "unknown factory order", result.detail)
        if result.verdict is ShipmentVerdict.INVALID_LINES:
            log.warning("callback_invalid_lines", detail=result.detail)
            return _problem(422, "invalid shipment lines", result.detail)
        if result.verdict is ShipmentVerdict.DUPLICATE:
            log.info("callback_duplicate", detail=result.detail)
            return web.json_response({"status": "duplicate"})
        log.info("shipment_recorded", tracking_number=event.data.tracking_number)
        self.on_shipment()
        return web.json_response({"status": "accepted"})

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.store.ping()
        except Exception as exc:
            return _problem(503, "store unavailable", str(exc))
        report = self.stats() if self.stats else {}
        status = 200 if not report.get("failing") else 503
        return web.json_response({"status": "ok" if status == 200 else "degraded", **report}, status=status)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format: gauges from the store, read at scrape time."""
        try:
            stats = await self.store.stats()
        except StoreUnavailable as exc:
            return _problem(503, "store unavailable", str(exc))
        lines = ["# TYPE relay_orders gauge"]
        lines += [f'relay_orders{{state="{k}"}} {v}' for k, v in sorted(stats["orders"].items())]
        lines.append("# TYPE relay_orders_needing_attention gauge")
        lines += [f'relay_orders_needing_attention{{reason="{k}"}} {v}' for k, v in sorted(stats["attention"].items())]
        lines.append("# TYPE relay_factory_orders gauge")
        lines += [f'relay_factory_orders{{state="{k}"}} {v}' for k, v in sorted(stats["factory_orders"].items())]
        lines.append("# TYPE relay_storefront_pushes gauge")
        lines += [f'relay_storefront_pushes{{state="{k}"}} {v}' for k, v in sorted(stats["storefront_pushes"].items())]
        lines.append("# TYPE relay_quarantined_records gauge")
        lines.append(f"relay_quarantined_records {stats['quarantined']}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
