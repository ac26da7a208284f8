"""Named crash points for the fault suite.

`RELAY_CRASH_AT=after_factory_post` (comma-separated names allowed) makes the process SIGKILL itself
the first time it reaches that point; `name@N` waits for the N-th time, so a crash can land in the
middle of a run rather than always at its first transaction. Unset, a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, nth = item.partition("@")
        armed[name] = max(1, int(nth)) if nth.isdigit() else 1
    return armed


_ARMED = _parse(os.environ.get("RELAY_CRASH_AT", ""))
_HITS: dict[str, int] = {}

POINTS = (
    "before_factory_post",
    "after_factory_post",
    "mid_transaction",
    "after_commit",
    "during_push",
    "during_migration",
    "after_claim",  # an outbox loop committed its claim (leases held), nothing sent yet
    "after_ingest",  # the poller committed a page of orders (and maybe the cursor)
    "during_callback",  # a factory callback is committed, its 2xx not yet sent
    "after_storefront_write",  # a storefront adapter's tracking write was answered, nothing else done yet
)


def crash_point(name: str) -> None:
    """Kill this process at once (no cleanup, no flush) if `name` is armed and its count is reached."""
    if name in _ARMED:
        hits = _HITS[name] = _HITS.get(name, 0) + 1
        if hits >= _ARMED[name]:
            os.kill(os.getpid(), signal.SIGKILL)
