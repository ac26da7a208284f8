"""Routing: which factory makes each line. Pure functions, no I/O.

Lines are mapped by SKU, a stable id, never by title. An order whose SKUs belong to two factories
becomes two factory orders. An order that cannot be routed is held with a reason, never dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import replace

from relay.domain.models import AttentionReason, FactoryOrder, OrderLine, factory_order_key
from relay.store import RouteJob, RoutePlan


def plan_route(
    job: RouteJob, sku_map: Mapping[str, str], *, test_tags: Collection[str] = (), now: float
) -> RoutePlan:
    """Decide what happens to one received order.

    The plan carries the version it was made for (`job.content_hash`): the store applies it only to that
    version. `now` is kept for callers; a factory order carries the order's own creation time.
    """
    plan = _decide(job, sku_map, test_tags)
    return replace(plan, content_hash=job.content_hash)


def _decide(  # noqa: PLR0911 - a decision table reads best as early returns
    job: RouteJob, sku_map: Mapping[str, str], test_tags: Collection[str]
) -> RoutePlan:
    order = job.order
    if order.cancelled:
        return RoutePlan(job.order_id, cancel=True)
    if order.fulfilled:
        return RoutePlan(
            job.order_id,
            hold=AttentionReason.ALREADY_FULFILLED,
            detail="fulfilled on the storefront before relay routed it",
        )
    tagged = sorted(set(order.tags) & set(test_tags))
    if order.test or tagged:
        detail = f"tagged {', '.join(tagged)}" if tagged else "storefront marks it as a test order"
        return RoutePlan(job.order_id, hold=AttentionReason.TEST_ORDER, detail=detail)
    if not order.paid:
        return RoutePlan(job.order_id, hold=AttentionReason.UNPAID, detail="waiting for payment")
    missing = [line.line_id for line in order.lines if not line.sku]
    if missing:
        return RoutePlan(
            job.order_id, hold=AttentionReason.MISSING_SKU, detail=f"lines without SKU: {', '.join(missing)}"
        )
    skus = {line.line_id: line.sku for line in order.lines if line.sku}  # every line has one (checked above)
    unknown = sorted({sku for sku in skus.values() if sku not in sku_map})
    if unknown:
        return RoutePlan(
            job.order_id, hold=AttentionReason.UNKNOWN_SKU, detail=f"unmapped SKUs: {', '.join(unknown)}"
        )
    by_factory: dict[str, list[OrderLine]] = defaultdict(list)
    for line in order.lines:
        by_factory[sku_map[skus[line.line_id]]].append(line)
    return RoutePlan(
        job.order_id,
        factory_orders=tuple(
            FactoryOrder(
                key=factory_order_key(job.storefront, order.external_id, factory),
                factory=factory,
                storefront=job.storefront,
                order_id=order.external_id,
                order_number=order.number,
                created_at=order.created_at,
                currency=order.currency,
                email=order.email,
                shipping_address=order.shipping_address,
                lines=tuple(lines),
            )
            for factory, lines in sorted(by_factory.items())
        ),
    )
