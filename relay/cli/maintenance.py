"""`relay prune [--dry-run] [--json]`: apply the `[retention]` policy now (the daemon also does it daily)."""

from __future__ import annotations

import dataclasses
import time

import click

from relay.cli.common import EX_OK, Cli, echo, emit_json, pass_cli, run
from relay.loops.pruner import prune as prune_store
from relay.store import PruneReport, Store


@click.command(
    short_help="Apply the [retention] policy now.",
    help="Delete old callback message ids and the history (events, parcels, tracking pushes) of orders "
    "final for longer than [retention] says; orders themselves stay.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count what would be deleted and change nothing (opens the database read-only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_cli
def prune(cli: Cli, dry_run: bool, as_json: bool) -> int:
    retention = cli.operator_settings().retention

    async def act(store: Store) -> PruneReport:
        return await prune_store(store, retention, time.time(), dry_run=dry_run)

    report = run(cli.read(act) if dry_run else cli.write(act))
    if as_json:
        emit_json({"dry_run": dry_run, **dataclasses.asdict(report)})
        return EX_OK
    verb = "would delete" if dry_run else "deleted"
    echo(
        f"{verb}: {report.inbound_messages} inbound message id(s) older than "
        f"{retention.inbound_message_days:g} days; {report.order_events} event(s), {report.shipments} "
        f"parcel(s) and {report.storefront_pushes} tracking push(es) of {report.orders} order(s) final "
        f"for {retention.order_history_days:g} days"
    )
    return EX_OK


COMMANDS = [prune]
