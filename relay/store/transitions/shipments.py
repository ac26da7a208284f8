"""Inbound shipments: parcels recorded (each with its tracking push queued) a batch at a time, and the group
commit that makes the batches."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from relay.domain.models import (
    FACTORY_ORDER_TRANSITIONS,
    AttentionReason,
    FactoryOrderState,
    Shipment,
    ShipmentPush,
    check_transition,
    shipment_push_key,
)
from relay.store import wakeups
from relay.store.connector import Row, Scalar, Transaction
from relay.store.records import ShipmentResult, ShipmentVerdict
from relay.store.transitions import EventRow, event
from relay.store.transitions.orders import factory_order_state, refresh_orders


class ShipmentCallback(NamedTuple):
    """One inbound parcel message, as a factory's callback delivered it."""

    factory: str
    message_id: str
    shipment: Shipment
    now: float


@dataclass(slots=True)
class _Line:
    quantity: int
    shipped: int
    cancelled: int
    factory_order_id: int | None


async def record_shipments(tx: Transaction, batch: Sequence[ShipmentCallback]) -> list[ShipmentResult]:
    """Record each parcel of `batch` and queue its tracking push, or write nothing for it and say why.

    Each is judged in order exactly as if it were recorded alone after the ones before it (a replay of an
    earlier message or parcel of the batch is a DUPLICATE, a second parcel sees the first one's shipped
    quantities); the batch reads what it needs once and writes set-based, and the derived order states are
    refreshed once at its end.
    """
    found = {
        r["key"]: r
        for r in await tx.fetch(
            "factory_orders_for_shipments", keys=sorted({c.shipment.factory_order_key for c in batch})
        )
    }
    seen: set[tuple[str, str]] = set()
    for factory in sorted({c.factory for c in batch}):
        ids = sorted({c.message_id for c in batch if c.factory == factory})
        rows = await tx.fetch("messages_seen", factory=factory, message_ids=ids)
        seen.update((factory, r["message_id"]) for r in rows)
    order_ids = sorted({r["order_id"] for r in found.values()})
    parcels: set[tuple[int, str]] = set()
    lines: dict[int, dict[str, _Line]] = defaultdict(dict)  # order id -> line id -> line
    fo_states: dict[int, FactoryOrderState] = {}
    fos_of: dict[int, list[int]] = defaultdict(list)  # order id -> its factory orders
    if order_ids:
        fo_ids = sorted({r["id"] for r in found.values()})
        parcels = {
            (r["factory_order_id"], r["shipment_id"])
            for r in await tx.fetch("shipments_of_factory_orders", factory_order_ids=fo_ids)
        }
        for r in await tx.fetch("lines_of_orders", order_ids=order_ids):
            lines[r["order_id"]][r["line_id"]] = _Line(
                r["quantity"], r["shipped_quantity"], r["cancelled_quantity"], r["factory_order_id"]
            )
        for r in await tx.fetch("factory_orders_of_orders", order_ids=order_ids):
            fo_states[r["id"]] = factory_order_state(r["state"])
            fos_of[r["order_id"]].append(r["id"])
    state = _Batch(found, seen, parcels, lines, fo_states, fos_of)
    results = [state.judge(c) for c in batch]
    await state.writes.flush(tx)
    return results


