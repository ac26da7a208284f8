"""The outbox: claims of due messages (to factories and storefronts), their outcomes, leases, due times."""

from __future__ import annotations

from collections.abc import Sequence

from relay.domain.models import (
    CANCEL_TRANSITIONS,
    FACTORY_ORDER_TRANSITIONS,
    PUSH_TRANSITIONS,
    AttentionReason,
    CancelState,
    FactoryOrder,
    FactoryOrderState,
    PushState,
    ShipmentPush,
    check_transition,
)
from relay.store.connector import Scalar, Transaction
from relay.store.records import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    DeliveryJob,
    DeliveryOutcome,
    PushJob,
    PushOutcome,
)
from relay.store.transitions import EventRow, event
from relay.store.transitions.orders import refresh_orders

# --- forward: messages to factories --------------------------------------------------------------------


async def claim_deliveries(
    tx: Transaction, owner: str, factories: Sequence[str], now: float, *, lease_s: float, limit: int
) -> list[DeliveryJob]:
    """Claim due messages to enabled factories: cancellations first, then orders."""
    names = list(factories)
    cancels = await tx.fetch(
        "claim_cancellations",
        owner=owner,
        lease_expires_at=now + lease_s,
        now=now,
        factories=names,
        limit=limit,
    )
    jobs = [
        DeliveryJob(
            id=r["id"],
            order_id=r["order_id"],
            factory=r["factory"],
            key=r["key"],
            attempts=r["attempts"],
            order=FactoryOrder.model_validate_json(r["payload"]),
            kind=ORDER_CANCELLED,
            requested_at=r["requested_at"],
        )
        for r in cancels
    ]
    if len(cancels) < limit:
        rows = await tx.fetch(
            "claim_deliveries",
            owner=owner,
            lease_expires_at=now + lease_s,
            now=now,
            factories=names,
            limit=limit - len(cancels),
        )
        jobs += [
            DeliveryJob(
                id=r["id"],
                order_id=r["order_id"],
                factory=r["factory"],
                key=r["key"],
                attempts=r["attempts"],
                order=FactoryOrder.model_validate_json(r["payload"]),
            )
            for r in rows
        ]
    return jobs


async def record_deliveries(tx: Transaction, outcomes: Sequence[DeliveryOutcome], now: float) -> None:
    """Group-commit delivery outcomes. An outcome for a row that moved on meanwhile, or an unattempted
    one, only frees its lease."""
    events: list[EventRow] = []
    touched: list[int] = []
    creates = [o for o in outcomes if o.job.kind == ORDER_CREATED]
    cancels = [o for o in outcomes if o.job.kind == ORDER_CANCELLED]
    if creates:
        await _record_creates(tx, creates, now, events, touched)
    if cancels:
        await _record_cancels(tx, cancels, now, events, touched)
    await refresh_orders(tx, touched, now, events, cause="delivery")
    await tx.execute_many("insert_event", events)


async def _record_creates(
    tx: Transaction,
    outcomes: Sequence[DeliveryOutcome],
    now: float,
    events: list[EventRow],
    touched: list[int],
) -> None:
    rows = {r["id"]: r for r in await tx.fetch("factory_orders_by_ids", ids=[o.job.id for o in outcomes])}
    updates: list[dict[str, Scalar]] = []
    releases: list[dict[str, Scalar]] = []
    for out in outcomes:
        row = rows[out.job.id]
        fo_id: int = row["id"]
        order_id: int = row["order_id"]
        factory: str = row["factory"]
        current = FactoryOrderState(row["state"])
        attempt: int = row["attempts"] + 1
        if current is not FactoryOrderState.PENDING or not out.attempted:
            releases.append({"id": fo_id})
            continue
        check_transition(FACTORY_ORDER_TRANSITIONS, current, out.state, subject=f"factory order {fo_id}")
        due = out.next_attempt_at if out.state is FactoryOrderState.PENDING else None
        reason = out.reason.value if out.reason else None
        updates.append(
            {
                "state": out.state,
                "attempts": attempt,
                "next_attempt_at": due,
                "error": out.error,
                "dead_reason": reason,
                "reference": out.reference,
                "now": now,
                "id": fo_id,
            }
        )
        touched.append(order_id)
        if out.state is FactoryOrderState.PLACED:
            events.append(
                event(
                    order_id,
                    now,
                    "factory_accepted",
                    factory=factory,
                    attempt=attempt,
                    reference=out.reference,
                )
            )
        elif out.state is FactoryOrderState.DEAD:
            events.append(
                event(
                    order_id,
                    now,
                    "dead_lettered",
                    factory=factory,
                    attempt=attempt,
                    reason=reason,
                    error=out.error,
                )
            )
        else:
            events.append(
                event(
                    order_id,
                    now,
                    "delivery_failed",
                    factory=factory,
                    attempt=attempt,
                    error=out.error,
                    next_attempt_at=due,
                )
            )
    await tx.execute_many("update_factory_order", updates)
    await tx.execute_many("release_factory_order_lease", releases)


