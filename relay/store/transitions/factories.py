"""Factory state: paused deliveries (a 410, or an operator) and the shipment-listing cursor."""

from __future__ import annotations

from collections import defaultdict

from relay.store.connector import Transaction
from relay.store.records import FactoryStatus


async def disable_factory(tx: Transaction, name: str, reason: str, now: float) -> bool:
    """Pause deliveries to `name`; False if it was already disabled."""
    return bool(await tx.execute("disable_factory", name=name, reason=reason, now=now))


async def enable_factory(tx: Transaction, name: str, now: float) -> bool:
    """Resume deliveries to `name`; False if it was not disabled."""
    return bool(await tx.execute("enable_factory", name=name, now=now))


async def list_factories(tx: Transaction) -> list[FactoryStatus]:
    """Every factory with a row or a factory order, by name, with its order counts per state."""
    rows = {r["name"]: r for r in await tx.fetch("list_factories")}
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for r in await tx.fetch("factory_order_counts"):
        counts[r["factory"]][r["state"]] = r["count"]
    statuses = []
    for name in sorted(rows.keys() | counts.keys()):
        row = rows.get(name)
        statuses.append(
            FactoryStatus(
                name,
                row["disabled_at"] if row else None,
                row["disabled_reason"] if row else None,
                row["shipment_cursor"] if row else None,
                counts.get(name, {}),
            )
        )
    return statuses


async def get_factory_cursor(tx: Transaction, factory: str) -> str | None:
    """The factory's shipment-listing cursor, or None."""
    row = await tx.fetch_one("get_factory_cursor", name=factory)
    return row["shipment_cursor"] if row else None


async def set_factory_cursor(tx: Transaction, factory: str, cursor: str, now: float) -> None:
    """Store the factory's shipment-listing cursor."""
    await tx.execute("set_factory_cursor", name=factory, cursor=cursor, now=now)