@dataclass(slots=True)
class _Writes:
    """What the accepted parcels of a batch write, in the order it is written."""

    shipments: list[dict[str, Scalar]] = field(default_factory=list)
    shipped: list[dict[str, Scalar]] = field(default_factory=list)
    pushes: list[dict[str, Scalar]] = field(default_factory=list)
    factory_orders: list[dict[str, Scalar]] = field(default_factory=list)
    cancelled_rest: set[int] = field(default_factory=set)  # factory orders shipped after a cancellation
    messages: list[dict[str, Scalar]] = field(default_factory=list)
    flags: list[dict[str, Scalar]] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    orders: set[int] = field(default_factory=set)
    now: float = 0.0

    async def flush(self, tx: Transaction) -> None:
        if not self.shipments:
            return
        await tx.execute_many("insert_shipment", self.shipments)
        await tx.execute_many("add_shipped_quantity", self.shipped)
        await tx.execute_many("insert_push_for_parcel", self.pushes)
        for push in self.pushes:
            tx.notify(wakeups.ship(str(push["storefront"])))
        await tx.execute_many("set_factory_order_shipped", self.factory_orders)
        for fo_id in sorted(self.cancelled_rest):
            await tx.execute("cancel_unshipped_rest", factory_order_id=fo_id)
        # Only an accepted message is remembered: a rejected one may be corrected and sent again.
        await tx.execute_many("remember_message", self.messages)
        for flag in self.flags:
            await tx.execute("flag_order", **flag)
        await refresh_orders(tx, sorted(self.orders), self.now, self.events, cause="shipment")
        await tx.execute_many("insert_event", self.events)


