"""`relay factories list|enable|disable`: see factories and pause or resume deliveries to one."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from relay.cli.common import EX_FAILURE, EX_OK, Invocation, timestamp, with_store
from relay.exceptions import scrub
from relay.store import FactoryStatus, Store


def configure(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    factories = sub.add_parser("factories", help="list factories; enable or disable deliveries to one")
    fsub = factories.add_subparsers(dest="action", required=True)
    fsub.add_parser(
        "list", help="configured factories: enabled or disabled (since, why), orders per state"
    ).set_defaults(func=list_command)
    enable = fsub.add_parser("enable", help="resume deliveries to a factory (e.g. after it answered 410)")
    enable.add_argument("name")
    enable.set_defaults(func=enable_command)
    disable = fsub.add_parser("disable", help="pause deliveries to a factory; its orders wait")
    disable.add_argument("name")
    disable.add_argument("--reason", default="disabled by an operator")
    disable.set_defaults(func=disable_command)


def list_command(inv: Invocation) -> int:
    settings = inv.settings()

    async def act(store: Store) -> int:
        known = {status.name: status for status in await store.list_factories()}
        for name in sorted(set(settings.factories) | set(known)):
            row = known.get(name) or FactoryStatus(name)
            where = "" if name in settings.factories else "  (not configured)"
            state = (
                f"disabled since {timestamp(row.disabled_at)}: {scrub(row.disabled_reason or '')}"
                if row.disabled_at
                else "enabled"
            )
            counts = ", ".join(f"{k} {v}" for k, v in sorted(row.orders.items())) or "no orders"
            print(f"{name:<20} {state}  [{counts}]{where}")
        return EX_OK

    return asyncio.run(with_store(settings, act))


def enable_command(inv: Invocation) -> int:
    return _toggle(inv, enable=True)


def disable_command(inv: Invocation) -> int:
    return _toggle(inv, enable=False)


def _toggle(inv: Invocation, *, enable: bool) -> int:
    settings = inv.settings()
    name = inv.args.name
    if name not in settings.factories:
        print(
            f"unknown factory {name!r}; configured: {', '.join(sorted(settings.factories))}", file=sys.stderr
        )
        return EX_FAILURE

    async def act(store: Store) -> int:
        if enable:
            changed = await store.enable_factory(name, time.time())
            print(f"{name}: {'enabled; its waiting orders go out now' if changed else 'was not disabled'}")
        else:
            changed = await store.disable_factory(name, inv.args.reason, time.time())
            print(f"{name}: {'disabled; its orders wait' if changed else 'was already disabled'}")
        return EX_OK

    return asyncio.run(with_store(settings, act))
