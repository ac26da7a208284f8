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
before the cursor moved on may re-read up to `cursor_overlap_s`, twice `CURSOR_MARGIN_S` and the poll
interval before it (a sweep's window, below). An order already fulfilled on the storefront is recorded as
completed and never routed (`Store.ingest`).

Because the stored cursor stays `CURSOR_MARGIN_S` behind, a poll from it lists the last minute again. So
only a *sweep* does (the first poll of this process or of a new lease holder, then one at least every
`CURSOR_MARGIN_S`); the polls in between list from the newest stamp this process has listed (capped at
relay's clock when that poll began), less the overlap, so a poll lists what is new rather than a minute of
orders every time (issue 15: at 200 orders/s that re-listing and re-ingesting was most of the relay's work
and of an order's added latency). A sweep lists from `cursor - CURSOR_MARGIN_S - interval` (less the
overlap, never before the start point), so consecutive sweeps overlap by a full margin. That keeps the
margin's promise: an order visible on the storefront within `CURSOR_MARGIN_S` of its stamp (a replica's
lag, a listing that shifted while it was paged, a wrong stamp that made the poller skip it) is listed by a
sweep, about two minutes late at worst, never lost, whatever `cursor_overlap_s`, also across a restart or
a takeover of the lease.

A page's new orders are routed, and their deliveries claimed for the forwarder, in the page's own ingest
transaction (ADR 15: `route` is the router's `plan_at_ingest`, `claim` the forwarder's room); the poller
then hands the result on (`on_routed`) and wakes the router only for orders left to it.

One poller per storefront across every daemon on the database (ADR 14): a pass polls only under the
storefront's lease (`storefront:<name>`, `relay.loops.poller_lease`); every ingest is fenced by it, so a
poller that lost it (paused past it, another daemon took over) records nothing and stops the pass. The lease
is released when the poller stops.
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
from relay.loops.poller_lease import LeasedPoller
from relay.store import DeliveryClaim, IngestResult, PollerLease, RouteHook, Store

CURSOR_MARGIN_S = 60.0
"""The stored cursor stays at least this far behind relay's clock; stamps further ahead are logged."""


RECORD_POLL_EVERY_S = 1.0
"""A successful poll after a recorded success is recorded (`Store.record_poll`, for `relay status` and
`relay_storefront_last_poll_success_timestamp_seconds`) at most this often: a write transaction per poll
was 20 a second at a 50 ms interval. A failure, and the first success after one, are recorded at once."""


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


class OrderPoller(LeasedPoller):
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
        owner: str,
        lease_s: float,
        on_orders: Callable[[], None] = lambda: None,
        route: RouteHook | None = None,
        claim: Callable[[], DeliveryClaim | None] = lambda: None,
        release: Callable[[DeliveryClaim], None] = lambda claim: None,
        on_routed: Callable[[IngestResult], None] = lambda result: None,
        start_from: str = "now",
    ) -> None:
        super().__init__(
            store,
            f"storefront:{adapter.name}",
            owner=owner,
            lease_s=lease_s,
            interval=interval,
            clock=clock,
            log=log.bind(storefront=adapter.name),
        )
        self.start_from = start_from
        # No poll reads before this: the configured date, or (for "now") the start this process recorded.
        self._floor: datetime | None = None if start_from.strip().lower() == "now" else self._start(0.0)
        self.store = store
        self.adapter = adapter
        self.overlap = timedelta(seconds=overlap_s)
        self.on_orders = on_orders
        self.route = route
        self.claim = claim
        self.release = release
        self.on_routed = on_routed
        self.future_stamps = 0
        """Future stamps seen since start (each order and stamp counted once)."""
        self._future_seen: set[tuple[str, datetime]] = set()
        # The newest stamp this process listed and handed to the store (at most relay's clock at the
        # poll's start), and when the next sweep from the stored cursor is due (module docstring).
        self._listed: datetime | None = None
        self._sweep_at = 0.0
        self._token = 0  # the lease token of the last pass (a new one: this poller just took the storefront)
        self._ok_recorded_at: float | None = None  # when the last recorded poll outcome, a success, was

    async def poll_under(self, lease: PollerLease) -> None:
        """One poll under the storefront's lease (`LeasedPoller`). Its outcome is recorded once per pass
        (`Store.record_poll`) for `relay status`."""
        if lease.token != self._token:  # a new holder sweeps from the stored cursor
            self._token, self._listed, self._ok_recorded_at = lease.token, None, None
        try:
            await self.poll_once(lease)
        except AuthError as exc:
            self.health.failed(self.clock(), exc, "storefront_auth_failed")
            await self._record_poll(describe(exc))
        except RetriableAdapterError as exc:
            self.health.failed(self.clock(), exc, "storefront_unavailable")
            await self._record_poll(describe(exc))
        else:
            await self._record_poll(None)

    async def _record_poll(self, error: str | None) -> None:
        """`Store.record_poll`, only while the lease is still held: a daemon resumed after a pause past it
        (its request timed out meanwhile) does not record its outcome over the new holder's. A success that
        follows a recorded success is recorded at most every `RECORD_POLL_EVERY_S`."""
        now = self.clock()
        if (
            error is None
            and self._ok_recorded_at is not None
            and now - self._ok_recorded_at < RECORD_POLL_EVERY_S
        ):
            return
        if self.lease.holds():
            await self.store.record_poll(self.adapter.name, error is None, error, now)
            self._ok_recorded_at = now if error is None else None

    async def poll_once(self, lease: PollerLease) -> int:
        """Drain one listing, every write fenced by `lease` (`LeaseLost` when another daemon took it).
        Returns how many orders were new or changed."""
        now = self.clock()
        limit = datetime.fromtimestamp(now - CURSOR_MARGIN_S, UTC)
        self._forget_past_stamps(limit)
        stored = await self.store.get_cursor(self.adapter.name)
        if stored is None:
            stored = await self._first_start(now, limit, lease)
        cursor = min(stored, limit)  # a cursor stored in the future is not trusted
        start = cursor
        if self._listed is not None and now < self._sweep_at:
            start = max(cursor, self._listed)  # not the last minute again: from what was listed
        else:  # a sweep: from a margin before the stored cursor, so consecutive sweeps overlap by one
            self._sweep_at = now + CURSOR_MARGIN_S
            start = cursor - timedelta(seconds=CURSOR_MARGIN_S + self.interval)
        since = start - self.overlap
        if self._floor is not None and since < self._floor:
            since = self._floor
        newest: datetime | None = cursor
        listed, heard = self._listed, datetime.fromtimestamp(now, UTC)
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
                seen = min(order.updated_at, heard).astimezone(UTC)
                if listed is None or seen > listed:
                    listed = seen
            result = await self._ingest(orders, malformed, newest if self.adapter.is_sorted else None, lease)
            crash_point("after_ingest")
            for bad in (*malformed, *result.unstorable):
                self.log.warning("order_quarantined", external_id=bad.external_id, reason=bad.reason)
            changed += self._hand_on(result)
            self.lease.check()  # before the next page is asked for
        if not self.adapter.is_sorted and newest is not None and newest != cursor:
            await self._ingest([], [], newest, lease)
        self._listed = listed  # the whole listing is in the store
        self.health.ok(self.clock())
        if changed:
            self.log.info("orders_polled", changed=changed, pages=pages)
        return changed

    async def _ingest(
        self, orders: list[Order], malformed: list[Malformed], cursor: datetime | None, lease: PollerLease
    ) -> IngestResult:
        """`Store.ingest`, fenced by `lease` (which it renews)."""
        now = self.clock()
        claim = self.claim() if orders and self.route is not None else None
        try:
            result = await self.store.ingest(
                self.adapter.name, orders, malformed, cursor, now, fence=lease, route=self.route, claim=claim
            )
        finally:
            if claim is not None:
                self.release(claim)  # its jobs, if any, are handed over with the result (`on_routed`)
        self.lease.renewed(lease, now)
        return result

    def _hand_on(self, result: IngestResult) -> int:
        """Wake whoever has work from an ingested page: the router for orders left to it, the router's
        `on_routed` for orders routed at ingest. Returns how many orders were new or changed."""
        if result.routed:
            self.on_routed(result)
        if result.new > len(result.routed) or result.requeued or result.cancelled:
            self.on_orders()
        return result.new + result.requeued + result.cancelled

    def _start(self, now: float) -> datetime:
        return parse_start_from(self.start_from, now=now)

    async def _first_start(self, now: float, limit: datetime, lease: PollerLease) -> datetime:
        """No cursor yet: record the start point as the cursor (before listing) and log it."""
        start = min(self._start(now), limit)
        if self._floor is None:
            self._floor = start
        self.log.info("first_poll", start_from=self.start_from, since=start.isoformat())
        await self._ingest([], [], start, lease)
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
