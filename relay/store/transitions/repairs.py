"""Operator repairs: retry (held order back to routing, dead letters back in the outbox) and replay."""

from __future__ import annotations

from relay.domain.models import (
    FACTORY_ORDER_TRANSITIONS,
    FactoryOrderState,
    Order,
    OrderState,
    check_transition,
)
from relay.exceptions import IllegalTransition
from relay.store import wakeups
from relay.store.connector import Transaction
from relay.store.transitions import EventRow, event
from relay.store.transitions.catalogue import waive_guards
from relay.store.transitions.orders import refresh_orders, replace_lines, set_order_state


async def retry_order(tx: Transaction, order_id: int, now: float) -> list[str]:
    """Put a held order back to routing and dead letters back in the outbox. Returns what changed."""
    changed: list[str] = []
    row = await tx.fetch_one("order_states", order_ids=[order_id])
    if row is None:
        raise IllegalTransition(f"order {order_id} does not exist")
    state = OrderState(row["state"])
    events: list[EventRow] = []
    if state is OrderState.HELD:
        stored = await tx.fetch_one("find_order", order_id=order_id)
        if stored is None:  # cannot happen: its state was read in this transaction
            raise IllegalTransition(f"order {order_id} does not exist")
        await replace_lines(tx, order_id, Order.model_validate_json(stored["payload"]))
        await set_order_state(tx, order_id, state, OrderState.RECEIVED, now)
        await waive_guards(tx, order_id)  # the operator looked at it: margin, approval and caps let it by
        events.append(event(order_id, now, "operator_retry", state, OrderState.RECEIVED, actor="operator"))
        changed.append("order requeued for routing")
    for fo in await tx.fetch("factory_orders_of_order", order_id=order_id):
        if fo["state"] == FactoryOrderState.DEAD:
            await tx.execute("requeue_dead_factory_order", now=now, id=fo["id"])
            tx.notify(wakeups.forward(fo["factory"]))
            events.append(event(order_id, now, "operator_retry", factory=fo["factory"], actor="operator"))
            changed.append(f"factory order for {fo['factory']} requeued")
    pushes = await tx.execute("requeue_dead_pushes", now=now, order_id=order_id)
    if pushes:
        stored = await tx.fetch_one("find_order", order_id=order_id)
        if stored is not None:
            tx.notify(wakeups.ship(stored["storefront"]))
        changed.append(f"{pushes} tracking push(es) requeued")
        events.append(event(order_id, now, "operator_retry", pushes=pushes, actor="operator"))
    if state is not OrderState.HELD:
        await refresh_orders(tx, [order_id], now, events, cause="operator_retry")
    if not changed:
        raise IllegalTransition(f"order {order_id} is {state.value}: nothing to retry")
    await tx.execute_many("insert_event", events)
    return changed


async def replay_order(tx: Transaction, order_id: int, now: float) -> list[str]:
    """Send placed-but-unshipped factory orders again with the same idempotency key."""
    changed: list[str] = []
    events: list[EventRow] = []
    for fo in await tx.fetch("factory_orders_of_order", order_id=order_id):
        if fo["state"] == FactoryOrderState.PLACED:
            check_transition(
                FACTORY_ORDER_TRANSITIONS,
                FactoryOrderState.PLACED,
                FactoryOrderState.PENDING,
                subject=f"factory order {fo['id']}",
            )
            await tx.execute("replay_factory_order", now=now, id=fo["id"])
            tx.notify(wakeups.forward(fo["factory"]))
            events.append(event(order_id, now, "operator_replay", factory=fo["factory"], actor="operator"))
            changed.append(f"factory order for {fo['factory']} will be re-sent with the same key")
    if not changed:
        raise IllegalTransition(f"order {order_id} has no placed, unshipped factory order to replay")
    await refresh_orders(tx, [order_id], now, events, cause="operator_replay")
    await tx.execute_many("insert_event", events)
    return changed
