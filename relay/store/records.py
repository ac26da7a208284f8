"""Typed records the store hands out and takes in: jobs and outcomes for the loops, views for operators.

All are frozen dataclasses. States are the domain's `StrEnum`s, so a record compares equal to the plain
strings an operator or a test writes (`view.order.state == "placed"`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    Malformed,
    Order,
    OrderState,
    PushState,
    ShipmentLine,
    ShipmentPush,
)
from relay.exceptions import scrub

# --- poll and route ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one `Store.ingest` page did: orders new, updated, put back to routing, cancelled, quarantined,
    and the routing plans applied in the same transaction (`routed`: new orders its `route` hook planned)."""

    new: int = 0
    updated: int = 0
    requeued: int = 0
    cancelled: int = 0
    quarantined: int = 0
    routed: tuple[RoutePlan, ...] = ()
    claimed: tuple[DeliveryJob, ...] = ()
    """Deliveries claimed for the forwarder in the same transaction (`Store.ingest(claim=...)`)."""
    unstorable: tuple[Malformed, ...] = ()
    """Orders the store quarantined itself (counted in `quarantined`): their text cannot be stored."""


@dataclass(frozen=True, slots=True)
class DeliveryClaim:
    """Claiming at ingest (`Store.ingest(claim=...)`): once its new orders are routed, the ingest claims due
    deliveries to the factories it routed them to, as the forwarder `owner`'s next pass would, under a
    lease of `lease_s`: at most `room[factory]` per factory and `total` in all (the forwarder's free
    room when it asked)."""

    owner: str
    lease_s: float
    room: Mapping[str, int]
    total: int


@dataclass(frozen=True, slots=True)
class PollerLease:
    """A poller's lease (`Store.acquire_poller_lease`, ADR 14): `name` (`storefront:<name>`,
    `factory:<name>`) is held by `owner` until `expires_at` (relay's clock) under fencing `token`, which
    grows each time a new owner takes it. A write fenced by it (`fence=`) is refused with `LeaseLost` once
    the token moved, and renews the lease to `now + lease_s`."""

    name: str
    owner: str
    token: int
    expires_at: float
    lease_s: float


@dataclass(frozen=True, slots=True)
class RouteJob:
    """A received order claimed for routing."""

    order_id: int
    storefront: str
    order: Order
    content_hash: str | None = None
    """The version claimed (`Order.content_hash()`); the plan carries it back to `apply_routing`."""
    guards_waived: bool = False
    """An operator released this version of the order: the routing guards (margin, approval, caps) let it
    through (`orders.guards_waived_hash`); the other checks still apply."""


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
    fallbacks: tuple[str, ...] = ()
    """Why lines went to a factory other than their first choice (e.g. "MUG-WHT: acme disabled -> bolt");
    written into the `routed` event."""


RouteHook = Callable[["RoutingSnapshot", Sequence[RouteJob]], Sequence[RoutePlan] | None]
"""Routing at ingest (`Store.ingest(route=...)`): called inside the ingest transaction with the routing
snapshot read in it and the page's new received orders; returns their plans, applied in the same
transaction, or None to leave them all to the router. Synchronous and pure: it runs wherever the store runs
the transaction (the SQLite writer's thread), so it must not log, await or touch the event loop."""


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
    status: int | None = None
    """The factory's HTTP status for a failed attempt, when it answered (history: `relay show`)."""
    response: str | None = None
    """The factory's answer to a failed attempt, scrubbed and truncated (`answer()`), for the history."""


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
    status: int | None = None
    """The storefront's HTTP status for a failed or throttled attempt, when it answered."""
    response: str | None = None
    """The storefront's answer to a failed attempt, scrubbed and truncated (`answer()`)."""


ANSWER_CHARS = 500
"""How much of a remote end's answer the history keeps per attempt."""


