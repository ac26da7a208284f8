"""Orders: storefront pages in (ingest, cursor), routing decisions, cancellation, derived order state."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from relay.domain.models import (
    FACTORY_ORDER_TRANSITIONS,
    ORDER_TRANSITIONS,
    TERMINAL_ORDER_STATES,
    AttentionReason,
    FactoryOrder,
    FactoryOrderState,
    Malformed,
    Order,
    OrderState,
    PushState,
    check_transition,
    derive_order_state,
)
from relay.store import wakeups
from relay.store.connector import Row, Scalar, Transaction
from relay.store.records import IngestResult, RouteHook, RouteJob, RoutePlan, RoutingSnapshot
from relay.store.transitions import EventRow, event, member_of

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

# `OrderState(value)` and the others for the states read in the per-row loops, as dict lookups.
order_state = member_of(OrderState)
factory_order_state = member_of(FactoryOrderState)
push_state = member_of(PushState)

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
    route: RouteHook | None = None,
) -> IngestResult:
    """Record one page: new orders, changes to known ones, quarantined records, and the cursor; with
    `route`, the new received orders are routed in the same transaction (`Store.ingest`, `_route_new`).

    A version of a known order is applied when its content differs from the stored one
    (`Order.content_hash()`) and its `updated_at` is not older: storefronts stamp whole seconds, so a
    payment or a cancellation in the same second as the stored version is a new version too. Within one
    second a version never undoes a one-way flag (paid, cancelled, fulfilled): a stale replica's copy of the
    same second cannot take a payment or a cancellation back.
    """
    latest: dict[str, Order] = {}
    for order in orders:  # a page may repeat an order that changed mid-listing: keep the newest
        seen = latest.get(order.external_id)
        if seen is None or _newer(order, seen):
            latest[order.external_id] = order
    stored, unstorable = _as_text(latest)
    malformed = [*malformed, *unstorable]
    new = updated = requeued = cancelled = 0
    existing = {
        row["external_id"]: row
        for row in await tx.fetch("orders_by_external_ids", storefront=storefront, external_ids=list(stored))
    }
    inserts: list[dict[str, Scalar]] = []
    lines: list[dict[str, Scalar]] = []
    new_events: list[dict[str, Scalar]] = []
    events: list[EventRow] = []
    versions: list[dict[str, Scalar]] = []  # new versions of known orders (update_order_payload)
    received: dict[str, tuple[Order, str]] = {}  # new orders to route: external id -> (order, version)
    for ext_id, (order, (payload, content_hash)) in stored.items():
        row = existing.get(ext_id)
        if row is None:
            new += 1
            # Fulfilled on the storefront before relay ever saw it (history, or fulfilled by hand): recorded
            # as completed, never routed. Nothing is owed to anyone, so it needs no person either.
            initial = OrderState.COMPLETED if order.fulfilled and not order.cancelled else OrderState.RECEIVED
            if initial is OrderState.RECEIVED:
                received[ext_id] = (order, content_hash)
            inserts.append(
                {
                    "storefront": storefront,
                    "external_id": ext_id,
                    "number": order.number,
                    "state": initial,
                    "source_updated_iso": order.updated_at.isoformat(),
                    "payload": payload,
                    "content_hash": content_hash,
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
                    "kind": "received" if initial is OrderState.RECEIVED else "already_fulfilled",
                    "from_state": None,
                    "to_state": initial,
                    "detail": None,
                }
            )
            continue
        counts = await _apply_version(
            tx, row, order, now, events, version=(payload, content_hash), versions=versions
        )
        updated, requeued, cancelled = updated + counts[0], requeued + counts[1], cancelled + counts[2]
    await tx.execute_many("update_order_payload", versions)
    routed: tuple[RoutePlan, ...] = ()
    if inserts:
        await tx.execute_many("insert_order", inserts)
        await tx.execute_many("insert_order_line", lines)
        await tx.execute_many("insert_event_by_external_id", new_events)
        if received and route is not None:
            routed = await _route_new(tx, storefront, received, route, now)
        if len(routed) < len(received):
            tx.notify(wakeups.ROUTE)
    if malformed:
        await tx.execute_many(
            "quarantine",
            [
                {
                    "storefront": storefront,
                    "external_id": _storable(m.external_id or ""),
                    "reason": _storable(m.reason),
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
    return IngestResult(
        new, updated, requeued, cancelled, len(malformed), routed, unstorable=tuple(unstorable)
    )


UNSTORABLE_TEXT = "text UTF-8 cannot hold (a lone surrogate)"
"""The quarantine reason of an order whose text no database can store (`ingest`)."""


def _as_text(orders: dict[str, Order]) -> tuple[dict[str, tuple[Order, tuple[str, str]]], list[Malformed]]:
    """Each order with its `payload_and_hash()`, and as `Malformed` those whose text UTF-8 cannot hold: a
    lone surrogate, which a JSON parser reads from a `\\ud800` escape. The database would refuse the whole
    page for it, and the poller would meet that page again on every pass: it is quarantined instead."""
    stored: dict[str, tuple[Order, tuple[str, str]]] = {}
    unstorable: list[Malformed] = []
    for ext_id, order in orders.items():
        try:
            stored[ext_id] = (order, order.payload_and_hash())
        except ValueError:  # pydantic's serialisation error wraps the UnicodeEncodeError
            unstorable.append(Malformed(external_id=ext_id, reason=UNSTORABLE_TEXT, raw=order.model_dump()))
    return stored, unstorable


def _storable(text: str) -> str:
    """`text` as UTF-8 can hold it: a lone surrogate becomes its `\\ud800` escape (quarantine rows only)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def _route_new(
    tx: Transaction, storefront: str, received: dict[str, tuple[Order, str]], route: RouteHook, now: float
) -> tuple[RoutePlan, ...]:
    """Routing at ingest: plan the page's new received orders with `route` and apply the plans, as the
    router's claim and `apply_routing` would, within the ingest's transaction. Returns the plans applied:
    none when the hook declined (the router then routes the orders, as before)."""
    ids = {
        row["external_id"]: row["id"]
        for row in await tx.fetch(
            "order_refs_by_external_ids", storefront=storefront, external_ids=list(received)
        )
    }
    jobs = [
        RouteJob(ids[ext_id], storefront, order, version) for ext_id, (order, version) in received.items()
    ]
    snapshot = await routing_snapshot(tx)
    try:
        plans = route(snapshot, jobs)
    except Exception:  # a failing hook declines: the router plans these orders (and says what failed)
        return ()
    if not plans:
        return ()
    applied = await apply_routing(tx, plans, now)  # all of them: new orders of this very transaction
    return tuple(plans) if applied == len(plans) else ()


