"""The garbage collector of a long-running daemon (issue 15; `[daemon] gc`).

With CPython's defaults (thresholds 700 / 10 / 10) the cyclic collector ran a full collection, which visits
every object the daemon holds (modules, settings, sessions, caches), every few thousand net allocations. At
200 orders/s in the bench, full collections took 70-100 ms each, with the event loop stopped meanwhile, and
all collections together used about a fifth of the daemon's CPU. They set the tail of an order's latency.

`tune_collector` runs when `relay run` has read its settings, before the event loop starts: it collects
what start-up left behind, then moves everything still alive (the modules, the settings, the registry)
into the permanent generation (`gc.freeze`), which later collections never visit, since it lives as long
as the daemon. It also raises the young generation's threshold, so the collector
runs less often and each run visits only young objects. Reference counting still frees everything that is
not part of a cycle at once, so memory is not held any longer than before. Cycles are found later, which
costs a little memory; the bench's peak RSS shows it.
"""

from __future__ import annotations

import gc
from typing import Literal

GcSetting = Literal["tuned", "python"]

THRESHOLDS = (20_000, 20, 20)
"""Allocations before a young collection; young collections before a middle one; middle before a full one."""


def tune_collector(setting: GcSetting) -> None:
    """Apply `[daemon] gc`: `tuned` (collect, freeze what start-up built, raise the thresholds to
    `THRESHOLDS`), or `python` (leave CPython's collector as it is)."""
    if setting == "python":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