def answer(exc: BaseException) -> tuple[int | None, str | None]:
    """An adapter error's HTTP status and answer body for the history: the body scrubbed of credentials
    (`relay.exceptions.scrub`) and cut to `ANSWER_CHARS`. (None, None) when the remote end did not answer."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    text = scrub(str(body))[:ANSWER_CHARS] if body else None
    return (status if isinstance(status, int) else None), text


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


# --- committed state changes (`Store.observe`) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChange:
    """One committed order state change, from the history event that recorded it (`Store.observe`).

    `from_state` is None for a new order; `kind` is the event's kind (`received`, `routed`, `requeued`,
    `shipped`, ...); `detail` its JSON object (`reason`, `cause`, ...), plus the `factory` / `reference` /
    `tracking_number` / `carrier` of the order's last acceptance, parcel or push recorded in the same
    transaction (`OrderNote` for the others). `received_at` is when relay first
    recorded the order (its age at this change is `at - received_at`).
    """

    order_id: int
    storefront: str
    number: str
    from_state: str | None
    to_state: str
    kind: str
    at: float
    received_at: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OrderNote:
    """A factory's acceptance (`factory_accepted`), a parcel (`shipment_received`) or its tracking push
    (`tracking_pushed`) that no state change of its order carried in its transaction (`Store.observe`):
    the first of two factories accepting, a parcel or push that leaves the order's state as it was.
    `detail` holds the event's `factory`, `reference` (the factory's), `tracking_number`, `carrier`."""

    order_id: int
    storefront: str
    number: str
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


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
        """A JSON-ready dict (what `relay show --json` prints): events flattened to `{at, kind, from, to, ...}`."""
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


def _plain(record: Any) -> dict[str, Any]:
    """A flat record as a JSON-ready dict (enums are `StrEnum`s: they serialise as their value)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


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
    created_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return _plain(self)


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """The filters of `Store.list_orders`; each is optional and they combine (AND).

    `state`: an `OrderState` value (anything else is a `ValueError` naming the valid ones); `storefront`;
    `factory`: orders with a factory order at that factory; `reason`: the attention reason; `since`: orders
    changed (`updated_at`) at or after this epoch time.
    """

    state: str | None = None
    storefront: str | None = None
    factory: str | None = None
    reason: str | None = None
    since: float | None = None


@dataclass(frozen=True, slots=True)
class FactoryStatus:
    """A factory the database knows: paused or not (and why), its shipment cursor, its orders per state,
    and its circuit as the forwarder last recorded it (`failing_since` None: healthy)."""

    name: str
    disabled_at: float | None = None
    disabled_reason: str | None = None
    shipment_cursor: str | None = None
    orders: dict[str, int] = field(default_factory=dict)
    failing_since: float | None = None
    next_probe_at: float | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = _plain(self)
        out["orders"] = dict(self.orders)
        return out


