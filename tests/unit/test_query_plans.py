"""Every query the loops run stays indexed as the database grows (see bench/README.md, "scale").

Runs EXPLAIN QUERY PLAN on each hot named query against a migrated database and fails on a full scan
of orders, factory_orders or storefront_pushes, or a search through an index that leads to history
(`HISTORY_INDEXES`). Scanning a *partial* index (the outbox's
`WHERE next_attempt_at IS NOT NULL` indexes) is allowed: it holds only rows that are owed, never history.
Operator and start-up queries (counts, listings, lease release) are deliberately not in the list.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from relay.store import open_store
from relay.store.sqlite import QUERIES

BIG_TABLES = ("orders", "factory_orders", "storefront_pushes")
HISTORY_INDEXES = {"factory_orders_by_factory"}
"""Indexes that lead to history, not to owed work: a hot query searching one visits every row a factory
ever had. SQLite (without ANALYZE) prefers such an equality to a range on a partial index (issue 15: the
delivery claim grew from 0.15 ms to ~100 ms at 100k stored orders, ~1 s at 1M)."""

HOT_QUERIES = [
    # poller
    "get_cursor",
    "set_cursor",
    "orders_by_external_ids",
    "insert_order_line",
    "insert_event_by_external_id",
    "update_order_payload",
    # router
    "claim_orders_to_route",
    "order_states",
    "assign_line",
    "set_order_state",
    # forwarder
    "claim_deliveries",
    "claim_cancellations",
    "factory_orders_by_ids",
    "cancellations_by_ids",
    "update_factory_order",
    "next_due",
    "next_delivery_due",
    # derived order state (every commit of the forwarder, shipper and inbound callbacks)
    "factory_orders_of_orders",
    "line_totals_of_orders",
    "push_states_of_orders",
    # inbound shipment callbacks
    "factory_orders_for_shipments",
    "messages_seen",
    "shipments_of_factory_orders",
    "lines_of_orders",
    "add_shipped_quantity",
    "set_factory_order_shipped",
    "insert_push_for_parcel",
    # shipper
    "claim_pushes",
    "pushes_by_ids",
    "update_push",
    # lookups by external id
    "find_order_by_external",
    # committed state changes for logs and metrics (`Store.observe`), once per write transaction
    "order_refs",
    "order_refs_by_external_ids",
]
# The set-based forms of per-row queries (ADR 12, rows.sql): every one, as each runs on a whole batch.
HOT_QUERIES += sorted(name for name in QUERIES if name.endswith("[]"))


@pytest.fixture
async def db(tmp_path: Path) -> sqlite3.Connection:
    store = open_store(f"sqlite:///{tmp_path / 'plans.db'}")
    await store.open()
    await store.migrate()
    await store.close()
    conn = sqlite3.connect(tmp_path / "plans.db")
    yield conn
    conn.close()


def _partial_indexes(db: sqlite3.Connection) -> set[str]:
    return {
        name
        for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
        if re.search(r"\bWHERE\b", sql, re.I)
    }


def _names_for_big_tables(sql: str) -> set[str]:
    """The big tables and any alias the query gives them (`FROM factory_orders f` -> f)."""
    names = set(BIG_TABLES)
    for _table, alias in re.findall(
        r"\b(orders|factory_orders|storefront_pushes)\s+(?:AS\s+)?([a-z_]\w*)", sql, re.I
    ):
        if alias.upper() not in {
            "WHERE",
            "SET",
            "ON",
            "JOIN",
            "LEFT",
            "INNER",
            "GROUP",
            "ORDER",
            "LIMIT",
            "USING",
            "VALUES",
            "WITH",
            "AS",
        }:
            names.add(alias)
    return names


def full_scans(db: sqlite3.Connection, name: str) -> list[str]:
    sql = QUERIES[name]
    params = dict.fromkeys(re.findall(r"(?<!:):(\w+)", sql))  # every named parameter, bound to NULL
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
    partial = _partial_indexes(db)
    names = _names_for_big_tables(sql)
    bad = []
    for detail in plan:
        m = re.match(r"SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", detail)
        if m and m.group(1) in names and m.group(2) not in partial:
            bad.append(detail)
        m = re.match(r"SEARCH (\w+) USING (?:COVERING )?INDEX (\w+)", detail)
        if m and m.group(1) in names and m.group(2) in HISTORY_INDEXES:
            bad.append(detail)
    return bad


def test_every_hot_query_is_known() -> None:
    missing = [name for name in HOT_QUERIES if name not in QUERIES]
    assert not missing, f"hot queries renamed or removed, update this test: {missing}"


@pytest.mark.parametrize("name", HOT_QUERIES)
async def test_hot_query_does_not_scan_a_big_table(db: sqlite3.Connection, name: str) -> None:
    assert full_scans(db, name) == [], f"{name} scans a whole table:\n{QUERIES[name]}"


def test_queries_take_named_parameters_only() -> None:
    positional = [name for name, sql in QUERIES.items() if "?" in sql]
    assert not positional, f"queries with positional parameters (use :name): {positional}"


async def test_the_delivery_claim_searches_one_factorys_owed_rows(db: sqlite3.Connection) -> None:
    """The claim runs per destination factory: it must reach that factory's owed rows directly, never walk
    every factory's due rows in time order (a disabled factory, or one with an open circuit, holding 100k
    owed rows made each claim for a healthy one walk them: migration 12)."""
    sql = QUERIES["claim_deliveries"]
    params = dict.fromkeys(re.findall(r"(?<!:):(\w+)", sql))
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
    searches = [d for d in plan if re.match(r"SEARCH factory_orders USING (?:COVERING )?INDEX ", d)]
    assert len(searches) == 1 and re.match(
        r"SEARCH factory_orders USING (?:COVERING )?INDEX factory_orders_due_by_factory \(factory=\? AND next_attempt_at",
        searches[0],
    ), plan
    assert "factory_orders_due_by_factory" in _partial_indexes(db)


async def test_the_check_catches_a_full_scan(db: sqlite3.Connection) -> None:
    QUERIES["_probe"] = "SELECT id FROM orders WHERE lease_owner = :owner"
    try:
        assert full_scans(db, "_probe") == ["SCAN orders"]
    finally:
        del QUERIES["_probe"]


async def test_the_retention_scan_walks_only_orders_old_enough_to_prune(db: sqlite3.Connection) -> None:
    """The retention pass (at start-up, then daily) read every final order ever stored, in id order,
    however young: with 1M stored orders and none old enough, it read them all while the daemon took its
    first orders (bench/README.md). It must search the final orders by age, bounded by the cutoff, and
    resume after the last one it looked at (migration 13)."""
    sql = QUERIES["final_orders_to_prune"]
    params = dict.fromkeys(re.findall(r"(?<!:):(\w+)", sql))
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
    orders = [d for d in plan if re.match(r"(SEARCH|SCAN) o\b", d)]
    assert len(orders) == 1 and re.match(
        r"SEARCH o USING (?:COVERING )?INDEX orders_by_state_and_age \(state=\? AND \(?updated_at", orders[0]
    ), plan
    assert not any(d.startswith("USE TEMP B-TREE") for d in plan), plan  # the index's order: no sort
