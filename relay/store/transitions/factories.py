"""Factory state: paused deliveries (a 410, or an operator), the circuit as the forwarder records it, the
shipment-listing cursor, and what a polled factory reports about its orders besides parcels (notices).
Storefront poll health (`record_poll`) lives here too: the same kind of per-peer health row."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from relay.domain.models import FactoryOrderNotice, FactoryOrderState
from relay.exceptions import scrub
from relay.store import wakeups
from relay.store.connector import Transaction
from relay.store.records import ANSWER_CHARS, FactoryStatus
from relay.store.transitions import EventRow, event
from relay.store.transitions.orders import PAYMENT_FLAGS, refresh_orders


async def disable_factory(tx: Transaction, name: str, reason: str, now: float) -> bool:
    """Pause deliveries to `name`; False if it was already disabled."""
    return bool(await tx.execute("disable_factory", name=name, reason=reason, now=now))


async def enable_factory(tx: Transaction, name: str, now: float) -> bool:
    """Resume deliveries to `name` (whatever waited for it is due: any daemon's forwarder); False if it was
    not disabled."""
    enabled = bool(await tx.execute("enable_factory", name=name, now=now))
    if enabled:
        tx.notify(wakeups.forward(name))
    return enabled


async def list_factories(tx: Transaction) -> list[FactoryStatus]:
    """Every factory with a row or a factory order, by name, with its order counts per state."""
    rows = {r["name"]: r for r in await tx.fetch("list_factories")}
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for r in await tx.fetch("factory_order_counts"):
        counts[r["factory"]][r["state"]] = r["count"]
    statuses = []
    for name in sorted(rows.keys() | counts.keys()):
        row = rows.get(name)
        statuses.append(
            FactoryStatus(
                name,
                row["disabled_at"] if row else None,
                row["disabled_reason"] if row else None,
                row["shipment_cursor"] if row else None,
                counts.get(name, {}),
                row["failing_since"] if row else None,
                row["next_probe_at"] if row else None,
                row["last_error"] if row else None,
            )
        )
    return statuses


async def record_factory_health(
    tx: Transaction,
    name: str,
    failing_since: float | None,
    next_probe_at: float | None,
    last_error: str | None,
    *,
    now: float,
) -> None:
    """Store the forwarder's circuit for `name` (all None: healthy); the error scrubbed and cut."""
    error = scrub(last_error)[:ANSWER_CHARS] if last_error else None
    await tx.execute(
        "record_factory_health",
        name=name,
        failing_since=failing_since,
        next_probe_at=next_probe_at,
        error=error,
        now=now,
    )


async def record_poll(tx: Transaction, storefront: str, ok: bool, error: str | None, now: float) -> None:
    """Store the outcome of one poll pass of `storefront`: success time, or failure time and error."""
    if ok:
        await tx.execute("record_poll_ok", name=storefront, now=now)
    else:
        message = scrub(error or "poll failed")[:ANSWER_CHARS]
        await tx.execute("record_poll_error", name=storefront, error=message, now=now)


async def get_factory_cursor(tx: Transaction, factory: str) -> str | None:
    """The factory's shipment-listing cursor, or None."""
    row = await tx.fetch_one("get_factory_cursor", name=factory)
    return row["shipment_cursor"] if row else None


async def set_factory_cursor(tx: Transaction, factory: str, cursor: str, now: float) -> None:
    """Store the factory's shipment-listing cursor."""
    await tx.execute("set_factory_cursor", name=factory, cursor=cursor, now=now)


async def apply_factory_notices(
    tx: Transaction, factory: str, notices: Sequence[FactoryOrderNotice], now: float
) -> int:
    """Record what a polled factory reported about its orders besides parcels; each change with an event.

    A payment flag (`awaiting_payment`, `payment_expired`) is kept on the placed factory order and shown on
    its order (`orders.sync_payment_flags`, not sticky); a notice without a reason (paid) clears it. Any
    other reason flags the order itself (`duplicate_at_factory` is sticky). A notice for an unknown factory
    order, or one that changes nothing (a re-poll), is skipped. Returns how many changed something.
    """
    applied = 0
    touched: list[int] = []
    events: list[EventRow] = []
    for notice in notices:
        row = await tx.fetch_one("factory_order_for_notice", key=notice.factory_order_key, factory=factory)
        if row is None:
            continue
        fo_id: int = row["id"]
        order_id: int = row["order_id"]
        reason = notice.reason
        if reason is None or reason in PAYMENT_FLAGS:
            if reason is not None and row["state"] != FactoryOrderState.PLACED:
                continue  # shipped or cancelled meanwhile: nothing left to pay
            if row["attention"] == (reason.value if reason else None):
                continue
            await tx.execute("set_factory_order_attention", attention=reason, now=now, id=fo_id)
        else:
            if row["attention_reason"] == reason.value:
                continue
            await tx.execute(
                "flag_order",
                reason=reason,
                detail=f"{factory}: {notice.detail}"[:1000],
                now=now,
                order_id=order_id,
            )
        applied += 1
        touched.append(order_id)
        kind = "factory_order_paid" if reason is None else "factory_notice"
        events.append(
            event(
                order_id,
                now,
                kind,
                factory=factory,
                key=notice.factory_order_key,
                reason=reason.value if reason else None,
                detail=notice.detail,
            )
        )
    await refresh_orders(tx, touched, now, events, cause="factory_notice")
    if events:
        await tx.execute_many("insert_event", events)
    return applied
