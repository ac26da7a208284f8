"""The outbox: claims of due messages (to factories and storefronts), their outcomes, leases, due times."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC

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
from relay.store import wakeups
from relay.store.connector import Scalar, Transaction
from relay.store.records import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    DeliveryClaim,
    DeliveryJob,
    DeliveryOutcome,
    PushJob,
    PushOutcome,
)
from relay.store.transitions import EventRow, event
from relay.store.transitions import catalogue as catalogue_tx
from relay.store.transitions.orders import (
    cancel_unshipped_rest,
    factory_order_state,
    push_state,
    refresh_orders,
)

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
            lease_token=r["lease_token"],
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
                lease_token=r["lease_token"],
            )
            for r in rows
        ]
    return jobs


async def claim_at_ingest(
    tx: Transaction, claim: DeliveryClaim, factories: Collection[str], now: float
) -> list[DeliveryJob]:
    """`Store.ingest(claim=...)`: claim due deliveries to `factories` (those the page's orders were just
    routed to) within the forwarder's room, one factory after another as its pass would."""
    jobs: list[DeliveryJob] = []
    for factory in sorted(factories):
        limit = min(claim.room.get(factory, 0), claim.total - len(jobs))
        if limit > 0:
            jobs += await claim_deliveries(
                tx, claim.owner, [factory], now, lease_s=claim.lease_s, limit=limit
            )
    return jobs


async def record_deliveries(
    tx: Transaction, outcomes: Sequence[DeliveryOutcome], now: float
) -> list[DeliveryOutcome]:
    """Group-commit delivery outcomes. An outcome for a row that moved on meanwhile, or an unattempted
    one, only frees its lease. A stale one (the row was claimed again since: its fencing token moved on)
    changes nothing at all and is returned, for the caller to log."""
    events: list[EventRow] = []
    touched: list[int] = []
    stale: list[DeliveryOutcome] = []
    creates = [o for o in outcomes if o.job.kind == ORDER_CREATED]
    cancels = [o for o in outcomes if o.job.kind == ORDER_CANCELLED]
    if creates:
        await _record_creates(tx, creates, now, events, touched, stale=stale)
    if cancels:
        await _record_cancels(tx, cancels, now, events, touched, stale=stale)
    await refresh_orders(tx, touched, now, events, cause="delivery")
    await tx.execute_many("insert_event", events)
    return stale


async def _record_creates(
    tx: Transaction,
    outcomes: Sequence[DeliveryOutcome],
    now: float,
    events: list[EventRow],
    touched: list[int],
    *,
    stale: list[DeliveryOutcome],
) -> None:
    rows = {r["id"]: r for r in await tx.fetch("factory_orders_by_ids", ids=[o.job.id for o in outcomes])}
    updates: list[dict[str, Scalar]] = []
    releases: list[dict[str, Scalar]] = []
    for out in outcomes:
        row = rows.get(out.job.id)
        if row is None or row["lease_token"] != out.job.lease_token:
            stale.append(out)  # claimed again since (the lease lapsed): the newer claim decides
            continue
        fo_id: int = row["id"]
        order_id: int = row["order_id"]
        factory: str = row["factory"]
        current = factory_order_state(row["state"])
        attempt: int = row["attempts"] + 1
        if current is not FactoryOrderState.PENDING or not out.attempted:
            releases.append({"id": fo_id})
            if current is FactoryOrderState.PENDING and out.status is not None:  # answered, not counted (410)
                events.append(_answer(order_id, now, "factory_gone", out, factory=factory, attempt=attempt))
            continue
        state = out.state
        reason = out.reason.value if out.reason else None
        if await _moved_to_fallback(tx, out, fo_id, now=now, events=events):
            state, reason = FactoryOrderState.CANCELLED, None  # closed, never placed
        check_transition(FACTORY_ORDER_TRANSITIONS, current, state, subject=f"factory order {fo_id}")
        due = out.next_attempt_at if state is FactoryOrderState.PENDING else None
        updates.append(
            {
                "state": state,
                "attempts": attempt,
                "next_attempt_at": due,
                "error": out.error,
                "dead_reason": reason,
                "reference": out.reference,
                "amount": str(out.amount) if out.amount is not None else None,
                "currency": out.currency,
                "pay_deadline_iso": out.pay_deadline.astimezone(UTC).isoformat()
                if out.pay_deadline
                else None,
                "attention": out.attention.value if out.attention else None,
                "now": now,
                "id": fo_id,
            }
        )
        touched.append(order_id)
        if state is FactoryOrderState.PLACED:
            money: dict[str, str | None] = {}
            if out.amount is not None:
                money = {"amount": str(out.amount), "currency": out.currency}
            if out.attention is not None:
                money["attention"] = out.attention.value
            if out.pay_deadline is not None:
                money["pay_deadline"] = out.pay_deadline.astimezone(UTC).isoformat()
            events.append(
                event(
                    order_id,
                    now,
                    "factory_accepted",
                    factory=factory,
                    attempt=attempt,
                    reference=out.reference,
                    **money,
                )
            )
        elif state is FactoryOrderState.DEAD:
            events.append(
                event(
                    order_id,
                    now,
                    "dead_lettered",
                    factory=factory,
                    attempt=attempt,
                    reason=reason,
                    error=out.error,
                    status=out.status,
                    response=out.response,
                )
            )
        elif state is FactoryOrderState.PENDING:  # (CANCELLED: the `fallback` event says where and why)
            events.append(
                event(
                    order_id,
                    now,
                    "delivery_failed",
                    factory=factory,
                    attempt=attempt,
                    error=out.error,
                    next_attempt_at=due,
                    status=out.status,
                    response=out.response,
                )
            )
    await tx.execute_many("update_factory_order", updates)
    await tx.execute_many("release_factory_order_lease", releases)