async def _apply_version(  # noqa: PLR0911 - one early return per kind of version, like a decision table
    tx: Transaction,
    row: Row,
    order: Order,
    now: float,
    events: list[EventRow],
    *,
    version: tuple[str, str],
    versions: list[dict[str, Scalar]],
) -> tuple[int, int, int]:
    """Apply one listed version of a known order (see `ingest`), `version` its `Order.payload_and_hash()`:
    its payload joins `versions` (written with the page's others; nothing here reads it back). Returns
    (updated, requeued, cancelled)."""
    stored_at = datetime.fromisoformat(row["source_updated_iso"])
    if order.updated_at < stored_at:
        return (0, 0, 0)  # an older version, listed late
    payload, content_hash = version
    stored_hash = row["content_hash"] or Order.model_validate_json(row["payload"]).content_hash()
    if content_hash == stored_hash:  # the stored version is not parsed: most listed versions are known
        if order.updated_at > stored_at:  # the same content, stamped later: keep the newest stamp
            await tx.execute(
                "set_order_stamp", source_updated_iso=order.updated_at.isoformat(), order_id=row["id"]
            )
        return (0, 0, 0)
    before = Order.model_validate_json(row["payload"])
    if order.updated_at == stored_at and _undoes_a_flag(before, order):
        return (0, 0, 0)
    order_id: int = row["id"]
    state = OrderState(row["state"])
    versions.append(
        {
            "payload": payload,
            "number": order.number,
            "source_updated_iso": order.updated_at.isoformat(),
            "content_hash": content_hash,
            "now": now,
            "order_id": order_id,
        }
    )
    if state in (OrderState.RECEIVED, OrderState.HELD):
        # Not routed yet: take the new lines and let the router decide again.
        await replace_lines(tx, order_id, order)
        operator_hold = row["attention_reason"] == AttentionReason.OPERATOR_HOLD and not order.cancelled
        if state is OrderState.HELD and not operator_hold:  # a person's hold lasts until they release it
            await set_order_state(tx, order_id, state, OrderState.RECEIVED, now)
            events.append(
                event(order_id, now, "requeued", state, OrderState.RECEIVED, cause="storefront_updated")
            )
            return (1, 1, 0)
        return (1, 0, 0)
    if order.cancelled and not before.cancelled and state not in (OrderState.CANCELLED, OrderState.COMPLETED):
        events.append(event(order_id, now, "cancel_requested", state, state, cause="storefront_cancelled"))
        await cancel_factory_orders(tx, order_id, now, events)
        return (1, 0, 1)
    if state in _DERIVED_STATES and not order.cancelled:
        replanned = await _changed_after_routing(tx, order_id, state, before, order, now=now, events=events)
        return (1, replanned, 0)
    return (1, 0, 0)


