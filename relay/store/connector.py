"""What a database backend provides to the store: connections, transactions, named queries, migrations.

A backend (`relay/store/sqlite/`, `relay/store/postgres/`) is a `Connector` plus its SQL: a
`queries.sql` of `-- name: <query>` blocks and numbered `migrations/NNNN_*.sql`. Everything else (the
transitions, the one-transaction-per-method rule, group commit, the migration policy) is written once in
`relay.store.manager` and `relay.store.transitions` and runs on any connector.

Queries take named parameters (`:name` in SQLite's SQL). A list or tuple parameter (ids, factory names)
is handed over as a Python sequence; the connector adapts it to its SQL (SQLite: a JSON array read with
`json_each`; PostgreSQL: an array for `= ANY(...)`). Rows are read by column name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, TypeVar

from relay.store.records import BackupResult

T = TypeVar("T")

Scalar = str | int | float | None
Param = Scalar | list[str] | list[int] | tuple[str, ...] | tuple[int, ...]
"""A query parameter: a scalar (`StrEnum` members are `str`) or a sequence the connector adapts."""


class Row(Protocol):
    """One result row, read by column name (`sqlite3.Row`, a psycopg `dict_row`, ...)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Transaction(Protocol):
    """Named queries inside one open transaction (or one read context) of a connector."""

    async def fetch(self, query: str, /, **params: Param) -> Sequence[Row]:
        """Run `query` and return every row."""
        ...

    async def fetch_one(self, query: str, /, **params: Param) -> Row | None:
        """Run `query` and return its first row, or None when it returns none."""
        ...

    async def execute(self, query: str, /, **params: Param) -> int:
        """Run a write `query`; return the number of rows it changed."""
        ...

    async def execute_many(self, query: str, rows: Sequence[Mapping[str, Scalar]], /) -> None:
        """Run a write `query` once per parameter mapping, in one round trip to the driver. Scalars only:
        a batch is per-row work already, so it takes no list parameters to adapt."""
        ...

    async def insert(self, query: str, /, **params: Param) -> int:
        """Run an INSERT `query` and return the new row's id."""
        ...

    async def execute_statement(self, statement: str, /) -> None:
        """Run one raw statement of a migration script (migrations only; everything else is named)."""
        ...

    def notify(self, topic: str, /) -> None:
        """Wake the other daemons on this database for `topic` (`relay.store.wakeups`) once this transaction
        commits; nothing is sent if it rolls back. A backend with one daemon per database ignores it."""
        ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema migration: its version and its statements, applied in one transaction."""

    version: int
    statements: tuple[str, ...]


class DaemonLock(Protocol):
    """What `relay run` holds while it works on a database (ADR 11, ADR 14).

    How is the backend's business. SQLite's is exclusive: a `flock` on a sidecar `<database>.lock` file
    (the OS releases it when the holder dies) keeps a second daemon off the file, which waits as a standby.
    PostgreSQL's is shared: it keeps no one off, every daemon works (leases and fencing share the work).
    The holder of an exclusive lock may treat every lease in the database as orphaned at start-up: no other
    daemon can be alive.
    """

    exclusive: bool
    """True when holding it keeps every other daemon off the database (then start-up frees every lease)."""

    async def try_acquire(self) -> bool:
        """Take the lock without waiting; True if this process holds it (also when it already did)."""
        ...

    async def holder(self) -> str | None:
        """Who holds the lock, as the holder described itself (pid, host, since), if known."""
        ...

    async def release(self) -> None:
        """Give the lock up; a no-op when not held."""
        ...


class Connector(Protocol):
    """A database backend.

    A store method hands the connector one unit of work, an `async def fn(tx)` over `Transaction`
    (`run_write`, `run_read`), and gets its result. `run_write` runs the unit as one transaction that
    commits when it returns and rolls back when it raises, translating driver errors into
    `StoreUnavailable` (retry later: busy, locked, disk full, I/O) or `StoreError`. `run_read` serves
    reads; it may or may not open a transaction. Both may be used only while the connector is open.

    A unit awaits nothing but its `Transaction`: a backend may run it away from the caller's event loop
    (SQLite: on the connection's own thread, so a whole transaction is one thread hop; ADR 12). A caller
    cancelled while it waits for its unit gets the cancellation only once the unit either never started
    or ended (committed or rolled back): no transaction of a cancelled caller is left open or running.
    """

    migrations: Sequence[Migration]
    """Every migration this backend ships, by ascending version."""

    async def open(self) -> None:
        """Connect and configure the connection (for SQLite: WAL, synchronous=FULL, foreign keys)."""
        ...

    async def close(self) -> None:
        """Disconnect; a no-op when not open."""
        ...

    async def run_write(self, fn: Callable[[Transaction], Awaitable[T]], /, *, urgent: bool = False) -> T:
        """`await fn(tx)` in one write transaction (SQLite: `BEGIN IMMEDIATE` ... `COMMIT`, all on the
        writer's thread) and its result once committed; rolled back, and the error raised, if it raises.
        A connector may run other units in the same transaction (SQLite: those queued behind it, each in
        a savepoint, ADR 17) as long as each is undone alone when it raises. `urgent`: the
        unit is on an order's way to its factory; a connector may take it ahead of other waiting writes
        (SQLite takes the two kinds in turn), never so that the others starve."""
        ...

    async def run_read(self, fn: Callable[[Transaction], Awaitable[T]], /) -> T:
        """`await fn(tx)` for reads, without taking the write lock in the database. It never opens a write
        transaction, and never shares a connection with a running `run_write` (SQLite: a query-only
        connection on a thread of its own)."""
        ...

    async def on_wakeup(self, callback: Callable[[set[str]], None], /) -> None:
        """Hand `callback` (on the caller's loop) the topics of every transaction other processes commit
        with `Transaction.notify`, until closed; `relay.store.wakeups.ALL` when some may have been missed.
        Returns once listening. A backend with one daemon per database has nothing to listen to."""
        ...

    async def notify(self, topics: Collection[str], /) -> None:
        """Send `topics` to the other daemons now, outside any transaction (nothing is written)."""
        ...

    def daemon_lock(self) -> DaemonLock:
        """The lock `relay run` holds so that one daemon at a time works on this database."""
        ...

    async def backup(
        self, path: str, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> BackupResult:
        """Copy the database to the file `path` online (see `relay.store.Store.backup`)."""
        ...


def load_queries(package: str, name: str = "queries.sql") -> dict[str, str]:
    """Parse a backend's `-- name: <query>` blocks (comment lines inside a block are dropped)."""
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("-- name:"):
            current = queries[line.removeprefix("-- name:").strip()] = []
        elif current is not None and not line.startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in queries.items()}


def load_migrations(package: str, split: Callable[[str], Iterable[str]]) -> tuple[Migration, ...]:
    """Read a backend's `migrations/NNNN_*.sql`, split into statements by the backend's own `split`."""
    folder = resources.files(package).joinpath("migrations")
    found = [
        Migration(int(entry.name.split("_", 1)[0]), tuple(split(entry.read_text(encoding="utf-8"))))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return tuple(sorted(found, key=lambda m: m.version))
