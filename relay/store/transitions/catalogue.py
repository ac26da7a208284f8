"""The SKU catalogue: routing's table at run time, its import and config seed, and fallback factories.

The catalogue is the single source of truth for routing. Rows come from two places:

* `relay skus import FILE.csv` (`import_skus`): the file is the whole catalogue. Rows not in the catalogue
  are added, rows that differ are changed, rows not in the file are removed, all in one transaction.
  Every row written becomes `source = 'import'`: the catalogue owns its SKU from then on.
* the config's `routing.skus` (`seed_from_config`, at daemon start, on SIGHUP and before the CLI's
  retry/release): a seed. A SKU without any row (for every storefront) gets one (`source = 'config'`);
  a SKU whose rows all came from the config is kept equal to the config (its factory changed, or its row
  removed when the SKU left the config). A SKU with an imported row is never touched by the seed: the
  import wins. To stop a config SKU for good, import it with `active` false.

Every change bumps `catalogue_version`, which the router reads every pass to reload its copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from relay.domain import routing  # a module: routing itself imports the store's records
from relay.domain.models import FactoryOrder, Order, OrderLine, factory_order_key
from relay.store import wakeups
from relay.store.connector import Row, Transaction
from relay.store.records import (
    SKU_FROM_CONFIG,
    SKU_FROM_IMPORT,
    SkuDiff,
    SkuRecord,
)
from relay.store.transitions import EventRow, event
from relay.store.transitions.orders import refresh_orders, routing_snapshot


def _record(row: Row) -> SkuRecord:
    return SkuRecord(
        sku=row["sku"],
        factory=row["factory"],
        storefront=row["storefront"],
        factory_sku=row["factory_sku"],
        unit_cost=Decimal(row["unit_cost"]) if row["unit_cost"] is not None else None,
        currency=row["currency"],
        priority=row["priority"],
        active=bool(row["active"]),
        source=row["source"],
    )


async def list_skus(tx: Transaction) -> list[SkuRecord]:
    """Every catalogue row, by storefront, SKU, priority and factory."""
    return [_record(row) for row in await tx.fetch("list_skus")]


async def _write(tx: Transaction, record: SkuRecord, now: float) -> None:
    await tx.execute(
        "upsert_sku",
        storefront=record.storefront,
        sku=record.sku,
        factory=record.factory,
        factory_sku=record.factory_sku,
        unit_cost=str(record.unit_cost) if record.unit_cost is not None else None,
        currency=record.currency,
        priority=record.priority,
        active=int(record.active),
        source=record.source,
        now=now,
    )


async def _delete(tx: Transaction, record: SkuRecord) -> None:
    await tx.execute("delete_sku", storefront=record.storefront, sku=record.sku, factory=record.factory)


async def orders_routed_since(tx: Transaction, since: float) -> dict[str, int]:
    """Orders given factory orders at or after `since`, per storefront (`max_orders_per_hour`)."""
    return {row["storefront"]: row["count"] for row in await tx.fetch("orders_routed_since", since=since)}


async def import_skus(tx: Transaction, rows: Sequence[SkuRecord], now: float, *, dry_run: bool) -> SkuDiff:
    """Make the catalogue equal to `rows` (see the module docstring). Raises ValueError (changing nothing)
    for two rows with one (storefront, sku, factory)."""
    wanted: dict[tuple[str, str, str], SkuRecord] = {}
    for row in rows:
        if row.key in wanted:
            raise ValueError(
                f"duplicate row for storefront {row.storefront!r}, SKU {row.sku!r}, {row.factory}"
            )
        wanted[row.key] = replace(row, source=SKU_FROM_IMPORT)
    current = {r.key: r for r in await list_skus(tx)}
    added = tuple(r for k, r in wanted.items() if k not in current)
    changed = tuple(
        (current[k], r) for k, r in wanted.items() if k in current and not current[k].same_content(r)
    )
    removed = tuple(r for k, r in current.items() if k not in wanted)
    diff = SkuDiff(added, changed, removed, applied=not dry_run)
    if dry_run:
        return diff
    for record in removed:
        await _delete(tx, record)
    for key, record in wanted.items():
        if (
            key not in current
            or not current[key].same_content(record)
            or current[key].source != record.source
        ):
            await _write(tx, record, now)
    if not diff.empty:
        await tx.execute("bump_catalogue_version")
    return diff


async def seed_from_config(tx: Transaction, mapping: Mapping[str, str], now: float) -> SkuDiff:
    """Apply the config's `routing.skus` as a seed (see the module docstring)."""
    rows = [r for r in await list_skus(tx) if r.storefront == ""]
    by_sku: dict[str, list[SkuRecord]] = {}
    for r in rows:
        by_sku.setdefault(r.sku, []).append(r)
    added: list[SkuRecord] = []
    changed: list[tuple[SkuRecord, SkuRecord]] = []
    removed: list[SkuRecord] = []
    for sku, factory in mapping.items():
        existing = by_sku.get(sku, [])
        if any(r.source != SKU_FROM_CONFIG for r in existing):
            continue  # imported: the catalogue owns it
        want = SkuRecord(sku=sku, factory=factory, source=SKU_FROM_CONFIG)
        same = [r for r in existing if r.factory == factory]
        for r in existing:
            if r.factory != factory:
                removed.append(r)
        if not same:
            added.append(want)
        elif not same[0].same_content(want):
            changed.append((same[0], want))
    removed += [r for r in rows if r.source == SKU_FROM_CONFIG and r.sku not in mapping]
    for record in removed:
        await _delete(tx, record)
    for record in [*added, *(after for _, after in changed)]:
        await _write(tx, record, now)
    diff = SkuDiff(tuple(added), tuple(changed), tuple(removed), applied=True)
    if not diff.empty:
        await tx.execute("bump_catalogue_version")
    return diff