def _newer(order: Order, than: Order) -> bool:
    """Whether `order` supersedes `than` (two copies of one order on one page)."""
    if order.updated_at != than.updated_at:
        return order.updated_at > than.updated_at
    return not _undoes_a_flag(than, order)


def _undoes_a_flag(before: Order, after: Order) -> bool:
    """A version that takes back a one-way flag: only believed with a newer `updated_at`."""
    return (
        (before.paid and not after.paid)
        or (before.cancelled and not after.cancelled)
        or (before.fulfilled and not after.fulfilled)
    )


def order_changes(before: Order, after: Order) -> list[str]:
    """What changed between two versions of an order, in the fields a factory order carries."""
    changes: list[str] = []
    if before.shipping_address != after.shipping_address:
        fields = [
            name
            for name in type(before.shipping_address).model_fields
            if getattr(before.shipping_address, name) != getattr(after.shipping_address, name)
        ]
        changes.append(f"shipping address ({', '.join(fields)})")
    if before.email != after.email:
        changes.append("email")
    old = {line.line_id: line for line in before.lines}
    new = {line.line_id: line for line in after.lines}
    added = [lid for lid in new if lid not in old]
    removed = [lid for lid in old if lid not in new]
    if added:
        changes.append(f"lines added: {', '.join(added)}")
    if removed:
        changes.append(f"lines removed: {', '.join(removed)}")
    for lid in old.keys() & new.keys():
        a, b = old[lid], new[lid]
        if a.quantity != b.quantity:
            changes.append(f"line {lid} quantity {a.quantity} -> {b.quantity}")
        for name in ("sku", "variant_id", "properties"):
            if getattr(a, name) != getattr(b, name):
                changes.append(f"line {lid} {name}")
    return sorted(changes)


async def _changed_after_routing(
    tx: Transaction,
    order_id: int,
    state: OrderState,
    before: Order,
    order: Order,
    *,
    now: float,
    events: list[EventRow],
) -> int:
    """A routed order changed on the storefront (not a cancellation). Never silent: returns 1 if the order
    was put back to routing.

    If none of its factory orders was ever claimed (none can have reached a factory), they are dropped and
    the order is planned again from the new version. Otherwise the order is flagged
    `changed_after_placement`, with an event naming what changed: the factory keeps what it was sent.
    """
    changes = order_changes(before, order)
    if not changes:
        return 0  # e.g. payment status, tags or the total: nothing a factory order carries
    fos = await tx.fetch("factory_orders_for_replan", order_id=order_id)
    if not fos:
        return 0  # never routed to a factory (recorded as already fulfilled): nobody to tell
    never_sent = all(
        fo["state"] == FactoryOrderState.PENDING
        and not fo["claimed"]
        and not fo["attempts"]
        and fo["lease_owner"] is None
        and fo["lease_expires_at"] is None
        for fo in fos
    )
    if state is OrderState.ROUTED and fos and never_sent:
        await tx.execute("unassign_order_lines", order_id=order_id)
        await tx.execute("delete_factory_orders_of_order", order_id=order_id)
        await replace_lines(tx, order_id, order)
        await set_order_state(tx, order_id, state, OrderState.RECEIVED, now)
        events.append(
            event(
                order_id,
                now,
                "replanned",
                state,
                OrderState.RECEIVED,
                cause="storefront_updated",
                changes=changes,
            )
        )
        return 1
    detail = "changed on the storefront after a factory got it: " + "; ".join(changes)
    await tx.execute(
        "flag_order",
        reason=AttentionReason.CHANGED_AFTER_PLACEMENT,
        detail=detail[:1000],
        now=now,
        order_id=order_id,
    )
    events.append(event(order_id, now, "changed_after_placement", changes=changes))
    return 0


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


