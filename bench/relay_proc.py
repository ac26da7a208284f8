"""The relay under test, in its own process: `App` with the daemon's own store settings and logging.

The parent drives it over a pipe: `mark` answers this process's CPU seconds, COMMIT count and RSS so the
parent can take deltas per phase; `stop` stops the App (draining in-flight work) and answers the final
figures, including peak RSS (VmHWM). On SQLite COMMITs (and statements) are counted with sqlite's trace
callback on the store's own writer connection; on PostgreSQL every `run_write` of the store's connector is
one write transaction, one COMMIT (`run_read`s, READ ONLY transactions, are counted apart as `reads`), by
wrapping the two methods of this process's connector object. Both are the benchmark's instruments only:
the store is not changed for them.

`Fleet` runs several relay processes on one database (PostgreSQL, every daemon active) and sums their
figures.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing as mp
import os
import threading
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
        self.statements: int | None = 0
        self.reads: int | None = None

    def __call__(self, sql: str) -> None:
        self.statements = (self.statements or 0) + 1
        if sql == "COMMIT":
            self.commits += 1


def _count_units(connector: Any, counter: Counter) -> None:
    """PostgreSQL: count the connector's write units (one COMMIT each) and read units on this object."""
    run_write, run_read = connector.run_write, connector.run_read
    counter.statements, counter.reads = None, 0

    async def counted_write(fn: Any, /, **options: Any) -> Any:
        counter.commits += 1
        return await run_write(fn, **options)

    async def counted_read(fn: Any, /, **options: Any) -> Any:
        counter.reads = (counter.reads or 0) + 1
        return await run_read(fn, **options)

    connector.run_write, connector.run_read = counted_write, counted_read


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


def stat_cpu_s(path: str) -> float:
    """User + system CPU seconds in a Linux `/proc/.../stat` file (a process's or a thread's); `OSError` or
    `IndexError` when there is none."""
    with open(path, encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's live threads by thread name (Linux `/proc/self/task`; else empty).
    Threads of one name (a pool's) are summed under the name without its number."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            spent = stat_cpu_s(f"/proc/self/task/{thread.native_id}/stat")
        except (OSError, IndexError):
            continue
        name = thread.name.rstrip("0123456789").rstrip("_-") or thread.name
        out[name] = out.get(name, 0.0) + spent
    return out


def _figures(counter: Counter, started: float) -> dict[str, Any]:
    return {
        "cpu_s": time.process_time(),
        "cpu_s_by_thread": _thread_cpu_s(),
        "wall": time.time(),
        "commits": counter.commits,
        "statements": counter.statements,
        "reads": counter.reads,
        "rss_kib": _status_kib("VmRSS"),
        "hwm_kib": _status_kib("VmHWM"),
        "uptime_s": time.monotonic() - started,
    }


async def _run(conn: Connection, config: dict[str, Any], options: dict[str, Any]) -> None:
    started = time.monotonic()
    from relay import logging as relay_logging
    from relay.app import App
    from relay.collector import tune_collector
    from relay.config import parse_settings
    from relay.registry import Registry

    log_stream = open(options["log_path"], "a", encoding="utf-8")  # noqa: SIM115 - closed below
    relay_logging.configure("json", options.get("log_level", "info"), stream=log_stream)
    registry = Registry()
    settings = parse_settings(config, registry)
    tune_collector(settings.daemon.gc)  # as `relay run` does before it starts the daemon
    counter = Counter()
    sqlite = str(config["daemon"]["database"]).startswith("sqlite")
    try:
        async with App(settings, registry=registry, install_signal_handlers=False) as app:
            connector: Any = app.store.connector  # type: ignore[attr-defined]  # the RelayStore's
            if sqlite:
                await _trace(connector, counter)
            else:
                _count_units(connector, counter)
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
            if sqlite:
                await _trace(connector, None)
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


class Fleet:
    """Relay processes on one database, one per config (each its own `instance_id` and inbound port);
    `mark()` and `stop()` answer their figures summed (wall time: the latest)."""

    def __init__(self, configs: list[dict[str, Any]], *, log_path: str, **options: Any) -> None:
        self.processes: list[RelayProcess] = []
        try:
            for i, config in enumerate(configs):
                path = log_path if len(configs) == 1 else log_path.replace(".log", f"-{i}.log")
                self.processes.append(RelayProcess(config, log_path=path, **options))
        except BaseException:
            self.stop()
            raise
        first = self.processes[0].ready
        self.ready: dict[str, Any] = {
            **first,
            "inbound_urls": [p.ready["inbound_url"] for p in self.processes],
            "startup_s": max(p.ready["startup_s"] for p in self.processes),
        }
        self.pid = self.processes[0].pid

    def mark(self) -> dict[str, Any]:
        return _summed([p.mark() for p in self.processes])

    def stop(self) -> dict[str, Any]:
        return _summed([p.stop() for p in self.processes if p.process.is_alive()])


def _summed(figures: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in figures[0] if figures else ():
        values = [f[key] for f in figures]
        if key in ("wall", "uptime_s"):
            out[key] = max(values)
        elif all(isinstance(v, dict) for v in values):
            out[key] = {k: sum(v.get(k, 0.0) for v in values) for k in {k for v in values for k in v}}
        elif all(isinstance(v, int | float) for v in values):
            out[key] = sum(values)
        else:
            out[key] = values[0] if len(set(map(str, values))) == 1 else None
    return out
