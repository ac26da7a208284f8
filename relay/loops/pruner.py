"""Pruner: the daemon's retention pass (`[retention]`), the same work as `relay prune`.

It runs once when the daemon starts and then every `retention.interval_s` (a day by default). Each
batch is one short write transaction (see `relay.store.transitions.retention`), so the other loops are
never held up for long; a failed pass is logged and counted in health like any loop's, and tried again
at the next interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.config import RetentionSettings
from relay.loops.base import Loop
from relay.store import PruneReport, Store

DAY_S = 86400.0


async def prune(
    store: Store, retention: RetentionSettings, now: float, *, dry_run: bool = False
) -> PruneReport:
    """One retention pass over `store` as configured (shared by the loop and `relay prune`)."""
    return await store.prune(
        inbound_before=now - retention.inbound_message_days * DAY_S,
        history_before=now - retention.order_history_days * DAY_S,
        batch_size=retention.batch_size,
        dry_run=dry_run,
    )


class Pruner(Loop):
    name = "pruner"

    def __init__(
        self, store: Store, retention: RetentionSettings, *, clock: Callable[[], float], log: Any
    ) -> None:
        super().__init__(interval=retention.interval_s, clock=clock, log=log)
        self.store = store
        self.retention = retention

    async def run_pass(self) -> bool:
        report = await prune(self.store, self.retention, self.clock())
        if report.total:
            self.log.info(
                "pruned",
                inbound_messages=report.inbound_messages,
                orders=report.orders,
                order_events=report.order_events,
                shipments=report.shipments,
                storefront_pushes=report.storefront_pushes,
            )
        return False
