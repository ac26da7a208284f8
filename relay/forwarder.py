"""Forwarder: delivers factory orders from the outbox, exactly once in effect.

The idempotency key travels on every attempt; a crash between the factory's 2xx and our commit
means the order is sent again with the same key, and the factory keeps one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from relay.contracts import FactoryAdapter
from relay.exceptions import FatalAdapterError, RetriableAdapterError
from relay.faults import crash_point
from relay.loop import OutboxLoop
from relay.models import AttentionReason, FactoryOrderState
from relay.retry import RetryPolicy
from relay.store import DeliveryJob, DeliveryOutcome, Store


def describe(exc: BaseException) -> str:
    """An error as stored and logged: message plus the quoted response body, if any."""
    body = getattr(exc, "body", None)
    return f"{exc}: {body}" if body else (str(exc) or type(exc).__name__)


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
    ) -> None:
        super().__init__(batch_size=batch_size, concurrency=concurrency, clock=clock, log=log)
        self.store = store
        self.factories = factories
        self.policies = policies
        self.owner = owner
        self.lease_s = lease_s
        self.on_placed = on_placed

    def destinations(self) -> Sequence[str]:
        return list(self.factories)

    def destination_of(self, job: DeliveryJob) -> str:
        return job.factory

    def job_id(self, job: DeliveryJob) -> int:
        return job.id

    async def claim(self, destinations: Sequence[str], limit: int) -> list[DeliveryJob]:
        return await self.store.claim_deliveries(self.owner, destinations, self.clock(), self.lease_s, limit)

    async def next_due(self) -> float | None:
        return await self.store.next_due()

    async def send(self, job: DeliveryJob) -> DeliveryOutcome:
        attempt = job.attempts + 1
        log = self.log.bind(order_id=job.order_id, factory=job.factory, key=job.key, attempt=attempt)
        try:
            crash_point("before_factory_post")
            placement = await self.factories[job.factory].submit(job.order)
            crash_point("after_factory_post")
        except FatalAdapterError as exc:
            log.warning("factory_rejected", error=describe(exc), status=exc.status)
            return DeliveryOutcome(job, FactoryOrderState.DEAD, error=describe(exc),
                                   reason=AttentionReason.FACTORY_REJECTED)
        except Exception as exc:
            error = exc if isinstance(exc, RetriableAdapterError) else RetriableAdapterError(describe(exc))
            decision = self.policies[job.factory].decide(error, attempt)
            if decision is None:
                log.error("retries_exhausted", error=describe(exc))
                return DeliveryOutcome(job, FactoryOrderState.DEAD, error=describe(exc),
                                       reason=AttentionReason.RETRIES_EXHAUSTED)
            log.info("delivery_failed", error=describe(exc), retry_in_s=round(decision.retry_at - self.clock(), 3))
            return DeliveryOutcome(job, FactoryOrderState.PENDING, next_attempt_at=decision.retry_at,
                                   error=describe(exc))
        log.info("order_placed", reference=placement.reference)
        return DeliveryOutcome(job, FactoryOrderState.PLACED, reference=placement.reference)

    async def commit(self, outcomes: list[DeliveryOutcome]) -> None:
        await self.store.record_deliveries(outcomes, self.clock())
        crash_point("after_commit")

    async def after_commit(self, outcomes: list[DeliveryOutcome]) -> None:
        if any(o.state is FactoryOrderState.PLACED for o in outcomes):
            self.on_placed()
