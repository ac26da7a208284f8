"""`relay run`, `relay migrate`, `relay check`: the daemon and its preparation."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import structlog

from relay.app import App, LoopCrashed
from relay.cli.common import EX_OK, EX_SOFTWARE, EX_TEMPFAIL, Invocation, with_store
from relay.config import Settings
from relay.loops.order_poller import describe_first_poll
from relay.registry import Registry
from relay.store import DaemonLock, open_store


def configure(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "--once",
        action="store_true",
        help="one full pass (poll, route, deliver, push), then exit; 75 if any part of it failed",
    )
    run.set_defaults(func=run_command)
    sub.add_parser("migrate", help="apply database migrations and exit").set_defaults(func=migrate_command)
    sub.add_parser("check", help="validate the config; print every problem by key").set_defaults(
        func=check_command
    )


def run_command(inv: Invocation) -> int:
    return asyncio.run(_run(inv.settings(), inv.registry, once=inv.args.once))


async def _run(
    settings: Settings,
    registry: Registry,
    *,
    once: bool,
    standby_poll_s: float = 1.0,
    **app_options: Any,
) -> int:
    """The daemon: 0 after a stop (SIGTERM/SIGINT), EX_SOFTWARE after a loop crashed and the rest was shut
    down cleanly (`loop_crashed` is logged), so `Restart=on-failure` restarts it.

    One daemon per database (ADR 11): the run holds the store's daemon lock (SQLite: `flock` on
    `<database>.lock`, freed by the OS when the process dies). When another daemon holds it,
    `database_locked_by_another_daemon` is logged with the holder (pid, host) and this one waits as a hot
    standby, trying every `standby_poll_s`, until the lock is free (the other stopped or died), then starts;
    SIGTERM/SIGINT while waiting exit 0. Holding the lock, start-up frees every lease left in the database:
    no other daemon is alive to hold one.

    `once`: one pass; 0 if every component worked, EX_TEMPFAIL if any failed during it (a storefront or
    factory unreachable or refusing credentials, the store unavailable), even if the others did their
    work: `once_failed` is logged and the failed components are named on stderr. Next to a running daemon
    it does nothing and exits EX_TEMPFAIL (`database_locked_by_another_daemon`). `app_options` go to
    `App` (tests inject a clock or sleep).
    """
    log = structlog.get_logger("relay")
    lock = open_store(settings.daemon.database).daemon_lock()
    if not await lock.try_acquire():
        holder = await lock.holder()
        database = settings.daemon.database
        if once:
            log.error("database_locked_by_another_daemon", database=database, holder=holder, once=True)
            print(
                f"relay run --once: {database} is in use by another daemon ({holder or 'holder unknown'}); "
                f"exit {EX_TEMPFAIL}",
                file=sys.stderr,
            )
            return EX_TEMPFAIL
        log.warning(
            "database_locked_by_another_daemon",
            database=database,
            holder=holder,
            hint="waiting as a standby until it stops",
        )
        if not await _standby(lock, standby_poll_s):
            return EX_OK
        log.info("database_lock_acquired", database=database, after_standby=True)
    try:
        return await _run_locked(settings, registry, once=once, **app_options)
    finally:
        await lock.release()


async def _standby(lock: DaemonLock, poll_s: float) -> bool:
    """Wait until `lock` is ours (True) or SIGTERM/SIGINT asks to give up (False)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append((sig, previous))
    try:
        while not await lock.try_acquire():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
            if stop.is_set():
                return False
        return True
    finally:
        for sig, previous in installed:  # put back what was there (asyncio.run's own SIGINT handler)
            loop.remove_signal_handler(sig)
            if previous is not None:
                with contextlib.suppress(ValueError, TypeError, OSError):
                    signal.signal(sig, previous)


async def _run_locked(settings: Settings, registry: Registry, *, once: bool, **app_options: Any) -> int:
    async with App(settings, registry=registry, exclusive=True, **app_options) as app:
        if once:
            failed = await app.run_once()
            if failed:
                app.log.error("once_failed", failed=failed)
                print(
                    f"relay run --once: failed: {', '.join(failed)} (errors in the log); exit {EX_TEMPFAIL}",
                    file=sys.stderr,
                )
                return EX_TEMPFAIL
            return EX_OK
        try:
            await app.run()
        except LoopCrashed:
            return EX_SOFTWARE
    return EX_OK


def migrate_command(inv: Invocation) -> int:
    version = asyncio.run(with_store(inv.settings(), lambda store: store.schema_version()))
    print(f"database at schema version {version}")
    return EX_OK


def check_command(inv: Invocation) -> int:
    settings = inv.settings(configure_logging=False)
    print(
        f"{inv.args.config}: ok ({len(settings.storefronts)} storefront(s), "
        f"{len(settings.factories)} factory(ies), {len(settings.sku_map)} mapped SKU(s))"
    )
    for name, storefront in settings.storefronts.items():  # what a first start would pick up (issue 11, #8)
        print(describe_first_poll(name, storefront.start_from))
    return EX_OK
