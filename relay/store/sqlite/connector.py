"""SQLite on aiosqlite: one connection, WAL, synchronous=FULL, every write `BEGIN IMMEDIATE`.

Each aiosqlite call is a thread hop (~100 µs), so the transitions take batches, use `execute_many`, and
resolve ids inside SQL (subselects, `json_each`) rather than round-tripping them through Python. One
call on the transaction is one hop: a fetch is `execute_fetchall`, a write reads `rowcount` and
`lastrowid` from the cursor without another hop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress

import aiosqlite

from relay.exceptions import StoreError, StoreUnavailable
from relay.store.connector import Migration, Param, Row, Scalar, load_migrations, load_queries

# SQLite result codes that mean "not now" rather than "bug": the caller answers 503 / retries later.
_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
)


def statements(script: str) -> Iterator[str]:
    """Split a migration script into complete statements (so they run inside the migration's transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise StoreError(f"incomplete statement in migration: {buf.strip()[:80]}")


QUERIES: dict[str, str] = load_queries(__package__ or "relay.store.sqlite")
MIGRATIONS: tuple[Migration, ...] = load_migrations(__package__ or "relay.store.sqlite", statements)


def translate(exc: sqlite3.Error) -> StoreError:
    """`StoreUnavailable` for busy, locked, full, I/O and permission errors; `StoreError` for the rest."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(_UNAVAILABLE) or "disk" in str(exc) or "locked" in str(exc):
        return StoreUnavailable(f"database unavailable: {exc}")
    return StoreError(f"database error: {exc}")


def _bind(params: dict[str, Param]) -> dict[str, Param]:
    """Encode list parameters as the JSON arrays `json_each` reads. Changes `params` in place."""
    for name, value in params.items():
        if isinstance(value, list | tuple):
            params[name] = json.dumps(list(value))
    return params


class SQLiteTransaction:
    """Named queries on the connector's connection (see `relay.store.connector.Transaction`)."""

    __slots__ = ("_db",)

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, query: str, /, **params: Param) -> Sequence[Row]:
        """Every row of `query`."""
        return list(await self._db.execute_fetchall(QUERIES[query], _bind(params)))

    async def fetch_one(self, query: str, /, **params: Param) -> Row | None:
        """The first row of `query`, or None."""
        rows = await self.fetch(query, **params)
        return rows[0] if rows else None

    async def execute(self, query: str, /, **params: Param) -> int:
        """Run `query`; the number of rows changed."""
        cursor = await self._db.execute(QUERIES[query], _bind(params))
        return cursor.rowcount

    async def execute_many(self, query: str, rows: Sequence[Mapping[str, Scalar]], /) -> None:
        """Run `query` for each parameter mapping in one `executemany`."""
        await self._db.executemany(QUERIES[query], rows)

    async def insert(self, query: str, /, **params: Param) -> int:
        """Run an INSERT; the new row's rowid."""
        cursor = await self._db.execute(QUERIES[query], _bind(params))
        if cursor.lastrowid is None:
            raise StoreError(f"{query} inserted no row")
        return cursor.lastrowid

    async def execute_statement(self, statement: str, /) -> None:
        """One statement of a migration script."""
        await self._db.execute(statement)


class SQLiteConnector:
    """A `relay.store.connector.Connector` for one SQLite file."""

    migrations: Sequence[Migration] = MIGRATIONS

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect in autocommit mode (transactions are explicit) with WAL, synchronous=FULL, foreign keys."""
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
            self._db = db
            db.row_factory = sqlite3.Row
            await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            await self.close()
            raise translate(exc) from exc

    async def close(self) -> None:
        """Close the connection; a no-op when not open."""
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection (tests and the bench attach a trace callback to it)."""
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, for at most busy_timeout of waiting: when another process holds the database
        long enough that work queues up here, callers get StoreUnavailable (503) instead of waiting out
        one busy_timeout per queued write."""
        try:
            async with asyncio.timeout(self._busy_timeout_ms / 1000):
                await self._lock.acquire()
        except TimeoutError:
            raise StoreUnavailable("database unavailable: the writer is busy") from None
        try:
            yield self.db
        finally:
            self._lock.release()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SQLiteTransaction]:
        """One write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        async with self._locked() as db:
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            try:
                yield SQLiteTransaction(db)
                await db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    with suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc) from exc
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SQLiteTransaction]:
        """Reads on the shared connection (autocommit: each statement sees the latest commit)."""
        async with self._locked() as db:
            try:
                yield SQLiteTransaction(db)
            except sqlite3.Error as exc:
                raise translate(exc) from exc
