"""The store: the only code that reads or writes the database.

Every public method is one transaction. Loops hand the store whole batches (a page of orders, a
group of delivery outcomes) so one commit covers many state changes. Work is claimed under a lease
(owner + expiry), never by holding a lock across network calls, so several daemons could share one
database once a networked backend exists; `open_store(url)` picks the backend by URL scheme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from relay.domain.models import (
    AttentionReason,
    CancelState,
    FactoryOrder,
    FactoryOrderState,
    Malformed,
    Order,
    PushState,
    Shipment,
    ShipmentPush,
)


@dataclass(frozen=True, slots=True)
class IngestResult:
    new: int = 0
    updated: int = 0
    requeued: int = 0
    cancelled: int = 0
    quarantined: int = 0


@dataclass(frozen=True, slots=True)
class RouteJob:
    order_id: int
    storefront: str
    order: Order


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The router's decision for one order: factory orders to create, or a hold, or a cancellation."""

    order_id: int
    factory_orders: tuple[FactoryOrder, ...] = ()
    hold: AttentionReason | None = None
    detail: str | None = None
    cancel: bool = False


ORDER_CREATED = "order.created"
ORDER_CANCELLED = "order.cancelled"


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One message owed to a factory: `order.created` (a factory order) or `order.cancelled`.

    For a cancellation `id` is the cancellation row's, `key` is `"<factory order key>.cancel"` and
    `requested_at` is when the storefront cancellation was seen.
    """

    id: int
    order_id: int
    factory: str
    key: str
    attempts: int
    order: FactoryOrder
    kind: str = ORDER_CREATED
    requested_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What happened to one delivery.

    `state` is PLACED, PENDING (retry) or DEAD for `order.created`; a `CancelState` (DONE, REFUSED,
    PENDING or DEAD) for `order.cancelled`. `attempted=False` means the attempt does not count: nothing
    was sent (the factory's circuit was open) or the factory answered 410 and is now disabled. The
    attempt count and due time are unchanged, so the row goes out when the factory is back.
    """

    job: DeliveryJob
    state: FactoryOrderState | CancelState
    next_attempt_at: float | None = None
    error: str | None = None
    reason: AttentionReason | None = None
    reference: str | None = None
    attempted: bool = True


@dataclass(frozen=True, slots=True)
class PushJob:
    id: int
    order_id: int
    storefront: str
    key: str
    attempts: int
    push: ShipmentPush


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What happened to one tracking push. `state` is DONE, PENDING (retry) or DEAD."""

    job: PushJob
    state: PushState
    next_attempt_at: float | None = None
    error: str | None = None
    reference: str | None = None


class ShipmentVerdict(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # message id or parcel already recorded: no second effect
    UNKNOWN_ORDER = "unknown_order"  # no such factory order for this factory
    INVALID_LINES = "invalid_lines"  # lines not in this factory order, or more than ordered


@dataclass(frozen=True, slots=True)
class ShipmentResult:
    verdict: ShipmentVerdict
    order_id: int | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class OrderView:
    """Everything known about one order, for operators."""

    order: dict[str, Any]
    factory_orders: list[dict[str, Any]] = field(default_factory=list)
    shipments: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


class Store(Protocol):
    """The storage interface the loops, the inbound server and the CLI use."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> int: ...
    async def schema_version(self) -> int: ...
    async def ping(self) -> None: ...

    async def get_cursor(self, storefront: str) -> datetime | None: ...
    async def ingest(
        self,
        storefront: str,
        orders: Sequence[Order],
        malformed: Sequence[Malformed],
        cursor: datetime | None,
        now: float,
    ) -> IngestResult: ...

    async def claim_orders_to_route(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[RouteJob]: ...
    async def apply_routing(self, plans: Sequence[RoutePlan], now: float) -> int: ...

    async def claim_deliveries(
        self, owner: str, factories: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[DeliveryJob]: ...
    async def record_deliveries(self, outcomes: Sequence[DeliveryOutcome], now: float) -> None: ...

    async def record_shipment(
        self, factory: str, message_id: str, shipment: Shipment, now: float
    ) -> ShipmentResult: ...

    async def claim_pushes(
        self, owner: str, storefronts: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[PushJob]: ...
    async def record_pushes(self, outcomes: Sequence[PushOutcome], now: float) -> None: ...

    async def release_leases(self, owner: str) -> None: ...
    async def next_due(self) -> float | None: ...
    async def next_delivery_due(self, excluding: Sequence[str] = ()) -> float | None:
        """Earliest message owed to an enabled factory, ignoring the factories in `excluding`."""
        ...

    async def next_push_due(self) -> float | None: ...

    async def disable_factory(self, name: str, reason: str, now: float) -> bool:
        """Pause deliveries to `name`; False if it was already disabled (the first reason is kept)."""
        ...

    async def enable_factory(self, name: str, now: float) -> bool:
        """Resume deliveries to `name`; False if it was not disabled."""
        ...

    async def list_factories(self) -> list[dict[str, Any]]:
        """Every factory the database knows: disabled state and reason, shipment cursor, order counts."""
        ...

    async def get_factory_cursor(self, factory: str) -> str | None: ...
    async def set_factory_cursor(self, factory: str, cursor: str, now: float) -> None: ...

    async def retry_order(self, order_id: int, now: float) -> list[str]: ...
    async def replay_order(self, order_id: int, now: float) -> list[str]: ...
    async def find_order(self, order_id: int) -> OrderView | None: ...
    async def find_order_id(self, storefront: str, external_id: str) -> int | None: ...
    async def list_orders(self, state: str | None, limit: int) -> list[dict[str, Any]]: ...
    async def stats(self) -> dict[str, Any]: ...


def open_store(url: str) -> Store:
    """Create (not yet open) the store for a database URL. Only `sqlite:///PATH` exists today."""
    from relay.exceptions import ConfigurationError

    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and sep and rest.startswith("/"):
        from relay.store.sqlite import SQLiteStore

        return SQLiteStore(rest[1:])
    raise ConfigurationError([("daemon.database", f"unsupported database URL {url!r}; use sqlite:///PATH")])
