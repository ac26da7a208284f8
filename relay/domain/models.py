"""Domain model: the values that cross adapter boundaries, and the fulfilment state machines.

Values are frozen pydantic models so that an adapter turning vendor JSON into an `Order` gets validation
for free: a record that does not validate is quarantined by the poller instead of crashing it.
Money is always `Decimal`; ids are always strings (storefront ids are opaque and may exceed 2**53).

State machines are explicit tables. `check_transition` raises `IllegalTransition` for anything not in the
table; the store calls it inside the transaction that would write the new state, so an illegal transition
changes nothing.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from relay.exceptions import IllegalTransition

NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=512, strip_whitespace=True)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Address(_Value):
    """A postal address, passed to the factory exactly as the storefront gave it."""

    name: str = ""
    company: str = ""
    line1: str = ""
    line2: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country_code: str = ""
    phone: str = ""


class OrderLine(_Value):
    """One storefront line item. Routing uses `sku` (a stable id), never `title`."""

    line_id: NonEmpty
    sku: str | None = None
    variant_id: str | None = None
    title: str = ""
    quantity: int = Field(gt=0, le=100_000)
    unit_price: Decimal = Field(ge=0)
    properties: dict[str, str] = Field(default_factory=dict)


class Order(_Value):
    """A storefront order as normalised by a storefront adapter."""

    external_id: NonEmpty
    number: str = ""
    created_at: datetime
    updated_at: datetime
    currency: CurrencyCode
    total: Decimal | None = None
    email: str = ""
    paid: bool = True
    test: bool = False
    cancelled: bool = False
    fulfilled: bool = False
    """Already fulfilled on the storefront (by hand, or by another tool): relay records it, never routes it."""
    tags: tuple[str, ...] = ()
    shipping_address: Address = Field(default_factory=Address)
    lines: tuple[OrderLine, ...] = Field(min_length=1)

    @field_validator("updated_at", "created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a timezone")
        return value

    @field_validator("lines")
    @classmethod
    def _unique_line_ids(cls, lines: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
        ids = [line.line_id for line in lines]
        if len(ids) != len(set(ids)):
            raise ValueError("line ids must be unique within an order")
        return lines

    def content_hash(self) -> str:
        """The version of the order's content: a hash of every field relay uses, `updated_at` aside.

        Storefronts stamp `updated_at` in whole seconds, so two versions may share a stamp; this hash tells
        them apart (`ingest` applies a version whose hash differs and whose stamp is not older).
        """
        content = self.model_dump_json(exclude={"updated_at"})
        return hashlib.sha256(content.encode()).hexdigest()[:32]

    def payload_and_hash(self) -> tuple[str, str]:
        """`(self.model_dump_json(), self.content_hash())` from one serialisation: the hashed content is the
        payload without its `updated_at` member, which follows `external_id`, `number` and `created_at`.
        Their JSON strings cannot hold an unescaped `"`, so the first `,"updated_at":"` is that member."""
        payload = self.__pydantic_serializer__.to_json(self)
        start = payload.index(b',"updated_at":"')
        end = payload.index(b'"', start + 15) + 1  # the closing quote of the timestamp
        content = payload[:start] + payload[end:]
        return payload.decode(), hashlib.sha256(content).hexdigest()[:32]


class Malformed(_Value):
    """A storefront record that could not be turned into an `Order`; stored in quarantine, never fatal."""

    external_id: str | None = None
    reason: str
    raw: Any = None


class FactoryOrder(_Value):
    """What a factory receives: the lines of one order that this factory makes.

    `key` is stable for the (order, factory) pair and is the idempotency key on every attempt.
    """

    key: str
    factory: str
    storefront: str
    order_id: str
    order_number: str
    created_at: datetime
    currency: CurrencyCode
    email: str = ""
    shipping_address: Address
    lines: tuple[OrderLine, ...]
    factory_skus: dict[str, str] = Field(default_factory=dict)
    """Line id -> the factory's own SKU for that line, from the SKU catalogue (1688: `offerId:specId`);
    lines the catalogue names no factory SKU for are absent."""


class ShipmentLine(_Value):
    line_id: NonEmpty
    quantity: int = Field(gt=0, le=100_000)


class Shipment(_Value):
    """A parcel reported by a factory. `shipment_id` is the factory's own id for the parcel."""

    factory_order_key: NonEmpty
    shipment_id: NonEmpty
    carrier: NonEmpty
    tracking_number: NonEmpty
    tracking_url: str | None = None
    lines: tuple[ShipmentLine, ...] = Field(min_length=1)


