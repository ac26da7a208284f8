"""Forwarder: delivers factory messages from the outbox, exactly once in effect.

Two messages leave from here: `order.created` (a factory order) and `order.cancelled`. The idempotency
key travels on every attempt; a crash between the factory's 2xx and our commit means the message is
sent again with the same key, and the factory keeps one.

Each factory has a circuit. A retriable failure opens it: the healthy→failing transition is logged once,
and while it is open at most one delivery (a probe) is in flight to that factory, no sooner than the
failed probe's own retry time; the first success closes it ("recovered", logged once) and normal
concurrency resumes. A 410 disables the factory in the store (logged once, by whoever disabled it):
its messages wait, uncounted, until `relay factories enable NAME`. The circuit lives in memory; after a
restart every factory starts closed. Its transitions (and that reset) are recorded in the store for
`relay status` (`Store.record_factory_health`), never per order.

Fallback factories (issue 13): a factory that answers out of stock closes that factory order and the store
sends its lines to the next factory by catalogue priority (`record_deliveries`). Factory orders never sent
to a disabled factory, or to one whose circuit has been open longer than its `fallback_after_s`, are moved
the same way (`Store.reroute_unavailable`, at most every `REROUTE_EVERY_S` and right after a 410).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relay.contracts import FactoryAdapter, NeedsAttention
from relay.domain.models import AttentionReason, CancelState, FactoryOrderState
from relay.domain.retry import RetryPolicy
from relay.exceptions import RetriableAdapterError, StoreError, Verdict, as_retriable, classify, describe
from relay.faults import crash_point
from relay.loops.base import Health
from relay.loops.outbox import OutboxLoop
from relay.observability.metrics import Metrics
from relay.store import ORDER_CANCELLED, DeliveryClaim, DeliveryJob, DeliveryOutcome, RoutePlan, Store
from relay.store.records import answer

REROUTE_EVERY_S = 30.0
"""How often the forwarder looks for never-sent factory orders of unavailable factories to move."""


@dataclass
class Circuit:
    """One factory's breaker (see the module docstring)."""

    health: Health
    open: bool = False
    probe: int | None = None  # job id of the one delivery allowed while open
    probe_at: float = 0.0  # no probe before this time
    gone: bool = False  # answered 410: jobs claimed before are not sent; the store holds the disabled state
    dirty: bool = True  # changed since the store last recorded it (`Store.record_factory_health`)

    def may_claim(self, now: float) -> bool:
        return not self.open or (self.probe is None and self.probe_at <= now)


