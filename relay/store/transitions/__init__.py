"""State transitions, written once for every backend.

Each function runs inside a transaction the caller (`relay.store.manager.RelayStore`) opened, through the
connector's `Transaction`: named queries, named parameters, rows read by column name. None of them opens
or commits a transaction, so a public store method can combine several and still be one transaction.
They check each state change against the domain's transition tables (`IllegalTransition` aborts the
whole transaction) and queue its history event in the same transaction.
"""

from __future__ import annotations

import json

from relay.store.connector import Scalar

EventRow = dict[str, Scalar]
"""The parameters of one `insert_event` row."""


def event(
    order_id: int, at: float, kind: str, src: str | None = None, dst: str | None = None, **detail: object
) -> EventRow:
    """One `order_events` row; `detail` (None values included) is stored as a JSON object."""
    return {
        "order_id": order_id,
        "at": at,
        "kind": kind,
        "from_state": src,
        "to_state": dst,
        "detail": json.dumps(detail, default=str) if detail else None,
    }
