"""OrderPoller: one per storefront. Lists orders updated since the stored cursor and hands pages to the store.

The cursor belongs to the core. Each poll asks for orders updated since `cursor - overlap`, so orders
sharing the cursor's timestamp, or updated while the previous listing was in progress, are seen again;
the store ignores what it already has. For sorted adapters the cursor moves with each committed page;
for unsorted ones only after the whole listing was drained.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from relay.contracts import StorefrontAdapter
from relay.domain.models import Malformed, Order
from relay.exceptions import AuthError, RetriableAdapterError
from relay.faults import crash_point
from relay.loops.base import Loop
from relay.store import Store


class OrderPoller(Loop):
    name = "poller"

    def __init__(
        self,
        store: Store,
        adapter: StorefrontAdapter,
        *,
        interval: float,
        overlap_s: float,
        clock: Callable[[], float],
        log: Any,
        on_orders: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(interval=interval, clock=clock, log=log.bind(storefront=adapter.name))
        self.store = store
        self.adapter = adapter
        self.overlap = timedelta(seconds=overlap_s)
        self.on_orders = on_orders

    async def run_pass(self) -> bool:
        try:
            await self.poll_once()
        except AuthError as exc:
            self.health.failed(self.clock(), exc, "storefront_auth_failed")
        except RetriableAdapterError as exc:
            self.health.failed(self.clock(), exc, "storefront_unavailable")
        return False

    async def poll_once(self) -> int:
        """Drain one listing. Returns how many orders were new or changed."""
        cursor = await self.store.get_cursor(self.adapter.name)
        since = cursor - self.overlap if cursor else None
        newest: datetime | None = cursor
        changed = pages = 0
        async for page in self.adapter.fetch_orders(since):
            pages += 1
            orders = [o for o in page if isinstance(o, Order)]
            malformed = [m for m in page if isinstance(m, Malformed)]
            for order in orders:
                if newest is None or order.updated_at > newest:
                    newest = order.updated_at
            result = await self.store.ingest(
                self.adapter.name, orders, malformed, newest if self.adapter.is_sorted else None, self.clock()
            )
            crash_point("after_ingest")
            for bad in malformed:
                self.log.warning("order_quarantined", external_id=bad.external_id, reason=bad.reason)
            if result.new or result.requeued or result.cancelled:
                changed += result.new + result.requeued + result.cancelled
                self.on_orders()
        if not self.adapter.is_sorted and newest is not None and newest != cursor:
            await self.store.ingest(self.adapter.name, [], [], newest, self.clock())
        self.health.ok(self.clock())
        if changed:
            self.log.info("orders_polled", changed=changed, pages=pages)
        return changed
