"""The relay under test, in its own process: `App` with the daemon's own store settings and logging.

The parent drives it over a pipe: `mark` answers this process's CPU seconds, COMMIT count and RSS so the
parent can take deltas per phase; `stop` stops the App (draining in-flight work) and answers the final
figures, including peak RSS (VmHWM). COMMITs are counted with sqlite's trace callback on the store's
own writer connection, which is the benchmark's instrument only: the store is not changed for it.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing as mp
import time
from collections.abc import Callable
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


async def _trace(connector: Any, callback: Callable[[str], None] | None) -> None:
    """Set sqlite's trace callback on the store's writer connection: on its own thread through
    `SQLiteConnector.on_writer` (plain sqlite3 on a writer thread), else through aiosqlite's `db`."""
    on_writer = getattr(connector, "on_writer", None)
    if on_writer is not None:
        done = on_writer(lambda db: db.set_trace_callback(callback))
        if inspect.isawaitable(done):
            await done
    else:
        await connector.db.set_trace_callback(callback)


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
            await _trace(app.store.connector, counter)
            runner = asyncio.create_task(app.run())
            conn.send(
                {
                    "inbound_url": app.inbound_url,
                    "startup_s": time.monotonic() - started,
                    "loop": type(asyncio.get_running_loop()).__module__,
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
            await _trace(app.store.connector, None)
        conn.send(_figures(counter, started))
    finally:
        log_stream.close()


def _loop_factory(config: dict[str, Any], options: dict[str, Any]) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop `relay run` would use for this config (`[daemon] event_loop`); a relay from before that
    setting runs on asyncio's, or on uvloop's with the `uvloop` option."""
    try:
        from relay.cli.daemon import event_loop_factory
        from relay.config import DaemonSettings
    except ImportError:
        if options.get("uvloop"):
            import uvloop

            return uvloop.new_event_loop
        return asyncio.new_event_loop
    return event_loop_factory(DaemonSettings.model_validate(config["daemon"]))


def _main(conn: Connection, config: dict[str, Any], options: dict[str, Any]) -> None:
    with asyncio.Runner(loop_factory=_loop_factory(config, options)) as runner:
        runner.run(_run(conn, config, options))


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
