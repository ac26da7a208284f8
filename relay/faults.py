"""Named crash points for the fault suite.

`RELAY_CRASH_AT=after_factory_post` (comma-separated names allowed) makes the process SIGKILL itself
the first time it reaches that point. Unset, a crash point costs one set lookup.
"""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(filter(None, os.environ.get("RELAY_CRASH_AT", "").split(",")))

POINTS = (
    "before_factory_post",
    "after_factory_post",
    "mid_transaction",
    "after_commit",
    "during_push",
    "during_migration",
)


def crash_point(name: str) -> None:
    """Kill this process at once (no cleanup, no flush) if `name` is armed."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