@dataclass(frozen=True, slots=True)
class StorefrontStatus:
    """A storefront's polling: its cursor, its last successful poll, its last failed one and why.
    It is failing while `last_poll_error_at` is later than `last_poll_ok_at`."""

    name: str
    cursor: str | None = None
    last_poll_ok_at: float | None = None
    last_poll_error_at: float | None = None
    last_error: str | None = None

    @property
    def failing(self) -> bool:
        """Whether the last poll failed."""
        return self.last_poll_error_at is not None and (
            self.last_poll_ok_at is None or self.last_poll_error_at > self.last_poll_ok_at
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (with `failing`)."""
        return {**_plain(self), "failing": self.failing}


@dataclass(frozen=True, slots=True)
class AttentionItem:
    """An order that needs a person: held, failed, or flagged. `since` is the order's last change."""

    order_id: int
    storefront: str
    number: str
    state: OrderState
    reason: AttentionReason
    detail: str | None
    since: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return _plain(self)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message relay gave up on: `kind` is `delivery` (an order to a factory), `cancel` (an
    `order.cancelled` to a factory) or `push` (tracking to a storefront); `destination` is the factory or
    storefront. `since` is when it died (its row's last change)."""

    kind: str
    order_id: int
    number: str
    destination: str
    attempts: int
    last_error: str | None
    since: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return _plain(self)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What `relay status` and the status page show (`Store.status`).

    `orders_by_state` has every `OrderState`, zeros included. `attention` and `dead_letters` are the newest
    (at most `Store.status`'s `limit` each). `oldest_pending_age_s`: age of the oldest work relay owes (a
    received order not routed yet, a message to a factory or a tracking push not sent yet), None when nothing
    is owed. `placed_per_minute` / `pushed_per_minute`: (minute start, epoch seconds; count) for each minute
    of the window with at least one factory order placed / tracking push done, oldest first.
    """

    now: float
    storefronts: list[StorefrontStatus] = field(default_factory=list)
    factories: list[FactoryStatus] = field(default_factory=list)
    orders_by_state: dict[str, int] = field(default_factory=dict)
    factory_orders_by_state: dict[str, int] = field(default_factory=dict)
    pushes_by_state: dict[str, int] = field(default_factory=dict)
    attention: list[AttentionItem] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    oldest_pending_age_s: float | None = None
    placed_per_minute: list[tuple[int, int]] = field(default_factory=list)
    pushed_per_minute: list[tuple[int, int]] = field(default_factory=list)
    quarantined: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what `relay status --json` prints)."""
        return {
            "now": self.now,
            "storefronts": [s.to_json() for s in self.storefronts],
            "factories": [f.to_json() for f in self.factories],
            "orders_by_state": dict(self.orders_by_state),
            "factory_orders_by_state": dict(self.factory_orders_by_state),
            "pushes_by_state": dict(self.pushes_by_state),
            "attention": [a.to_json() for a in self.attention],
            "dead_letters": [d.to_json() for d in self.dead_letters],
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "placed_per_minute": [list(p) for p in self.placed_per_minute],
            "pushed_per_minute": [list(p) for p in self.pushed_per_minute],
            "quarantined": self.quarantined,
        }


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts for metrics and `relay demo`: orders per state, orders needing a person per reason,
    outbox rows per state, quarantined storefront records."""

    orders: dict[str, int] = field(default_factory=dict)
    attention: dict[str, int] = field(default_factory=dict)
    factory_orders: dict[str, int] = field(default_factory=dict)
    storefront_pushes: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "orders": dict(self.orders),
            "attention": dict(self.attention),
            "factory_orders": dict(self.factory_orders),
            "storefront_pushes": dict(self.storefront_pushes),
            "quarantined": self.quarantined,
        }


# --- the SKU catalogue -----------------------------------------------------------------------------------

SKU_FROM_CONFIG = "config"
SKU_FROM_IMPORT = "import"


@dataclass(frozen=True, slots=True)
class SkuRecord:
    """One catalogue row: a storefront SKU (or variant id) made by `factory`.

    `storefront` '' applies to every storefront; rows for one storefront replace those for the same SKU
    there. `priority`: lower is tried first, the next one is the fallback. `factory_sku` is the factory's
    own SKU (1688: `offerId:specId`); `unit_cost` in `currency` is what one unit costs at the factory (the
    margin guard). `source` is `config` (seeded from `routing.skus`) or `import` (`relay skus import`).
    """

    sku: str
    factory: str
    storefront: str = ""
    factory_sku: str | None = None
    unit_cost: Decimal | None = None
    currency: str | None = None
    priority: int = 0
    active: bool = True
    source: str = SKU_FROM_IMPORT

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a row: (storefront, sku, factory)."""
        return (self.storefront, self.sku, self.factory)

    def same_content(self, other: SkuRecord) -> bool:
        """Whether both rows route alike (`source` aside)."""
        return (self.factory_sku, self.unit_cost, self.currency, self.priority, self.active) == (
            other.factory_sku,
            other.unit_cost,
            other.currency,
            other.priority,
            other.active,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (`relay skus list --json`): the cost as an exact string."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["unit_cost"] = str(self.unit_cost) if self.unit_cost is not None else None
        return out


@dataclass(frozen=True, slots=True)
class SkuDiff:
    """What an import (or the config seed) changes in the catalogue: rows added, changed (before, after)
    and removed. `applied` is False for a dry run."""

    added: tuple[SkuRecord, ...] = ()
    changed: tuple[tuple[SkuRecord, SkuRecord], ...] = ()
    removed: tuple[SkuRecord, ...] = ()
    applied: bool = False

    @property
    def empty(self) -> bool:
        """Nothing to change."""
        return not (self.added or self.changed or self.removed)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "added": [r.to_json() for r in self.added],
            "changed": [{"before": a.to_json(), "after": b.to_json()} for a, b in self.changed],
            "removed": [r.to_json() for r in self.removed],
            "applied": self.applied,
        }


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """What the router reads every pass: the catalogue's version number (its copy is reloaded only when it
    moved) and the factories paused in the store (skipped for a lower-priority one when there is one)."""

    catalogue_version: int
    disabled_factories: frozenset[str] = frozenset()


# --- backup --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupResult:
    """A finished `Store.backup`: where the copy is, its size, and its schema version (checked: ok)."""

    path: str
    size_bytes: int
    schema_version: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"path": self.path, "size_bytes": self.size_bytes, "schema_version": self.schema_version}
