"""Operator actions on one order (`relay hold`, `release`, `cancel`) and the bulk retry of dead letters.

Each runs inside the one transaction its store method opened, writes its history event with
`actor="operator"`, and raises `IllegalTransition` (changing nothing) when the order is not in a state the
action applies to. They take effect in a running daemon because the daemon's loops read this state on their
next pass: a held order is never claimed by the router, its factory orders no longer exist, a released one
is `received` again, a cancellation is an `order.cancelled` row in the outbox.
"""

from __future__ import annotations

import json

from relay.domain.models import (
    ORDER_TRANSITIONS,
    AttentionReason,
    FactoryOrderState,
    Order,
    OrderState,
    check_transition,
)
from relay.exceptions import IllegalTransition
from relay.store.connector import Row, Transaction
from relay.store.transitions import EventRow, event
from relay.store.transitions import catalogue as catalogue_tx
from relay.store.transitions.orders import cancel_factory_orders, replace_lines, set_order_state
from relay.store.transitions.repairs import retry_order

OPERATOR = "operator"


async def _order(tx: Transaction, order_id: int) -> Row:
    row = await tx.fetch_one("find_order", order_id=order_id)
    if row is None:
        raise IllegalTransition(f"order {order_id} does not exist")
    return row


def _never_sent(fo: Row) -> bool:
    """A factory order that cannot have reached its factory: pending, never claimed, never attempted."""
    return (
        fo["state"] == FactoryOrderState.PENDING
        and not fo["claimed"]
        and not fo["attempts"]
        and fo["lease_owner"] is None
        and fo["lease_expires_at"] is None
    )


async def hold_order(tx: Transaction, order_id: int, reason: str, now: float) -> list[str]:
    """Hold an order that no factory has, so nothing is sent for it until `release_order`.

    Allowed for a `received` order (not routed yet), a `routed` one none of whose factory orders can have
    reached a factory (pending, never claimed: they are dropped, and planned again on release), and a `held`
    one (the person's reason replaces the router's). Anything a factory may hold already (placed, shipping,
    failed after attempts, finished) raises `IllegalTransition`: cancel it instead. The order shows
    `operator_hold` with `reason`; storefront edits keep it held (a storefront cancellation still cancels it).
    """
    text = reason.strip()[:1000]
    if not text:
        raise IllegalTransition("a hold needs a reason")
    row = await _order(tx, order_id)
    state = OrderState(row["state"])
    if state is OrderState.ROUTED:
        fos = await tx.fetch("factory_orders_for_replan", order_id=order_id)
        if not all(_never_sent(fo) for fo in fos):
            raise IllegalTransition(
                f"order {order_id} is routed and a factory may have it already: cancel it instead"
            )
        await tx.execute("unassign_order_lines", order_id=order_id)
        await tx.execute("delete_factory_orders_of_order", order_id=order_id)
        await replace_lines(tx, order_id, Order.model_validate_json(row["payload"]))
        check_transition(ORDER_TRANSITIONS, state, OrderState.RECEIVED, subject=f"order {order_id}")
    elif state not in (OrderState.RECEIVED, OrderState.HELD):
        raise IllegalTransition(
            f"order {order_id} is {state.value}: only orders no factory has yet (received, routed and not"
            " sent, held) can be held; cancel it instead"
        )
    via = OrderState.RECEIVED if state is OrderState.ROUTED else state  # routed: planned again on release
    check_transition(ORDER_TRANSITIONS, via, OrderState.HELD, subject=f"order {order_id}")
    await tx.execute(
        "set_order_state",
        state=OrderState.HELD,
        reason=AttentionReason.OPERATOR_HOLD,
        detail=text,
        now=now,
        order_id=order_id,
    )
    await tx.execute_many(
        "insert_event",
        [
            event(
                order_id,
                now,
                "held",
                state,
                OrderState.HELD,
                reason="operator_hold",
                detail=text,
                actor=OPERATOR,
            )
        ],
    )
    dropped = " (its unsent factory orders dropped)" if state is OrderState.ROUTED else ""
    return [f"order {order_id} held{dropped}: nothing is sent until `relay release {order_id}`"]