async def _moved_to_fallback(
    tx: Transaction, out: DeliveryOutcome, fo_id: int, *, now: float, events: list[EventRow]
) -> bool:
    """An out-of-stock answer: the factory made nothing and holds nothing, so the lines go to the next
    factory by catalogue priority, if every line has one (`transitions.catalogue.fall_back`)."""
    if out.state is not FactoryOrderState.DEAD or out.reason is not AttentionReason.OUT_OF_STOCK:
        return False
    moved = await catalogue_tx.fall_back(
        tx, out.job.order_id, fo_id, why="out_of_stock", detail=out.error, now=now, events=events
    )
    return bool(moved)


async def _record_cancels(
    tx: Transaction,
    outcomes: Sequence[DeliveryOutcome],
    now: float,
    events: list[EventRow],
    touched: list[int],
    *,
    stale: list[DeliveryOutcome],
) -> None:
    """Outcomes of `order.cancelled` messages. DONE cancels a placed factory order; REFUSED (the
    factory already shipped) leaves it, so its parcels keep flowing back."""
    rows = {r["id"]: r for r in await tx.fetch("cancellations_by_ids", ids=[o.job.id for o in outcomes])}
    for out in outcomes:
        row = rows.get(out.job.id)
        if row is None or row["lease_token"] != out.job.lease_token:
            stale.append(out)  # claimed again since: the newer claim decides
            continue
        c_id: int = row["id"]
        order_id: int = row["order_id"]
        factory: str = row["factory"]
        current = CancelState(row["state"])
        if current is not CancelState.PENDING or not out.attempted:
            await tx.execute("release_cancellation_lease", id=c_id)
            if current is CancelState.PENDING and out.status is not None:  # answered, not counted (410)
                events.append(
                    _answer(order_id, now, "factory_gone", out, factory=factory, message=ORDER_CANCELLED)
                )
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
            event(
                order_id,
                now,
                kind,
                factory=factory,
                attempt=attempt,
                error=out.error,
                next_attempt_at=due,
                status=out.status,
                response=out.response,
            )
        )
        if target in (CancelState.DEAD, CancelState.REFUSED):
            # Never silent: the customer cancelled, the factory may still ship (or refused: it already
            # shipped, the parcels are coming). A person must follow up with the customer.
            refused = "refused, already shipped" if target is CancelState.REFUSED else out.error
            await tx.execute(
                "flag_order",
                reason=(out.reason if target is CancelState.DEAD else None)
                or AttentionReason.CANCEL_REJECTED,
                detail=f"{factory}: {refused}",
                now=now,
                order_id=order_id,
            )
        if (
            target is CancelState.DONE
            and FactoryOrderState(row["fo_state"]) is FactoryOrderState.PARTIALLY_SHIPPED
        ):
            # Cancelled after a partial shipment: the factory stops the unshipped rest.
            await cancel_unshipped_rest(tx, row["factory_order_id"], order_id, now, events, factory=factory)
            touched.append(order_id)
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