async def cancel_factory_orders(
    tx: Transaction,
    order_id: int,
    now: float,
    events: list[EventRow],
    *,
    why: str = "cancelled on the storefront",
) -> None:
    """Cancel `order_id` at its factories (`why` is kept as the cancelled factory orders' last error).

    A factory order not yet placed is cancelled here and never sent. The factory is told
    (an `order.cancelled` row in the outbox) when it holds the order, or may: placed, or an
    earlier attempt's answer was lost, or a delivery was ever claimed (a process killed mid-send
    records no attempt), or an attempt is in flight right now (the message then
    waits for that attempt to finish), or partially shipped (the message then names the unshipped
    rest). Shipped factory orders are left alone. The message's factory order lists exactly the lines
    it cancels, with the quantities not yet shipped.
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
            await tx.execute("cancel_factory_order_locally", error=why, now=now, id=fo_id)
            lease_expires_at = row["lease_expires_at"]
            in_flight = lease_expires_at is not None and lease_expires_at > now
            # Claimed once, it may have reached the factory even with no attempt recorded: a process
            # killed mid-send records nothing, and its lease is freed when the daemon restarts.
            if not (row["attempts"] or row["claimed"] or in_flight):
                continue
        elif state not in (FactoryOrderState.PLACED, FactoryOrderState.PARTIALLY_SHIPPED):
            continue
        sent = FactoryOrder.model_validate_json(row["payload"])
        rest = await _unshipped_rest(tx, fo_id, sent)
        if not rest.lines:
            continue
        notices.append(
            {
                "factory_order_id": fo_id,
                "order_id": order_id,
                "factory": row["factory"],
                "key": f"{row['key']}.cancel",
                "payload": rest.model_dump_json(),
                "now": now,
            }
        )
        events.append(
            event(
                order_id,
                now,
                "cancel_queued",
                factory=row["factory"],
                lines={line.line_id: line.quantity for line in rest.lines},
            )
        )
    if notices:
        await tx.execute_many("insert_cancellation", notices)
        for notice in notices:
            tx.notify(wakeups.forward(str(notice["factory"])))
    await refresh_orders(tx, [order_id], now, events, cause="cancelled")


async def _unshipped_rest(tx: Transaction, fo_id: int, sent: FactoryOrder) -> FactoryOrder:
    """`sent` restricted to its lines not (fully) shipped, each with the quantity still to ship."""
    left = {
        row["line_id"]: row["quantity"] - row["cancelled_quantity"] - row["shipped_quantity"]
        for row in await tx.fetch("lines_of_factory_order", factory_order_id=fo_id)
    }
    lines = tuple(
        line.model_copy(update={"quantity": left[line.line_id]})
        for line in sent.lines
        if left.get(line.line_id, 0) > 0
    )
    return sent.model_copy(update={"lines": lines})


async def cancel_unshipped_rest(
    tx: Transaction, fo_id: int, order_id: int, now: float, events: list[EventRow], *, factory: str
) -> None:
    """The factory confirmed the cancellation of a partially shipped factory order: the unshipped rest of
    its lines no longer has to ship, so the factory order is shipped (all it will ever ship has left)."""
    check_transition(
        FACTORY_ORDER_TRANSITIONS,
        FactoryOrderState.PARTIALLY_SHIPPED,
        FactoryOrderState.SHIPPED,
        subject=f"factory order {fo_id}",
    )
    await tx.execute("cancel_unshipped_rest", factory_order_id=fo_id)
    await tx.execute("set_factory_order_shipped", state=FactoryOrderState.SHIPPED, now=now, id=fo_id)
    events.append(event(order_id, now, "unshipped_rest_cancelled", factory=factory))


# --- route ---------------------------------------------------------------------------------------------


async def routing_snapshot(tx: Transaction) -> RoutingSnapshot:
    """The catalogue's version and the disabled factories, in one tiny read."""
    row = await tx.fetch_one("routing_snapshot")
    if row is None:  # cannot happen: the query is a single row of subselects
        return RoutingSnapshot(0)
    return RoutingSnapshot(int(row["version"] or 0), frozenset(json.loads(row["disabled"] or "[]")))


