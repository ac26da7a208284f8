"""Read-only views for operators and metrics: one order in full, order listings and references, counts,
the status report."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from relay.domain.models import (
    AttentionReason,
    CancelState,
    FactoryOrderState,
    Order,
    OrderState,
    PushState,
    ShipmentLine,
)
from relay.store.connector import Row, Transaction
from relay.store.records import (
    AttentionItem,
    DeadLetter,
    FactoryOrderRecord,
    OrderEvent,
    OrderQuery,
    OrderRecord,
    OrderSummary,
    OrderView,
    ShipmentRecord,
    Stats,
    StatusReport,
    StorefrontStatus,
)
from relay.store.transitions.factories import list_factories


def _reason(value: str | None) -> AttentionReason | None:
    return AttentionReason(value) if value else None


async def find_order_id(tx: Transaction, storefront: str, external_id: str) -> int | None:
    """Relay's id for a storefront's order, or None."""
    row = await tx.fetch_one("find_order_by_external", storefront=storefront, external_id=external_id)
    return row["id"] if row else None


async def find_order(tx: Transaction, order_id: int) -> OrderView | None:
    """One order with its factory orders, parcels (and their pushes) and history, or None."""
    r = await tx.fetch_one("find_order", order_id=order_id)
    if r is None:
        return None
    fos = await tx.fetch("factory_orders_of_order", order_id=order_id)
    ships = await tx.fetch("shipments_of_order", order_id=order_id)
    events = await tx.fetch("events_of_order", order_id=order_id)
    order = OrderRecord(
        id=r["id"],
        storefront=r["storefront"],
        external_id=r["external_id"],
        number=r["number"],
        state=OrderState(r["state"]),
        attention_reason=_reason(r["attention_reason"]),
        attention_detail=r["attention_detail"],
        payload=Order.model_validate_json(r["payload"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )
    return OrderView(
        order=order,
        factory_orders=tuple(_factory_order(f) for f in fos),
        shipments=tuple(_shipment(s) for s in ships),
        events=tuple(
            OrderEvent(
                e["at"],
                e["kind"],
                e["from_state"],
                e["to_state"],
                json.loads(e["detail"]) if e["detail"] else {},
            )
            for e in events
        ),
    )


def _factory_order(f: Row) -> FactoryOrderRecord:
    return FactoryOrderRecord(
        id=f["id"],
        factory=f["factory"],
        key=f["key"],
        state=FactoryOrderState(f["state"]),
        attempts=f["attempts"],
        next_attempt_at=f["next_attempt_at"],
        last_error=f["last_error"],
        dead_reason=_reason(f["dead_reason"]),
        reference=f["reference"],
        cancel_state=CancelState(f["cancel_state"]) if f["cancel_state"] else None,
        amount=Decimal(f["amount"]) if f["amount"] is not None else None,
        currency=f["currency"],
        pay_deadline=datetime.fromisoformat(f["pay_deadline_iso"]) if f["pay_deadline_iso"] else None,
        attention=_reason(f["attention"]),
    )


def _shipment(s: Row) -> ShipmentRecord:
    return ShipmentRecord(
        id=s["id"],
        factory=s["factory"],
        shipment_id=s["shipment_id"],
        carrier=s["carrier"],
        tracking_number=s["tracking_number"],
        tracking_url=s["tracking_url"],
        lines=tuple(ShipmentLine.model_validate(line) for line in json.loads(s["lines"])),
        received_at=s["received_at"],
        push_state=PushState(s["push_state"]) if s["push_state"] else None,
        push_attempts=s["push_attempts"],
        push_error=s["push_error"],
        push_reference=s["push_reference"],
    )


_LIST_QUERIES = (
    ("state", "list_orders_by_state"),
    ("reason", "list_orders_by_reason"),
    ("factory", "list_orders_by_factory"),
    ("storefront", "list_orders_by_storefront"),
)


def check_state(state: str) -> OrderState:
    """`state` as an `OrderState`; a `ValueError` naming the valid states otherwise."""
    try:
        return OrderState(state)
    except ValueError:
        valid = ", ".join(s.value for s in OrderState)
        raise ValueError(f"unknown order state {state!r}; valid states: {valid}") from None


async def list_orders(tx: Transaction, query: OrderQuery, limit: int) -> list[OrderSummary]:
    """The newest `limit` orders matching every filter of `query` (see `OrderQuery`). The first filter
    given of state, reason, factory, storefront drives the query through its index."""
    if query.state is not None:
        check_state(query.state)
    if query.reason is not None:
        try:
            AttentionReason(query.reason)
        except ValueError:
            valid = ", ".join(r.value for r in AttentionReason)
            raise ValueError(f"unknown attention reason {query.reason!r}; valid reasons: {valid}") from None
    name = next((q for f, q in _LIST_QUERIES if getattr(query, f) is not None), "list_orders_all")
    rows = await tx.fetch(
        name,
        state=query.state,
        storefront=query.storefront,
        factory=query.factory,
        reason=query.reason,
        since=query.since,
        limit=max(0, limit),
    )
    return [
        OrderSummary(
            id=r["id"],
            storefront=r["storefront"],
            external_id=r["external_id"],
            number=r["number"],
            state=OrderState(r["state"]),
            attention_reason=_reason(r["attention_reason"]),
            attention_detail=r["attention_detail"],
            updated_at=r["updated_at"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def resolve_order(tx: Transaction, ref: str) -> list[int]:
    """Relay's ids for an operator's reference: `storefront:external_id`, `#1042` (the shop's order number,
    with or without the `#`), or digits (relay's id, and any order whose number is those digits)."""
    ref = ref.strip()
    if not ref:
        return []
    if ":" in ref:
        storefront, _, external_id = ref.partition(":")
        found = await find_order_id(tx, storefront, external_id)
        return [found] if found is not None else []
    bare = ref.removeprefix("#")
    ids: set[int] = set()
    if ref.isdigit() and (row := await tx.fetch_one("order_exists", order_id=int(ref))):
        ids.add(row["id"])
    if bare:
        ids.update(r["id"] for r in await tx.fetch("orders_by_number", numbers=[bare, f"#{bare}"]))
    return sorted(ids)


async def status(tx: Transaction, now: float, *, hours: float, limit: int) -> StatusReport:
    """See `Store.status`: every query is indexed and bounded (the chart by its window, lists by `limit`)."""
    storefronts = [
        StorefrontStatus(
            r["name"], r["cursor_iso"], r["last_poll_ok_at"], r["last_poll_error_at"], r["last_error"]
        )
        for r in await tx.fetch("storefront_statuses")
    ]
    factories = await list_factories(tx)
    orders = {state.value: 0 for state in OrderState}
    for r in await tx.fetch("order_state_counts"):
        orders[r["state"]] = r["count"]
    boxes: dict[str, dict[str, int]] = defaultdict(dict)
    for r in await tx.fetch("outbox_counts"):
        boxes[r["outbox"]][r["state"]] = r["count"]
    attention = [
        AttentionItem(
            r["id"],
            r["storefront"],
            r["number"],
            OrderState(r["state"]),
            AttentionReason(r["attention_reason"]),
            r["attention_detail"],
            r["updated_at"],
        )
        for r in await tx.fetch("attention_orders", limit=limit)
    ]
    dead = [
        DeadLetter(
            r["kind"],
            r["order_id"],
            r["number"],
            r["destination"],
            r["attempts"],
            r["last_error"],
            r["since"],
        )
        for r in await tx.fetch("dead_letters", limit=limit)
    ]
    oldest = await tx.fetch_one("oldest_pending")
    since = now - hours * 3600

    async def per_minute(kind: str) -> list[tuple[int, int]]:
        rows = await tx.fetch("events_per_minute", kind=kind, since=since, now=now)
        return [(int(r["minute"]), int(r["count"])) for r in rows]

    quarantined = await tx.fetch_one("quarantine_count")
    return StatusReport(
        now=now,
        storefronts=storefronts,
        factories=factories,
        orders_by_state=orders,
        factory_orders_by_state={s.value: 0 for s in FactoryOrderState} | boxes.get("factory_orders", {}),
        pushes_by_state={s.value: 0 for s in PushState} | boxes.get("storefront_pushes", {}),
        attention=attention,
        dead_letters=dead,
        oldest_pending_age_s=max(0.0, now - oldest["oldest"])
        if oldest and oldest["oldest"] is not None
        else None,
        placed_per_minute=await per_minute("factory_accepted"),
        pushed_per_minute=await per_minute("tracking_pushed"),
        quarantined=quarantined["count"] if quarantined else 0,
    )


async def stats(tx: Transaction) -> Stats:
    """Counts per order state (with attention reasons), per outbox state, and quarantined records."""
    orders = await tx.fetch("order_counts")
    outbox = await tx.fetch("outbox_counts")
    quarantined = await tx.fetch_one("quarantine_count")
    by_state: dict[str, int] = defaultdict(int)
    attention: dict[str, int] = defaultdict(int)
    for r in orders:
        by_state[r["state"]] += r["count"]
        if r["attention_reason"]:
            attention[r["attention_reason"]] += r["count"]
    boxes: dict[str, dict[str, int]] = defaultdict(dict)
    for r in outbox:
        boxes[r["outbox"]][r["state"]] = r["count"]
    return Stats(
        orders=dict(by_state),
        attention=dict(attention),
        factory_orders=boxes.get("factory_orders", {}),
        storefront_pushes=boxes.get("storefront_pushes", {}),
        quarantined=quarantined["count"] if quarantined else 0,
    )
