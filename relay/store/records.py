"""Typed records the store hands out and takes in: jobs and outcomes for the loops, views for operators.

All are frozen dataclasses. States are the domain's `StrEnum`s, so a record compares equal to the plain
strings an operator or a test writes (`view.order.state == "placed"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from relay.domain.models import (
    AttentionReason,
    CancelState,
    FactoryOrder,
    FactoryOrderState,
    Order,
    OrderState,
    PushState,
    ShipmentLine,
    ShipmentPush,
)

# --- poll and route ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one `Store.ingest` page did: orders new, updated, put back to routing, cancelled, quarantined."""

    new: int = 0
    updated: int = 0
    requeued: int = 0
    cancelled: int = 0
    quarantined: int = 0


@dataclass(frozen=True, slots=True)
class RouteJob:
    """A received order claimed for routing."""

    order_id: int
    storefront: str
    order: Order
    content_hash: str | None = None
    """The version claimed (`Order.content_hash()`); the plan carries it back to `apply_routing`."""


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The router's decision for one order: factory orders to create, or a hold, or a cancellation.

    `content_hash` is the version of the order the plan was made for: `apply_routing` drops the plan (and
    frees the order for the next pass) when the stored order changed since the claim. None skips the check.
    """

    order_id: int
    factory_orders: tuple[FactoryOrder, ...] = ()
    hold: AttentionReason | None = None
    detail: str | None = None
    cancel: bool = False
    content_hash: str | None = None


# --- the outbox: deliveries to factories, pushes to storefronts ------------------------------------------

ORDER_CREATED = "order.created"
ORDER_CANCELLED = "order.cancelled"


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One message owed to a factory: `order.created` (a factory order) or `order.cancelled`.

    For a cancellation `id` is the cancellation row's, `key` is `"<factory order key>.cancel"` and
    `requested_at` is when the storefront cancellation was seen. `lease_token` is the row's fencing token
    from this claim: the outcome is recorded only while the row still carries it (ADR 11).
    """

    id: int
    order_id: int
    factory: str
    key: str
    attempts: int
    order: FactoryOrder
    kind: str = ORDER_CREATED
    requested_at: float | None = None
    lease_token: int = 0


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
    amount: Decimal | None = None
    """PLACED: what the factory order costs (`Placement.amount`, exact), in `currency`."""
    currency: str | None = None
    pay_deadline: datetime | None = None
    """PLACED: when the factory closes it unpaid (`Placement.pay_deadline`)."""
    attention: AttentionReason | None = None
    """PLACED: a flag the placed factory order carries (`Placement.attention`, e.g. AWAITING_PAYMENT)."""


