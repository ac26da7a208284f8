"""Orders: storefront pages in (ingest, cursor), routing decisions, cancellation, derived order state."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from relay.domain.models import (
    FACTORY_ORDER_TRANSITIONS,
    ORDER_TRANSITIONS,
    AttentionReason,
    FactoryOrderState,
    Malformed,
    Order,
    OrderState,
    PushState,
    check_transition,
    derive_order_state,
)
from relay.store.connector import Scalar, Transaction
from relay.store.records import IngestResult, RouteJob, RoutePlan
from relay.store.transitions import EventRow, event

_DERIVED_STATES = frozenset(
    {
        OrderState.ROUTED,
        OrderState.PLACED,
        OrderState.PARTIALLY_SHIPPED,
        OrderState.SHIPPED,
        OrderState.COMPLETED,
        OrderState.FAILED,
    }
)

# --- poll: cursors and ingest ------------------------------------------------------------------------


async def get_cursor(tx: Transaction, storefront: str) -> datetime | None:
    """The storefront's committed cursor."""
    row = await tx.fetch_one("get_cursor", storefront=storefront)
    return datetime.fromisoformat(row["cursor_iso"]) if row else None


async def ingest(
    tx: Transaction,
    storefront: str,
    orders: Sequence[Order],
    malformed: Sequence[Malformed],
    cursor: datetime | None,
    *,
    now: float,
) -> IngestResult:
    """Record one page: new orders, changes to known ones, quarantined records, and the cursor."""
    latest: dict[str, Order] = {}
    for order in orders:  # a page may repeat an order that changed mid-listing: keep the newest
        seen = latest.get(order.external_id)
        if seen is None or order.updated_at >= seen.updated_at:
            latest[order.external_id] = order
    new = updated = requeued = cancelled = 0
    existing = {
        row["external_id"]: row
        for row in await tx.fetch("orders_by_external_ids", storefront=storefront, external_ids=list(latest))
    }
    inserts: list[dict[str, Scalar]] = []
    lines: list[dict[str, Scalar]] = []
    new_events: list[dict[str, Scalar]] = []
    events: list[EventRow] = []
    for ext_id, order in latest.items():
        payload = order.model_dump_json()
        row = existing.get(ext_id)
        if row is None:
            new += 1
            inserts.append(
                {
                    "storefront": storefront,
                    "external_id": ext_id,
                    "number": order.number,
                    "source_updated_iso": order.updated_at.isoformat(),
                    "payload": payload,
                    "now": now,
                }
            )
            lines.extend(
                {
                    "storefront": storefront,
                    "external_id": ext_id,
                    "line_id": line.line_id,
                    "sku": line.sku,
                    "quantity": line.quantity,
                }
                for line in order.lines
            )
            new_events.append(
                {
                    "storefront": storefront,
                    "external_id": ext_id,
                    "at": now,
                    "kind": "received",
                    "from_state": None,
                    "to_state": OrderState.RECEIVED,
                    "detail": None,
                }
            )
            continue
        if datetime.fromisoformat(row["source_updated_iso"]) >= order.updated_at:
            continue
        updated += 1
        order_id: int = row["id"]
        state = OrderState(row["state"])
        before = Order.model_validate_json(row["payload"])
        await tx.execute(
            "update_order_payload",
            payload=payload,
            number=order.number,
            source_updated_iso=order.updated_at.isoformat(),
            now=now,
            order_id=order_id,
        )
        if state in (OrderState.RECEIVED, OrderState.HELD):
            # Not routed yet: take the new lines and let the router decide again.
            await replace_lines(tx, order_id, order)
            if state is OrderState.HELD:
                requeued += 1
                await set_order_state(tx, order_id, state, OrderState.RECEIVED, now)
                events.append(
                    event(order_id, now, "requeued", state, OrderState.RECEIVED, cause="storefront_updated")
                )
        elif (
            order.cancelled
            and not before.cancelled
            and state not in (OrderState.CANCELLED, OrderState.COMPLETED)
        ):
            cancelled += 1
            events.append(
                event(order_id, now, "cancel_requested", state, state, cause="storefront_cancelled")
            )
            await cancel_factory_orders(tx, order_id, now, events)
    if inserts:
        await tx.execute_many("insert_order", inserts)
        await tx.execute_many("insert_order_line", lines)
        await tx.execute_many("insert_event_by_external_id", new_events)
    if malformed:
        await tx.execute_many(
            "quarantine",
            [
                {
                    "storefront": storefront,
                    "external_id": m.external_id or "",
                    "reason": m.reason,
                    "raw": json.dumps(m.raw, default=str)[:65536],
                    "now": now,
                }
                for m in malformed
            ],
        )
    if events:
        await tx.execute_many("insert_event", events)
    if cursor is not None:
        await tx.execute("set_cursor", storefront=storefront, cursor_iso=cursor.isoformat(), now=now)
    return IngestResult(new, updated, requeued, cancelled, len(malformed))


