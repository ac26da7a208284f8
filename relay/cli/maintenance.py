"""`relay prune [--dry-run]`: apply the `[retention]` policy now (the daemon also does it daily)."""

from __future__ import annotations

import argparse
import asyncio
import time

from relay.cli.common import EX_OK, Invocation, with_store
from relay.loops.pruner import prune


def configure(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "prune",
        help="delete old callback message ids and the history of long-final orders ([retention])",
    )
    cmd.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    cmd.set_defaults(func=prune_command)


def prune_command(inv: Invocation) -> int:
    settings = inv.settings()
    retention = settings.retention
    report = asyncio.run(
        with_store(settings, lambda store: prune(store, retention, time.time(), dry_run=inv.args.dry_run))
    )
    verb = "would delete" if inv.args.dry_run else "deleted"
    print(
        f"{verb}: {report.inbound_messages} inbound message id(s) older than "
        f"{retention.inbound_message_days:g} days; {report.order_events} event(s), {report.shipments} "
        f"parcel(s) and {report.storefront_pushes} tracking push(es) of {report.orders} order(s) final "
        f"for {retention.order_history_days:g} days"
    )
    return EX_OK
