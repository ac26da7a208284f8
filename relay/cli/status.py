"""`relay status [--json]`: the relay at a glance, from the database alone (read-only, no secrets)."""

from __future__ import annotations

import time

import click

from relay.cli.common import (
    EX_OK,
    Cli,
    age,
    echo,
    emit_json,
    local_time,
    pass_cli,
    run,
    table,
)
from relay.store import FactoryStatus, StatusReport, Store, StorefrontStatus


@click.command(
    short_help="The relay at a glance: polls, factories, states, problems.",
    help="Storefront polls and their lag, factory health (circuit, disabled), orders per state, dead "
    "letters and held orders with their reasons, and the oldest pending work's age. Opens the database "
    "read-only: it works next to a running daemon and needs no secrets.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many held orders and dead letters (the newest).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_cli
def status(cli: Cli, limit: int, as_json: bool) -> int:
    now = time.time()

    async def act(store: Store) -> StatusReport:
        return await store.status(now, limit=limit)

    report = run(cli.read(act))
    if as_json:
        emit_json(report.to_json())
        return EX_OK
    render(report)
    return EX_OK


def render(report: StatusReport) -> None:
    """The status report as tables (rich on a TTY, plain aligned text when piped)."""
    now = report.now
    echo(f"relay status at {local_time(now)}")
    echo()
    table(
        ["storefront", "last good poll", "lag", "state", "last error"],
        [_storefront_row(s, now) for s in report.storefronts],
        title="Storefronts",
    )
    echo()
    table(
        ["factory", "deliveries", "circuit", "last error", "orders"],
        [_factory_row(f, now) for f in report.factories],
        title="Factories",
    )
    echo()
    table(["state", "orders"], list(report.orders_by_state.items()), title="Orders per state")
    echo()
    pending = age(report.oldest_pending_age_s) if report.oldest_pending_age_s is not None else "nothing"
    echo(f"oldest pending work: {pending}")
    echo(f"quarantined storefront records: {report.quarantined}")
    echo()
    table(
        ["order", "number", "storefront", "state", "reason", "detail", "since"],
        [
            [a.order_id, a.number, a.storefront, a.state, a.reason, a.detail, local_time(a.since)]
            for a in report.attention
        ],
        title=f"Needing a person ({len(report.attention)})",
    )
    echo()
    table(
        ["order", "number", "kind", "to", "attempts", "last error", "since"],
        [
            [d.order_id, d.number, d.kind, d.destination, d.attempts, d.last_error, local_time(d.since)]
            for d in report.dead_letters
        ],
        title=f"Dead letters ({len(report.dead_letters)})",
    )


def _storefront_row(s: StorefrontStatus, now: float) -> list[str | None]:
    lag = age(now - s.last_poll_ok_at) if s.last_poll_ok_at else None
    state = "failing" if s.failing else ("ok" if s.last_poll_ok_at else "not polled yet")
    return [s.name, local_time(s.last_poll_ok_at), lag, state, s.last_error if s.failing else None]


def _factory_row(f: FactoryStatus, now: float) -> list[str | None]:
    if f.disabled_at is not None:
        deliveries = f"disabled since {local_time(f.disabled_at)}: {f.disabled_reason or ''}"
    else:
        deliveries = "enabled"
    if f.failing_since is None:
        circuit = "closed (healthy)"
    elif f.next_probe_at is not None and f.next_probe_at > now:
        circuit = f"open for {age(now - f.failing_since)}; next probe in {age(f.next_probe_at - now)}"
    else:
        circuit = f"failing for {age(now - f.failing_since)}; probing"
    orders = ", ".join(f"{k} {v}" for k, v in sorted(f.orders.items())) or "no orders"
    return [f.name, deliveries, circuit, f.last_error if f.failing_since else None, orders]


COMMANDS = [status]
