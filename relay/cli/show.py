"""`relay show ORDER [--pii] [--json]`: one order, its lines, factory orders, parcels and pushes, and a
timeline of its history in local time. Personal data is masked unless `--pii`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from relay.cli.common import (
    EX_OK,
    Cli,
    CliError,
    echo,
    emit_json,
    local_iso,
    local_time,
    pass_cli,
    resolve_order,
    run,
    table,
)
from relay.cli.pii import mask
from relay.store import OrderView, Store

TITLES = {
    "received": "received from the storefront",
    "already_fulfilled": "received, already fulfilled on the storefront",
    "routed": "routed to factories",
    "factory_accepted": "delivered: the factory accepted it",
    "delivery_failed": "delivery attempt failed",
    "dead_lettered": "delivery given up (dead letter)",
    "shipment_received": "parcel received",
    "tracking_pushed": "tracking pushed to the storefront",
    "push_failed": "tracking push failed",
    "operator_retry": "retried by an operator",
    "operator_replay": "replayed by an operator",
    "released": "released",
    "cancel_requested": "cancellation requested",
    "requeued": "back to routing (changed on the storefront)",
    "attention_flagged": "flagged for a person",
    "attention_cleared": "flag cleared",
}
"""Readable titles for the common history events; any other kind is shown as its name."""

DETAIL_ORDER = ("actor", "factory", "attempt", "status", "response", "error", "reason", "cause")
"""Detail keys shown first, in this order; the rest follow alphabetically."""


@click.command(
    short_help="One order and the timeline of its history.",
    help="Show one order: its lines, factory orders (amount, currency, pay deadline), parcels and tracking "
    "pushes, and a timeline of its history in local time (polled, routed, each delivery attempt with "
    "the factory's status and answer, parcels, pushes, holds and releases). Personal data (email, "
    "phone, name, address) is masked unless --pii. ORDER is relay's id, storefront:external_id or the "
    "shop's order number (#1042). Opens the database read-only.",
)
@click.argument("order")
@click.option("--pii", is_flag=True, help="Show personal data (email, phone, name, address) unmasked.")
@click.option("--json", "as_json", is_flag=True, help="Print the same as JSON (masked unless --pii).")
@pass_cli
def show(cli: Cli, order: str, pii: bool, as_json: bool) -> int:
    async def act(store: Store) -> OrderView | None:
        return await store.find_order(await resolve_order(store, order))

    view = run(cli.read(act))
    if view is None:  # pruned or gone between the two reads
        raise CliError(f"order {order!r} not found")
    data = view_json(view)
    if not pii:
        data = mask(data)
    if as_json:
        emit_json(data)
    else:
        render(data)
    return EX_OK


def view_json(view: OrderView) -> dict[str, Any]:
    """The order as data (`OrderView.to_json()`), each time also in local ISO 8601 (`*_local`)."""
    data = view.to_json()
    for event in data["events"]:
        event["at_local"] = local_iso(event["at"])
    order = data["order"]
    for key in ("created_at", "updated_at"):
        order[f"{key}_local"] = local_iso(order[key])
    for shipment in data["shipments"]:
        shipment["received_at_local"] = local_iso(shipment["received_at"])
    return data


def render(data: dict[str, Any]) -> None:
    """The order as text: a header, the ship-to, then tables (rich on a TTY, plain when piped)."""
    order, payload = data["order"], data["order"]["payload"]
    attention = f"  [{order['attention_reason']}: {order['attention_detail'] or ''}]"
    echo(
        f"order {order['id']}  {order['storefront']}:{order['external_id']}  #{order['number'].lstrip('#')}"
        f"  {order['state']}" + (attention if order["attention_reason"] else "")
    )
    echo(f"received {local_time(order['created_at'])}, last change {local_time(order['updated_at'])}")
    address = payload.get("shipping_address") or {}
    street = ", ".join(
        v
        for v in (
            address.get("line1"),
            address.get("line2"),
            address.get("postal_code"),
            address.get("city"),
            address.get("region"),
            address.get("country_code"),
        )
        if v
    )
    echo(f"customer {payload.get('email') or '-'}; ship to {address.get('name') or '-'}, {street or '-'}")
    echo(f"phone {address.get('phone') or '-'}; total {payload.get('total') or '-'} {payload['currency']}")
    echo()
    table(
        ["line", "sku", "title", "qty", "unit price", "properties"],
        [
            [
                line["line_id"],
                line.get("sku"),
                line.get("title"),
                line["quantity"],
                line["unit_price"],
                "; ".join(f"{k}: {v}" for k, v in (line.get("properties") or {}).items()) or None,
            ]
            for line in payload["lines"]
        ],
        title="Lines",
    )
    echo()
    table(
        ["factory", "state", "attempts", "reference", "amount", "pay by", "cancel", "last error"],
        [
            [
                fo["factory"],
                fo["state"] + (f" ({fo['attention']})" if fo.get("attention") else ""),
                fo["attempts"],
                fo["reference"],
                f"{fo['amount']} {fo['currency'] or ''}".strip() if fo.get("amount") else None,
                _local_deadline(fo.get("pay_deadline")),
                fo["cancel_state"],
                fo["last_error"],
            ]
            for fo in data["factory_orders"]
        ],
        title="Factory orders",
    )
    echo()
    table(
        ["factory", "parcel", "carrier", "tracking", "lines", "received", "push", "push error"],
        [
            [
                s["factory"],
                s["shipment_id"],
                s["carrier"],
                s["tracking_number"],
                ", ".join(f"{line['line_id']}x{line['quantity']}" for line in s["lines"]),
                local_time(s["received_at"]),
                f"{s['push_state'] or '-'} ({s['push_attempts'] or 0} attempt(s))",
                s["push_error"],
            ]
            for s in data["shipments"]
        ],
        title="Parcels and tracking pushes",
    )
    echo()
    table(
        ["time", "event", "state", "details"],
        [
            [local_time(e["at"]), TITLES.get(e["kind"], e["kind"]), _transition(e), _details(e)]
            for e in data["events"]
        ],
        title="Timeline",
    )


def _local_deadline(iso: str | None) -> str | None:
    """A factory's pay deadline (ISO 8601) in local time."""
    return local_time(datetime.fromisoformat(iso).timestamp()) if iso else None


def _transition(event: dict[str, Any]) -> str | None:
    src, dst = event.get("from"), event.get("to")
    if not dst or src == dst:
        return None
    return f"{src} -> {dst}" if src else str(dst)


def _details(event: dict[str, Any]) -> str:
    skip = {"at", "at_local", "kind", "from", "to"}
    detail = {k: v for k, v in event.items() if k not in skip and v not in (None, "", [], {})}
    keys = [k for k in DETAIL_ORDER if k in detail] + sorted(k for k in detail if k not in DETAIL_ORDER)
    parts = []
    for key in keys:
        value = detail[key]
        if key.endswith("_at") and isinstance(value, int | float):
            value = local_time(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        parts.append(f"{key}={value}")
    return "  ".join(parts)


COMMANDS = [show]
