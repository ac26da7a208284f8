"""`relay orders` (the listing) and the operator actions on one order: `retry`, `replay`, `hold`,
`release`, `cancel`.

Every action is one transaction in the database with an `operator` history event, so it takes effect in a
running daemon without a restart: the daemon reads the order's state (and the SKU catalogue, which
`retry` and `release` first update from the config's `[routing.skus]`) on its next pass.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import click

from relay.cli.common import (
    EX_OK,
    EX_USAGE,
    Cli,
    CliError,
    console,
    echo,
    emit_json,
    is_tty,
    local_iso,
    local_time,
    pass_cli,
    resolve_order,
    run,
    table,
)
from relay.domain.models import AttentionReason, OrderState
from relay.store import OrderQuery, OrderSummary, Store

ORDER_HELP = "ORDER is relay's id, storefront:external_id or the shop's order number (#1042)."

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """`--since`: a duration back from now (`90m`, `2h`, `3d`) or an ISO 8601 date or time (local time
    unless it has an offset), as epoch seconds."""
    if value is None:
        return None
    if match := _DURATION.match(value):
        return time.time() - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        return datetime.fromisoformat(value.strip()).astimezone().timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (90m, 2h, 3d) nor an ISO date or time", ctx, param
        ) from None


@click.command(
    short_help="List orders, filtered.",
    help="List orders, newest first, with a header row. Filters combine. Opens the database "
    "read-only: works next to a running daemon and needs no secrets.",
)
@click.option(
    "--state",
    type=click.Choice([s.value for s in OrderState]),
    help="Only orders in this state.",
)
@click.option("--storefront", metavar="NAME", help="Only this storefront's orders.")
@click.option("--factory", metavar="NAME", help="Only orders with a factory order at this factory.")
@click.option(
    "--reason",
    type=click.Choice([r.value for r in AttentionReason]),
    metavar="REASON",
    help="Only orders needing a person for this reason (unknown_sku, operator_hold, ...).",
)
@click.option(
    "--since",
    metavar="TIME",
    callback=_since,
    help="Only orders changed since then: a duration back (90m, 2h, 3d) or an ISO date/time (local).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many orders."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_cli
def orders(
    cli: Cli,
    *,
    state: str | None,
    storefront: str | None,
    factory: str | None,
    reason: str | None,
    since: float | None,
    limit: int,
    as_json: bool,
) -> int:
    query = OrderQuery(state=state, storefront=storefront, factory=factory, reason=reason, since=since)

    async def act(store: Store) -> list[OrderSummary]:
        try:
            return await store.list_orders(query, limit)
        except ValueError as exc:  # the store's own check of the filters
            raise CliError(str(exc), EX_USAGE) from None

    rows = run(cli.read(act))
    if as_json:
        emit_json([_summary_json(row) for row in rows])
        return EX_OK
    table(
        ["id", "order", "number", "state", "reason", "detail", "updated"],
        [
            [
                row.id,
                f"{row.storefront}:{row.external_id}",
                row.number,
                row.state,
                row.attention_reason,
                row.attention_detail,
                local_time(row.updated_at),
            ]
            for row in rows
        ],
    )
    return EX_OK


def _summary_json(row: OrderSummary) -> dict[str, Any]:
    return {
        "id": row.id,
        "storefront": row.storefront,
        "external_id": row.external_id,
        "number": row.number,
        "state": row.state,
        "attention_reason": row.attention_reason,
        "attention_detail": row.attention_detail,
        "updated_at": row.updated_at,
        "updated_at_local": local_iso(row.updated_at),
    }


# --- actions --------------------------------------------------------------------------------------------


def _act_on_order(
    cli: Cli,
    ref: str,
    action: Callable[[Store, int, float], Awaitable[list[str]]],
    *,
    seed: bool = False,
) -> int:
    """Resolve ORDER and run `action` on it in the database opened for writing; print what changed.
    `seed`: first apply the config's `[routing.skus]` to the SKU catalogue (the daemon routes by it)."""
    sku_map = cli.operator_settings().sku_map if seed else None

    async def act(store: Store) -> list[str]:
        order_id = await resolve_order(store, ref)
        now = time.time()
        lines = []
        if sku_map:
            lines += _seeded(await store.seed_skus_from_config(sku_map, now))
        for line in await action(store, order_id, now):
            lines.append(line if line.startswith(f"order {order_id}") else f"order {order_id}: {line}")
        return lines

    for line in run(cli.write(act)):
        echo(line)
    return EX_OK


