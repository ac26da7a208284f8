"""Factory callbacks: `POST /v1/factories/{factory}/events`.

The endpoint takes a Standard Webhooks-signed JSON event (see
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

from relay.domain.models import Shipment
from relay.exceptions import StoreUnavailable
from relay.faults import crash_point
from relay.signing import SignatureError, verify
from relay.store import ShipmentVerdict, Store

BODY_READ_TIMEOUT_S = 10.0
MAX_JSON_DEPTH = 32
_ACCEPTED = json.dumps({"status": "accepted"})


class ShipmentEvent(BaseModel):
    """The envelope a factory sends: Standard Webhooks' {type, timestamp, data}."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["shipment.created"]
    timestamp: str | None = None
    data: Shipment


def problem(status: int, title: str, detail: Any = None, **headers: str) -> web.Response:
    """A JSON error answer: `{"error": title, "detail": ...}`."""
    body: dict[str, Any] = {"error": title}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


class Refused(Exception):
    """A callback answered with a 4xx/5xx `response` before any state changed."""

    def __init__(self, status: int, title: str, detail: Any = None, **headers: str) -> None:
        super().__init__(title)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers

    @property
    def response(self) -> web.Response:
        return problem(self.status, self.title, self.detail, **self.headers)


def _too_deep(value: Any, depth: int = 0) -> bool:
    if depth > MAX_JSON_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_too_deep(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_too_deep(v, depth + 1) for v in value)
    return False


def _could_be_too_deep(body: bytes) -> bool:
    """Whether `body` holds enough `{` and `[` bytes for a value nested deeper than `MAX_JSON_DEPTH`: a value
    at depth d is inside d objects or arrays, each opened by one of these bytes (in UTF-8, -16 or -32, and
    wherever else they occur), so with no more than `MAX_JSON_DEPTH` of them `_too_deep` is False."""
    return body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH


class FactoryCallbacks:
    """The handler for signed shipment events from factories."""

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
    ) -> None:
        self.store = store
        self.secrets = callback_secrets
        self.clock = clock
        self.tolerance_s = tolerance_s
        self.log = log
        self.on_shipment = on_shipment
        self.max_body_bytes = max_body_bytes

    async def factory_event(self, request: web.Request) -> web.Response:
        """Verify, parse and record one shipment event; every refusal changes nothing."""
        factory = request.match_info["factory"]
        log = self.log  # each line carries `factory` first (passed, not bound: most requests log nothing)
        try:
            secrets = self.secrets.get(factory)
            if secrets is None:
                raise Refused(404, "unknown factory")
            body = await read_body(request, self.max_body_bytes)
            try:
                message_id, _ = verify(
                    secrets, request.headers, body, now=self.clock(), tolerance_s=self.tolerance_s
                )
            except SignatureError as exc:
                log.warning("callback_unauthenticated", factory=factory, reason=str(exc))
                raise Refused(401, "invalid signature", str(exc)) from None
            except (ValueError, OverflowError) as exc:  # no header, however malformed, is a 500
                reason = f"malformed headers: {type(exc).__name__}"
                log.warning("callback_unauthenticated", factory=factory, reason=reason)
                raise Refused(401, "invalid signature", "malformed webhook headers") from None
            event = _parse_event(body)
            try:
                result = await self.store.record_shipment(factory, message_id, event.data, self.clock())
            except StoreUnavailable as exc:
                log.error("callback_store_unavailable", factory=factory, error=str(exc))
                raise Refused(503, "temporarily unavailable", None, **{"Retry-After": "5"}) from None
        except Refused as refused:
            return refused.response
        crash_point("during_callback")
        context = {
            "factory": factory,
            "order_id": result.order_id,
            "message_id": message_id,
            "shipment_id": event.data.shipment_id,
        }
        if result.verdict is ShipmentVerdict.UNKNOWN_ORDER:
            log.warning("callback_unknown_order", **context, key=event.data.factory_order_key)
            return problem(404, "unknown factory order", result.detail)
        if result.verdict is ShipmentVerdict.INVALID_LINES:
            log.warning("callback_invalid_lines", **context, detail=result.detail)
            return problem(422, "invalid shipment lines", result.detail)
        if result.verdict is ShipmentVerdict.DUPLICATE:
            log.info("callback_duplicate", **context, detail=result.detail)
            return web.json_response({"status": "duplicate"})
        # Debug: the tracking number is shown at info on the order's state change (or `order_event`).
        log.debug("shipment_recorded", **context, tracking_number=event.data.tracking_number)
        self.on_shipment()
        return web.Response(text=_ACCEPTED, content_type="application/json")  # = json_response


async def read_body(request: web.Request, max_body_bytes: int) -> bytes:
    """The raw body, within the size limit and the read timeout (`Refused` with 413 or 408 otherwise)."""
    if (request.content_length or 0) > max_body_bytes:  # refuse at once, don't wait for the body
        raise Refused(413, "body too large", f"limit is {max_body_bytes} bytes")
    try:
        if request.content.is_eof():  # the whole body has arrived (the usual case): reading cannot wait
            body = await request.read()
        else:
            async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, "body too large", f"limit is {max_body_bytes} bytes") from None
    except TimeoutError:
        raise Refused(408, "body not received in time") from None
    if len(body) > max_body_bytes:  # a server limit above this one (chunked bodies carry no length)
        raise Refused(413, "body too large", f"limit is {max_body_bytes} bytes")
    return body


def _parse_event(body: bytes) -> ShipmentEvent:
    """A verified body as a `ShipmentEvent`, or `Refused` with 400 (not JSON) or 422 (not an event)."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8, bad JSON, huge integers
        raise Refused(400, "body is not valid JSON", str(exc)[:200]) from None
    if _could_be_too_deep(body) and _too_deep(raw):
        raise Refused(400, "JSON nested too deeply")
    try:
        return ShipmentEvent.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise Refused(422, "invalid event", errors[:20]) from None
