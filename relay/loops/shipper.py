"""Shipper: writes each parcel's tracking back to its storefront, with persisted retries."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from relay.contracts import StorefrontAdapter
from relay.domain.models import PushState
from relay.domain.retry import RetryPolicy
from relay.exceptions import Verdict, as_retriable, classify, describe
from relay.faults import crash_point
from relay.loops.outbox import OutboxLoop
from relay.store import PushJob, PushOutcome, Store


class Shipper(OutboxLoop[PushJob, PushOutcome]):
    name = "shipper"

    def __init__(
        self,
        store: Store,
        storefronts: Mapping[str, StorefrontAdapter],
        policies: Mapping[str, RetryPolicy],
        *,
        owner: str,
        lease_s: float,
        batch_size: int,
        concurrency: dict[str, int],
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, concurrency=concurrency, clock=clock, log=log)
        self.store = store
        self.storefronts = storefronts
        self.policies = policies
        self.owner = owner
        self.lease_s = lease_s

    def destinations(self) -> Sequence[str]:
        return list(self.storefronts)

    def destination_of(self, job: PushJob) -> str:
        return job.storefront

    def job_id(self, job: PushJob) -> int:
        return job.id

    async def claim(self, destinations: Sequence[str], limit: int) -> list[PushJob]:
        return await self.store.claim_pushes(self.owner, destinations, self.clock(), self.lease_s, limit)

    async def next_due(self) -> float | None:
        return await self.store.next_push_due()

    async def send(self, job: PushJob) -> PushOutcome:
        attempt = job.attempts + 1
        log = self.log.bind(order_id=job.order_id, storefront=job.storefront, key=job.key, attempt=attempt)
        try:
            receipt = await self.storefronts[job.storefront].push_shipment(job.push)
            crash_point("during_push")
        except Exception as exc:  # one classification for every loop: relay.exceptions.classify
            if classify(exc) is not Verdict.RETRY:
                # REJECTED, or GONE: a storefront cannot be paused like a factory, so a 410 dead-letters
                # the push like any other refusal (ALREADY_SHIPPED only answers factory cancellations).
                log.warning("push_rejected", error=describe(exc), status=getattr(exc, "status", None))
                return PushOutcome(job, PushState.DEAD, error=describe(exc))
            decision = self.policies[job.storefront].decide(as_retriable(exc), attempt)
            if decision is None:
                log.error("push_retries_exhausted", error=describe(exc))
                return PushOutcome(job, PushState.DEAD, error=describe(exc))
            log.info(
                "push_failed", error=describe(exc), retry_in_s=round(decision.retry_at - self.clock(), 3)
            )
            return PushOutcome(job, PushState.PENDING, next_attempt_at=decision.retry_at, error=describe(exc))
        log.info("tracking_pushed", tracking_number=job.push.tracking_number, reference=receipt.reference)
        return PushOutcome(job, PushState.DONE, reference=receipt.reference)

    async def commit(self, outcomes: list[PushOutcome]) -> None:
        await self.store.record_pushes(outcomes, self.clock())