class ShipmentPush(_Value):
    """Tracking to be written back to the storefront for one parcel. `key` is stable per parcel."""

    key: str
    storefront: str
    order_id: str
    order_number: str
    carrier: str
    tracking_number: str
    tracking_url: str | None = None
    lines: tuple[ShipmentLine, ...]
    order_fully_shipped: bool
    notify_customer: bool = True
    prior_attempt_unknown: bool = Field(default=True, exclude=True)
    """An earlier attempt may have written this parcel (it was claimed and its outcome never recorded as
    definite): the adapter looks before writing. False on a first attempt: it writes at once. Set by the
    store at claim time, never stored in the payload; True (look) unless the caller knows better."""


class Placement(_Value):
    """A factory's acceptance of an order.

    `amount` and `currency` are what the factory order costs (exact: a factory's cents or fen as a
    `Decimal`), `pay_deadline` when the factory closes it unpaid, and `attention` why it waits for a person
    although it was placed (`AWAITING_PAYMENT`: the reseller must pay it by `pay_deadline`). All optional:
    a factory paid by invoice leaves them None.
    """

    reference: str | None = None
    amount: Decimal | None = Field(default=None, ge=0)
    currency: CurrencyCode | None = None
    pay_deadline: datetime | None = None
    attention: AttentionReason | None = None

    @field_validator("pay_deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("pay_deadline must carry a timezone")
        return value


class FactoryOrderNotice(_Value):
    """Something a polled factory reports about one of its orders besides parcels (`ShipmentPage.notices`).

    `reason` is the flag it raises: `AWAITING_PAYMENT` (the order waits to be paid, `detail` says by when),
    `PAYMENT_EXPIRED` (the factory closed it unpaid: it is never re-created), `DUPLICATE_AT_FACTORY` (two
    factory orders carry its key). None clears the factory order's payment flag: it was paid.
    """

    factory_order_key: NonEmpty
    reason: AttentionReason | None = None
    detail: str = Field(default="", max_length=1000)


class PushReceipt(_Value):
    """A storefront's acceptance of a tracking push."""

    reference: str | None = None


def factory_order_key(storefront: str, order_id: str, factory: str) -> str:
    """The idempotency key for one (order, factory) pair: derived, so it is the same forever."""
    digest = hashlib.sha256(f"{storefront}\x1f{order_id}\x1f{factory}".encode()).hexdigest()
    return f"fo_{digest[:32]}"


def shipment_push_key(factory_order_key: str, shipment_id: str) -> str:
    """The idempotency key for writing one parcel's tracking back to the storefront."""
    digest = hashlib.sha256(f"{factory_order_key}\x1f{shipment_id}".encode()).hexdigest()
    return f"sp_{digest[:32]}"


# --- state machines -------------------------------------------------------------------------------


class OrderState(StrEnum):
    RECEIVED = "received"
    HELD = "held"  # waits for a person: see attention_reason
    ROUTED = "routed"  # factory orders exist, not all placed yet
    PLACED = "placed"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"  # every line shipped; tracking pushes may still be pending
    COMPLETED = "completed"  # every line shipped and every parcel's tracking is on the storefront
    FAILED = "failed"  # a factory order or push is dead-lettered: see attention_reason
    CANCELLED = "cancelled"


class FactoryOrderState(StrEnum):
    PENDING = "pending"  # in the outbox, to be delivered
    PLACED = "placed"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    DEAD = "dead"  # dead letter: rejected or retries exhausted
    CANCELLED = "cancelled"


class CancelState(StrEnum):
    """An `order.cancelled` message to a factory (one per cancelled factory order)."""

    PENDING = "pending"  # in the outbox, to be delivered
    DONE = "done"  # the factory cancelled it (or never held it)
    REFUSED = "refused"  # the factory had already shipped: its parcels keep flowing back
    DEAD = "dead"  # rejected or retries exhausted


class PushState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


class AttentionReason(StrEnum):
    """Why an order needs a person. Every held or failed order carries one."""

    UNKNOWN_SKU = "unknown_sku"
    MISSING_SKU = "missing_sku"
    UNPAID = "unpaid"
    TEST_ORDER = "test_order"
    FACTORY_REJECTED = "factory_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    PUSH_REJECTED = "push_rejected"
    CANCEL_REJECTED = "cancel_rejected"  # the factory never confirmed (or refused) a storefront cancellation
    CHANGED_AFTER_PLACEMENT = "changed_after_placement"  # edited on the storefront after a factory got it
    SHIPPED_AFTER_CANCEL = "shipped_after_cancel"  # a parcel arrived for lines the factory had cancelled
    ALREADY_FULFILLED = "already_fulfilled"  # fulfilled on the storefront before relay routed it
    # A factory that is bought from (1688) rather than sent webhooks:
    ADDRESS_INVALID = "address_invalid"  # the factory cannot take the address (required parts missing)
    AWAITING_PAYMENT = "awaiting_payment"  # placed, but the reseller must pay it before it closes
    PAYMENT_EXPIRED = "payment_expired"  # the factory closed the order unpaid: never re-created silently
    REFUND_REQUIRED = "refund_required"  # cancelled on the storefront after the factory order was paid
    DUPLICATE_AT_FACTORY = "duplicate_at_factory"  # two live factory orders carry one idempotency key
    OPERATOR_HOLD = "operator_hold"  # held by a person (`relay hold`): stays held until `relay release`
    # Routing (issue 13):
    OUT_OF_STOCK = "out_of_stock"  # the factory is out of stock and no other factory makes those lines
    MARGIN_TOO_LOW = "margin_too_low"  # factory cost + shipping leaves less than the storefront's margin
    CURRENCY_MISMATCH = "currency_mismatch"  # a cost in a currency with no configured rate to the order's
    AWAITING_APPROVAL = "awaiting_approval"  # auto_place is off: a person releases each order
    ORDER_VALUE_CAP = "order_value_cap"  # worth more than the storefront's max_order_value
    ORDER_RATE_CAP = "order_rate_cap"  # beyond the storefront's max_orders_per_hour
    ROUTING_FAILED = "routing_failed"  # the router could not plan the order (its detail says why)
    # The tracking watchdog (not sticky: cleared once the parcels come, or by the watchdog's next pass):
    NO_TRACKING = "no_tracking"  # placed `no_tracking_after_days` ago and no parcel yet
    TRACKING_STALLED = "tracking_stalled"  # part shipped, no further parcel for `tracking_stalled_after_days`


STICKY_ATTENTION = frozenset(
    {
        AttentionReason.CANCEL_REJECTED,
        AttentionReason.CHANGED_AFTER_PLACEMENT,
        AttentionReason.SHIPPED_AFTER_CANCEL,
        AttentionReason.REFUND_REQUIRED,
        AttentionReason.DUPLICATE_AT_FACTORY,
    }
)
"""Flags on an order whose state moves on regardless: kept through later state changes until a person acts
(`set_order_state` keeps them; see queries.sql)."""


_O = OrderState
ORDER_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    _O.RECEIVED: frozenset({_O.ROUTED, _O.HELD, _O.CANCELLED}),
    _O.HELD: frozenset({_O.RECEIVED, _O.ROUTED, _O.CANCELLED}),
    _O.ROUTED: frozenset(
        {_O.PLACED, _O.PARTIALLY_SHIPPED, _O.SHIPPED, _O.FAILED, _O.CANCELLED, _O.RECEIVED}
    ),  # RECEIVED: edited before any factory order was sent, so it is planned again
    _O.PLACED: frozenset({_O.PARTIALLY_SHIPPED, _O.SHIPPED, _O.FAILED, _O.CANCELLED, _O.ROUTED}),
    # COMPLETED directly: the unshipped rest was cancelled and every parcel's tracking is pushed.
    _O.PARTIALLY_SHIPPED: frozenset({_O.SHIPPED, _O.COMPLETED, _O.FAILED}),
    _O.SHIPPED: frozenset({_O.COMPLETED, _O.FAILED}),
    _O.FAILED: frozenset(
        {_O.ROUTED, _O.PLACED, _O.PARTIALLY_SHIPPED, _O.SHIPPED, _O.COMPLETED, _O.HELD, _O.CANCELLED}
    ),
    _O.COMPLETED: frozenset(),
    _O.CANCELLED: frozenset(),
}

