"""Wake-up topics: which loops of the other daemons on one database a committed transaction has work for
(issue 16, ADR 14).

A transition that creates work another daemon may do calls `tx.notify(topic)`; the backend delivers the
set of topics of a committed transaction to every OTHER daemon on the database (PostgreSQL:
`LISTEN/NOTIFY`, `relay.store.postgres.wakeups`; SQLite: nothing, one daemon per file), whose App wakes the
loops they name (`App.wake_for`). A wake-up is only a hint: a woken loop reads the store as on its timer,
so a lost, repeated or spurious one costs at most a pass.
"""

from __future__ import annotations

ROUTE = "route"
"""Orders to route: new or requeued orders, an operator's retry, release or replay (the router)."""
ALL = "*"
"""Every loop: too many topics to name, or wake-ups may have been missed (the listener reconnected)."""


def forward(factory: str) -> str:
    """Messages due now to `factory`: new factory orders (routing, fallback), cancellations, operator
    retries and replays, a factory enabled again (the forwarder)."""
    return f"forward:{factory}"


def ship(storefront: str) -> str:
    """Tracking pushes due now to `storefront`: parcels recorded from a callback or a poll, operator
    retries (the shipper)."""
    return f"ship:{storefront}"


def poll(factory: str) -> str:
    """`factory`'s platform pushed a message: its shipment poller should look now (whichever daemon
    holds the factory's poller lease)."""
    return f"poll:{factory}"


def names(topics: set[str], kind: str) -> set[str] | None:
    """The destinations `topics` name for `kind` (`forward`, `ship`, `poll`); None for every one (`ALL`)."""
    if ALL in topics:
        return None
    prefix = kind + ":"
    return {t[len(prefix) :] for t in topics if t.startswith(prefix)}