@dataclass(slots=True)
class _Batch:
    """What a batch of parcels reads once, moved on by each accepted parcel for the next to see."""

    found: dict[str, Row]  # factory order key -> factory order and its order's refs
    seen: set[tuple[str, str]]  # (factory, message id) already processed
    parcels: set[tuple[int, str]]  # (factory order id, shipment id) already recorded
    lines_of: dict[int, dict[str, _Line]]  # order id -> line id -> line
    fo_states: dict[int, FactoryOrderState]
    fos_of: dict[int, list[int]]  # order id -> its factory orders
    writes: _Writes = field(default_factory=_Writes)

    def judge(self, c: ShipmentCallback) -> ShipmentResult:
        """One parcel against the state the parcels before it left: its verdict and, accepted, its writes
        queued and the state moved on."""
        shipment = c.shipment
        row = self.found.get(shipment.factory_order_key)
        if row is None or row["factory"] != c.factory:
            return ShipmentResult(ShipmentVerdict.UNKNOWN_ORDER, detail="no such order for this factory")
        order_id: int = row["order_id"]
        if (c.factory, c.message_id) in self.seen:
            return ShipmentResult(ShipmentVerdict.DUPLICATE, order_id, "message already processed")
        if (row["id"], shipment.shipment_id) in self.parcels:
            return ShipmentResult(ShipmentVerdict.DUPLICATE, order_id, "parcel already recorded")
        return self._accept(c, row)

    def _accept(self, c: ShipmentCallback, row: Row) -> ShipmentResult:
        shipment = c.shipment
        fo_id: int = row["id"]
        order_id: int = row["order_id"]
        order_lines = self.lines_of[order_id]
        # line id -> (ordered, shipped so far, factory order id)
        lines = {lid: (ln.quantity, ln.shipped, ln.factory_order_id) for lid, ln in order_lines.items()}
        cancelled = {lid: ln.cancelled for lid, ln in order_lines.items()}
        problems = []
        wanted: dict[str, int] = defaultdict(int)
        for part in shipment.lines:
            wanted[part.line_id] += part.quantity
        for line_id, qty in wanted.items():
            line = lines.get(line_id)
            if line is None or line[2] != fo_id:
                problems.append(f"line {line_id!r} is not part of this factory order")
            elif line[1] + qty > line[0]:
                problems.append(f"line {line_id!r}: {line[1] + qty} shipped exceeds {line[0]} ordered")
        if problems:
            return ShipmentResult(ShipmentVerdict.INVALID_LINES, order_id, "; ".join(problems))
        after_cancel, current, target = _factory_order_move(
            self.fo_states[fo_id], fo_id, lines, cancelled, wanted
        )
        check_transition(FACTORY_ORDER_TRANSITIONS, current, target, subject=f"factory order {fo_id}")
        gone = {  # factory orders whose lines no longer have to ship
            other
            for other in self.fos_of[order_id]
            if self.fo_states[other] is FactoryOrderState.CANCELLED and other != fo_id
        }
        if after_cancel:
            gone.add(fo_id)
        order_left = sum(
            max(0, q - cancelled[lid] - s - wanted.get(lid, 0))
            for lid, (q, s, fo) in lines.items()
            if fo not in gone
        )
        now = c.now
        self.writes.shipments.append(
            {
                "factory_order_id": fo_id,
                "order_id": order_id,
                "shipment_id": shipment.shipment_id,
                "carrier": shipment.carrier,
                "tracking_number": shipment.tracking_number,
                "tracking_url": shipment.tracking_url,
                "lines": json.dumps([ln.model_dump() for ln in shipment.lines]),
                "now": now,
            }
        )
        self.writes.shipped.extend(
            {"quantity": q, "order_id": order_id, "line_id": lid} for lid, q in wanted.items()
        )
        push = ShipmentPush(
            key=shipment_push_key(shipment.factory_order_key, shipment.shipment_id),
            storefront=row["storefront"],
            order_id=row["external_id"],
            order_number=row["number"],
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
            tracking_url=shipment.tracking_url,
            lines=shipment.lines,
            order_fully_shipped=order_left <= 0,
        )
        self.writes.pushes.append(
            {
                "factory_order_id": fo_id,
                "shipment_id": shipment.shipment_id,
                "order_id": order_id,
                "storefront": push.storefront,
                "key": push.key,
                "payload": push.model_dump_json(),
                "now": now,
            }
        )
        self.writes.factory_orders.append({"state": target, "now": now, "id": fo_id})
        self.writes.messages.append({"factory": c.factory, "message_id": c.message_id, "now": now})
        self.writes.events.append(
            event(
                order_id,
                now,
                "shipment_received",
                factory=c.factory,
                shipment_id=shipment.shipment_id,
                carrier=shipment.carrier,
                tracking_number=shipment.tracking_number,
                message_id=c.message_id,
            )
        )
        self.writes.orders.add(order_id)
        self.writes.now = max(self.writes.now, now)
        # The state the next parcel of the batch sees.
        self.seen.add((c.factory, c.message_id))
        self.parcels.add((fo_id, shipment.shipment_id))
        self.fo_states[fo_id] = target
        for lid, qty in wanted.items():
            order_lines[lid].shipped += qty
        if after_cancel:
            self.writes.cancelled_rest.add(fo_id)
            for kept in order_lines.values():  # as cancel_unshipped_rest leaves them
                if kept.factory_order_id == fo_id:
                    kept.cancelled = max(0, kept.quantity - kept.shipped)
            detail = f"{c.factory} shipped parcel {shipment.shipment_id} after the order was cancelled"
            self.writes.flags.append(
                {
                    "reason": AttentionReason.SHIPPED_AFTER_CANCEL,
                    "detail": detail,
                    "now": now,
                    "order_id": order_id,
                }
            )
            self.writes.events.append(
                event(
                    order_id, now, "shipped_after_cancel", factory=c.factory, shipment_id=shipment.shipment_id
                )
            )
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
    callback: ShipmentCallback
    waiter: asyncio.Future[ShipmentResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ShipmentGroupCommit:
    """Shipment callbacks that arrive while a transaction is running share the next one.

    Each is recorded in arrival order exactly as alone; every caller returns only after that COMMIT. If a
    shared transaction fails, each of its callbacks is retried alone, so one bad parcel cannot fail the
    others. `write` runs a unit as one write transaction (the store's `_write`, crash point included).
    """

    def __init__(
        self,
        write: Callable[
            [Callable[[Transaction], Awaitable[list[ShipmentResult]]]], Awaitable[list[ShipmentResult]]
        ],
    ) -> None:
        self._write = write
        self._queue: list[_Callback] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, factory: str, message_id: str, shipment: Shipment, now: float) -> ShipmentResult:
        """Queue one callback for the next transaction and wait for its committed verdict."""
        item = _Callback(ShipmentCallback(factory, message_id, shipment, now))
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

        batch = [item.callback for item in group]
        try:
            results = await self._write(lambda tx: record_shipments(tx, batch))
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