_F = FactoryOrderState
FACTORY_ORDER_TRANSITIONS: dict[FactoryOrderState, frozenset[FactoryOrderState]] = {
    # A shipment may arrive for an order we still think is pending (its 2xx was lost): it was placed.
    _F.PENDING: frozenset({_F.PLACED, _F.PARTIALLY_SHIPPED, _F.SHIPPED, _F.DEAD, _F.CANCELLED}),
    _F.PLACED: frozenset({_F.PARTIALLY_SHIPPED, _F.SHIPPED, _F.CANCELLED, _F.PENDING}),
    _F.PARTIALLY_SHIPPED: frozenset({_F.SHIPPED}),
    _F.SHIPPED: frozenset(),
    # A dead letter goes back to pending only by an operator's retry; a late shipment still counts.
    _F.DEAD: frozenset({_F.PENDING, _F.PARTIALLY_SHIPPED, _F.SHIPPED, _F.CANCELLED}),
    _F.CANCELLED: frozenset(),
}

_C = CancelState
CANCEL_TRANSITIONS: dict[CancelState, frozenset[CancelState]] = {
    _C.PENDING: frozenset({_C.DONE, _C.REFUSED, _C.DEAD}),
    _C.DONE: frozenset(),
    _C.REFUSED: frozenset(),
    _C.DEAD: frozenset(),
}

