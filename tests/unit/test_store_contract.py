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
    assert set(BACKENDS) == {"sqlite"}


@pytest.mark.parametrize("url", ["postgresql://db/relay", "sqlite://relative.db", "relay.db"])
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


def test_the_sticky_flags_in_sql_are_the_models_sticky_flags() -> None:
    """`set_order_state` keeps a sticky flag through state changes; its SQL must list exactly those."""
    import re

    from relay.domain.models import STICKY_ATTENTION
    from relay.store.sqlite import QUERIES

    lists = re.findall(r"attention_reason IN\s*\(([^)]*)\)", QUERIES["set_order_state"])
    assert len(lists) == 2
    for found in lists:
        assert set(re.findall(r"'([a-z_]+)'", found)) == {r.value for r in STICKY_ATTENTION}
