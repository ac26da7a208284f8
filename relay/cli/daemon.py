"""`relay run`, `relay migrate`, `relay check`: the daemon and its preparation."""

from __future__ import annotations

import argparse
import asyncio

from relay.app import App
from relay.cli.common import EX_OK, Invocation, with_store
from relay.config import Settings
from relay.registry import Registry


def configure(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "--once", action="store_true", help="one full pass (poll, route, deliver, push), then exit"
    )
    run.set_defaults(func=run_command)
    sub.add_parser("migrate", help="apply database migrations and exit").set_defaults(func=migrate_command)
    sub.add_parser("check", help="validate the config; print every problem by key").set_defaults(
        func=check_command
    )


def run_command(inv: Invocation) -> int:
    return asyncio.run(_run(inv.settings(), inv.registry, once=inv.args.once))


async def _run(settings: Settings, registry: Registry, *, once: bool) -> int:
    async with App(settings, registry=registry) as app:
        await app.run(once=once)
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