async def waive_guards(tx: Transaction, order_id: int) -> None:
    """An operator released `order_id`: its current version passes the routing guards (margin, approval,
    caps) once; a new version from the storefront is guarded again. Call inside the release's
    transaction."""
    row = await tx.fetch_one("find_order_version", order_id=order_id)
    if row is None:
        return
    version = row["content_hash"] or Order.model_validate_json(row["payload"]).content_hash()
    await tx.execute("waive_guards", content_hash=version, order_id=order_id)


# --- fallback factories ----------------------------------------------------------------------------------


async def fall_back(
    tx: Transaction,
    order_id: int,
    fo_id: int,
    *,
    why: str,
    detail: str | None,
    now: float,
    events: list[EventRow],
    catalogue: routing.Catalogue | None = None,
) -> list[str]:
    """Move the lines of factory order `fo_id` (never placed: the factory refused it, or it was never sent)
    to the next factory by catalogue priority, each a new factory order under its own idempotency key.

    Factories the order already has a factory order at (the refusing one included) and disabled ones are
    skipped. All or nothing: if a line has no other factory, nothing moves and [] is returned; the caller
    then keeps the factory order where it was. Returns the factories the lines went to; the caller closes
    `fo_id` (cancelled, never placed) in the same transaction.
    """
    fo = await tx.fetch_one("factory_order_payload", id=fo_id)
    if fo is None:
        return []
    sent = FactoryOrder.model_validate_json(fo["payload"])
    taken = {row["factory"] for row in await tx.fetch("factories_of_order", order_id=order_id)}
    state = await routing_snapshot(tx)
    catalogue = catalogue or routing.Catalogue(await list_skus(tx))
    plan = routing.next_factories(
        catalogue, sent.storefront, sent.lines, skip=taken | state.disabled_factories
    )
    if plan is None:
        return []
    for factory, picked in plan.items():
        lines: tuple[OrderLine, ...] = tuple(line for line, _ in picked)
        new = sent.model_copy(
            update={
                "key": factory_order_key(sent.storefront, sent.order_id, factory),
                "factory": factory,
                "lines": lines,
                "factory_skus": {line.line_id: r.factory_sku for line, r in picked if r.factory_sku},
            }
        )
        await tx.execute(
            "insert_factory_order",
            order_id=order_id,
            factory=factory,
            key=new.key,
            payload=new.model_dump_json(),
            now=now,
        )
        await tx.execute_many(
            "assign_line", [{"key": new.key, "order_id": order_id, "line_id": ln.line_id} for ln in lines]
        )
        tx.notify(wakeups.forward(factory))
    events.append(
        event(
            order_id,
            now,
            "fallback",
            factory=sent.factory,
            to={f: [ln.line_id for ln, _ in picked] for f, picked in plan.items()},
            why=why,
            detail=detail,
        )
    )
    return sorted(plan)


async def _never_sent(tx: Transaction, unavailable: Mapping[str, str]) -> tuple[dict[str, str], list[Row]]:
    """Why each factory is unavailable (the given ones, and every disabled one), and their never-sent
    factory orders."""
    state = await routing_snapshot(tx)
    why = {**{name: "disabled" for name in state.disabled_factories}, **unavailable}
    return why, list(await tx.fetch("never_sent_factory_orders", factories=sorted(why))) if why else []


async def any_to_reroute(tx: Transaction, unavailable: Mapping[str, str]) -> bool:
    """Whether `reroute_unavailable` would find factory orders to look at (a read: no write transaction
    for nothing)."""
    return bool((await _never_sent(tx, unavailable))[1])


async def reroute_unavailable(tx: Transaction, unavailable: Mapping[str, str], now: float) -> int:
    """Move the never-sent factory orders of unavailable factories (`unavailable`: name -> why, e.g. a
    circuit open too long; every disabled factory too) to their fallback factories. A factory order that
    was ever claimed may have reached its factory and is never moved. Returns how many moved."""
    why, rows = await _never_sent(tx, unavailable)
    if not rows:
        return 0
    catalogue = routing.Catalogue(await list_skus(tx))
    events: list[EventRow] = []
    moved: list[int] = []
    for row in rows:
        order_id, fo_id, reason = row["order_id"], row["id"], why[row["factory"]]
        if await fall_back(
            tx, order_id, fo_id, why=reason, detail=None, now=now, events=events, catalogue=catalogue
        ):
            await tx.execute(
                "cancel_factory_order_locally",
                error=f"not sent: {reason}; its lines went to a fallback factory",
                now=now,
                id=fo_id,
            )
            moved.append(order_id)
    if moved:
        await refresh_orders(tx, moved, now, events, cause="fallback")
        await tx.execute_many("insert_event", events)
    return len(moved)