def _answer(
    order_id: int, now: float, kind: str, out: DeliveryOutcome | PushOutcome, **detail: str | float | None
) -> EventRow:
    """The history event of an attempt the remote end answered but that does not count (a 410, a 429)."""
    answered: dict[str, object] = {"status": out.status, "response": out.response, "error": out.error}
    return event(order_id, now, kind, None, None, **answered, **detail)


# --- ship: tracking pushes to storefronts --------------------------------------------------------------


async def claim_pushes(
    tx: Transaction, owner: str, storefronts: Sequence[str], now: float, *, lease_s: float, limit: int
) -> list[PushJob]:
    """Claim due tracking pushes to `storefronts`. The claim adds 1 to the row's `lease_token` (its claim
    counter) in this transaction; when every earlier claim's outcome is settled (`settled_token` is one
    behind: pushed, throttled or never sent), the job's push says `prior_attempt_unknown=False` and the
    adapter writes without looking first. A crash after the write leaves its claim unsettled: the next
    claim looks."""
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
            push=_claimed_push(
                r["payload"], prior_attempt_unknown=r["settled_token"] != r["lease_token"] - 1
            ),
            lease_token=r["lease_token"],
        )
        for r in rows
    ]


def _claimed_push(payload: str, *, prior_attempt_unknown: bool) -> ShipmentPush:
    """The stored push with the claim's `prior_attempt_unknown`: `model_validate_json(payload)` then
    `model_copy(update=...)` in one validation (~1.6x faster) of the payload with the field added. The payload
    never holds it (the field is excluded from dumps); one that does, or is not a bare object, is validated,
    then copied."""
    if payload.endswith("}") and '"prior_attempt_unknown"' not in payload:
        flag = "true" if prior_attempt_unknown else "false"
        return ShipmentPush.model_validate_json(f'{payload[:-1]},"prior_attempt_unknown":{flag}}}')
    push = ShipmentPush.model_validate_json(payload)
    return push.model_copy(update={"prior_attempt_unknown": prior_attempt_unknown})


async def record_pushes(tx: Transaction, outcomes: Sequence[PushOutcome], now: float) -> list[PushOutcome]:
    """Group-commit push outcomes; one for a push no longer pending only frees its lease. An unattempted
    one keeps its attempt count: throttled (it has a `next_attempt_at`: the capacity the storefront
    announced) it is due again then; not sent at all, it only frees its lease."""
    rows = {r["id"]: r for r in await tx.fetch("pushes_by_ids", ids=[o.job.id for o in outcomes])}
    updates: list[dict[str, Scalar]] = []
    events: list[EventRow] = []
    touched: list[int] = []
    stale: list[PushOutcome] = []  # claimed again since (fencing token moved on): changes nothing
    unattempted: list[tuple[str, dict[str, Scalar]]] = []
    for out in outcomes:
        row = rows.get(out.job.id)
        if row is None or row["lease_token"] != out.job.lease_token:
            stale.append(out)
            continue
        push_id: int = row["id"]
        order_id: int = row["order_id"]
        attempts: int = row["attempts"]
        current = push_state(row["state"])
        if current is not PushState.PENDING:
            updates.append(
                {
                    "state": current,
                    "attempts": attempts,
                    "next_attempt_at": None,
                    "error": None,
                    "dead_reason": None,
                    "reference": None,
                    "settled": False,
                    "now": now,
                    "id": push_id,
                }
            )
            continue
        if not out.attempted:  # not sent, or throttled (the platform's schedule): the attempt does not count
            if out.status is not None:  # the storefront answered (429): in the history, not counted
                events.append(
                    _answer(
                        order_id,
                        now,
                        "push_throttled",
                        out,
                        tracking_number=out.job.push.tracking_number,
                        next_attempt_at=out.next_attempt_at,
                    )
                )
            if out.next_attempt_at is None:
                unattempted.append(("release_push_lease", {"id": push_id}))
            else:
                args = {"next_attempt_at": out.next_attempt_at, "error": out.error, "now": now}
                unattempted.append(("defer_push", {**args, "id": push_id}))
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
                "settled": out.state is PushState.DONE,  # a failure may have written: look next time
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
                status=out.status,
                response=out.response,
            )
        )
    await tx.execute_many("update_push", updates)
    for query, args in unattempted:
        await tx.execute(query, **args)
    await refresh_orders(tx, touched, now, events, cause="push")
    await tx.execute_many("insert_event", events)
    return stale