async def replace_lines(tx: Transaction, order_id: int, order: Order) -> None:
    """Replace the unassigned lines of a not yet routed order with `order`'s."""
    await tx.execute("replace_order_lines_delete", order_id=order_id)
    await tx.execute_many(
        "insert_order_line_by_id",
        [
            {"order_id": order_id, "line_id": ln.line_id, "sku": ln.sku, "quantity": ln.quantity}
            for ln in order.lines
        ],
    )


async def cancel_factory_orders(tx: Transaction, order_id: int, now: float, events: list[EventRow]) -> None:
    """Cancel `order_id` at its factories.

    A factory order not yet placed is cancelled here and never sent. The factory is told
    (an `order.cancelled` row in the outbox) when it holds the order, or may: placed, or an
    earlier attempt's answer was lost, or an attempt is in flight right now (the message then
    waits for that attempt to finish). Shipped factory orders are left alone.
    """
    notices: list[dict[str, Scalar]] = []
    for row in await tx.fetch("factory_orders_to_cancel", order_id=order_id):
        fo_id: int = row["id"]
        state = FactoryOrderState(row["state"])
        if state in (FactoryOrderState.PENDING, FactoryOrderState.DEAD):
            check_transition(
                FACTORY_ORDER_TRANSITIONS,
                state,
                FactoryOrderState.CANCELLED,
                subject=f"factory order {fo_id}",
            )
            await tx.execute(
                "cancel_factory_order_locally", error="cancelled on the storefront", now=now, id=fo_id
            )
            lease_expires_at = row["lease_expires_at"]
            in_flight = lease_expires_at is not None and lease_expires_at > now
            if not (row["attempts"] or in_flight):
                continue
        elif state is not FactoryOrderState.PLACED:
            continue
        notices.append(
            {
                "factory_order_id": fo_id,
                "order_id": order_id,
                "factory": row["factory"],
                "key": f"{row['key']}.cancel",
                "now": now,
            }
        )
        events.append(event(order_id, now, "cancel_queued", factory=row["factory"]))
    if notices:
        await tx.execute_many("insert_cancellation", notices)
    await refresh_orders(tx, [order_id], now, events, cause="cancelled")


# --- route ---------------------------------------------------------------------------------------------


async def claim_orders_to_route(
    tx: Transaction, owner: str, now: float, *, lease_s: float, limit: int
) -> list[RouteJob]:
    """Lease received orders to `owner`."""
    rows = await tx.fetch(
        "claim_orders_to_route", owner=owner, lease_expires_at=now + lease_s, now=now, limit=limit
    )
    return [RouteJob(row["id"], row["storefront"], Order.model_validate_json(row["payload"])) for row in rows]


