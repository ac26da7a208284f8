"""The store's seams: the backend table behind `open_store`, and a documented `Store` protocol."""

from __future__ import annotations

import inspect

import pytest

from relay.exceptions import ConfigurationError
from relay.store import BACKENDS, Store, open_store
from relay.store.manager import RelayStore
from relay.store.sqlite import SQLiteConnector


def test_a_sqlite_url_opens_the_shared_store_over_the_sqlite_connector(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    assert isinstance(store, RelayStore)
    assert isinstance(store.connector, SQLiteConnector)
    assert store.connector.path == str(tmp_path / "relay.db")
    assert set(BACKENDS) == {"sqlite", "postgresql"}


def test_a_postgresql_url_opens_the_shared_store_over_the_postgresql_connector() -> None:
    """Chosen by the URL; the pool's own parameters are taken out of what libpq sees (issue 16)."""
    from relay.store.postgres import PostgresConnector

    store = open_store("postgresql://relay@db:5432/relay?pool_max_size=20&sslmode=require")
    assert isinstance(store, RelayStore)
    assert isinstance(store.connector, PostgresConnector)
    assert store.connector.conninfo == "postgresql://relay@db:5432/relay?sslmode=require"
    assert store.connector.pool_settings == {"pool_min_size": 1, "pool_max_size": 20, "pool_timeout": 5.0}


@pytest.mark.parametrize(
    "url",
    [
        "mysql://db/relay",
        "sqlite://relative.db",
        "relay.db",
        "postgresql://db/relay?pool_max_size=many",
        "postgresql://db/relay?pool_min_size=5&pool_max_size=2",
    ],
)
def test_an_unknown_or_malformed_database_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_store(url)
    assert [key for key, _ in caught.value.problems] == ["daemon.database"]


def test_every_store_method_is_documented_and_implemented() -> None:
    methods = [name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")]
    assert len(methods) >= 29
    assert [name for name in methods if not inspect.getdoc(getattr(Store, name))] == []
    for name in methods:
        assert inspect.signature(getattr(RelayStore, name)) == inspect.signature(getattr(Store, name)), name


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_sticky_flags_in_sql_are_the_models_sticky_flags(backend: str) -> None:
    """`set_order_state` keeps a sticky flag through state changes; its SQL must list exactly those."""
    import importlib
    import re

    from relay.domain.models import STICKY_ATTENTION

    queries = importlib.import_module(f"relay.store.{backend}").QUERIES
    lists = re.findall(r"attention_reason IN\s*\(([^)]*)\)", queries["set_order_state"])
    assert len(lists) == 2
    for found in lists:
        assert set(re.findall(r"'([a-z_]+)'", found)) == {r.value for r in STICKY_ATTENTION}


def test_both_backends_have_the_same_queries_and_migrations() -> None:
    """Every named query and every numbered migration exists for each backend (issue 16)."""
    from relay.store import postgres, sqlite

    sqlite_queries = {name for name in sqlite.QUERIES if not name.endswith("[]")}  # SQLite's set-based forms
    assert set(postgres.QUERIES) == sqlite_queries
    assert [m.version for m in postgres.MIGRATIONS] == [m.version for m in sqlite.MIGRATIONS]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("sqlite:///relay.db", True),
        ("postgresql://relay@db:5432/relay?pool_max_size=20", True),
        ("mysql://relay@db/relay", False),
        ("postgres.db", False),
        ("postgresql://", False),
    ],
)
def test_the_config_accepts_sqlite_and_postgresql_urls_and_names_both_otherwise(url: str, ok: bool) -> None:
    from pydantic import ValidationError

    from relay.config import DaemonSettings

    if ok:
        assert DaemonSettings(database=url).database == url
        return
    with pytest.raises(ValidationError) as caught:
        DaemonSettings(database=url)
    message = str(caught.value)
    assert "sqlite:///PATH" in message and "postgresql://USER@HOST:PORT/DBNAME" in message
