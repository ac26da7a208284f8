"""The tracking watchdog: factory orders that should have parcels by now (issue 13, item 6).

A factory order placed `no_tracking_after_days` ago with no parcel flags its order `no_tracking`; one shipped
in part whose last parcel is `tracking_stalled_after_days` old flags it `tracking_stalled`. The flags are not
sticky: a pass clears a flag whose cause is gone (the parcels came), and a state change (a parcel that moves
the order on) clears it too. A flag of another kind (held, failed, a sticky or payment flag) is never
replaced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime

from relay.domain.models import AttentionReason, OrderState
from relay.store.connector import Transaction
from relay.store.transitions import EventRow, event

TrackingRules = Mapping[str, tuple[float | None, float | None]]
"""Factory -> (seconds after placement without a parcel, seconds after the last parcel while lines are
still to ship); None: not watched."""

WATCHED = frozenset({AttentionReason.NO_TRACKING, AttentionReason.TRACKING_STALLED})
_ELIGIBLE = frozenset({OrderState.ROUTED, OrderState.PLACED, OrderState.PARTIALLY_SHIPPED})


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).date().isoformat()


async def watch_tracking(tx: Transaction, rules: TrackingRules, now: float) -> tuple[int, int]:
    """Flag and clear `no_tracking` / `tracking_stalled` (see the module docstring), each change with an
    `attention_flagged` / `attention_cleared` event. Returns (flagged, cleared)."""
    found: dict[int, list[tuple[AttentionReason, str]]] = defaultdict(list)
    orders: dict[int, tuple[OrderState, str | None, str | None]] = {}
    for row in await tx.fetch("tracking_watch", factories=sorted(rules)):
        no_parcel_s, stalled_s = rules[row["factory"]]
        order_id: int = row["order_id"]
        orders[order_id] = (OrderState(row["order_state"]), row["attention_reason"], row["attention_detail"])
        placed_at, last = row["placed_at"], row["last_parcel_at"]
        name = f"{row['factory']} ({row['reference']})" if row["reference"] else row["factory"]
        if last is None and no_parcel_s is not None and now - placed_at >= no_parcel_s:
            days = (now - placed_at) / 86400
            text = f"{name}: placed {_day(placed_at)}, {days:.0f} days ago, no parcel yet"
            found[order_id].append((AttentionReason.NO_TRACKING, text))
        elif last is not None and stalled_s is not None and now - last >= stalled_s:
            days = (now - last) / 86400
            text = f"{name}: last parcel {_day(last)}, {days:.0f} days ago, lines still to ship"
            found[order_id].append((AttentionReason.TRACKING_STALLED, text))
    events: list[EventRow] = []
    flagged = cleared = 0
    for order_id, flags in found.items():
        state, reason, detail = orders[order_id]
        if state not in _ELIGIBLE or (reason is not None and reason not in WATCHED):
            continue
        nothing = any(r is AttentionReason.NO_TRACKING for r, _ in flags)  # nothing at all has come: first
        target = AttentionReason.NO_TRACKING if nothing else AttentionReason.TRACKING_STALLED
        text = "; ".join(t for _, t in flags)[:1000]
        if (target.value, text) == (reason, detail):
            continue
        await tx.execute("flag_order", reason=target, detail=text, now=now, order_id=order_id)
        events.append(event(order_id, now, "attention_flagged", reason=target.value, detail=text))
        flagged += 1
    for row in await tx.fetch("tracking_flagged_orders"):
        if row["id"] not in found or OrderState(row["state"]) not in _ELIGIBLE:
            await tx.execute("flag_order", reason=None, detail=None, now=now, order_id=row["id"])
            events.append(event(row["id"], now, "attention_cleared", reason=row["attention_reason"]))
            cleared += 1
    if events:
        await tx.execute_many("insert_event", events)
    return flagged, cleared