async def apply_routing(tx: Transaction, plans: Sequence[RoutePlan], now: float) -> int:
    """Write routing decisions. Plans for orders that changed state since the claim are skipped."""
    states = {
        row["id"]: OrderState(row["state"])
        for row in await tx.fetch("order_states", order_ids=[p.order_id for p in plans])
    }
    applied = 0
    fo_rows: list[dict[str, Scalar]] = []
    assign: list[dict[str, Scalar]] = []
    events: list[EventRow] = []
    updates: list[dict[str, Scalar]] = []
    for plan in plans:
        current = states.get(plan.order_id)
        if current is not OrderState.RECEIVED:
            continue
        applied += 1
        reason: AttentionReason | None = None
        if plan.cancel:
            target = OrderState.CANCELLED
        elif plan.hold is not None:
            target, reason = OrderState.HELD, plan.hold
        else:
            target = OrderState.ROUTED
        check_transition(ORDER_TRANSITIONS, current, target, subject=f"order {plan.order_id}")
        updates.append(
            {
                "state": target,
                "reason": reason,
                "detail": plan.detail if reason else None,
                "now": now,
                "order_id": plan.order_id,
            }
        )
        detail: dict[str, object] = {}
        if reason:
            detail = {"reason": reason.value, "detail": plan.detail}
        for fo in plan.factory_orders:
            fo_rows.append(
                {
                    "order_id": plan.order_id,
                    "factory": fo.factory,
                    "key": fo.key,
                    "payload": fo.model_dump_json(),
                    "now": now,
                }
            )
            assign.extend(
                {"key": fo.key, "order_id": plan.order_id, "line_id": line.line_id} for line in fo.lines
            )
        if plan.factory_orders:
            detail = {"factories": {fo.factory: fo.key for fo in plan.factory_orders}}
        events.append(event(plan.order_id, now, target.value, current, target, **detail))
    if fo_rows:
        await tx.execute_many("insert_factory_order", fo_rows)
        await tx.execute_many("assign_line", assign)
    if updates:
        await tx.execute_many("set_order_state", updates)
        await tx.execute_many("insert_event", events)
    return applied


# --- derived order state -------------------------------------------------------------------------------


async def refresh_orders(
    tx: Transaction, order_ids: Sequence[int], now: float, events: list[EventRow], *, cause: str
) -> None:
    """Recompute the state of routed orders from their parts and write any change with its event."""
    ids = sorted(set(order_ids))
    if not ids:
        return
    states = {row["id"]: OrderState(row["state"]) for row in await tx.fetch("order_states", order_ids=ids)}
    fos: dict[int, list[tuple[FactoryOrderState, str | None]]] = defaultdict(list)
    for row in await tx.fetch("factory_orders_of_orders", order_ids=ids):
        fos[row["order_id"]].append((FactoryOrderState(row["state"]), row["dead_reason"]))
    totals: dict[int, tuple[int, int]] = {
        row["order_id"]: (row["total"], row["shipped"])
        for row in await tx.fetch("line_totals_of_orders", order_ids=ids)
    }
    pushes: dict[int, list[tuple[PushState, str | None]]] = defaultdict(list)
    for row in await tx.fetch("push_states_of_orders", order_ids=ids):
        pushes[row["order_id"]].append((PushState(row["state"]), row["dead_reason"]))
    updates: list[dict[str, Scalar]] = []
    for order_id in ids:
        current = states[order_id]
        cancelling = cause == "cancelled" and current in (OrderState.RECEIVED, OrderState.HELD)
        if current not in _DERIVED_STATES and not cancelling:
            continue
        total, shipped = totals.get(order_id, (0, 0))
        target = derive_order_state(
            [s for s, _ in fos[order_id]], total, shipped, [s for s, _ in pushes[order_id]]
        )
        if cancelling:
            target = OrderState.CANCELLED
        if target is current:
            continue
        check_transition(ORDER_TRANSITIONS, current, target, subject=f"order {order_id}")
        reason = None
        if target is OrderState.FAILED:
            reasons = [r for _, r in fos[order_id] + pushes[order_id] if r]
            reason = reasons[0] if reasons else None
        updates.append({"state": target, "reason": reason, "detail": None, "now": now, "order_id": order_id})
        events.append(event(order_id, now, target.value, current, target, cause=cause, reason=reason))
    if updates:
        await tx.execute_many("set_order_state", updates)


async def set_order_state(
    tx: Transaction, order_id: int, current: OrderState, target: OrderState, now: float
) -> None:
    """Move one order from `current` to `target` (checked), clearing its lease."""
    check_transition(ORDER_TRANSITIONS, current, target, subject=f"order {order_id}")
    await tx.execute("set_order_state", state=target, reason=None, detail=None, now=now, order_id=order_id)