class Forwarder(OutboxLoop[DeliveryJob, DeliveryOutcome]):
    name = "forwarder"

    def __init__(
        self,
        store: Store,
        factories: Mapping[str, FactoryAdapter],
        policies: Mapping[str, RetryPolicy],
        *,
        owner: str,
        lease_s: float,
        batch_size: int,
        concurrency: dict[str, int],
        clock: Callable[[], float],
        log: Any,
        on_placed: Callable[[], None] = lambda: None,
        send_budget_s: Mapping[str, float] | None = None,
        fallback_after_s: Mapping[str, float] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            concurrency=concurrency,
            clock=clock,
            log=log,
            lease_s=lease_s,
            send_budget_s=send_budget_s,
        )
        self.store = store
        self.factories = factories
        self.policies = policies
        self.owner = owner
        self.lease_s = lease_s
        self.on_placed = on_placed
        self.circuits = {name: Circuit(Health(log, factory=name)) for name in factories}
        self.metrics = metrics or Metrics()
        self._probed = False
        self.fallback_after_s = dict(fallback_after_s or {})
        self._reroute_at = 0.0  # when to look for factory orders to move to a fallback factory next

    def failing_circuits(self) -> dict[str, str | None]:
        """Open circuits as `factory:NAME` → last error, for `App.health()` (`/healthz` shows the names):
        an open circuit is a factory that is not taking orders, however long its `Retry-After`."""
        return {f"factory:{name}": c.health.last_error for name, c in self.circuits.items() if c.open}

    def destinations(self) -> Sequence[str]:
        now = self.clock()
        return [name for name, circuit in self.circuits.items() if circuit.may_claim(now)]

    def destination_of(self, job: DeliveryJob) -> str:
        return job.factory

    def job_id(self, job: DeliveryJob) -> int:
        # Cancellations live in their own table: negative ids keep both kinds apart in one claimed-set.
        return -job.id if job.kind == ORDER_CANCELLED else job.id

    async def run_pass(self) -> bool:
        self._probed = False
        await self.record_circuits()
        moved = await self._reroute()
        busy = await super().run_pass()
        return busy or self._probed or moved  # after a probe, look again: a success reopens the factory

    async def _reroute(self) -> bool:
        """Move never-sent factory orders of disabled factories, and of factories failing for longer than
        their `fallback_after_s`, to their fallback factories (see the module docstring)."""
        now = self.clock()
        if now < self._reroute_at:
            return False
        self._reroute_at = now + REROUTE_EVERY_S
        failing = {
            name: f"failing for {now - since:.0f}s"
            for name, circuit in self.circuits.items()
            if (since := circuit.health.failing_since) is not None
            and name in self.fallback_after_s
            and now - since >= self.fallback_after_s[name]
        }
        moved = await self.store.reroute_unavailable(failing, now)
        if moved:
            self.log.info("factory_orders_rerouted", count=moved, failing=sorted(failing))
        return moved > 0

    async def claim(self, destinations: Sequence[str], limit: int) -> list[DeliveryJob]:
        now = self.clock()
        closed = [name for name in destinations if not self.circuits[name].open]
        jobs = (
            await self.store.claim_deliveries(self.owner, closed, now, self.lease_s, limit) if closed else []
        )
        for name in destinations:
            circuit = self.circuits[name]
            if circuit.open and len(jobs) < limit:
                probe = await self.store.claim_deliveries(self.owner, [name], now, self.lease_s, 1)
                if probe:
                    circuit.probe = self.job_id(probe[0])
                    self._probed = True
                    jobs.extend(probe)
        self._handed_out(jobs)
        return jobs

    def _handed_out(self, jobs: Sequence[DeliveryJob]) -> None:
        """The store handed out these factories' rows (to a pass or an ingest): they were re-enabled."""
        for job in jobs:
            self.circuits[job.factory].gone = False

    def claim_at_ingest(self) -> DeliveryClaim | None:
        """What an ingest may claim for this forwarder (`Store.ingest(claim=...)`): room at factories with
        a closed circuit, reserved until `release_claim` (None when there is none)."""
        free, total = self.room()
        room = {name: n for name, n in free.items() if not self.circuits[name].open}
        if not room or total <= 0:
            return None
        self.reserve(room, total)
        return DeliveryClaim(self.owner, self.lease_s, room, total)

    def release_claim(self, claim: DeliveryClaim) -> None:
        """The ingest given `claim` is over (committed or not): its room is no longer held; the jobs it
        claimed come through `placed_at_ingest`."""
        self.unreserve(claim.room, claim.total)

    def placed_at_ingest(self, jobs: Sequence[DeliveryJob], plans: Sequence[RoutePlan]) -> None:
        """Send the deliveries an ingest claimed (`claim_at_ingest`); a pass looks for the factory orders it
        routed and did not claim (no room, a full batch)."""
        self._handed_out(jobs)
        self.take(jobs)
        claimed = {job.key for job in jobs}
        if any(fo.key not in claimed for plan in plans for fo in plan.factory_orders):
            self.wake()

    async def confirm(self, jobs: list[DeliveryJob]) -> list[DeliveryJob]:
        need = max((self._need_s.get(j.factory, 0.0) for j in jobs), default=0.0)
        return await self.store.confirm_deliveries(jobs, self.clock(), self.lease_s, need)

    async def renew(self, jobs: list[DeliveryJob]) -> None:
        await self.store.confirm_deliveries(
            jobs, self.clock(), self.lease_s, self.lease_s
        )  # need a full lease: renew

    def unsent(self, job: DeliveryJob) -> DeliveryOutcome:
        # Only frees the lease (a stale one changes nothing): a cancellation queued meanwhile need not wait.
        pending = CancelState.PENDING if job.kind == ORDER_CANCELLED else FactoryOrderState.PENDING
        return DeliveryOutcome(job, pending, attempted=False)

    async def next_due(self) -> float | None:
        # Open circuits and factories at their claim cap wait for a probe time or a finishing send;
        # disabled ones the store leaves out.
        gated = [name for name, c in self.circuits.items() if c.open or name in self._full]
        due = await self.store.next_delivery_due(gated)
        probes = [c.probe_at for c in self.circuits.values() if c.open and c.probe is None]
        return min([t for t in (due, *probes) if t is not None], default=None)

    async def send(self, job: DeliveryJob) -> DeliveryOutcome:
        circuit = self.circuits[job.factory]
        if circuit.gone or (circuit.open and circuit.probe != self.job_id(job)):
            return DeliveryOutcome(
                job, FactoryOrderState.PENDING, attempted=False
            )  # claimed before it opened
        attempt = job.attempts + 1
        cancel = job.kind == ORDER_CANCELLED
        log = self.log.bind(order_id=job.order_id, factory=job.factory, key=job.key, attempt=attempt)
        pending, dead = (
            (CancelState.PENDING, CancelState.DEAD)
            if cancel
            else (FactoryOrderState.PENDING, FactoryOrderState.DEAD)
        )
        try:
            outcome = await self._deliver(job, log)
        except Exception as exc:  # one classification for every loop: relay.exceptions.classify
            verdict = classify(exc)
            if verdict is Verdict.GONE:
                circuit.gone, circuit.probe = True, None
                self._reroute_at = 0.0  # its never-sent orders may go to a fallback factory now
                if await self.store.disable_factory(job.factory, describe(exc), self.clock()):
                    log.error(
                        "factory_disabled", error=describe(exc), hint=f"relay factories enable {job.factory}"
                    )
                status, response = answer(exc)
                return DeliveryOutcome(
                    job, pending, error=describe(exc), attempted=False, status=status, response=response
                )
            if verdict is Verdict.REJECTED:
                log.warning(
                    "factory_rejected",
                    error=describe(exc),
                    status=getattr(exc, "status", None),
                    message=job.kind,
                )
                self._close(circuit)
                status, response = answer(exc)
                return DeliveryOutcome(
                    job,
                    dead,
                    error=describe(exc),
                    reason=attention_reason(exc, cancel=cancel),
                    reference=getattr(exc, "reference", None),
                    status=status,
                    response=response,
                )
            if verdict is Verdict.RETRY:
                return self._retry(job, circuit, as_retriable(exc), log, pending=pending, dead=dead)
            log.info("cancel_refused_already_shipped")
            status, response = answer(exc)
            outcome = DeliveryOutcome(
                job, CancelState.REFUSED, error=describe(exc), status=status, response=response
            )
        self._close(circuit)
        return outcome

    async def _deliver(self, job: DeliveryJob, log: Any) -> DeliveryOutcome:
        adapter = self.factories[job.factory]
        if job.kind == ORDER_CANCELLED:
            await adapter.cancel(job.order, cancelled_at=datetime.fromtimestamp(job.requested_at or 0, UTC))
            log.info("factory_cancelled")
            return DeliveryOutcome(job, CancelState.DONE)
        crash_point("before_factory_post")
        placement = await adapter.submit(job.order)
        crash_point("after_factory_post")
        # Debug: the reference is shown at info on the order's state change (or `order_event`).
        log.debug("order_placed", reference=placement.reference)
        return DeliveryOutcome(
            job,
            FactoryOrderState.PLACED,
            reference=placement.reference,
            amount=placement.amount,
            currency=placement.currency,
            pay_deadline=placement.pay_deadline,
            attention=placement.attention,
        )

    def _retry(
        self,
        job: DeliveryJob,
        circuit: Circuit,
        error: RetriableAdapterError,
        log: Any,
        *,
        pending: FactoryOrderState | CancelState,
        dead: FactoryOrderState | CancelState,
    ) -> DeliveryOutcome:
        attempt = job.attempts + 1
        decision = self.policies[job.factory].decide(error, attempt)
        now = self.clock()
        circuit.open, circuit.probe, circuit.dirty = True, None, True
        circuit.probe_at = decision.retry_at if decision else now
        circuit.health.failed(now, describe(error), "factory_failing")
        status, response = answer(error)
        if decision is None:
            log.error("retries_exhausted", error=describe(error), message=job.kind)
            reason = None if dead is CancelState.DEAD else AttentionReason.RETRIES_EXHAUSTED
            return DeliveryOutcome(
                job, dead, error=describe(error), reason=reason, status=status, response=response
            )
        log.debug(
            "delivery_failed",
            error=describe(error),
            retry_in_s=round(decision.retry_at - now, 3),
            message=job.kind,
        )
        return DeliveryOutcome(
            job,
            pending,
            next_attempt_at=decision.retry_at,
            error=describe(error),
            status=status,
            response=response,
        )

    def _close(self, circuit: Circuit) -> None:
        if circuit.open:
            circuit.open, circuit.probe, circuit.dirty = False, None, True
            self.wake()
        circuit.health.ok(self.clock())

    async def record_circuits(self) -> None:
        """Store each circuit that changed since it was last stored (`relay status` shows them): opened, a
        probe failed, recovered; and, on the first pass, every circuit (closed after a restart). Only on
        those transitions, never per order. A store failure keeps it owed for the next call."""
        for name, circuit in self.circuits.items():
            if not circuit.dirty:
                continue
            failing = circuit.health.failing_since if circuit.open else None
            try:
                await self.store.record_factory_health(
                    name,
                    failing,
                    circuit.probe_at if circuit.open else None,
                    circuit.health.last_error if circuit.open else None,
                    self.clock(),
                )
            except StoreError as exc:
                self.log.warning("factory_health_not_recorded", factory=name, error=str(exc))
                return
            circuit.dirty = False

    async def commit(self, outcomes: list[DeliveryOutcome]) -> None:
        stale = await self.store.record_deliveries(outcomes, self.clock())
        crash_point("after_commit")
        self.metrics.deliveries_recorded(outcomes, stale)
        for out in stale:
            self.log.warning(
                "stale_outcome_ignored",
                order_id=out.job.order_id,
                factory=out.job.factory,
                key=out.job.key,
                message=out.job.kind,
                fence=out.job.lease_token,  # the fencing token (a counter, not a credential)
            )

    async def after_commit(self, outcomes: list[DeliveryOutcome]) -> None:
        await self.record_circuits()
        if any(o.state is FactoryOrderState.PLACED for o in outcomes):
            self.on_placed()


def attention_reason(exc: BaseException, *, cancel: bool) -> AttentionReason:
    """Why a rejected message needs a person: the adapter's own reason (`NeedsAttention`, e.g.
    `refund_required`, `address_invalid`), else `cancel_rejected` or `factory_rejected`."""
    if isinstance(exc, NeedsAttention):
        return exc.reason
    return AttentionReason.CANCEL_REJECTED if cancel else AttentionReason.FACTORY_REJECTED