# --- leases and due times ------------------------------------------------------------------------------

_LEASE_RELEASES = (
    "release_order_leases",
    "release_delivery_leases",
    "release_cancellation_leases",
    "release_push_leases",
    "release_poller_leases",
)


async def release_leases(tx: Transaction, owner: str) -> None:
    """Free every lease held by `owner`: outbox claims and poller leases. What was freed is any daemon's
    to take now (`wakeups.ALL`: a daemon stopping hands its claimed work over at once)."""
    freed = 0
    for query in _LEASE_RELEASES:
        freed += await tx.execute(query, owner=owner)
    if freed:
        tx.notify(wakeups.ALL)


async def release_all_leases(tx: Transaction) -> int:
    """Free every lease, whoever holds it: only for the holder of the database's daemon lock at start-up,
    when no other daemon can be alive to hold one (ADR 11). Returns how many were freed."""
    freed = 0
    for query in (
        "release_all_order_leases",
        "release_all_delivery_leases",
        "release_all_cancellation_leases",
        "release_all_push_leases",
        "release_all_poller_leases",
    ):
        freed += await tx.execute(query)
    return freed


@dataclass(frozen=True, slots=True)
class _Held:
    id: int
    lease_token: int
    renew: bool


async def _still_held(
    tx: Transaction, query: str, jobs: Sequence[DeliveryJob] | Sequence[PushJob], now: float, need_s: float
) -> list[_Held]:
    """Which of `jobs` are still pending under their token; `renew` when fewer than `need_s` seconds of
    their lease are left (or it lapsed)."""
    if not jobs:
        return []
    rows = {r["id"]: r for r in await tx.fetch(query, ids=[j.id for j in jobs])}
    held = []
    for job in jobs:
        row = rows.get(job.id)
        if row is None or row["state"] != "pending" or row["lease_token"] != job.lease_token:
            continue
        # Still pending under our token, so nothing (no cancellation, no other claim) touched it. A lease
        # that is short or lapsed is renewed before the send, under the same condition, in a write.
        expires = row["lease_expires_at"]
        held.append(_Held(job.id, job.lease_token, expires is None or expires - now < need_s))
    return held


async def still_held_deliveries(
    tx: Transaction, jobs: Sequence[DeliveryJob], now: float, need_s: float
) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """The pre-send check (read only): `(ok, to_renew)` as `(kind, id)` pairs."""
    ok: set[tuple[str, int]] = set()
    renew: set[tuple[str, int]] = set()
    for kind, query in ((ORDER_CREATED, "delivery_leases"), (ORDER_CANCELLED, "cancellation_leases")):
        for h in await _still_held(tx, query, [j for j in jobs if j.kind == kind], now, need_s):
            (renew if h.renew else ok).add((kind, h.id))
    return ok, renew


async def renew_deliveries(
    tx: Transaction, jobs: Sequence[DeliveryJob], now: float, lease_s: float
) -> set[tuple[str, int]]:
    """Extend the leases of `jobs` still pending under their token; the `(kind, id)` pairs renewed."""
    renewed = set()
    for job in jobs:
        query = "renew_cancellation_lease" if job.kind == ORDER_CANCELLED else "renew_delivery_lease"
        if await tx.execute(query, id=job.id, lease_token=job.lease_token, lease_expires_at=now + lease_s):
            renewed.add((job.kind, job.id))
    return renewed


async def still_held_pushes(
    tx: Transaction, jobs: Sequence[PushJob], now: float, need_s: float
) -> tuple[set[int], set[int]]:
    """The pre-send check for pushes (read only): `(ok, to_renew)` ids."""
    held = await _still_held(tx, "push_leases", jobs, now, need_s)
    return {h.id for h in held if not h.renew}, {h.id for h in held if h.renew}


async def renew_pushes(tx: Transaction, jobs: Sequence[PushJob], now: float, lease_s: float) -> set[int]:
    """Extend the leases of `jobs` still pending under their token; the ids renewed."""
    renewed = set()
    for job in jobs:
        if await tx.execute(
            "renew_push_lease", id=job.id, lease_token=job.lease_token, lease_expires_at=now + lease_s
        ):
            renewed.add(job.id)
    return renewed


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
