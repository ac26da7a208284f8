"""Seed a relay database with completed history, fast: migrate with the store, then sqlite3 executemany.

Each seeded order is a finished one, as months of traffic would leave it: an `orders` row (completed),
one or two `order_lines`, one `factory_orders` row (shipped, nothing due), one `shipments` row, one
`storefront_pushes` row (done, nothing due) and two `order_events`. Payloads are short but real-shaped
JSON (~300 bytes), which keeps a million orders at about 1.5 GB instead of 4 GB; the loops never read the
payloads of finished orders, only their index entries.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from relay.store import open_store

CHUNK = 25_000


async def migrate(path: Path) -> int:
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        return await store.migrate()
    finally:
        await store.close()


def count_orders(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM orders").fetchone()[0])
    finally:
        db.close()


def _payload(i: int) -> str:
    return json.dumps(
        {
            "external_id": f"s{i}",
            "number": f"#S{i}",
            "currency": "USD",
            "paid": True,
            "email": f"customer{i}@example.com",
            "shipping_address": {"name": "Ada", "city": "Shenzhen"},
            "lines": [{"line_id": f"s{i}-1", "sku": "TEE-RED-M", "quantity": 1, "unit_price": "9.50"}],
        },
        separators=(",", ":"),
    )


def seed(path: Path, target: int) -> dict[str, float]:
    """Add finished orders until the database holds `target` of them (counted by max order id)."""
    asyncio.run(migrate(path))
    have = count_orders(path)
    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")  # seeding is set-up, not measured; the relay runs FULL
    ids = {
        t: int(db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0])  # noqa: S608
        for t in ("factory_orders", "shipments", "storefront_pushes")
    }
    t0 = time.time() - 86400 * 30
    for lo in range(have + 1, target + 1, CHUNK):
        hi = min(target, lo + CHUNK - 1)
        orders, lines, fos, ships, pushes = [], [], [], [], []
        events: list[tuple[int, float, str, str | None, str, str | None]] = []
        for oid in range(lo, hi + 1):
            n = oid - have
            at = t0 + oid * 0.001
            ext = f"s{oid}"
            payload = _payload(oid)
            fo_id, ship_id, push_id = (
                ids["factory_orders"] + n,
                ids["shipments"] + n,
                ids["storefront_pushes"] + n,
            )
            iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(at))
            orders.append((oid, "shop", ext, f"#S{oid}", "completed", iso, payload, at, at + 60))
            lines.append((oid, f"{ext}-1", "TEE-RED-M", 1, 1, fo_id))
            fos.append(
                (fo_id, oid, "acme", f"fo_seed{oid}", "shipped", payload, 1, f"ACME-S{oid}", at, at + 30)
            )
            ships.append(
                (
                    ship_id,
                    fo_id,
                    oid,
                    f"ACME-S{oid}-P1",
                    "SF Express",
                    f"SF{oid:012d}",
                    f'[{{"line_id":"{ext}-1","quantity":1}}]',
                    at + 40,
                )
            )
            pushes.append(
                (
                    push_id,
                    ship_id,
                    oid,
                    "shop",
                    f"sp_seed{oid}",
                    "done",
                    payload,
                    1,
                    f"F1-{ext}",
                    at + 40,
                    at + 60,
                )
            )
            events.append((oid, at, "received", None, "received", None))
            events.append((oid, at + 60, "completed", "shipped", "completed", '{"cause":"push"}'))
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO orders (id, storefront, external_id, number, state, source_updated_iso, payload,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
            orders,
        )
        db.executemany(
            "INSERT INTO factory_orders (id, order_id, factory, key, state, payload, attempts, reference,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            fos,
        )
        db.executemany(
            "INSERT INTO order_lines (order_id, line_id, sku, quantity, shipped_quantity, factory_order_id)"
            " VALUES (?,?,?,?,?,?)",
            lines,
        )
        db.executemany(
            "INSERT INTO shipments (id, factory_order_id, order_id, shipment_id, carrier, tracking_number,"
            " lines, received_at) VALUES (?,?,?,?,?,?,?,?)",
            ships,
        )
        db.executemany(
            "INSERT INTO storefront_pushes (id, shipment_id, order_id, storefront, key, state, payload, attempts,"
            " reference, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            pushes,
        )
        db.executemany(
            "INSERT INTO order_events (order_id, at, kind, from_state, to_state, detail) VALUES (?,?,?,?,?,?)",
            events,
        )
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return {
        "added": max(0, target - have),
        "seconds": time.perf_counter() - started,
        "db_mib": Path(path).stat().st_size / 2**20,
    }
