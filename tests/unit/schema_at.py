"""A database file left at an older schema version, for migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from relay.store.sqlite.connector import MIGRATIONS


def database_at(path: Path, version: int) -> sqlite3.Connection:
    """Create `path` with migrations 1..`version` applied (and recorded) and return a connection to it,
    for the caller to insert rows as an older relay would have; the caller commits and closes it."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for migration in MIGRATIONS:
        if migration.version <= version:
            for statement in migration.statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?, 0)", (migration.version,))
    return con
