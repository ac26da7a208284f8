"""The store contract fixtures (issue 16): every store test runs on SQLite and on PostgreSQL.

* `store_url`: parametrized `sqlite` / `postgresql`: a fresh database for the test (a file under tmp_path;
  a fresh schema on the test server, dropped afterwards). Tests that take it (through a module's `store`
  fixture) run once per backend with the same assertions.
* `postgres_url`: the test server's URL for one fresh schema (see `relay.testing.postgres`): skipped with
  the reason when there is no server, failed instead when `RELAY_REQUIRE_POSTGRES=1` (CI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay.store import Store, open_store
from relay.testing import postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server for this session (started once, stopped at the end)."""
    try:
        server = postgres.find_server()
    except postgres.Unavailable as exc:
        if postgres.required():
            pytest.fail(f"{postgres.REQUIRE_VARIABLE}=1 but {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty schema on the test server, as a `postgresql://` URL; dropped after the test."""
    schema, url = postgres.fresh_schema(postgres_server)
    try:
        yield url
    finally:
        postgres.drop_schema(postgres_server, schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open, migrated store on a fresh database of each backend in turn (the store contract suite)."""
    s = open_store(store_url)
    await s.open()
    await s.migrate()
    yield s
    await s.close()
