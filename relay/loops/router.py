"""Router: turns received orders into factory orders, or holds them with a reason.

It routes by the SKU catalogue in the store. Every pass that has orders to plan reads the catalogue's
version number (with the disabled factories, one tiny read) and reloads its copy of the catalogue only when
that number moved, so an import takes effect on the next pass without a restart.

Most orders are routed before the router sees them: the order poller hands `plan_at_ingest` to
`Store.ingest`, which plans a page's new orders with the router's catalogue and applies the plans in the
ingest's own transaction (issue 15: one write per page instead of three, and no wait for a router pass).
It declines, leaving the orders to a router pass, when its copy of the catalogue is missing or older than
the store's, or when the storefront caps its orders per hour (the count is the router's read). A pass
routes the rest: orders of a declined page, orders put back to routing (edited before placing, released by
an operator, rerouted), and orders stored by a daemon that does not route at ingest.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from relay.domain.models import AttentionReason
from relay.domain.routing import Catalogue, Guards, plan_route
from relay.loops.base import Loop
from relay.store import RouteJob, RoutePlan, RoutingSnapshot, Store


class Router(Loop):
    name = "router"

    def __init__(
        self,
        store: Store,
        test_tags: Mapping[str, Collection[str]],
        *,
        owner: str,
        lease_s: float,
        batch_size: int,
        clock: Callable[[], float],
        log: Any,
        on_routed: Callable[[], None] = lambda: None,
        guards: Guards | None = None,
    ) -> None:
        super().__init__(interval=5.0, clock=clock, log=log)
        self.store = store
        self.catalogue: Catalogue | None = None
        self.guards = guards or Guards()
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
        snapshot = await self.store.routing_snapshot()
        if self.catalogue is None or self.catalogue.version != snapshot.catalogue_version:
            self.catalogue = Catalogue(await self.store.list_skus(), snapshot.catalogue_version)
            self.log.info("catalogue_loaded", version=snapshot.catalogue_version)
        capped = any(g.max_orders_per_hour is not None for g in self.guards.storefronts.values())
        routed = await self.store.orders_routed_since(now - 3600) if capped else {}
        plans = self._plan(self.catalogue, snapshot, jobs, routed, now)
        applied = await self.store.apply_routing(plans, self.clock())
        if applied < len(plans):
            # The poller stored a newer version of some of these orders since the claim (or they moved on):
            # their plans were dropped (`route_plan_stale` in their history) and their leases freed.
            self.log.info("route_plans_dropped", dropped=len(plans) - applied, planned=len(plans))
        self.routed(plans, logged=applied == len(plans))
        return len(jobs) == self.batch_size or applied < len(plans)  # dropped plans: plan again at once

    def plan_at_ingest(self, snapshot: RoutingSnapshot, jobs: Sequence[RouteJob]) -> list[RoutePlan] | None:
        """`RouteHook` for `Store.ingest`: plans for a page's new orders, or None to leave them to a pass
        (module docstring). Runs inside the store's transaction: it reads only this router's own state."""
        catalogue = self.catalogue
        if catalogue is None or catalogue.version != snapshot.catalogue_version:
            return None
        if any(self._capped(job.storefront) for job in jobs):
            return None
        return self._plan(catalogue, snapshot, jobs, {}, self.clock())

    def routed(self, plans: Sequence[RoutePlan], *, logged: bool = True, wake: bool = True) -> None:
        """After routing plans were applied (by a pass or at ingest): log each plan (with `logged`: not
        when some were dropped, as it is not known which) and, with `wake`, wake the forwarder for the
        orders placed (an ingest that claimed their deliveries hands them over itself)."""
        for plan in plans if logged else ():
            if plan.hold is not None:
                self.log.warning(
                    "order_held", order_id=plan.order_id, reason=plan.hold.value, detail=plan.detail
                )
            elif plan.cancel:
                self.log.info("order_cancelled", order_id=plan.order_id)
            else:
                self.log.debug(  # info: order_state_changed (with `factories`)
                    "order_routed",
                    order_id=plan.order_id,
                    factories=[fo.factory for fo in plan.factory_orders],
                )
        if wake and any(plan.factory_orders for plan in plans):
            self.on_routed()

    def _capped(self, storefront: str) -> bool:
        rules = self.guards.storefronts.get(storefront)
        return rules is not None and rules.max_orders_per_hour is not None

    def _plan(
        self,
        catalogue: Catalogue,
        snapshot: RoutingSnapshot,
        jobs: Sequence[RouteJob],
        routed: dict[str, int],
        now: float,
    ) -> list[RoutePlan]:
        """Plan each job; `routed` counts each storefront's orders routed in the last hour (for its cap),
        and is counted up as plans place orders."""
        unavailable = {name: "disabled" for name in snapshot.disabled_factories}
        plans = []
        for job in jobs:
            try:
                plan = plan_route(
                    job,
                    catalogue,
                    test_tags=self.test_tags.get(job.storefront, ()),
                    unavailable=unavailable,
                    guards=self.guards,
                    routed_last_hour=routed.get(job.storefront, 0),
                    now=now,
                )
            except Exception as exc:  # one order relay cannot plan (an amount past Decimal's range) waits
                # for a person with the reason; it must not fail its whole batch again and again.
                why = f"{type(exc).__name__}: {exc}"[:500]
                plan = RoutePlan(
                    job.order_id,
                    hold=AttentionReason.ROUTING_FAILED,
                    detail=why,
                    content_hash=job.content_hash,
                )
            if plan.factory_orders:
                routed[job.storefront] = routed.get(job.storefront, 0) + 1
            plans.append(plan)
        return plans
