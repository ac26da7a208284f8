"""Command line: `relay run | migrate | check | demo | orders ... | factories ...`.

Exit codes: 0 success, 1 failure (e.g. a demo that did not deliver), 2 usage, 78 configuration error
(sysexits EX_CONFIG), 75 store unavailable (EX_TEMPFAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from relay import logging as relay_logging
from relay.config import Settings, load_settings
from relay.exceptions import (
    ConfigurationError,
    IllegalTransition,
    StoreUnavailable,
    UnsupportedDatabaseVersion,
)
from relay.registry import Registry

EX_FAILURE, EX_CONFIG, EX_TEMPFAIL = 1, 78, 75
DEFAULT_CONFIG = os.environ.get("RELAY_CONFIG", "config/relay.toml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Drop-shipping order relay daemon.")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="TOML config (env RELAY_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "--once", action="store_true", help="one full pass (poll, route, deliver, push), then exit"
    )
    sub.add_parser("migrate", help="apply database migrations and exit")
    sub.add_parser("check", help="validate the config; print every problem by key")
    demo = sub.add_parser("demo", help="run the whole loop against built-in fake storefront and factories")
    demo.add_argument("--orders", type=int, default=50)
    demo.add_argument("--storefront", default="demo", help="demo, shopify or woocommerce")
    demo.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    demo.add_argument("--database", default=None, help="SQLite file (default: a fresh temporary one)")
    orders = sub.add_parser("orders", help="inspect, retry or replay orders")
    osub = orders.add_subparsers(dest="action", required=True)
    ls = osub.add_parser("list", help="list recent orders")
    ls.add_argument("--state", default=None, help="only this state (e.g. held, failed)")
    ls.add_argument("--limit", type=int, default=50)
    for name, text in (
        ("show", "an order's lines, factory orders, parcels, pushes and full history"),
        ("retry", "re-route a held order; requeue dead-lettered deliveries and pushes"),
        ("replay", "re-send placed factory orders (same idempotency key)"),
    ):
        p = osub.add_parser(name, help=text)
        p.add_argument("order_id", type=int)
    sub.add_parser("stats", help="counts per state")
    factories = sub.add_parser("factories", help="list factories; enable or disable deliveries to one")
    fsub = factories.add_subparsers(dest="action", required=True)
    fsub.add_parser("list", help="configured factories: enabled or disabled (since, why), orders per state")
    enable = fsub.add_parser("enable", help="resume deliveries to a factory (e.g. after it answered 410)")
    enable.add_argument("name")
    disable = fsub.add_parser("disable", help="pause deliveries to a factory; its orders wait")
    disable.add_argument("name")
    disable.add_argument("--reason", default="disabled by an operator")
    return parser


def _load(path: str, registry: Registry) -> Settings:
    return load_settings(path, registry)


def _print_problems(exc: ConfigurationError) -> None:
    print("configuration is invalid:", file=sys.stderr)
    for key, problem in exc.problems:
        print(f"  {key}: {problem}", file=sys.stderr)


def _ts(value: float | None) -> str:
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds") if value else "-"


async def _with_store(settings: Settings, fn: Any) -> Any:
    from relay.store import open_store

    store = open_store(settings.daemon.database)
    await store.open()
    try:
        await store.migrate()
        return await fn(store)
    finally:
        await store.close()


async def _orders(settings: Settings, args: argparse.Namespace) -> int:
    async def act(store: Any) -> int:
        now = time.time()
        if args.action == "list":
            for row in await store.list_orders(args.state, args.limit):
                reason = (
                    f" [{row['attention_reason']}: {row['attention_detail'] or ''}]"
                    if row["attention_reason"]
                    else ""
                )
                print(
                    f"{row['id']:>8}  {row['storefront']}:{row['external_id']}  {row['number']:<10} "
                    f"{row['state']:<18}{reason}"
                )
            return 0
        if args.action == "show":
            view = await store.find_order(args.order_id)
            if view is None:
                print(f"order {args.order_id} not found", file=sys.stderr)
                return EX_FAILURE
            print(
                json.dumps(
                    {
                        "order": view.order,
                        "factory_orders": view.factory_orders,
                        "shipments": view.shipments,
                        "events": view.events,
                    },
                    indent=2,
                    default=str,
                )
            )
            return 0
        fn = store.retry_order if args.action == "retry" else store.replay_order
        try:
            for line in await fn(args.order_id, now):
                print(line)
        except IllegalTransition as exc:
            print(str(exc), file=sys.stderr)
            return EX_FAILURE
        return 0

    result: int = await _with_store(settings, act)
    return result


async def _factories(settings: Settings, args: argparse.Namespace) -> int:
    async def act(store: Any) -> int:
        if args.action == "list":
            known = {row["name"]: row for row in await store.list_factories()}
            for name in sorted(set(settings.factories) | set(known)):
                row = known.get(name, {})
                where = "" if name in settings.factories else "  (not configured)"
                state = (
                    f"disabled since {_ts(row['disabled_at'])}: {row['disabled_reason']}"
                    if row.get("disabled_at")
                    else "enabled"
                )
                counts = (
                    ", ".join(f"{k} {v}" for k, v in sorted(row.get("orders", {}).items())) or "no orders"
                )
                print(f"{name:<20} {state}  [{counts}]{where}")
            return 0
        if args.name not in settings.factories:
            print(
                f"unknown factory {args.name!r}; configured: {', '.join(sorted(settings.factories))}",
                file=sys.stderr,
            )
            return EX_FAILURE
        if args.action == "enable":
            changed = await store.enable_factory(args.name, time.time())
            print(
                f"{args.name}: {'enabled; its waiting orders go out now' if changed else 'was not disabled'}"
            )
        else:
            changed = await store.disable_factory(args.name, args.reason, time.time())
            print(f"{args.name}: {'disabled; its orders wait' if changed else 'was already disabled'}")
        return 0

    result: int = await _with_store(settings, act)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    registry = Registry()
    try:
        if args.command == "demo":
            from relay.demo import run_demo

            relay_logging.configure("json", "warning")
            return asyncio.run(
                run_demo(
                    args.orders,
                    storefront=args.storefront,
                    timeout=args.timeout,
                    database=args.database,
                    registry=registry,
                )
            )
        settings = _load(args.config, registry)
        if args.command == "check":
            print(
                f"{args.config}: ok ({len(settings.storefronts)} storefront(s), "
                f"{len(settings.factories)} factory(ies), {len(settings.sku_map)} mapped SKU(s))"
            )
            return 0
        relay_logging.configure(settings.daemon.log_format, settings.daemon.log_level)
        if args.command == "migrate":
            version = asyncio.run(_with_store(settings, lambda store: store.schema_version()))
            print(f"database at schema version {version}")
            return 0
        if args.command == "orders":
            return asyncio.run(_orders(settings, args))
        if args.command == "factories":
            return asyncio.run(_factories(settings, args))
        if args.command == "stats":
            print(json.dumps(asyncio.run(_with_store(settings, lambda store: store.stats())), indent=2))
            return 0
        return asyncio.run(_run(settings, registry, once=args.once))
    except ConfigurationError as exc:
        _print_problems(exc)
        return EX_CONFIG
    except UnsupportedDatabaseVersion as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except KeyboardInterrupt:
        return 130


async def _run(settings: Settings, registry: Registry, *, once: bool) -> int:
    from relay.app import App

    async with App(settings, registry=registry) as app:
        await app.run(once=once)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
