"""Factory adapter for factories without callbacks: they are polled for shipments.

Orders and cancellations go out exactly as with the `webhook` adapter (signed Standard Webhooks POSTs to
`url`). Shipments are read from `GET {shipments_url}?since=<cursor>&limit=<page_size>` with
`Authorization: Bearer <status_token>`; the core keeps the cursor and records each parcel as if the
factory had called back (see docs/factory-api.md, "Polled status endpoint").
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
from pydantic import AnyHttpUrl, BaseModel, Field, ValidationError

from adapters.factory_poll.client import ListingResponse, ShipmentListingClient
from adapters.webhook.adapter import WebhookFactory, WebhookOptions
from relay.config import Secret
from relay.contracts import AdapterContext, ShipmentPage
from relay.domain.models import Shipment
from relay.exceptions import AdapterError, RetriableAdapterError
from relay.outbound.retries import in_call_retries
from relay.outbound.session import error_for_status


class PolledFactoryOptions(WebhookOptions):
    shipments_url: AnyHttpUrl
    status_token: Secret
    page_size: int = Field(default=100, ge=1, le=1000)


class PolledFactory(WebhookFactory):
    """A `WebhookFactory` that is also a `relay.contracts.ShipmentSource`."""

    Options: ClassVar[type[BaseModel]] = PolledFactoryOptions

    def __init__(self, name: str, options: PolledFactoryOptions, context: AdapterContext) -> None:
        super().__init__(name, options, context)
        self._listing = ShipmentListingClient(
            self._session, str(options.shipments_url), options.status_token.get_secret_value()
        )
        self._page_size = options.page_size

    async def fetch_shipments(self, since: str | None) -> AsyncIterator[ShipmentPage]:
        cursor = since
        while True:
            data = await self._page(cursor)
            shipments = []
            for raw in data.get("shipments") or []:
                shipment = self._parse(raw)
                if shipment is not None:
                    shipments.append(shipment)
            next_cursor = data.get("next_cursor")
            next_cursor = str(next_cursor) if next_cursor not in (None, "") else None
            yield ShipmentPage(shipments, next_cursor)
            if not data.get("has_more") or next_cursor is None or next_cursor == cursor:
                return
            cursor = next_cursor

    async def _page(self, cursor: str | None) -> dict[str, Any]:
        async for attempt in in_call_retries(self.context.sleep, attempts=3):
            with attempt:
                resp = await self._get(cursor)
                if resp.status != 200:
                    raise error_for_status(resp.status, resp.body, resp.headers)
        try:
            data = json.loads(resp.body)
        except ValueError as exc:
            raise RetriableAdapterError(f"shipment listing is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise RetriableAdapterError("shipment listing is not a JSON object")
        return data

    async def _get(self, cursor: str | None) -> ListingResponse:
        try:
            return await self._listing.page(cursor, self._page_size)
        except AdapterError:
            raise
        except TimeoutError as exc:
            raise RetriableAdapterError(f"timed out after {self.options.timeout_s}s") from exc
        except aiohttp.ClientError as exc:
            raise RetriableAdapterError(f"connection failed: {type(exc).__name__}: {exc}") from exc

    def _parse(self, raw: Any) -> Shipment | None:
        """One listed parcel; unknown fields are ignored, a record that does not validate is logged and skipped."""
        if isinstance(raw, dict):
            try:
                return Shipment.model_validate({k: raw[k] for k in Shipment.model_fields if k in raw})
            except ValidationError as exc:
                reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        else:
            reason = "not an object"
        self.context.log.warning(
            "polled_shipment_malformed",
            reason=reason,
            shipment_id=raw.get("shipment_id") if isinstance(raw, dict) else None,
        )
        return None
