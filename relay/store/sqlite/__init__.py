"""The SQLite backend: `sqlite:///relative.db`, `sqlite:////absolute/path.db` or `sqlite:///:memory:`."""

from __future__ import annotations

from relay.exceptions import ConfigurationError
from relay.store.sqlite.connector import MIGRATIONS, QUERIES, SQLiteConnector

__all__ = ["MIGRATIONS", "QUERIES", "SQLiteConnector", "connector_from_url"]


def connector_from_url(url: str, *, busy_timeout_ms: int = 5000, read_only: bool = False) -> SQLiteConnector:
    """The connector for a `sqlite:///PATH` URL (`read_only`: see `SQLiteConnector.open`). Raises
    `ConfigurationError` naming `daemon.database`."""
    scheme, sep, rest = url.partition("://")
    if scheme != "sqlite" or not sep or not rest.startswith("/"):
        raise ConfigurationError(
            [("daemon.database", f"unsupported database URL {url!r}; use sqlite:///PATH")]
        )
    return SQLiteConnector(rest[1:], busy_timeout_ms=busy_timeout_ms, read_only=read_only)
