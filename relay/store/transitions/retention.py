"""Retention: what `relay prune` and the daemon's daily pass delete, one bounded batch per transaction.

Three kinds of history grow with every order and are not needed forever:

* `inbound_messages`: callback message ids, kept for replay protection. A replay older than the inbound
  timestamp tolerance (300 s by default) is refused by its timestamp anyway, so ids older than
  `retention.inbound_message_days` (30 by default; config checks it exceeds the tolerance) go.
* `order_events`, and `shipments` with their tracking pushes, of orders that are final: `completed` or
  `cancelled`, needing no attention, leased by nobody, with nothing owed or in flight in any outbox
  (factory orders, pushes, cancellations), and unchanged for `retention.order_history_days` (90 by
  default). The order row, its lines (shipped quantities) and its factory orders (idempotency keys) stay,
  so a late duplicate parcel is still refused by the shipped quantities and never pushed twice.

Non-final orders are never touched. Each batch is one short write transaction that looks at no more than
`batch_size` orders (or message ids), so the daemon's other writers wait at most one batch, however
large the history.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.domain.models import OrderState
from relay.store.connector import Transaction


@dataclass(frozen=True)
class PruneReport:
    """What one prune deleted (or, dry run, would delete)."""

    inbound_messages: int = 0
    orders: int = 0  # final orders whose history went
    order_events: int = 0
    shipments: int = 0
    storefront_pushes: int = 0

    def __add__(self, other: PruneReport) -> PruneReport:
        return PruneReport(
            self.inbound_messages + other.inbound_messages,
            self.orders + other.orders,
            self.order_events + other.order_events,
            self.shipments + other.shipments,
            self.storefront_pushes + other.storefront_pushes,
        )

    @property
    def total(self) -> int:
        return self.inbound_messages + self.order_events + self.shipments + self.storefront_pushes


async def prune_inbound_messages(tx: Transaction, before: float, limit: int) -> int:
    """Delete up to `limit` inbound message ids received before `before`; the number deleted."""
    return await tx.execute("prune_inbound_messages", before=before, limit=limit)


async def count_inbound_messages(tx: Transaction, before: float) -> int:
    row = await tx.fetch_one("count_inbound_messages_before", before=before)
    return int(row["n"]) if row else 0


FINAL_STATES = (OrderState.COMPLETED.value, OrderState.CANCELLED.value)
"""Order states whose history may be pruned (with the other conditions in `final_orders`)."""


PruneKey = tuple[float, int]
"""Where a retention scan of one state stands: the (updated_at, id) of the last order it looked at."""

SCAN_START: PruneKey = (-1.0, 0)


async def final_orders(
    tx: Transaction, state: str, before: float, after: PruneKey, limit: int
) -> tuple[PruneKey | None, list[int]]:
    """Look at up to `limit` orders in final `state`, final since before `before`, oldest first after
    `after`. Return where the scan stands (None when there were none: the scan is done) and the ids whose
    history may go. Orders updated since `before` are never looked at (migration 13)."""
    rows = await tx.fetch(
        "final_orders_to_prune",
        state=state,
        before=before,
        after_at=after[0],
        after_id=after[1],
        limit=limit,
    )
    if not rows:
        return None, []
    last = rows[-1]
    return (float(last["updated_at"]), int(last["id"])), [int(r["id"]) for r in rows if r["prunable"]]


async def history_of(tx: Transaction, order_ids: list[int]) -> PruneReport:
    """How much history these orders have (what pruning them deletes)."""
    row = await tx.fetch_one("history_of_orders", order_ids=order_ids)
    if row is None:
        return PruneReport(orders=len(order_ids))
    return PruneReport(
        orders=len(order_ids),
        order_events=int(row["events"]),
        shipments=int(row["shipments"]),
        storefront_pushes=int(row["pushes"]),
    )


async def prune_orders(tx: Transaction, order_ids: list[int]) -> PruneReport:
    """Delete the events, parcels and (finished) tracking pushes of these final orders."""
    pushes = await tx.execute("prune_pushes_of_orders", order_ids=order_ids)
    shipments = await tx.execute("prune_shipments_of_orders", order_ids=order_ids)
    events = await tx.execute("prune_events_of_orders", order_ids=order_ids)
    return PruneReport(
        orders=len(order_ids), order_events=events, shipments=shipments, storefront_pushes=pushes
    )
