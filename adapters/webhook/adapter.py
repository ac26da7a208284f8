"""Factory adapter: each factory order is one signed Standard Webhooks POST to the factory's URL.

2xx = placed. 408/429/5xx, timeouts and connection errors = retry later. 410 = endpoint gone.
Any other 4xx = rejected (dead letter, response quoted). Redirects are failures and never followed.
The message id is the factory order's idempotency key, also sent as `Idempotency-Key`, and the body is
byte-identical on every attempt.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import aiohttp
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

from adapters.webhook.client import WebhookClient
from relay.config import Secret
from relay.contracts import AdapterContext
from relay.exceptions import AdapterError, RetriableAdapterError
from relay.http import error_for_status
from relay.models import FactoryOrder, Placement
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
    """The `order.created` message: deterministic, so every attempt sends the same bytes."""
    data = order.model_dump(mode="json")
    message = {"type": "order.created", "timestamp": data["created_at"], "data": data}
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


class WebhookFactory:
    """Delivers factory orders as signed webhooks (see docs/factory-api.md)."""

    Options: ClassVar[type[BaseModel]] = WebhookOptions

    def __init__(self, name: str, options: WebhookOptions, context: AdapterContext) -> None:
        self.name = name
        self.options = options
        self.context = context
        self._session = context.new_session(total_timeout_s=options.timeout_s)
        self._client = WebhookClient(self._session, str(options.url), options.signing_secret.get_secret_value())

    async def submit(self, order: FactoryOrder) -> Placement:
        body = order_created_body(order)
        try:
            resp = await self._client.post(order.key, int(self.context.clock()), body)
        except AdapterError:
            raise
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise RetriableAdapterError(f"timed out after {self.options.timeout_s}s") from exc
        except aiohttp.ClientError as exc:
            raise RetriableAdapterError(f"connection failed: {type(exc).__name__}: {exc}") from exc
        if 200 <= resp.status < 300:
            return Placement(reference=_reference(resp.body))
        raise error_for_status(resp.status, resp.body, resp.headers)

    async def aclose(self) -> None:
        await self._session.close()


def _reference(body: str) -> str | None:
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict):
        ref = data.get("reference") or data.get("id")
        return str(ref)[:200] if ref is not None else None
    return None
