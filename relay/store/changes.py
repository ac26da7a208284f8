"""The committed order state changes of a write transaction, for the store's observer (logs, metrics).

Every state change writes its history event in the transaction that makes it (`insert_event`, or
`insert_event_by_external_id` for a new order). `EventTap` wraps that transaction, keeps the events
whose `to_state` differs from their `from_state` and those in `NOTED` (an acceptance, a parcel, a push),
and, after the transaction's work and before its COMMIT, resolves their orders' storefront, number and
first-seen time in one query per kind of event (never one per order). A noted event's fields go on its
order's last state change of the transaction; the others are `OrderNote`s. `RelayStore` hands the result
to its observer only once the COMMIT succeeded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from relay import json_exact
from relay.store.connector import Param, Row, Scalar, Transaction
from relay.store.records import OrderNote, StateChange

EVENT_BY_ID = "insert_event"
EVENT_BY_EXTERNAL_ID = "insert_event_by_external_id"
_EVENT_QUERIES = frozenset({EVENT_BY_ID, EVENT_BY_EXTERNAL_ID})
NOTED = {
    "factory_accepted": ("factory", "reference"),
    "shipment_received": ("factory", "tracking_number", "carrier"),
    "tracking_pushed": ("tracking_number",),
}
"""History events that change no order state themselves but name what an operator looks for: their kind
-> the detail fields shown (on the order's state change, or as an `OrderNote`)."""


def _changes_state(row: Mapping[str, Any]) -> bool:
    to_state = row.get("to_state")
    return to_state is not None and to_state != row.get("from_state")


class EventTap:
    """A `Transaction` that passes every call through and keeps the state-changing and `NOTED` history
    events; `notes` (after `resolve`): the noted events no state change carried."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        # The state-changing and noted events in the order they were written; True: keyed by external id.
        self._kept: list[tuple[bool, Mapping[str, Any]]] = []
        # What the tap has nothing to keep from is `tx`'s own: no coroutine of the tap's per call.
        self.fetch = tx.fetch
        self.fetch_one = tx.fetch_one
        self.insert = tx.insert
        self.execute_statement = tx.execute_statement
        self.notify = tx.notify

    async def execute(self, query: str, /, **params: Param) -> int:
        """See `Transaction.execute`."""
        changed = await self.tx.execute(query, **params)
        if query in _EVENT_QUERIES:
            self._keep(query, [params])
        return changed

    async def execute_many(self, query: str, rows: Sequence[Mapping[str, Scalar]], /) -> None:
        """See `Transaction.execute_many`."""
        await self.tx.execute_many(query, rows)
        if query in _EVENT_QUERIES:
            self._keep(query, rows)

    def _keep(self, query: str, rows: Sequence[Mapping[str, Any]]) -> None:
        by_external_id = query == EVENT_BY_EXTERNAL_ID
        self._kept.extend((by_external_id, r) for r in rows if _changes_state(r) or r.get("kind") in NOTED)

    async def resolve(self) -> tuple[list[StateChange], list[OrderNote]]:
        """The kept events, in the order they were written (inside the transaction): the state changes, and
        the noted events that change no state (an order's last one is carried by its last state change)."""
        if not self._kept:
            return [], []
        wanted: dict[str, set[str]] = defaultdict(set)
        order_ids: set[int] = set()
        for by_external_id, r in self._kept:
            if by_external_id:
                wanted[str(r["storefront"])].add(str(r["external_id"]))
            else:
                order_ids.add(int(r["order_id"]))
        by_ref: dict[tuple[str, str], Row] = {}
        for storefront, external_ids in wanted.items():
            for row in await self.tx.fetch(
                "order_refs_by_external_ids", storefront=storefront, external_ids=sorted(external_ids)
            ):
                by_ref[(storefront, row["external_id"])] = row
        by_id: dict[int, Row] = {}
        if order_ids:
            by_id = {row["id"]: row for row in await self.tx.fetch("order_refs", order_ids=sorted(order_ids))}
        changes: list[StateChange] = []
        last: dict[int, StateChange] = {}  # order id -> its last state change
        noted: list[tuple[Mapping[str, Any], Row]] = []
        for by_external_id, r in self._kept:
            ref = (
                by_ref.get((str(r["storefront"]), str(r["external_id"])))
                if by_external_id
                else by_id.get(int(r["order_id"]))
            )
            if ref is None:
                continue
            if _changes_state(r):
                changes.append(_change(r, ref))
                last[int(ref["id"])] = changes[-1]
            else:
                noted.append((r, ref))
        return changes, _carry(noted, last)


def _carry(
    noted: Sequence[tuple[Mapping[str, Any], Row]], last: Mapping[int, StateChange]
) -> list[OrderNote]:
    """Put each order's last noted event's fields on its last state change (`last`, order id -> change);
    the other noted events, as `OrderNote`s in written order."""
    notes: list[OrderNote] = []
    carried: set[int] = set()
    for r, ref in reversed(noted):
        order_id = int(ref["id"])
        detail = json_exact.loads(str(r["detail"])) if r.get("detail") else {}
        fields = {k: detail[k] for k in NOTED[str(r["kind"])] if detail.get(k) is not None}
        change = last.get(order_id)
        if change is not None and order_id not in carried:
            carried.add(order_id)
            for k, v in fields.items():
                change.detail.setdefault(k, v)
        else:
            number = str(ref["number"] or "")
            notes.append(OrderNote(order_id, str(ref["storefront"]), number, str(r["kind"]), fields))
    notes.reverse()
    return notes


def _change(event: Mapping[str, Any], ref: Row) -> StateChange:
    detail = event.get("detail")
    return StateChange(
        order_id=int(ref["id"]),
        storefront=str(ref["storefront"]),
        number=str(ref["number"] or ""),
        from_state=event.get("from_state"),
        to_state=str(event["to_state"]),
        kind=str(event["kind"]),
        at=float(event["at"]),
        received_at=float(ref["created_at"]),
        detail=json_exact.loads(detail) if isinstance(detail, str) else {},
    )
