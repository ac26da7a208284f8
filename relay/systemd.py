"""systemd's readiness protocol (`sd_notify(3)`): `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=...`.

A few lines over the `NOTIFY_SOCKET` datagram socket rather than the `sdnotify` package or libsystemd
bindings: the protocol is one `sendto()` of newline-separated assignments, and doing it here keeps
relay free of a dependency and lets it support the abstract namespace (`@name`), `WATCHDOG_PID` and a
clear no-op when the variables are unset (not under systemd, in a container, in tests).

`relay run` sends `READY=1` once the store is open and migrated and the loops and the inbound server are
started (a hot standby sends it too, with `STATUS=standby: ...`), `WATCHDOG=1` every half `WATCHDOG_USEC`
while its loops are alive, and `STOPPING=1` when the drain begins. Notifications are best effort: a
failing send is ignored, it never stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping


class Notifier:
    """Sends notifications to the service manager at `address` (a path, or `@name` for the abstract
    namespace); every method is a no-op when `address` is None. `watchdog_usec`: systemd's watchdog
    timeout (`WATCHDOG_USEC`), if the service has one."""

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval_s = watchdog_usec / 2e6 if address and watchdog_usec else None
        """Half the watchdog timeout, as `sd_watchdog_enabled(3)` recommends; None: no watchdog."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog is ours only if
        `WATCHDOG_PID` is unset or names this process)."""
        env = os.environ if environ is None else environ
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        watchdog = int(usec) if usec.isdigit() and int(usec) > 0 and mine else None
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=watchdog)

    def notify(self, *assignments: str) -> None:
        """Send `assignments` (`"READY=1"`, `"STATUS=running"`) as one datagram; never raises."""
        if not self.address or not assignments:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(assignments).encode(), target)

    async def watchdog(self, alive: Callable[[], bool]) -> None:
        """Send `WATCHDOG=1` every `watchdog_interval_s` while `alive()` is true; runs until cancelled.
        Returns at once when there is no watchdog. The pings come from the event loop itself, so a
        wedged event loop stops them, and so does `alive()` turning false: systemd then restarts us."""
        if self.watchdog_interval_s is None:
            return
        while True:
            if alive():
                self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval_s)
