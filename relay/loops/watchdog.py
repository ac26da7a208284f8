"""Tracking watchdog: flags orders whose factory has placed them long ago and sent no parcel (`no_tracking`),
or shipped part and then nothing for long (`tracking_stalled`); per factory `no_tracking_after_days` and
`tracking_stalled_after_days`. The store does the work (`Store.watch_tracking`): one transaction a pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from relay.loops.base import Loop
from relay.store import Store

WATCH_INTERVAL_S = 600.0
"""How often the watchdog looks: its thresholds are days."""


class TrackingWatchdog(Loop):
    name = "watchdog"

    def __init__(
        self,
        store: Store,
        rules: Mapping[str, tuple[float | None, float | None]],
        *,
        clock: Callable[[], float],
        log: Any,
        interval: float = WATCH_INTERVAL_S,
    ) -> None:
        super().__init__(interval=interval, clock=clock, log=log)
        self.store = store
        self.rules = rules

    async def run_pass(self) -> bool:
        flagged, cleared = await self.store.watch_tracking(self.rules, self.clock())
        if flagged or cleared:
            self.log.warning("tracking_overdue", flagged=flagged, cleared=cleared)
        return False
