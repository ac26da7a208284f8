"""A poller's lease on its storefront or polled factory (issue 16, ADR 14): one poller per storefront and
per polled factory across every daemon on the database.

At the start of each pass the poller asks `hold()` for its lease. While more than half of the lease
period is left it is used as it is, with no store call (the fenced writes of each page renew it, and the
local copy follows: `renewed()`); otherwise it is taken or renewed in one write, and a daemon whose lease
is held by another live one gets None (one read, no write) and its pass does nothing. The lease's token
fences the poller's writes: `LeaseLost` from one of them means another daemon took the poll over, and the
pass stops (`lost()`); so does a lease found expired by the local copy before the next page is asked for
(`check()`: the process was paused mid-pass). Every change of who polls is logged once: `poller_lease_acquired`,
`poller_lease_held_elsewhere` (info: a standby poller is not a failure), `poller_lease_lost` (warning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from relay.exceptions import LeaseLost, StoreError
from relay.store import PollerLease, Store


class PollerLeaseKeeper:
    """Keeps lease `name` (`storefront:<name>`, `factory:<name>`) for `owner`, `lease_s` at a time."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        owner: str,
        lease_s: float,
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        self.store = store
        self.name = name
        self.owner = owner
        self.lease_s = lease_s
        self.clock = clock
        self.log = log
        self.lease: PollerLease | None = None
        """The lease as this process last knew it held (None: not held)."""
        self._elsewhere = False  # the last `hold()` found it held by another daemon (logged once)

    async def hold(self) -> PollerLease | None:
        """The lease for this pass, or None when another daemon holds it (the pass then does nothing)."""
        now = self.clock()
        held = self.lease
        if held is not None and held.expires_at - now > self.lease_s / 2:
            return held
        lease = await self.store.acquire_poller_lease(self.name, self.owner, self.lease_s, now)
        if lease is None:
            if held is not None or not self._elsewhere:
                self.log.info("poller_lease_held_elsewhere", lease=self.name)
            self.lease, self._elsewhere = None, True
            return None
        if held is None or held.token != lease.token:
            self.log.info("poller_lease_acquired", lease=self.name, token=lease.token)
        self.lease, self._elsewhere = lease, False
        return lease

    def renewed(self, lease: PollerLease, now: float) -> None:
        """A write fenced by `lease` at `now` went through: it renewed the lease to `now + lease_s`."""
        if self.lease is not None and self.lease.token == lease.token:
            self.lease = replace(self.lease, expires_at=max(self.lease.expires_at, now + lease.lease_s))

    def check(self) -> None:
        """Before the next request of a pass: raise `LeaseLost` when the lease has expired by the local
        copy (the process was paused, or a page took longer than the lease), so a daemon resumed mid-pass
        does not list what another may be polling now. The next pass asks the store again."""
        if self.lease is None or self.lease.expires_at <= self.clock():
            raise LeaseLost(f"poller lease {self.name} expired mid-pass")

    def lost(self, error: LeaseLost) -> None:
        """A fenced write or `check()` raised `LeaseLost`: the pass stops; the next one asks again."""
        self.log.warning("poller_lease_lost", lease=self.name, error=str(error))
        self.lease, self._elsewhere = None, True

    async def release(self) -> None:
        """Hand the lease over now (the poller stops), so another daemon need not wait for it to expire. A
        store error is logged: the lease then simply expires."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        try:
            await self.store.release_poller_lease(lease)
        except StoreError as exc:
            self.log.warning("poller_lease_release_failed", lease=self.name, error=str(exc))
