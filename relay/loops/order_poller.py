"""OrderPoller: one per storefront. Lists orders updated since the stored cursor and hands pages to the store.

The cursor belongs to the core. Each poll asks for orders updated since `cursor - overlap`, so orders
sharing the cursor's timestamp, or updated while the previous listing was in progress, are seen again;
the store ignores what it already has. For sorted adapters the cursor moves with each committed page;
for unsorted ones only after the whole listing was drained.

The cursor is bounded by relay's own clock: it is never stored, nor read, beyond `clock() -
CURSOR_MARGIN_S`. An order stamped in the future (a storefront's clock ahead, a bad import) would
otherwise carry the cursor past every order updated before that stamp, and they would never be listed.
Such an order is simply listed again on later polls (the store ignores what it already has) until relay's
clock passes its stamp. A stamp more than `CURSOR_MARGIN_S` ahead of relay's clock is a *future stamp*:
logged once per order and stamp (`future_timestamp`, with the storefront, the order's external id and
`ahead_s`) and counted in `future_stamps` (`relay_future_timestamps_total{storefront}` on `/metrics`).

The first poll (no stored cursor) never lists the shop's history: it starts at the storefront's
`start_from` ("now", the daemon's first start, or a date), logs `first_poll` with that start point, and
stores it as the cursor before listing, so a crash mid-listing resumes from there. No poll ever reads
before the start point (`cursor_overlap_s` included) while this process runs; with "now", a restart
before the cursor moved on may re-read up to `cursor_overlap_s` + `CURSOR_MARGIN_S` before it. An order
already fulfilled on the storefront is recorded as completed and never routed (`Store.ingest`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.config import parse_start_from
from relay.contracts import StorefrontAdapter
from relay.domain.models import Malformed, Order
from relay.exceptions import AuthError, RetriableAdapterError, describe
from relay.faults import crash_point
from relay.loops.base import Loop
from relay.store import Store

CURSOR_MARGIN_S = 60.0
"""The stored cursor stays at least this far behind relay's clock; stamps further ahead are logged."""


def describe_first_poll(storefront: str, start_from: str) -> str:
    """What the first poll of `storefront` (no stored cursor yet) picks up, for `relay check`."""
    if start_from.strip().lower() == "now":
        point = 'the daemon\'s first start (start_from = "now")'
    else:
        point = parse_start_from(start_from, now=0.0).isoformat().replace("+00:00", "Z")
    return (
        f"storefront {storefront}: the first poll (no stored cursor) lists orders updated since {point}; "
        "earlier orders are never listed, orders already fulfilled on the storefront are recorded, never routed"
    )


class OrderPoller(Loop):
    """Polls one storefront for orders updated since its cursor and hands every page to the store."""

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
        start_from: str = "now",
    ) -> None:
        super().__init__(interval=interval, clock=clock, log=log.bind(storefront=adapter.name))
        self.start_from = start_from
        # No poll reads before this: the configured date, or (for "now") the start this process recorded.
        self._floor: datetime | None = None if start_from.strip().lower() == "now" else self._start(0.0)
        self.store = store
        self.adapter = adapter
        self.overlap = timedelta(seconds=overlap_s)
        self.on_orders = on_orders
        self.future_stamps = 0
        """Future stamps seen since start (each order and stamp counted once)."""
        self._future_seen: set[tuple[str, datetime]] = set()

    async def run_pass(self) -> bool:
        """One poll; its outcome is recorded once per pass (`Store.record_poll`) for `relay status`."""
        try:
            await self.poll_once()
        except AuthError as exc:
            self.health.failed(self.clock(), exc, "storefront_auth_failed")
            await self.store.record_poll(self.adapter.name, False, describe(exc), self.clock())
        except RetriableAdapterError as exc:
            self.health.failed(self.clock(), exc, "storefront_unavailable")
            await self.store.record_poll(self.adapter.name, False, describe(exc), self.clock())
        else:
            await self.store.record_poll(self.adapter.name, True, None, self.clock())
        return False

    async def poll_once(self) -> int:
        """Drain one listing. Returns how many orders were new or changed."""
        now = self.clock()
        limit = datetime.fromtimestamp(now - CURSOR_MARGIN_S, UTC)
        self._forget_past_stamps(limit)
        stored = await self.store.get_cursor(self.adapter.name)
        if stored is None:
            stored = await self._first_start(now, limit)
        cursor = min(stored, limit)  # a cursor stored in the future is not trusted
        since = cursor - self.overlap
        if self._floor is not None and since < self._floor:
            since = self._floor
        newest: datetime | None = cursor
        changed = pages = 0
        async for page in self.adapter.fetch_orders(since):
            pages += 1
            orders = [o for o in page if isinstance(o, Order)]
            malformed = [m for m in page if isinstance(m, Malformed)]
            for order in orders:
                self._check_stamp(order, now)
                stamp = min(order.updated_at, limit).astimezone(UTC)  # one offset: the store compares text
                if newest is None or stamp > newest:
                    newest = stamp
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

    def _start(self, now: float) -> datetime:
        return parse_start_from(self.start_from, now=now)

    async def _first_start(self, now: float, limit: datetime) -> datetime:
        """No cursor yet: record the start point as the cursor (before listing) and log it."""
        start = min(self._start(now), limit)
        if self._floor is None:
            self._floor = start
        self.log.info("first_poll", start_from=self.start_from, since=start.isoformat())
        await self.store.ingest(self.adapter.name, [], [], start, self.clock())
        return start

    def _check_stamp(self, order: Order, now: float) -> None:
        """Log and count an order stamped more than `CURSOR_MARGIN_S` ahead of relay's clock, once."""
        ahead_s = order.updated_at.timestamp() - now
        if ahead_s <= CURSOR_MARGIN_S:
            return
        key = (order.external_id, order.updated_at)
        if key in self._future_seen:
            return
        self._future_seen.add(key)
        self.future_stamps += 1
        self.log.warning(
            "future_timestamp",
            external_id=order.external_id,
            updated_at=order.updated_at.isoformat(),
            ahead_s=round(ahead_s, 3),
        )

    def _forget_past_stamps(self, limit: datetime) -> None:
        """Drop remembered future stamps relay's clock has passed: they are not listed as future again."""
        self._future_seen = {key for key in self._future_seen if key[1] > limit}
