"""`relay orders list|show|retry|replay` and `relay stats`: inspect and repair orders."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from relay.cli.common import EX_FAILURE, EX_OK, Invocation, with_store
from relay.exceptions import IllegalTransition, scrub
from relay.store import Store


def configure(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    orders = sub.add_parser("orders", help="inspect, retry or replay orders")
    osub = orders.add_subparsers(dest="action", required=True)
    ls = osub.add_parser("list", help="list recent orders")
    ls.add_argument("--state", default=None, help="only this state (e.g. held, failed)")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=list_command)
    show = osub.add_parser("show", help="an order's lines, factory orders, parcels, pushes and full history")
    show.add_argument("order_id", type=int)
    show.set_defaults(func=show_command)
    retry = osub.add_parser(
        "retry", help="re-route a held order; requeue dead-lettered deliveries and pushes"
    )
    retry.add_argument("order_id", type=int)
    retry.set_defaults(func=retry_command)
    replay = osub.add_parser("replay", help="re-send placed factory orders (same idempotency key)")
    replay.add_argument("order_id", type=int)
    replay.set_defaults(func=replay_command)
    sub.add_parser("stats", help="counts per state").set_defaults(func=stats_command)


def list_command(inv: Invocation) -> int:
    async def act(store: Store) -> int:
        for row in await store.list_orders(inv.args.state, inv.args.limit):
            reason = (
                f" [{row.attention_reason}: {scrub(row.attention_detail or '')}]"
                if row.attention_reason
                else ""
            )
            print(
                f"{row.id:>8}  {row.storefront}:{row.external_id}  {row.number:<10} {row.state:<18}{reason}"
            )
        return EX_OK

    return asyncio.run(with_store(inv.settings(), act))


def show_command(inv: Invocation) -> int:
    async def act(store: Store) -> int:
        view = await store.find_order(inv.args.order_id)
        if view is None:
            print(f"order {inv.args.order_id} not found", file=sys.stderr)
            return EX_FAILURE
        print(scrub(json.dumps(view.to_json(), indent=2, default=str)))  # rows from before scrubbing
        return EX_OK

    return asyncio.run(with_store(inv.settings(), act))


def retry_command(inv: Invocation) -> int:
    return _repair(inv, replay=False)


def replay_command(inv: Invocation) -> int:
    return _repair(inv, replay=True)


def _repair(inv: Invocation, *, replay: bool) -> int:
    async def act(store: Store) -> int:
        fn = store.replay_order if replay else store.retry_order
        try:
            for line in await fn(inv.args.order_id, time.time()):
                print(line)
        except IllegalTransition as exc:
            print(str(exc), file=sys.stderr)
            return EX_FAILURE
        return EX_OK

    return asyncio.run(with_store(inv.settings(), act))


def stats_command(inv: Invocation) -> int:
    stats = asyncio.run(with_store(inv.settings(), lambda store: store.stats()))
    print(json.dumps(stats.to_json(), indent=2))
    return EX_OK
