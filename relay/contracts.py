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

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import aiohttp
from pydantic import BaseModel

from relay.domain.models import (
    AttentionReason,
    FactoryOrder,
    FactoryOrderNotice,
    Malformed,
    Order,
    Placement,
    PushReceipt,
    Shipment,
    ShipmentPush,
)
from relay.exceptions import FatalAdapterError

OrderPage = Sequence[Order | Malformed]
"""One page of a storefront listing: good orders, and records that failed to parse."""


class NeedsAttention(FatalAdapterError):
    """The factory cannot go on with this order without a person: `reason` says why.

    Raised by `FactoryAdapter.submit` / `cancel` when retrying cannot help and the cause is specific
    (an address the factory refuses, two factory orders under one key, an order the factory closed
    unpaid, a paid order cancelled on the storefront that now needs a refund). `reference` names the
    factory's own order, if there is one. It is a `FatalAdapterError`: the forwarder dead-letters the
    message and flags the order with `reason` (kept through later state changes, see
    `relay.domain.models.STICKY_ATTENTION`) and records `reference`.
    """

    def __init__(
        self,
        reason: AttentionReason,
        detail: str,
        *,
        reference: str | None = None,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(f"needs_attention: {reason.value}: {detail}", status=status, body=body)
        self.reason = reason
        self.reference = reference


@dataclass(frozen=True)
class AdapterContext:
    """What the core gives every adapter.

    `new_session` returns an aiohttp session that enforces the egress policy (no redirects, address
    checks, timeouts, response size cap); adapters must use it for every request and close it in
    `aclose()`. `sleep` is injectable so in-call retries (`relay.outbound.retries`) run instantly in tests.
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

        In-call retries of throttled or failing pages belong here (`relay.outbound.retries`, honouring Retry-After).
        Raise `RetriableAdapterError` when the listing cannot be completed now, `AuthError` on 401/403.
        """
        ...

    async def push_shipment(self, push: ShipmentPush) -> PushReceipt:
        """Write one parcel's tracking to the order. Must be idempotent on `push.key`:
        pushing the same parcel twice creates one fulfilment.

        Look before writing only when `push.prior_attempt_unknown`: an earlier attempt was claimed and its
        outcome never recorded as definite (a crash after the write, a lost answer, a failure), so the
        parcel may already be there. When it is False (the first attempt, or only throttled / unsent ones
        before), nothing of this parcel can be on the storefront: write at once, without a lookup. Within
        one call, a write whose answer was lost (timeout, 5xx after sending) makes any in-call retry look
        first too. When `push.order_fully_shipped`, also complete the order (in the same request as the
        parcel where the platform allows it).

        Raise `Throttled` only when this call wrote nothing (the attempt then does not count, and the next
        one may write without looking); after a write whose outcome is unknown raise
        `RetriableAdapterError` instead."""
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
        """Deliver the order. Return on acceptance; raise `RetriableAdapterError` or `FatalAdapterError`.

        Raise `EndpointGone` when the factory answers 410: the core then pauses every delivery to it.
        """
        ...

    async def cancel(self, order: FactoryOrder, *, cancelled_at: datetime) -> None:
        """Tell the factory the order was cancelled on the storefront. Must be safe to repeat:
        its idempotency key is `f"{order.key}.cancel"`, and `cancelled_at` (the same on every attempt)
        lets the message be byte-identical each time.

        Return when the factory cancelled it (or never held it). Raise `AlreadyShipped` when the factory
        refuses because it already shipped: its parcels are still reported and flow back. Otherwise
        raise like `submit`.
        """
        ...

    async def aclose(self) -> None:
        """Release every session and connection."""
        ...


@dataclass(frozen=True)
class ShipmentPage:
    """One page of a polled factory's shipment listing, and the cursor that follows it.

    The core records the page's shipments and `notices` (what the factory reports about its orders
    besides parcels: awaiting or expired payment, paid, duplicates; `Store.apply_factory_notices`), then
    stores `cursor` (None: unchanged), and asks for `since=cursor` next time. A notice may repeat on every
    poll: one that changes nothing is skipped.
    """

    shipments: Sequence[Shipment]
    cursor: str | None
    notices: Sequence[FactoryOrderNotice] = ()


@runtime_checkable
class ShipmentSource(Protocol):
    """A factory adapter that reports shipments by being polled (for factories without callbacks).

    The core runs one poller per such factory and owns the cursor; shipments take the same path as
    signed callbacks (`Store.record_shipment`), under a message id derived from the parcel, so a
    re-poll has no second effect.
    """

    def fetch_shipments(self, since: str | None) -> AsyncIterator[ShipmentPage]:
        """Yield pages of shipments reported after `since` (from the beginning when None), draining
        pagination. Skip (and log) records that do not parse; raise `RetriableAdapterError` when the
        listing cannot be completed now, `AuthError` on 401/403."""
        ...


@dataclass(frozen=True)
class PushRequest:
    """A push message as the inbound server received it: query parameters, the raw body (within the inbound
    size limit) and its content type."""

    query: Mapping[str, str]
    body: bytes
    content_type: str


@dataclass(frozen=True)
class PushVerdict:
    """The answer to a push (`status`: 200 taken, a repeat too; 400 malformed; 401 bad signature; 413 too
    large) and whether to wake the factory's shipment poller. `detail` is for the log (no secrets)."""

    status: int
    wake: bool = False
    detail: str = ""


@runtime_checkable
class PushReceiver(Protocol):
    """A polled factory whose platform also pushes signed messages (order paid, goods sent, ...).

    The inbound server routes `POST /v1/factories/{name}/push` to `handle_push` of every factory adapter
    that has it. A message is a wake-up call, never the truth (pushes repeat and arrive out of order):
    the handler verifies it and answers at once, without I/O; with `wake=True` the core runs the
    factory's shipment poller (`ShipmentSource`) now, which reads the truth from the platform.
    """

    def handle_push(self, request: PushRequest) -> PushVerdict:
        """Verify one push message and say what to answer and whether to poll now. Never raises."""
        ...
