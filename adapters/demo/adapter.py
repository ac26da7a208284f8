"""Storefront adapter for the built-in demo storefront (adapters/demo/fake.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any, ClassVar, TypeVar

import aiohttp
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError

from adapters.demo.client import DemoAPIError, DemoClient
from relay.config import Secret
from relay.contracts import AdapterContext, OrderPage
from relay.domain.models import Address, Malformed, Order, OrderLine, PushReceipt, ShipmentPush
from relay.exceptions import AdapterError, RetriableAdapterError
from relay.faults import crash_point
from relay.outbound.retries import attempt_then_retry, in_call_retries
from relay.outbound.session import error_for_status

T = TypeVar("T")


class DemoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: AnyHttpUrl
    token: Secret
    page_size: int = Field(default=50, ge=1, le=250)


def to_order(raw: dict[str, Any]) -> Order:
    """Map one demo API order to the relay model (raises ValidationError/KeyError/TypeError on bad data)."""
    address = raw.get("shipping_address") or {}
    return Order(
        external_id=str(raw["id"]),
        number=str(raw.get("number", "")),
        created_at=datetime.fromisoformat(raw["created_at"].replace("Z", "+00:00")),
        updated_at=datetime.fromisoformat(raw["updated_at"].replace("Z", "+00:00")),
        currency=raw["currency"],
        email=raw.get("email") or "",
        paid=raw.get("financial_status") == "paid",
        test=bool(raw.get("test")),
        cancelled=raw.get("cancelled_at") is not None,
        fulfilled=raw.get("fulfillment_status") == "fulfilled",
        tags=tuple(raw.get("tags") or ()),
        shipping_address=Address(
            name=address.get("name", ""),
            company=address.get("company", ""),
            line1=address.get("address1", ""),
            line2=address.get("address2", ""),
            city=address.get("city", ""),
            region=address.get("province", ""),
            postal_code=address.get("zip", ""),
            country_code=address.get("country_code", ""),
            phone=address.get("phone", ""),
        ),
        lines=tuple(
            OrderLine(
                line_id=str(li["id"]),
                sku=li.get("sku"),
                variant_id=li.get("variant_id"),
                title=li.get("title", ""),
                quantity=li["quantity"],
                unit_price=li["price"],
                properties={str(k): str(v) for k, v in (li.get("properties") or {}).items()},
            )
            for li in raw["line_items"]
        ),
    )


class DemoStorefront:
    """Lists orders from, and pushes fulfilments to, the demo storefront API."""

    Options: ClassVar[type[BaseModel]] = DemoOptions
    is_sorted: ClassVar[bool] = True

    def __init__(self, name: str, options: DemoOptions, context: AdapterContext) -> None:
        self.name = name
        self.options = options
        self.context = context
        self.session = context.new_session()
        self._client = DemoClient(self.session, str(options.url), options.token.get_secret_value())

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await attempt_then_retry(partial(self._once, fn), partial(in_call_retries, self.context.sleep))

    async def _once(self, fn: Callable[[], Awaitable[T]]) -> T:
        """One attempt, its failures translated into relay's error tree."""
        try:
            return await fn()
        except DemoAPIError as exc:
            raise error_for_status(exc.status, exc.body, exc.headers) from exc
        except AdapterError:
            raise
        except TimeoutError as exc:
            raise RetriableAdapterError("storefront timed out") from exc
        except aiohttp.ClientError as exc:
            raise RetriableAdapterError(f"storefront connection failed: {exc}") from exc

    async def fetch_orders(self, since: datetime | None) -> AsyncIterator[OrderPage]:
        cursor: str | None = None
        since_iso = since.isoformat() if since else None
        while True:
            page = await self._call(
                lambda c=cursor: self._client.list_orders(since_iso, self.options.page_size, c)  # type: ignore[misc]
            )
            records: list[Order | Malformed] = []
            for raw in page.orders:
                try:
                    records.append(to_order(raw))
                except (ValidationError, KeyError, TypeError, ValueError, AttributeError) as exc:
                    ext = str(raw.get("id")) if isinstance(raw, dict) and raw.get("id") is not None else None
                    records.append(
                        Malformed(external_id=ext, reason=f"{type(exc).__name__}: {exc}"[:500], raw=raw)
                    )
            yield records
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def push_shipment(self, push: ShipmentPush) -> PushReceipt:
        body = {
            "tracking_company": push.carrier,
            "tracking_number": push.tracking_number,
            "tracking_url": push.tracking_url,
            "line_items": [{"id": line.line_id, "quantity": line.quantity} for line in push.lines],
            "notify_customer": push.notify_customer,
        }
        result = await self._call(lambda: self._client.create_fulfilment(push.order_id, push.key, body))
        crash_point("after_storefront_write")
        return PushReceipt(reference=str(result.get("id")))

    async def aclose(self) -> None:
        await self.session.close()
