"""One log line per committed order state change (`order_state_changed`), fed by `Store.observe`.

Each line carries relay's id (`order_id`), the storefront and its order number (`number`), `from_state`
(None for a new order) and `to_state`, the history event's `kind`, and its `reason` / `cause` / `factory` /
`factories` (a routed order's factory -> idempotency key) when it has one. Held and failed orders are logged
at warning level (a person is needed), the rest at info. This is the one info line per order state change:
the loops log each attempt's own details (`order_placed`, `shipment_recorded`, `tracking_pushed`) at debug.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.domain.models import OrderState
from relay.store.records import StateChange

NEEDS_A_PERSON = frozenset({OrderState.HELD, OrderState.FAILED})
_DETAIL_KEYS = ("reason", "cause", "factory", "factories")


def log_state_changes(log: Any, changes: Sequence[StateChange]) -> None:
    """Log each change as `order_state_changed` (see the module docstring)."""
    for c in changes:
        fields: dict[str, Any] = {
            "order_id": c.order_id,
            "number": c.number,
            "storefront": c.storefront,
            "from_state": c.from_state,
            "to_state": c.to_state,
            "kind": c.kind,
        }
        fields.update({k: c.detail[k] for k in _DETAIL_KEYS if c.detail.get(k) is not None})
        if c.to_state in NEEDS_A_PERSON:
            log.warning("order_state_changed", **fields)
        else:
            log.info("order_state_changed", **fields)