def _seeded(diff: Any) -> list[str]:
    if diff.empty:
        return []
    return [
        f"SKU catalogue from the config's routing.skus: {len(diff.added)} added, {len(diff.changed)} changed"
    ]


@click.command(
    short_help="Retry a held or dead-lettered order (or --all-dead).",
    help="Put a held order back to routing (after mapping its SKU in [routing.skus]: the catalogue is "
    "updated from the config first) and requeue its dead-lettered deliveries and tracking pushes; "
    "--all-dead requeues every dead letter. " + ORDER_HELP,
)
@click.argument("order", required=False)
@click.option(
    "--all-dead",
    is_flag=True,
    help="Retry every order with a dead-lettered delivery or tracking push (held orders aside).",
)
@pass_cli
def retry(cli: Cli, order: str | None, all_dead: bool) -> int:
    if bool(order) == all_dead:
        raise click.UsageError("give either ORDER or --all-dead")
    if order:
        return _act_on_order(cli, order, lambda store, oid, now: store.retry_order(oid, now), seed=True)
    sku_map = cli.operator_settings().sku_map

    async def act(store: Store) -> tuple[list[str], list[int]]:
        now = time.time()
        seeded = _seeded(await store.seed_skus_from_config(sku_map, now)) if sku_map else []
        return seeded, await store.retry_all_dead(now)

    if is_tty():
        with console().status("retrying every dead letter (one transaction)..."):
            seeded, ids = run(cli.write(act))
    else:
        echo("retrying every dead letter (one transaction)...")
        seeded, ids = run(cli.write(act))
    for line in seeded:
        echo(line)
    echo(f"retried {len(ids)} order(s)" + (f": {', '.join(map(str, ids))}" if ids else ""))
    return EX_OK


@click.command(
    short_help="Re-send placed factory orders under the same key.",
    help="Send an order's placed but unshipped factory orders again, under the same idempotency key (the "
    "factory keeps one order per key). " + ORDER_HELP,
)
@click.argument("order")
@pass_cli
def replay(cli: Cli, order: str) -> int:
    return _act_on_order(cli, order, lambda store, oid, now: store.replay_order(oid, now))


@click.command(
    short_help="Hold an order until `relay release`.",
    help="Hold an order that no factory has yet: nothing is sent for it until `relay release`. " + ORDER_HELP,
)
@click.argument("order")
@click.option("--reason", required=True, help="Why, for the history and `relay status`.")
@pass_cli
def hold(cli: Cli, order: str, reason: str) -> int:
    if not reason.strip():
        raise click.BadParameter("must not be empty", param_hint="--reason")
    return _act_on_order(cli, order, lambda store, oid, now: store.hold_order(oid, reason, now))


@click.command(
    short_help="Send a held order back to routing.",
    help="Release a held order (held by a person or by routing, e.g. unknown_sku): it goes back to routing "
    "and the running daemon plans it again on its next pass, with the SKU catalogue updated from the "
    "config's [routing.skus] first. " + ORDER_HELP,
)
@click.argument("order")
@pass_cli
def release(cli: Cli, order: str) -> int:
    return _act_on_order(cli, order, lambda store, oid, now: store.release_order(oid, now), seed=True)


@click.command(
    short_help="Cancel an order as the storefront would.",
    help="Cancel an order as a storefront cancellation would: not sent yet, it is cancelled; a factory that "
    "has it is sent a cancellation for the unshipped lines. The storefront is not told. " + ORDER_HELP,
)
@click.argument("order")
@pass_cli
def cancel(cli: Cli, order: str) -> int:
    return _act_on_order(cli, order, lambda store, oid, now: store.cancel_order(oid, now))


COMMANDS = [orders, retry, replay, hold, release, cancel]