@dataclass(frozen=True, slots=True)
class PushJob:
    """One tracking update owed to a storefront. `lease_token`: see `DeliveryJob`."""

    id: int
    order_id: int
    storefront: str
    key: str
    attempts: int
    push: ShipmentPush
    lease_token: int = 0


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What happened to one tracking push. `state` is DONE, PENDING (retry) or DEAD.

    `attempted=False` means the attempt does not count: the storefront throttled it (its rate limit is
    the platform's schedule, not a failure). The attempt count is unchanged; the push is due again at
    `next_attempt_at` (the capacity the platform announced).
    """

    job: PushJob
    state: PushState
    next_attempt_at: float | None = None
    error: str | None = None
    reference: str | None = None
    attempted: bool = True


# --- inbound shipments -----------------------------------------------------------------------------------


class ShipmentVerdict(StrEnum):
    """The store's answer to one shipment message."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # message id or parcel already recorded: no second effect
    UNKNOWN_ORDER = "unknown_order"  # no such factory order for this factory
    INVALID_LINES = "invalid_lines"  # lines not in this factory order, or more than ordered


@dataclass(frozen=True, slots=True)
class ShipmentResult:
    """The verdict on one shipment message, the order it concerns (when known) and why."""

    verdict: ShipmentVerdict
    order_id: int | None = None
    detail: str | None = None


# --- operator views --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as stored: its state, why it needs a person (if it does) and the storefront's payload."""

    id: int
    storefront: str
    external_id: str
    number: str
    state: OrderState
    attention_reason: AttentionReason | None
    attention_detail: str | None
    payload: Order
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class FactoryOrderRecord:
    """One factory order of an order, with its delivery bookkeeping and its cancellation's state."""

    id: int
    factory: str
    key: str
    state: FactoryOrderState
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    dead_reason: AttentionReason | None
    reference: str | None
    cancel_state: CancelState | None
    amount: Decimal | None = None
    """What the factory order costs, exact, as the factory reported it on placement (None: not reported)."""
    currency: str | None = None
    pay_deadline: datetime | None = None
    """When the factory closes it unpaid, if it said."""
    attention: AttentionReason | None = None
    """A flag the placed factory order carries: `awaiting_payment` until paid, `payment_expired`."""


@dataclass(frozen=True, slots=True)
class ShipmentRecord:
    """One parcel of an order and the state of its tracking push."""

    id: int
    factory: str
    shipment_id: str
    carrier: str
    tracking_number: str
    tracking_url: str | None
    lines: tuple[ShipmentLine, ...]
    received_at: float
    push_state: PushState | None
    push_attempts: int | None
    push_error: str | None
    push_reference: str | None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One entry of an order's history. `detail` is the event's free-form JSON object."""

    at: float
    kind: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any] = field(default_factory=dict)


def _fields(record: FactoryOrderRecord | ShipmentRecord) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _factory_order_json(record: FactoryOrderRecord) -> dict[str, Any]:
    """A factory order as JSON: the amount as an exact string, the deadline in ISO 8601."""
    out = _fields(record)
    out["amount"] = str(record.amount) if record.amount is not None else None
    out["pay_deadline"] = record.pay_deadline.isoformat() if record.pay_deadline else None
    return out


@dataclass(frozen=True, slots=True)
class OrderView:
    """Everything known about one order, for operators."""

    order: OrderRecord
    factory_orders: tuple[FactoryOrderRecord, ...] = ()
    shipments: tuple[ShipmentRecord, ...] = ()
    events: tuple[OrderEvent, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what `relay orders show` prints): events flattened to `{at, kind, from, to, ...}`."""
        order = {
            "id": self.order.id,
            "storefront": self.order.storefront,
            "external_id": self.order.external_id,
            "number": self.order.number,
            "state": self.order.state,
            "attention_reason": self.order.attention_reason,
            "attention_detail": self.order.attention_detail,
            "created_at": self.order.created_at,
            "updated_at": self.order.updated_at,
            "payload": self.order.payload.model_dump(mode="json"),
        }
        shipments = []
        for s in self.shipments:
            shipment = _fields(s)
            shipment["lines"] = [line.model_dump(mode="json") for line in s.lines]
            shipments.append(shipment)
        return {
            "order": order,
            "factory_orders": [_factory_order_json(f) for f in self.factory_orders],
            "shipments": shipments,
            "events": [
                {"at": e.at, "kind": e.kind, "from": e.from_state, "to": e.to_state, **e.detail}
                for e in self.events
            ],
        }


@dataclass(frozen=True, slots=True)
class OrderSummary:
    """One line of `Store.list_orders`."""

    id: int
    storefront: str
    external_id: str
    number: str
    state: OrderState
    attention_reason: AttentionReason | None
    attention_detail: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class FactoryStatus:
    """A factory the database knows: paused or not (and why), its shipment cursor, its orders per state."""

    name: str
    disabled_at: float | None = None
    disabled_reason: str | None = None
    shipment_cursor: str | None = None
    orders: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts for metrics and `relay stats`: orders per state, orders needing a person per reason,
    outbox rows per state, quarantined storefront records."""

    orders: dict[str, int] = field(default_factory=dict)
    attention: dict[str, int] = field(default_factory=dict)
    factory_orders: dict[str, int] = field(default_factory=dict)
    storefront_pushes: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what `relay stats` prints)."""
        return {
            "orders": dict(self.orders),
            "attention": dict(self.attention),
            "factory_orders": dict(self.factory_orders),
            "storefront_pushes": dict(self.storefront_pushes),
            "quarantined": self.quarantined,
        }
