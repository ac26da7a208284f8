"""One log line per committed order state change (`order_state_changed`), fed by `Store.observe`.

Each line carries relay's id (`order_id`), the storefront and its order number (`number`), `from_state`
(None for a new order) and `to_state`, the history event's `kind`, and its `reason` / `cause` / `factory` /
`factories` (a routed order's factory -> idempotency key) when it has one, with the `reference` (the
factory's order reference) / `tracking_number` / `carrier` of the acceptance, parcel or push that made the
change. Held and failed orders are logged at warning level (a person is needed), the rest at info. This is
the one info line per order state change: the loops log each attempt's own details (`order_placed`,
`shipment_recorded`, `tracking_pushed`) at debug. An acceptance, parcel or push that changed no state (the
first of two factories accepting, a parcel or push that leaves the order as it was) gets its own info line,
`order_event` (`OrderNote`), so every factory reference and tracking number is shown at info once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.domain.models import OrderState
from relay.logging import LinesAtOnce
from relay.store.records import OrderNote, StateChange

NEEDS_A_PERSON = frozenset({OrderState.HELD, OrderState.FAILED})
_DETAIL_KEYS = ("reason", "cause", "factory", "factories", "reference", "tracking_number", "carrier")


def log_state_changes(log: Any, changes: Sequence[StateChange], notes: Sequence[OrderNote] = ()) -> None:
    """Log each note as `order_event`, then each change as `order_state_changed` (see the module docstring):
    a transaction's notes were written before its state changes."""
    # A lazy proxy (`structlog.get_logger()`, as the App's) looks its logger up on every method call;
    # `bind()` with no values is that same logger (or, for a bound logger, one with the same context).
    # The call's lines (about four per order) go to the stream in one write and flush, not one each.
    with LinesAtOnce(log.bind()) as held_log:
        for n in notes:
            held_log.info(
                "order_event",
                order_id=n.order_id,
                number=n.number,
                storefront=n.storefront,
                kind=n.kind,
                **n.detail,
            )
        for c in changes:
            fields: dict[str, Any] = {
                "order_id": c.order_id,
                "number": c.number,
                "storefront": c.storefront,
                "from_state": c.from_state,
                "to_state": c.to_state,
                "kind": c.kind,
            }
            if c.detail:  # a loop, not a comprehension: no function call per change
                for key in _DETAIL_KEYS:
                    value = c.detail.get(key)
                    if value is not None:
                        fields[key] = value
            if c.to_state in NEEDS_A_PERSON:
                held_log.warning("order_state_changed", **fields)
            else:
                held_log.info("order_state_changed", **fields)
