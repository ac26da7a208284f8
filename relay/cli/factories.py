"""`relay factories list|enable|disable`: see factories and pause or resume deliveries to one."""

from __future__ import annotations

import time
from typing import Any

import click

from relay.cli.common import EX_OK, Cli, CliError, echo, emit_json, pass_cli, run, table, timestamp
from relay.store import FactoryStatus, Store


@click.group(help="List factories; pause or resume deliveries to one (the state lives in the database).")
def factories() -> None:
    pass


@factories.command(
    "list", help="Configured factories: enabled or disabled (since when, why) and orders per state."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_cli
def list_(cli: Cli, as_json: bool) -> int:
    configured = set(cli.operator_settings().factories)

    async def act(store: Store) -> list[FactoryStatus]:
        return await store.list_factories()

    known = {status.name: status for status in run(cli.read(act))}
    rows: list[dict[str, Any]] = []
    for name in sorted(configured | set(known)):
        row = known.get(name) or FactoryStatus(name)
        rows.append(
            {
                "name": name,
                "configured": name in configured,
                "enabled": row.disabled_at is None,
                "disabled_at": timestamp(row.disabled_at) if row.disabled_at else None,
                "disabled_reason": row.disabled_reason,
                "orders": dict(sorted(row.orders.items())),
            }
        )
    if as_json:
        emit_json(rows)
        return EX_OK
    table(
        ["factory", "state", "since", "reason", "orders", "configured"],
        [
            [
                r["name"],
                "enabled" if r["enabled"] else "disabled",
                r["disabled_at"],
                r["disabled_reason"],
                ", ".join(f"{k} {v}" for k, v in r["orders"].items()) or "no orders",
                "yes" if r["configured"] else "no",
            ]
            for r in rows
        ],
    )
    return EX_OK


@factories.command(
    help="Resume deliveries to factory NAME (e.g. after it answered 410); its waiting orders go out."
)
@click.argument("name")
@pass_cli
def enable(cli: Cli, name: str) -> int:
    _require_configured(cli, name)

    async def act(store: Store) -> bool:
        return await store.enable_factory(name, time.time())

    changed = run(cli.write(act))
    echo(f"{name}: {'enabled; its waiting orders go out now' if changed else 'was not disabled'}")
    return EX_OK


@factories.command(help="Pause deliveries to factory NAME; its orders wait until it is enabled again.")
@click.argument("name")
@click.option(
    "--reason",
    default="disabled by an operator",
    show_default=True,
    help="Why, shown by `factories list` and `status`.",
)
@pass_cli
def disable(cli: Cli, name: str, reason: str) -> int:
    _require_configured(cli, name)

    async def act(store: Store) -> bool:
        return await store.disable_factory(name, reason, time.time())

    changed = run(cli.write(act))
    echo(f"{name}: {'disabled; its orders wait' if changed else 'was already disabled'}")
    return EX_OK


def _require_configured(cli: Cli, name: str) -> None:
    configured = cli.operator_settings().factories
    if name not in configured:
        raise CliError(f"unknown factory {name!r}; configured: {', '.join(configured)}")


COMMANDS = [factories]
