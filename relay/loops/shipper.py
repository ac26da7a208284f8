"""Shipper: writes each parcel's tracking back to its storefront, with persisted retries."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from relay.contracts import StorefrontAdapter
from relay.domain.models import PushState
from relay.domain.retry import RetryPolicy, cap_retry_after
from relay.exceptions import Throttled, Verdict, as_retriable, classify, describe
from relay.faults import crash_point
from relay.loops.base import Health
from relay.loops.outbox import OutboxLoop
from relay.observability.metrics import Metrics
from relay.store import PushJob, PushOutcome, Store
from relay.store.records import answer


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
        send_budget_s: Mapping[str, float] | None = None,
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
        self.storefronts = storefronts
        self.policies = policies
        self.owner = owner
        self.lease_s = lease_s
        self.metrics = metrics or Metrics()
        # Retriable push failures per storefront: logged once when they start, then summarised.
        self.push_health = {name: Health(log, storefront=name) for name in storefronts}

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

    async def confirm(self, jobs: list[PushJob]) -> list[PushJob]:
        # The pre-send check (ADR 11): still pending, still leased under the job's token.
        need = max((self._need_s.get(j.storefront, 0.0) for j in jobs), default=0.0)
        return await self.store.confirm_pushes(jobs, self.clock(), self.lease_s, need)

    async def renew(self, jobs: list[PushJob]) -> None:
        await self.store.confirm_pushes(
            jobs, self.clock(), self.lease_s, self.lease_s
        )  # need a full lease: renew

    def unsent(self, job: PushJob) -> PushOutcome:
        return PushOutcome(job, PushState.PENDING, attempted=False)  # only frees the lease, or is stale

    async def send(self, job: PushJob) -> PushOutcome:
        attempt = job.attempts + 1
        log = self.log.bind(order_id=job.order_id, storefront=job.storefront, key=job.key, attempt=attempt)
        try:
            receipt = await self.storefronts[job.storefront].push_shipment(job.push)
            crash_point("during_push")
        except Throttled as exc:
            # The storefront's rate limit is its schedule, not a failed attempt: come back when the
            # capacity it announced is there, without spending the persisted retry schedule.
            wait = cap_retry_after(exc.retry_after if exc.retry_after is not None else 1.0)
            log.info("push_throttled", error=describe(exc), retry_in_s=round(wait, 3))
            status, response = answer(exc)
            return PushOutcome(
                job,
                PushState.PENDING,
                next_attempt_at=self.clock() + wait,
                error=describe(exc),
                attempted=False,
                status=status,
                response=response,
            )
        except Exception as exc:  # one classification for every loop: relay.exceptions.classify
            status, response = answer(exc)
            if classify(exc) is not Verdict.RETRY:
                # REJECTED, or GONE: a storefront cannot be paused like a factory, so a 410 dead-letters
                # the push like any other refusal (ALREADY_SHIPPED only answers factory cancellations).
                log.warning("push_rejected", error=describe(exc), status=getattr(exc, "status", None))
                return PushOutcome(job, PushState.DEAD, error=describe(exc), status=status, response=response)
            decision = self.policies[job.storefront].decide(as_retriable(exc), attempt)
            if decision is None:
                log.error("push_retries_exhausted", error=describe(exc))
                return PushOutcome(job, PushState.DEAD, error=describe(exc), status=status, response=response)
            self.push_health[job.storefront].failed(self.clock(), describe(exc), "storefront_push_failing")
            log.debug(
                "push_failed", error=describe(exc), retry_in_s=round(decision.retry_at - self.clock(), 3)
            )
            return PushOutcome(
                job,
                PushState.PENDING,
                next_attempt_at=decision.retry_at,
                error=describe(exc),
                status=status,
                response=response,
            )
        self.push_health[job.storefront].ok(self.clock())
        # Debug: the tracking number is shown at info on the order's state change (or `order_event`).
        log.debug("tracking_pushed", tracking_number=job.push.tracking_number, reference=receipt.reference)
        return PushOutcome(job, PushState.DONE, reference=receipt.reference)

    async def commit(self, outcomes: list[PushOutcome]) -> None:
        stale = await self.store.record_pushes(outcomes, self.clock())
        self.metrics.pushes_recorded(outcomes, stale)
        for out in stale:  # claimed again since (fencing token moved on): recorded nothing (ADR 11)
            self.log.warning(
                "stale_outcome_ignored",
                order_id=out.job.order_id,
                storefront=out.job.storefront,
                key=out.job.key,
                fence=out.job.lease_token,  # the fencing token (a counter, not a credential)
            )
