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

Between passes `LeasedPoller.run` keeps a held lease renewed (`renew()`, at half its period), so a poller
whose interval is longer than `[daemon] poller_lease_s` keeps it while it lives, and the takeover bound
stays `poller_lease_s` whatever the interval: without it the lease would lapse between passes and flip
between daemons, each flip a new token, two log lines and a new holder's listing from the stored cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from relay.exceptions import LeaseLost, StoreError
from relay.loops.base import Loop, wait_any
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

    def renew_in(self) -> float | None:
        """Seconds until a held lease is due for renewal (half its period left); None when not held."""
        held = self.lease
        return None if held is None else held.expires_at - self.lease_s / 2 - self.clock()

    async def renew(self) -> None:
        """Renew a held lease that is due (`hold()`); a lease not held is left to the next pass."""
        if self.lease is not None:
            await self.hold()

    def renewed(self, lease: PollerLease, now: float) -> None:
        """A write fenced by `lease` at `now` went through: it set the lease's expiry to `now + lease_s`."""
        if self.lease is not None and self.lease.token == lease.token:
            self.lease = replace(self.lease, expires_at=now + lease.lease_s)

    def holds(self) -> bool:
        """Whether the lease is still this process's by its local copy (taken, not lost, not expired by
        the clock): a pass's outcome is recorded only then, so a daemon resumed after a pause, whose
        request failed meanwhile, does not record its failure over what the new holder recorded."""
        return self.lease is not None and self.lease.expires_at > self.clock()

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


class LeasedPoller(Loop):
    """A poller that polls only under its lease: `run_pass` takes it (`hold()`) and, when this daemon has it,
    polls (`poll_under`); `LeaseLost` ends the pass. While `run` runs, a task renews a held lease between
    passes; when it ends, the lease is released."""

    def __init__(
        self,
        store: Store,
        lease_name: str,
        *,
        owner: str,
        lease_s: float,
        interval: float,
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        super().__init__(interval=interval, clock=clock, log=log)
        self.lease = PollerLeaseKeeper(store, lease_name, owner=owner, lease_s=lease_s, clock=clock, log=log)

    async def run(self, stopping: asyncio.Event) -> None:
        """The loop (`Loop.run`) with the lease kept renewed between passes; released when it stops."""
        renewing = asyncio.create_task(self._keep_lease(stopping), name=f"{self.label}:lease")
        try:
            await super().run(stopping)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await self.lease.release()

    async def run_pass(self) -> bool:
        """One poll under the lease; nothing without it (another daemon polls)."""
        lease = await self.lease.hold()
        if lease is None:
            return False
        try:
            await self.poll_under(lease)
        except LeaseLost as exc:
            self.lease.lost(exc)
        return False

    async def poll_under(self, lease: PollerLease) -> None:
        """One poll, every write fenced by `lease`; adapter failures are the poller's to report."""
        raise NotImplementedError

    async def _keep_lease(self, stopping: asyncio.Event) -> None:
        """Renew a held lease at half its period, so passes further apart than that keep it."""
        while not stopping.is_set():
            due = self.lease.renew_in()
            # Never spin: a renewal due now waits a twentieth of the period (half the period is still left).
            wait = self.lease.lease_s / 2 if due is None else max(due, self.lease.lease_s / 20)
            await wait_any(stopping, max_wait_s=wait)
            if stopping.is_set():
                return
            try:
                await self.lease.renew()
            except StoreError as exc:  # the next pass, or the next renewal, tries again
                self.log.warning("poller_lease_renewal_failed", lease=self.lease.name, error=str(exc))