_P = PushState
PUSH_TRANSITIONS: dict[PushState, frozenset[PushState]] = {
    _P.PENDING: frozenset({_P.DONE, _P.DEAD}),
    _P.DEAD: frozenset({_P.PENDING}),
    _P.DONE: frozenset(),
}


def check_transition(
    table: dict[Any, frozenset[Any]], current: StrEnum, new: StrEnum, *, subject: str
) -> None:
    """Raise `IllegalTransition` unless `current -> new` is in `table` (staying put is always legal)."""
    if current == new:
        return
    if new not in table[current]:
        raise IllegalTransition(f"{subject}: {current.value} -> {new.value} is not allowed")


ATTENTION_STATES = frozenset({OrderState.HELD, OrderState.FAILED})
TERMINAL_ORDER_STATES = frozenset({OrderState.COMPLETED, OrderState.CANCELLED})


def derive_order_state(  # noqa: PLR0911 - a decision table reads best as early returns
    factory_states: list[FactoryOrderState], lines_total: int, lines_shipped: int, pushes: list[PushState]
) -> OrderState:
    """The state an order is in, given its factory orders, shipped lines and tracking pushes.

    A routed order's state is a function of its parts; the store recomputes it after every change
    and writes it through `check_transition`, so the order table can never disagree with its parts.
    """
    if any(s is FactoryOrderState.DEAD for s in factory_states) or any(p is PushState.DEAD for p in pushes):
        return OrderState.FAILED
    if factory_states and all(s is FactoryOrderState.CANCELLED for s in factory_states):
        return OrderState.CANCELLED
    if lines_total and lines_shipped >= lines_total:
        if all(p is PushState.DONE for p in pushes):
            return OrderState.COMPLETED
        return OrderState.SHIPPED
    if lines_shipped:
        return OrderState.PARTIALLY_SHIPPED
    live = [s for s in factory_states if s is not FactoryOrderState.CANCELLED]
    if live and all(s is not FactoryOrderState.PENDING for s in live):
        return OrderState.PLACED
    return OrderState.ROUTED
