"""Adapter contracts: what a storefront or factory adapter must provide, and what it is given.

Adapters are found by name through entry points (`relay.storefronts`, `relay.factories`; see
`relay.registry`). An adapter class is constructed as `cls(name, options, context)` where `options` is an
instance of the class's own pydantic `Options` model, validated from the adapter's config table, and
`context` is an `AdapterContext`.

The core owns every cursor: a storefront adapter only answers "orders updated since X". Adapters never
write to the store and never sleep on persisted retries; they raise the errors in `relay.exceptions`
and the core decides when to try again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import aiohttp
from pydantic import BaseModel

from relay.models import FactoryOrder, Malformed, Order, Placement, PushReceipt, ShipmentPush

OrderPage = Sequence[Order | Malformed]
"""One page of a storefront listing: good orders, and records that failed to parse."""


@dataclass(frozen=True)
class AdapterContext:
    """What the core gives every adapter.

    `new_session` returns an aiohttp session that enforces the egress policy (no redirects, address
    checks, timeouts, response size cap); adapters must use it for every request and close it in
    `aclose()`. `sleep` is injectable so in-call retries (tenacity) run instantly in tests.
    """

    new_session: Callable[..., aiohttp.ClientSession]
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    log: Any


@runtime_checkable
class StorefrontAdapter(Protocol):
    """A reseller's shop: lists orders, takes tracking back.

    `is_sorted` is True when `fetch_orders` yields orders in ascending `updated_at`; the core then
    commits the cursor after each page, otherwise only after the whole listing was drained.
    """

    Options: ClassVar[type[BaseModel]]
    is_sorted: ClassVar[bool]
    name: str

    def fetch_orders(self, since: datetime | None) -> AsyncIterator[OrderPage]:
        """Yield pages of orders updated at or after `since` (all orders when None), draining pagination.

        In-call retries of throttled or failing pages belong here (tenacity, honouring Retry-After).
        Raise `RetriableAdapterError` when the listing cannot be completed now, `AuthError` on 401/403.
        """
        ...

    async def push_shipment(self, push: ShipmentPush) -> PushReceipt:
        """Write one parcel's tracking to the order. Must be idempotent on `push.key`:
        pushing the same parcel twice creates one fulfilment."""
        ...

    async def aclose(self) -> None:
        """Release every session and connection."""
        ...


@runtime_checkable
class FactoryAdapter(Protocol):
    """A factory that takes orders. `submit` must be safe to repeat: `order.key` is the idempotency key."""

    Options: ClassVar[type[BaseModel]]
    name: str

    async def submit(self, order: FactoryOrder) -> Placement:
        """Deliver the order. Return on acceptance; raise `RetriableAdapterError` or `FatalAdapterError`."""
        ...

    async def aclose(self) -> None:
        """Release every session and connection."""
        ...