async def release_order(tx: Transaction, order_id: int, now: float) -> list[str]:
    """Send a held order (whoever held it: a person, or routing such as `unknown_sku`) back to `received`:
    the router plans it again on its next pass with the routing it reads then. Its current version passes
    the routing guards that need a person's approval (margin, approval, caps) once (`waive_guards`): released
    once, placed once. Raises `IllegalTransition` for an order that is not held."""
    row = await _order(tx, order_id)
    state = OrderState(row["state"])
    if state is not OrderState.HELD:
        raise IllegalTransition(f"order {order_id} is {state.value}: only a held order can be released")
    await replace_lines(tx, order_id, Order.model_validate_json(row["payload"]))
    await set_order_state(tx, order_id, state, OrderState.RECEIVED, now)
    await catalogue_tx.waive_guards(tx, order_id)
    await tx.execute_many(
        "insert_event",
        [
            event(
                order_id,
                now,
                "released",
                state,
                OrderState.RECEIVED,
                reason=row["attention_reason"],
                detail=row["attention_detail"],
                actor=OPERATOR,
            )
        ],
    )
    return [f"order {order_id} released ({row['attention_reason']}): back to routing"]


async def cancel_order(tx: Transaction, order_id: int, now: float) -> list[str]:
    """Cancel an order as a storefront cancellation does (`orders.cancel_factory_orders`), but on a
    person's word: not sent anywhere yet (received, held, or factory orders never sent) it is cancelled
    here; a factory that has (or may have) a factory order is sent `order.cancelled` for its unshipped
    lines, and the order follows the factories' answers. The storefront is not told: cancel (and refund)
    there too. Raises `IllegalTransition` for a finished order, or when nothing is left to cancel (shipped,
    or every factory already asked)."""
    row = await _order(tx, order_id)
    state = OrderState(row["state"])
    if state in (OrderState.COMPLETED, OrderState.CANCELLED):
        raise IllegalTransition(f"order {order_id} is {state.value}: nothing to cancel")
    live = [
        fo
        for fo in await tx.fetch("factory_orders_of_order", order_id=order_id)
        if fo["state"] in (FactoryOrderState.PENDING, FactoryOrderState.DEAD)
        or (
            fo["state"] in (FactoryOrderState.PLACED, FactoryOrderState.PARTIALLY_SHIPPED)
            and fo["cancel_state"] is None
        )
    ]
    if state not in (OrderState.RECEIVED, OrderState.HELD) and not live:
        raise IllegalTransition(
            f"order {order_id} is {state.value}: nothing left to cancel (shipped, or cancellation already sent)"
        )
    events: list[EventRow] = [
        event(order_id, now, "cancel_requested", state, state, cause="operator", actor=OPERATOR)
    ]
    await cancel_factory_orders(tx, order_id, now, events, why="cancelled by an operator")
    await tx.execute_many("insert_event", events)
    changed = [
        f"order.cancelled queued for {json.loads(str(e['detail']))['factory']}"
        for e in events
        if e["kind"] == "cancel_queued"
    ]
    after = await tx.fetch_one("order_states", order_ids=[order_id])
    if after is not None and after["state"] == OrderState.CANCELLED:
        changed.append(f"order {order_id} cancelled")
    elif not changed:
        changed.append(f"order {order_id}: unsent factory orders cancelled")
    return changed


async def retry_all_dead(tx: Transaction, now: float) -> list[int]:
    """Put every dead-lettered delivery and tracking push back in the outbox (`retry_order` per order, in
    this one transaction). Held orders are left alone (`relay release` them). Returns the orders retried."""
    ids = [r["order_id"] for r in await tx.fetch("orders_with_dead_letters")]
    retried = []
    for order_id in ids:
        await retry_order(tx, order_id, now)
        retried.append(order_id)
    return retried