async def claim_orders_to_route(
    tx: Transaction, owner: str, now: float, *, lease_s: float, limit: int
) -> list[RouteJob]:
    """Lease received orders to `owner`."""
    rows = await tx.fetch(
        "claim_orders_to_route", owner=owner, lease_expires_at=now + lease_s, now=now, limit=limit
    )
    jobs = []
    for row in rows:
        order = Order.model_validate_json(row["payload"])
        version = row["content_hash"] or order.content_hash()
        jobs.append(
            RouteJob(
                row["id"],
                row["storefront"],
                order,
                version,
                guards_waived=row["guards_waived_hash"] == version,
            )
        )
    return jobs


async def _states_and_versions(
    tx: Transaction, order_ids: list[int]
) -> tuple[dict[int, OrderState], dict[int, str]]:
    """Each order's state and stored version (`Order.content_hash()`)."""
    states: dict[int, OrderState] = {}
    versions: dict[int, str] = {}
    for row in await tx.fetch("order_versions", order_ids=order_ids):
        states[row["id"]] = order_state(row["state"])
        versions[row["id"]] = row["content_hash"] or Order.model_validate_json(row["payload"]).content_hash()
    return states, versions


async def apply_routing(tx: Transaction, plans: Sequence[RoutePlan], now: float) -> int:
    """Write routing decisions. Plans for orders that changed state since the claim are skipped; a plan made
    for an older version of the order (the poller stored a new one since the claim) is dropped and the
    order's lease freed, so the next pass plans the version now stored."""
    states, versions = await _states_and_versions(tx, [p.order_id for p in plans])
    applied = 0
    fo_rows: list[dict[str, Scalar]] = []
    assign: list[dict[str, Scalar]] = []
    events: list[EventRow] = []
    updates: list[dict[str, Scalar]] = []
    for plan in plans:
        current = states.get(plan.order_id)
        if current is not OrderState.RECEIVED:
            continue
        if plan.content_hash is not None and plan.content_hash != versions[plan.order_id]:
            await tx.execute("release_order_lease", order_id=plan.order_id)
            events.append(event(plan.order_id, now, "route_plan_stale", planned=plan.content_hash))
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
            tx.notify(wakeups.forward(fo.factory))  # sent with the COMMIT that inserts it
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
            fallbacks = {"fallbacks": list(plan.fallbacks)} if plan.fallbacks else {}
            detail = {"factories": {fo.factory: fo.key for fo in plan.factory_orders}, **fallbacks}
        events.append(event(plan.order_id, now, target.value, current, target, **detail))
    if fo_rows:
        await tx.execute_many("insert_factory_order", fo_rows)
        await tx.execute_many("assign_line", assign)
    if updates:
        await tx.execute_many("set_order_state", updates)
    if events:
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
    states = {row["id"]: order_state(row["state"]) for row in await tx.fetch("order_states", order_ids=ids)}
    # Each order's factory order and push states, and beside them their dead reasons, in the rows' order.
    fo_states: dict[int, list[FactoryOrderState]] = defaultdict(list)
    fo_reasons: dict[int, list[str | None]] = defaultdict(list)
    for row in await tx.fetch("factory_orders_of_orders", order_ids=ids):
        fo_states[row["order_id"]].append(factory_order_state(row["state"]))
        fo_reasons[row["order_id"]].append(row["dead_reason"])
    totals: dict[int, tuple[int, int]] = {
        row["order_id"]: (row["total"], row["shipped"])
        for row in await tx.fetch("line_totals_of_orders", order_ids=ids)
    }
    push_states: dict[int, list[PushState]] = defaultdict(list)
    push_reasons: dict[int, list[str | None]] = defaultdict(list)
    for row in await tx.fetch("push_states_of_orders", order_ids=ids):
        push_states[row["order_id"]].append(push_state(row["state"]))
        push_reasons[row["order_id"]].append(row["dead_reason"])
    updates: list[dict[str, Scalar]] = []
    for order_id in ids:
        current = states[order_id]
        cancelling = cause == "cancelled" and current in (OrderState.RECEIVED, OrderState.HELD)
        if cancelling:
            target = OrderState.CANCELLED
        elif current in _DERIVED_STATES:
            total, shipped = totals.get(order_id, (0, 0))
            target = derive_order_state(fo_states[order_id], total, shipped, push_states[order_id])
        else:
            continue
        if target is current:
            continue
        if current in TERMINAL_ORDER_STATES:
            # A part moved after the end (a parcel for lines the factory had cancelled): the order stays
            # where it ended and the change that caused it flags it (see shipments.record_shipment).
            continue
        check_transition(ORDER_TRANSITIONS, current, target, subject=f"order {order_id}")
        reason = None
        if target is OrderState.FAILED:
            reasons = [r for r in fo_reasons[order_id] + push_reasons[order_id] if r]
            reason = reasons[0] if reasons else None
        updates.append({"state": target, "reason": reason, "detail": None, "now": now, "order_id": order_id})
        events.append(event(order_id, now, target.value, current, target, cause=cause, reason=reason))
        states[order_id] = target
    if updates:
        await tx.execute_many("set_order_state", updates)
    await sync_payment_flags(tx, ids, now, events, states)


