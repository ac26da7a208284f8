"""`relay run`, `relay migrate`, `relay check`: the daemon and its preparation."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click
import structlog

from relay.app import App, LoopCrashed
from relay.cli.common import (
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    Cli,
    echo,
    pass_cli,
    require_database_directory,
)
from relay.cli.common import run as run_async
from relay.collector import tune_collector
from relay.config import DaemonSettings, Settings, load_operator_settings
from relay.loops.order_poller import describe_first_poll
from relay.registry import Registry
from relay.store import DaemonLock, open_store
from relay.systemd import Notifier


@click.command(
    short_help="Run the daemon (or one pass with --once).",
    help="Run the daemon: poll storefronts, route, deliver to factories, push tracking back. Applies pending "
    "migrations at start-up.",
)
@click.option(
    "--once",
    is_flag=True,
    help="One full pass (poll, route, deliver, push), then exit; 75 if any part of it failed.",
)
@pass_cli
def run(cli: Cli, once: bool) -> int:
    settings = cli.settings()
    require_database_directory(settings.daemon.database)

    def reload_sku_map() -> Mapping[str, str]:
        """SIGHUP: the config's [routing.skus] as it is now, to re-seed the SKU catalogue (README "Routing")."""
        return load_operator_settings(cli.config).sku_map

    tune_collector(settings.daemon.gc)  # what is alive now lives as long as the daemon
    with asyncio.Runner(loop_factory=event_loop_factory(settings.daemon)) as runner:
        return runner.run(_run(settings, cli.registry, once=once, reload_sku_map=reload_sku_map))


def event_loop_factory(daemon: DaemonSettings) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop `[daemon] event_loop` asks for: uvloop's for `uvloop`, and for `auto` when uvloop is
    installed (the setting's validation already refused `uvloop` without it); asyncio's otherwise."""
    if daemon.event_loop != "asyncio":
        try:
            import uvloop  # noqa: PLC0415 (optional: `auto` falls back to asyncio without it)
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


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

    The run holds the store's daemon lock (`DaemonLock`). SQLite's is exclusive, one daemon per file (ADR
    11): a `flock` on `<database>.lock`, freed by the OS when the process dies. When another daemon holds
    it, `database_locked_by_another_daemon` is logged with the holder (pid, host) and this one waits as a
    hot standby, trying every `standby_poll_s`, until the lock is free (the other stopped or died), then
    starts; SIGTERM/SIGINT while waiting exit 0. Holding an exclusive lock, start-up frees every lease left
    in the database: no other daemon is alive to hold one. PostgreSQL's is shared (ADR 14): every daemon
    works at once, each polling the storefronts and factories whose poller lease it gets, and frees no
    lease but its own.

    `once`: one pass; 0 if every component worked, EX_TEMPFAIL if any failed during it (a storefront or
    factory unreachable or refusing credentials, the store unavailable), even if the others did their
    work: `once_failed` is logged and the failed components are named on stderr. Next to a running daemon
    on SQLite it does nothing and exits EX_TEMPFAIL (`database_locked_by_another_daemon`); on PostgreSQL it
    works next to the daemons, polling only what no running daemon holds the poller lease of. `app_options`
    go to `App` (tests inject a clock or sleep).
    """
    log = structlog.get_logger("relay")
    loop = asyncio.get_running_loop()
    log.info(
        "event_loop",
        setting=settings.daemon.event_loop,
        loop=f"{type(loop).__module__}.{type(loop).__name__}",
    )
    # systemd (`Type=notify`): READY/WATCHDOG/STOPPING for the daemon; a no-op without NOTIFY_SOCKET.
    notifier = Notifier() if once else Notifier.from_environment()
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
        # A standby is up as designed: ready for systemd (else its start would time out), pinging its
        # watchdog from the event loop while it waits.
        notifier.notify("READY=1", f"STATUS=standby: {database} is held by {holder or 'another daemon'}")
        watchdog = asyncio.create_task(notifier.watchdog(lambda: True))
        try:
            if not await _standby(lock, standby_poll_s):
                notifier.notify("STOPPING=1")
                return EX_OK
        finally:
            watchdog.cancel()
            await asyncio.wait([watchdog])
        log.info("database_lock_acquired", database=database, after_standby=True)
    try:
        return await _run_locked(
            settings, registry, once=once, notifier=notifier, exclusive=lock.exclusive, **app_options
        )
    finally:
        await lock.release()


async def _standby(lock: DaemonLock, poll_s: float) -> bool:
    """Wait until `lock` is ours (True) or SIGTERM/SIGINT asks to give up (False). SIGHUP (`systemctl
    reload`) is ignored meanwhile: the catalogue is seeded from the config when this one takes over."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous = signal.getsignal(sig)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, (lambda: None) if sig is signal.SIGHUP else stop.set)
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


async def _run_locked(
    settings: Settings, registry: Registry, *, once: bool, exclusive: bool, **app_options: Any
) -> int:
    async with App(settings, registry=registry, exclusive=exclusive, **app_options) as app:
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


@click.command(
    short_help="Create or upgrade the database.",
    help="Apply pending database migrations (creating the database if needed), then exit.",
)
@pass_cli
def migrate(cli: Cli) -> int:
    url = cli.database_url()
    require_database_directory(url)

    async def act() -> int:
        store = open_store(url)
        await store.open()
        try:
            return await store.migrate()
        finally:
            await store.close()

    echo(f"database at schema version {run_async(act())}")
    return EX_OK


@click.command(
    short_help="Validate the config, secrets included.",
    help="Validate the config, secrets included; print every problem by its key.",
)
@pass_cli
def check(cli: Cli) -> int:
    settings = cli.settings(configure_logging=False)
    echo(
        f"{cli.config}: ok ({len(settings.storefronts)} storefront(s), "
        f"{len(settings.factories)} factory(ies), {len(settings.sku_map)} mapped SKU(s))"
    )
    for name, storefront in settings.storefronts.items():  # what a first start would pick up (issue 11, #8)
        echo(describe_first_poll(name, storefront.start_from))
    return EX_OK


COMMANDS = [run, migrate, check]