async def _record_cancels(
    tx: Transaction,
    outcomes: Sequence[DeliveryOutcome],
    now: float,
    events: list[EventRow],
    touched: list[int],
) -> None:
    """Outcomes of `order.cancelled` messages. DONE cancels a placed factory order; REFUSED (the
    factory already shipped) leaves it, so its parcels keep flowing back."""
    rows = {r["id"]: r for r in await tx.fetch("cancellations_by_ids", ids=[o.job.id for o in outcomes])}
    for out in outcomes:
        row = rows[out.job.id]
        c_id: int = row["id"]
        order_id: int = row["order_id"]
        factory: str = row["factory"]
        current = CancelState(row["state"])
        if current is not CancelState.PENDING or not out.attempted:
            await tx.execute("release_cancellation_lease", id=c_id)
            continue
        target = CancelState(out.state)
        check_transition(CANCEL_TRANSITIONS, current, target, subject=f"cancellation {c_id}")
        attempt: int = row["attempts"] + 1
        due = out.next_attempt_at if target is CancelState.PENDING else None
        await tx.execute(
            "update_cancellation",
            state=target,
            attempts=attempt,
            next_attempt_at=due,
            error=out.error,
            now=now,
            id=c_id,
        )
        kind = {
            CancelState.DONE: "factory_cancelled",
            CancelState.REFUSED: "cancel_refused_already_shipped",
            CancelState.DEAD: "cancel_dead_lettered",
        }.get(target, "cancel_failed")
        events.append(
            event(order_id, now, kind, factory=factory, attempt=attempt, error=out.error, next_attempt_at=due)
        )
        if target is CancelState.DEAD:
            # Never silent: the customer cancelled, the factory may still ship. A person must follow up.
            await tx.execute(
                "flag_order",
                reason=AttentionReason.CANCEL_REJECTED,
                detail=f"{factory}: {out.error}",
                now=now,
                order_id=order_id,
            )
        if target is CancelState.DONE and FactoryOrderState(row["fo_state"]) is FactoryOrderState.PLACED:
            fo_id: int = row["factory_order_id"]
            check_transition(
                FACTORY_ORDER_TRANSITIONS,
                FactoryOrderState.PLACED,
                FactoryOrderState.CANCELLED,
                subject=f"factory order {fo_id}",
            )
            await tx.execute(
                "cancel_factory_order_locally", error="cancelled at the factory", now=now, id=fo_id
            )
            touched.append(order_id)


# --- ship: tracking pushes to storefronts --------------------------------------------------------------


async def claim_pushes(
    tx: Transaction, owner: str, storefronts: Sequence[str], now: float, *, lease_s: float, limit: int
) -> list[PushJob]:
    """Claim due tracking pushes to `storefronts`."""
    rows = await tx.fetch(
        "claim_pushes",
        owner=owner,
        lease_expires_at=now + lease_s,
        now=now,
        storefronts=list(storefronts),
        limit=limit,
    )
    return [
        PushJob(
            id=r["id"],
            order_id=r["order_id"],
            storefront=r["storefront"],
            key=r["key"],
            attempts=r["attempts"],
            push=ShipmentPush.model_validate_json(r["payload"]),
        )
        for r in rows
    ]


async def record_pushes(tx: Transaction, outcomes: Sequence[PushOutcome], now: float) -> None:
    """Group-commit push outcomes; one for a push no longer pending only frees its lease."""
    rows = {r["id"]: r for r in await tx.fetch("pushes_by_ids", ids=[o.job.id for o in outcomes])}
    updates: list[dict[str, Scalar]] = []
    events: list[EventRow] = []
    touched: list[int] = []
    for out in outcomes:
        row = rows[out.job.id]
        push_id: int = row["id"]
        order_id: int = row["order_id"]
        attempts: int = row["attempts"]
        current = PushState(row["state"])
        if current is not PushState.PENDING:
            updates.append(
                {
                    "state": current,
                    "attempts": attempts,
                    "next_attempt_at": None,
                    "error": None,
                    "dead_reason": None,
                    "reference": None,
                    "now": now,
                    "id": push_id,
                }
            )
            continue
        check_transition(PUSH_TRANSITIONS, current, out.state, subject=f"push {push_id}")
        attempt = attempts + 1
        due = out.next_attempt_at if out.state is PushState.PENDING else None
        reason = AttentionReason.PUSH_REJECTED.value if out.state is PushState.DEAD else None
        updates.append(
            {
                "state": out.state,
                "attempts": attempt,
                "next_attempt_at": due,
                "error": out.error,
                "dead_reason": reason,
                "reference": out.reference,
                "now": now,
                "id": push_id,
            }
        )
        touched.append(order_id)
        kind = {PushState.DONE: "tracking_pushed", PushState.DEAD: "push_dead_lettered"}.get(
            out.state, "push_failed"
        )
        events.append(
            event(
                order_id,
                now,
                kind,
                tracking_number=out.job.push.tracking_number,
                attempt=attempt,
                error=out.error,
                reference=out.reference,
                next_attempt_at=due,
            )
        )
    await tx.execute_many("update_push", updates)
    await refresh_orders(tx, touched, now, events, cause="push")
    await tx.execute_many("insert_event", events)


# --- leases and due times ------------------------------------------------------------------------------

_LEASE_RELEASES = (
    "release_order_leases",
    "release_delivery_leases",
    "release_cancellation_leases",
    "release_push_leases",
)


async def release_leases(tx: Transaction, owner: str) -> None:
    """Free every lease held by `owner`."""
    for query in _LEASE_RELEASES:
        await tx.execute(query, owner=owner)


async def next_due(tx: Transaction) -> float | None:
    """Earliest outbox message due (factories enabled), or None."""
    row = await tx.fetch_one("next_due")
    return row["due"] if row else None


async def next_delivery_due(tx: Transaction, excluding: Sequence[str]) -> float | None:
    """Earliest message owed to an enabled factory not in `excluding`, or None."""
    row = await tx.fetch_one("next_delivery_due", excluding=list(excluding))
    return row["due"] if row else None


async def next_push_due(tx: Transaction) -> float | None:
    """Earliest tracking push owed, or None."""
    row = await tx.fetch_one("next_push_due")
    return row["due"] if row else None