PAYMENT_FLAGS = frozenset({AttentionReason.AWAITING_PAYMENT, AttentionReason.PAYMENT_EXPIRED})
"""Flags an order shows while one of its placed factory orders carries them (`factory_orders.attention`)."""


async def sync_payment_flags(
    tx: Transaction,
    order_ids: Sequence[int],
    now: float,
    events: list[EventRow],
    states: dict[int, OrderState],
) -> None:
    """Show the payment flags of placed factory orders on their orders (not sticky).

    An order with a placed factory order awaiting payment is flagged `awaiting_payment` (the detail names the
    factory and the deadline); one the factory closed unpaid, `payment_expired`. The flag clears when no
    placed factory order carries one any more (paid, shipped or cancelled). A flag of another kind (a held or
    failed order's reason, a sticky flag) is never replaced. `states`: the orders' states as they are now.
    """
    ids = sorted(set(order_ids))
    if not ids:
        return
    rows = await tx.fetch("payment_flags_of_orders", order_ids=ids)
    current: dict[int, tuple[str | None, str | None]] = {}
    flags: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        current[row["order_id"]] = (row["attention_reason"], row["attention_detail"])
        if row["attention"] is not None:
            flags[row["order_id"]].append(row)
    for order_id in ids:
        reason, detail = current.get(order_id, (None, None))
        if reason is not None and reason not in PAYMENT_FLAGS:
            continue
        state = states.get(order_id)
        if state is None or state in TERMINAL_ORDER_STATES or state in (OrderState.HELD, OrderState.FAILED):
            continue
        target: AttentionReason | None = None
        parts: list[str] = []
        found = flags.get(order_id, [])
        expired = [f for f in found if f["attention"] == AttentionReason.PAYMENT_EXPIRED]
        if expired:
            target = AttentionReason.PAYMENT_EXPIRED
            parts = [
                f"{f['factory']}: closed unpaid at the factory ({f['reference'] or 'no reference'}); "
                "not re-created"
                for f in expired
            ]
        elif found:
            target = AttentionReason.AWAITING_PAYMENT
            parts = [
                f"{f['factory']}: pay {f['reference'] or 'the factory order'}"
                + (f" by {f['pay_deadline_iso']}" if f["pay_deadline_iso"] else "")
                for f in found
            ]
        text = "; ".join(parts)[:1000] if target else None
        if (target.value if target else None) == reason and text == detail:
            continue
        await tx.execute("flag_order", reason=target, detail=text, now=now, order_id=order_id)
        if target is not None:
            events.append(event(order_id, now, "attention_flagged", reason=target.value, detail=text))
        else:
            events.append(event(order_id, now, "attention_cleared", reason=reason))


async def set_order_state(
    tx: Transaction, order_id: int, current: OrderState, target: OrderState, now: float
) -> None:
    """Move one order from `current` to `target` (checked), clearing its lease. Back to `received`, it is
    the router's again: any daemon's (`wakeups.ROUTE`)."""
    check_transition(ORDER_TRANSITIONS, current, target, subject=f"order {order_id}")
    await tx.execute("set_order_state", state=target, reason=None, detail=None, now=now, order_id=order_id)
    if target is OrderState.RECEIVED:
        tx.notify(wakeups.ROUTE)
