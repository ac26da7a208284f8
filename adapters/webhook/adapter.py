"""Factory adapter: each message is one signed Standard Webhooks POST to the factory's URL.

Messages: `order.created` (message id = the factory order key) and `order.cancelled` (message id =
`<key>.cancel`). 2xx = done. 408/429/5xx, timeouts and connection errors = retry later. 410 = endpoint
gone. 409 `{"error": "already_shipped"}` to a cancellation = too late, the parcels are coming. 409
`{"error": "out_of_stock", "lines": [...]}` to an order = not made, not held: relay sends its lines to the
next factory by catalogue priority (or flags the order `out_of_stock` when there is none). Any other
4xx = rejected (dead letter, response quoted). Redirects are failures and never followed. The message id
is also sent as `Idempotency-Key`, and the body is byte-identical on every attempt.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
import orjson
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

from adapters.webhook.client import WebhookClient, WebhookResponse
from relay import json_exact
from relay.config import Secret
from relay.contracts import AdapterContext, NeedsAttention
from relay.domain.models import AttentionReason, FactoryOrder, Placement
from relay.exceptions import AdapterError, AlreadyShipped, RetriableAdapterError
from relay.outbound.session import error_for_status
from relay.signing import secret_bytes


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: AnyHttpUrl
    signing_secret: Secret
    timeout_s: float = Field(default=15.0, gt=0, le=60)

    @field_validator("signing_secret")
    @classmethod
    def _decodable(cls, value: SecretStr) -> SecretStr:
        try:
            secret_bytes(value.get_secret_value())
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return value


def order_created_body(order: FactoryOrder) -> bytes:
    """The `order.created` message: deterministic, so every attempt sends the same bytes.

    `timestamp` and `data.created_at` are the storefront order's creation time (docs/factory-api.md §2).
    `data.factory_skus` (line id -> your SKU, from relay's catalogue) is left out when the catalogue names none.
    """
    data = order.model_dump(mode="json")
    if not order.factory_skus:
        del data["factory_skus"]  # dropped after the dump: cheaper than pydantic's `exclude`
    created = order.created_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    data["created_at"] = created
    message = {"type": "order.created", "timestamp": created, "data": data}
    return canonical_json(message)


def order_cancelled_body(order: FactoryOrder, cancelled_at: datetime) -> bytes:
    """The `order.cancelled` message: names the factory order by its key; deterministic like `order.created`.

    `order` is the factory order restricted to the lines cancelled (the store keeps it with the message):
    `data.lines` lists each with the quantity to stop, the whole order or, after a partial shipment, the
    unshipped rest.
    """
    data = {
        "key": order.key,
        "factory": order.factory,
        "storefront": order.storefront,
        "order_id": order.order_id,
        "order_number": order.order_number,
        "reason": "cancelled_on_storefront",
        "lines": [{"line_id": line.line_id, "quantity": line.quantity} for line in order.lines],
    }
    when = cancelled_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    message = {"type": "order.cancelled", "timestamp": when, "data": data}
    return canonical_json(message)


def canonical_json(message: dict[str, Any]) -> bytes:
    """Compact JSON, keys sorted, non-ASCII escaped: exactly `json.dumps(message, separators=(",", ":"),
    sort_keys=True)`, the bytes relay has always sent (so a retry after an upgrade sends the same body),
    built by orjson when that gives the same bytes: when its output is ASCII without DEL (orjson writes
    UTF-8 and a raw DEL where `json` writes `\\uXXXX`). Other bodies go through `json`."""
    try:
        body = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError, e.g. an integer beyond 64 bits
        return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()
    if body.isascii() and b"\x7f" not in body:
        return body
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


class WebhookFactory:
    """Delivers factory orders as signed webhooks (see docs/factory-api.md)."""

    Options: ClassVar[type[BaseModel]] = WebhookOptions

    def __init__(self, name: str, options: WebhookOptions, context: AdapterContext) -> None:
        self.name = name
        self.options = options
        self.context = context
        self._session = context.new_session(total_timeout_s=options.timeout_s)
        self._client = WebhookClient(
            self._session, str(options.url), options.signing_secret.get_secret_value()
        )

    async def submit(self, order: FactoryOrder) -> Placement:
        resp = await self._post(order.key, order_created_body(order))
        if 200 <= resp.status < 300:
            return Placement(reference=_reference(resp.body))
        if resp.status == 409 and _error_code(resp.body) == "out_of_stock":
            lines = _out_of_stock_lines(resp.body) or [line.line_id for line in order.lines]
            raise NeedsAttention(
                AttentionReason.OUT_OF_STOCK,
                f"out of stock: lines {', '.join(lines)}",
                status=409,
                body=resp.body[:2048],
            )
        raise error_for_status(resp.status, resp.body, resp.headers)

    async def cancel(self, order: FactoryOrder, *, cancelled_at: datetime) -> None:
        resp = await self._post(f"{order.key}.cancel", order_cancelled_body(order, cancelled_at))
        if 200 <= resp.status < 300:
            return
        if resp.status == 409 and _error_code(resp.body) == "already_shipped":
            raise AlreadyShipped(status=409, body=resp.body[:2048])
        raise error_for_status(resp.status, resp.body, resp.headers)

    async def _post(self, message_id: str, body: bytes) -> WebhookResponse:
        try:
            return await self._client.post(message_id, int(self.context.clock()), body)
        except AdapterError:
            raise
        except TimeoutError as exc:
            raise RetriableAdapterError(f"timed out after {self.options.timeout_s}s") from exc
        except aiohttp.ClientError as exc:
            raise RetriableAdapterError(f"connection failed: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._session.close()


def _reference(body: str) -> str | None:
    try:
        data: Any = json_exact.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict):
        ref = data.get("reference") or data.get("id")
        return str(ref)[:200] if ref is not None else None
    return None


def _out_of_stock_lines(body: str) -> list[str]:
    """The line ids a 409 `out_of_stock` answer names (strings, at most 100), or []."""
    data: Any = json_exact.loads(body)  # `_error_code` read it already
    lines = data.get("lines") if isinstance(data, dict) else None
    return [str(line)[:100] for line in lines[:100]] if isinstance(lines, list) else []


def _error_code(body: str) -> str | None:
    try:
        data: Any = json_exact.loads(body)
    except ValueError:
        return None
    return str(data.get("error")) if isinstance(data, dict) else None
