"""Read-only views for operators and metrics: one order in full, order listings, counts."""

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
    FactoryOrderRecord,
    OrderEvent,
    OrderRecord,
    OrderSummary,
    OrderView,
    ShipmentRecord,
    Stats,
)


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


async def list_orders(tx: Transaction, state: str | None, limit: int) -> list[OrderSummary]:
    """The newest `limit` orders, in `state` when given."""
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
        )
        for r in await tx.fetch("list_orders", state=state, limit=limit)
    ]


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
