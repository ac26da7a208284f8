"""The relay under test, in its own process: `App` with the daemon's own store settings and logging.

The parent drives it over a pipe: `mark` answers this process's CPU seconds, COMMIT count and RSS so the
parent can take deltas per phase; `stop` stops the App (draining in-flight work) and answers the final
figures, including peak RSS (VmHWM). COMMITs are counted with sqlite's trace callback on the store's
own connection, which is the benchmark's instrument only: the store is not changed for it.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Counter:
    """Counts statements executed on the store's connection (called on aiosqlite's thread)."""

    def __init__(self) -> None:
        self.commits = 0
        self.statements = 0

    def __call__(self, sql: str) -> None:
        self.statements += 1
        if sql == "COMMIT":
            self.commits += 1


def _figures(counter: Counter, started: float) -> dict[str, Any]:
    return {
        "cpu_s": time.process_time(),
        "wall": time.time(),
        "commits": counter.commits,
        "statements": counter.statements,
        "rss_kib": _status_kib("VmRSS"),
        "hwm_kib": _status_kib("VmHWM"),
        "uptime_s": time.monotonic() - started,
    }


async def _run(conn: Connection, config: dict[str, Any], options: dict[str, Any]) -> None:
    started = time.monotonic()
    if options.get("uvloop"):
        pass  # the loop policy is installed in _main before asyncio.run
    from relay import logging as relay_logging
    from relay.app import App
    from relay.config import parse_settings
    from relay.registry import Registry

    log_stream = open(options["log_path"], "a", encoding="utf-8")  # noqa: SIM115 - closed below
    relay_logging.configure("json", options.get("log_level", "info"), stream=log_stream)
    registry = Registry()
    settings = parse_settings(config, registry)
    counter = Counter()
    try:
        async with App(settings, registry=registry, install_signal_handlers=False) as app:
            await app.store.connector.db.set_trace_callback(counter)  # type: ignore[attr-defined]
            runner = asyncio.create_task(app.run())
            conn.send(
                {
                    "inbound_url": app.inbound_url,
                    "startup_s": time.monotonic() - started,
                    **_figures(counter, started),
                }
            )
            while True:
                command = await asyncio.to_thread(conn.recv)
                if command == "mark":
                    conn.send(_figures(counter, started))
                    continue
                app.stop()
                await runner
                break
            await app.store.connector.db.set_trace_callback(None)  # type: ignore[attr-defined]
        conn.send(_figures(counter, started))
    finally:
        log_stream.close()


def _main(conn: Connection, config: dict[str, Any], options: dict[str, Any]) -> None:
    if options.get("uvloop"):
        import uvloop

        uvloop.install()
    asyncio.run(_run(conn, config, options))


class RelayProcess:
    """Start the relay in a spawned process; `mark()` and `stop()` return its figures."""

    def __init__(self, config: dict[str, Any], **options: Any) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_main, args=(child, config, options), name="bench-relay", daemon=True
        )
        self.process.start()
        if not self._conn.poll(120):
            raise RuntimeError("relay did not start")
        self.ready: dict[str, Any] = self._conn.recv()
        self.pid = self.process.pid

    def mark(self) -> dict[str, Any]:
        self._conn.send("mark")
        return self._conn.recv()  # type: ignore[no-any-return]

    def stop(self) -> dict[str, Any]:
        self._conn.send("stop")
        if not self._conn.poll(60):
            self.process.terminate()
            raise RuntimeError("relay did not stop")
        final: dict[str, Any] = self._conn.recv()
        self.process.join(10)
        return final
