"""The PostgreSQL backend (issue 16, ADR 13): `postgresql://USER@HOST:PORT/DBNAME[?pool_max_size=N&...]`.

Its driver (psycopg 3 and psycopg-pool) is the optional dependency `relay[postgres]`: `relay.store.BACKENDS`
imports this package only when a `postgresql://` URL is opened.
"""

from __future__ import annotations

from relay.store.postgres.connector import MIGRATIONS, QUERIES, PostgresConnector

__all__ = ["MIGRATIONS", "QUERIES", "PostgresConnector", "connector_from_url"]


def connector_from_url(url: str, *, read_only: bool = False) -> PostgresConnector:
    """The connector for a `postgresql://` URL (`read_only`: every write raises `ReadOnlyStore`). Raises
    `ConfigurationError` naming `daemon.database` for a malformed URL or pool setting."""
    return PostgresConnector(url, read_only=read_only)
