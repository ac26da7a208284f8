"""Poller leases (issue 16, ADR 14): one poller per storefront and per polled factory across every daemon on
the database, and the fence on each of that poller's writes.

A lease row is free (no owner), live (owner, `expires_at` ahead of the caller's clock) or expired. Taking
it from anyone else, or from nobody, adds 1 to its token; its owner renewing it keeps the token. A fenced
write first renews the lease under the token it was taken with, in the write's own transaction (on
PostgreSQL that row lock also orders it against a concurrent takeover); a moved token raises `LeaseLost`,
and the transaction, rolled back, changes nothing.
"""

from __future__ import annotations

from relay.exceptions import LeaseLost
from relay.store.connector import Transaction
from relay.store.records import PollerLease


async def holder(tx: Transaction, name: str) -> tuple[str | None, float] | None:
    """Who holds lease `name` and until when, or None when it was never taken. Read only."""
    row = await tx.fetch_one("get_poller_lease", name=name)
    return (row["owner"], float(row["expires_at"])) if row else None


async def acquire(tx: Transaction, name: str, owner: str, lease_s: float, now: float) -> PollerLease | None:
    """Take or renew lease `name` for `owner` until `now + lease_s`: free, expired or already `owner`'s.
    None when another owner holds it live."""
    rows = await tx.fetch("acquire_poller_lease", name=name, owner=owner, expires_at=now + lease_s, now=now)
    if not rows:
        return None
    row = rows[0]
    return PollerLease(row["name"], row["owner"], int(row["token"]), float(row["expires_at"]), lease_s)


async def fence(tx: Transaction, lease: PollerLease, now: float) -> None:
    """The fence of a poller's write, first in its transaction: renew `lease` to `now + lease.lease_s` if
    its token is still the row's (and its owner still holds it); else raise `LeaseLost`."""
    renewed = await tx.execute(
        "renew_poller_lease",
        name=lease.name,
        owner=lease.owner,
        token=lease.token,
        expires_at=now + lease.lease_s,
    )
    if not renewed:
        raise LeaseLost(f"poller lease {lease.name} (token {lease.token}) was taken by another daemon")


async def release(tx: Transaction, lease: PollerLease) -> None:
    """Free `lease` if it is still this one (same owner and token); otherwise leave it to its holder."""
    await tx.execute("release_poller_lease", name=lease.name, owner=lease.owner, token=lease.token)
