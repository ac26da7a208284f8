"""Router: turns received orders into factory orders, or holds them with a reason."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from relay.domain.routing import plan_route
from relay.loops.base import Loop
from relay.store import Store


class Router(Loop):
    name = "router"

    def __init__(
        self,
        store: Store,
        sku_map: Mapping[str, str],
        test_tags: Mapping[str, Collection[str]],
        *,
        owner: str,
        lease_s: float,
        batch_size: int,
        clock: Callable[[], float],
        log: Any,
        on_routed: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(interval=5.0, clock=clock, log=log)
        self.store = store
        self.sku_map = sku_map
        self.test_tags = test_tags
        self.owner = owner
        self.lease_s = lease_s
        self.batch_size = batch_size
        self.on_routed = on_routed

    async def run_pass(self) -> bool:
        now = self.clock()
        jobs = await self.store.claim_orders_to_route(self.owner, now, self.lease_s, self.batch_size)
        if not jobs:
            return False
        plans = [
            plan_route(job, self.sku_map, test_tags=self.test_tags.get(job.storefront, ()), now=now)
            for job in jobs
        ]
        applied = await self.store.apply_routing(plans, self.clock())
        if applied < len(plans):
            # The poller stored a newer version of some of these orders since the claim (or they moved on):
            # their plans were dropped (`route_plan_stale` in their history) and their leases freed.
            self.log.info("route_plans_dropped", dropped=len(plans) - applied, planned=len(plans))
        for plan in plans if applied == len(plans) else ():
            if plan.hold is not None:
                self.log.warning(
                    "order_held", order_id=plan.order_id, reason=plan.hold.value, detail=plan.detail
                )
            elif plan.cancel:
                self.log.info("order_cancelled", order_id=plan.order_id)
            else:
                self.log.info(
                    "order_routed",
                    order_id=plan.order_id,
                    factories=[fo.factory for fo in plan.factory_orders],
                )
        if any(plan.factory_orders for plan in plans):
            self.on_routed()
        return len(jobs) == self.batch_size or applied < len(plans)  # dropped plans: plan again at once
