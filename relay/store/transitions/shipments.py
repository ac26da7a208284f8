"""Inbound shipments: one parcel recorded (with its tracking push queued), and the group commit."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from relay.domain.models import (
    FACTORY_ORDER_TRANSITIONS,
    AttentionReason,
    FactoryOrderState,
    Shipment,
    ShipmentPush,
    check_transition,
    shipment_push_key,
)
from relay.store.connector import Transaction
from relay.store.records import ShipmentResult, ShipmentVerdict
from relay.store.transitions import event
from relay.store.transitions.orders import refresh_orders


async def record_shipment(
    tx: Transaction, factory: str, message_id: str, shipment: Shipment, now: float
) -> ShipmentResult:
    """Record one parcel and queue its tracking push, or write nothing and say why."""
    found = await tx.fetch_one("factory_order_for_shipment", key=shipment.factory_order_key)
    if found is None or found["factory"] != factory:
        return ShipmentResult(ShipmentVerdict.UNKNOWN_ORDER, detail="no such order for this factory")
    fo_id: int = found["id"]
    order_id: int = found["order_id"]
    if await tx.fetch("message_seen", factory=factory, message_id=message_id):
        return ShipmentResult(ShipmentVerdict.DUPLICATE, order_id, "message already processed")
    if await tx.fetch("shipment_exists", factory_order_id=fo_id, shipment_id=shipment.shipment_id):
        return ShipmentResult(ShipmentVerdict.DUPLICATE, order_id, "parcel already recorded")
    # line id -> (ordered, shipped so far, factory order id)
    lines: dict[str, tuple[int, int, int | None]] = {}
    cancelled: dict[str, int] = {}  # line id -> quantity the factory cancelled
    for r in await tx.fetch("lines_of_order", order_id=order_id):
        lines[r["line_id"]] = (r["quantity"], r["shipped_quantity"], r["factory_order_id"])
        cancelled[r["line_id"]] = r["cancelled_quantity"]
    problems = []
    wanted: dict[str, int] = defaultdict(int)
    for ln in shipment.lines:
        wanted[ln.line_id] += ln.quantity
    for line_id, qty in wanted.items():
        line = lines.get(line_id)
        if line is None or line[2] != fo_id:
            problems.append(f"line {line_id!r} is not part of this factory order")
        elif line[1] + qty > line[0]:
            problems.append(f"line {line_id!r}: {line[1] + qty} shipped exceeds {line[0]} ordered")
    if problems:
        return ShipmentResult(ShipmentVerdict.INVALID_LINES, order_id, "; ".join(problems))
    after_cancel, current, target = _factory_order_move(
        FactoryOrderState(found["state"]), fo_id, lines, cancelled, wanted
    )
    check_transition(FACTORY_ORDER_TRANSITIONS, current, target, subject=f"factory order {fo_id}")
    gone = {  # factory orders whose lines no longer have to ship
        r["id"]
        for r in await tx.fetch("factory_orders_of_orders", order_ids=[order_id])
        if r["state"] == FactoryOrderState.CANCELLED and r["id"] != fo_id
    }
    if after_cancel:
        gone.add(fo_id)
    order_left = sum(
        max(0, q - cancelled[lid] - s - wanted.get(lid, 0))
        for lid, (q, s, fo) in lines.items()
        if fo not in gone
    )
    shipment_row = await tx.insert(
        "insert_shipment",
        factory_order_id=fo_id,
        order_id=order_id,
        shipment_id=shipment.shipment_id,
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
        tracking_url=shipment.tracking_url,
        lines=json.dumps([ln.model_dump() for ln in shipment.lines]),
        now=now,
    )
    await tx.execute_many(
        "add_shipped_quantity",
        [{"quantity": q, "order_id": order_id, "line_id": lid} for lid, q in wanted.items()],
    )
    push = ShipmentPush(
        key=shipment_push_key(shipment.factory_order_key, shipment.shipment_id),
        storefront=found["storefront"],
        order_id=found["external_id"],
        order_number=found["number"],
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
        tracking_url=shipment.tracking_url,
        lines=shipment.lines,
        order_fully_shipped=order_left <= 0,
    )
    await tx.execute(
        "insert_push",
        shipment_id=shipment_row,
        order_id=order_id,
        storefront=push.storefront,
        key=push.key,
        payload=push.model_dump_json(),
        now=now,
    )
    await tx.execute("set_factory_order_shipped", state=target, now=now, id=fo_id)
    if after_cancel:
        await tx.execute("cancel_unshipped_rest", factory_order_id=fo_id)
    # Only an accepted message is remembered: a rejected one may be corrected and sent again.
    await tx.execute("remember_message", factory=factory, message_id=message_id, now=now)
    events = [
        event(
            order_id,
            now,
            "shipment_received",
            factory=factory,
            shipment_id=shipment.shipment_id,
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
            message_id=message_id,
        )
    ]
    if after_cancel:
        detail = f"{factory} shipped parcel {shipment.shipment_id} after the order was cancelled"
        await tx.execute(
            "flag_order",
            reason=AttentionReason.SHIPPED_AFTER_CANCEL,
            detail=detail,
            now=now,
            order_id=order_id,
        )
        events.append(
            event(order_id, now, "shipped_after_cancel", factory=factory, shipment_id=shipment.shipment_id)
        )
    await refresh_orders(tx, [order_id], now, events, cause="shipment")
    await tx.execute_many("insert_event", events)
    return ShipmentResult(ShipmentVerdict.ACCEPTED, order_id)


def _factory_order_move(
    current: FactoryOrderState,
    fo_id: int,
    lines: dict[str, tuple[int, int, int | None]],
    cancelled: dict[str, int],
    wanted: dict[str, int],
) -> tuple[bool, FactoryOrderState, FactoryOrderState]:
    """(after_cancel, state to check the move from, target) for a parcel of factory order `fo_id`.

    A parcel for lines the factory had cancelled (it shipped before it saw our cancellation, or regardless)
    is real: it is accepted and its tracking pushed, the cancellation stands for whatever is still
    unshipped (the factory order is shipped), and the order is flagged. Derived state never throws at the
    edges.
    """
    after_cancel = current is FactoryOrderState.CANCELLED or any(
        lines[lid][1] + qty > lines[lid][0] - cancelled[lid] for lid, qty in wanted.items()
    )
    if after_cancel:
        if current is not FactoryOrderState.SHIPPED:
            current = FactoryOrderState.PLACED  # cancelled (or placed): it was made after all
        return True, current, FactoryOrderState.SHIPPED
    fo_left = sum(
        q - cancelled[lid] - s - wanted.get(lid, 0) for lid, (q, s, fo) in lines.items() if fo == fo_id
    )
    target = FactoryOrderState.SHIPPED if fo_left <= 0 else FactoryOrderState.PARTIALLY_SHIPPED
    return False, current, target


@dataclass(slots=True)
class _Callback:
    factory: str
    message_id: str
    shipment: Shipment
    now: float
    waiter: asyncio.Future[ShipmentResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ShipmentGroupCommit:
    """Shipment callbacks that arrive while a transaction is running share the next one.

    Each is recorded in arrival order exactly as alone; every caller returns only after that COMMIT. If a
    shared transaction fails, each of its callbacks is retried alone, so one bad parcel cannot fail the
    others. `write` opens one write transaction (the store's, crash point included).
    """

    def __init__(self, write: Callable[[], AbstractAsyncContextManager[Transaction]]) -> None:
        self._write = write
        self._queue: list[_Callback] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, factory: str, message_id: str, shipment: Shipment, now: float) -> ShipmentResult:
        """Queue one callback for the next transaction and wait for its committed verdict."""
        item = _Callback(factory, message_id, shipment, now)
        self._queue.append(item)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await item.waiter

    async def _drain(self) -> None:
        batch: list[_Callback] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                if len(batch) > 1 and await self._in_one_transaction(batch):
                    continue
                for item in batch:
                    await self._in_one_transaction([item])
        finally:
            for item in batch:  # only if cancelled mid-batch: callers answer 5xx, factories retry
                if not item.waiter.done():
                    item.waiter.cancel()

    async def _in_one_transaction(self, group: list[_Callback]) -> bool:
        """Record `group` in one transaction and answer its callers. False (nobody answered) if it failed
        and holds several callbacks; a lone callback gets the error itself."""
        try:
            async with self._write() as tx:
                results = [
                    await record_shipment(tx, c.factory, c.message_id, c.shipment, c.now) for c in group
                ]
        except Exception as exc:
            if len(group) > 1:
                return False
            if not group[0].waiter.done():
                group[0].waiter.set_exception(exc)
            return True
        for item, result in zip(group, results, strict=True):
            if not item.waiter.done():
                item.waiter.set_result(result)
        return True
