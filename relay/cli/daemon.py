"""`relay run`, `relay migrate`, `relay check`: the daemon and its preparation."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from relay.app import App, LoopCrashed
from relay.cli.common import EX_OK, EX_SOFTWARE, EX_TEMPFAIL, Invocation, with_store
from relay.config import Settings
from relay.registry import Registry


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


async def _run(settings: Settings, registry: Registry, *, once: bool, **app_options: Any) -> int:
    """The daemon: 0 after a stop (SIGTERM/SIGINT), EX_SOFTWARE after a loop crashed and the rest was shut
    down cleanly (`loop_crashed` is logged), so `Restart=on-failure` restarts it.

    `once`: one pass; 0 if every component worked, EX_TEMPFAIL if any failed during it (a storefront or
    factory unreachable or refusing credentials, the store unavailable), even if the others did their
    work: `once_failed` is logged and the failed components are named on stderr. `app_options` go to
    `App` (tests inject a clock or sleep).
    """
    async with App(settings, registry=registry, **app_options) as app:
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
    return EX_OK
