"""SQLite on aiosqlite: one writer connection, WAL, synchronous=FULL, every write `BEGIN IMMEDIATE`;
reads on a second, query-only connection.

Each aiosqlite call is a thread hop (~100 µs), so the transitions take batches, use `execute_many`, and
resolve ids inside SQL (subselects, `json_each`) rather than round-tripping them through Python. One
call on the transaction is one hop: a fetch is `execute_fetchall`, a write reads `rowcount` and
`lastrowid` from the cursor without another hop.

Transactions cannot nest on the writer, by construction (issue 11, item 13):

* every statement on the writer runs under the one lock, and only `write()` takes it: reads never touch
  the writer (they use the reader connection; a `:memory:` database, which a second connection cannot
  see, reads on the writer under the same lock);
* a statement whose `await` is cancelled still runs in aiosqlite's thread, in order. So a cancellation
  anywhere between `BEGIN` and `COMMIT` (including during `BEGIN` itself, which used to leave the
  connection inside a transaction after the lock was released: the next `BEGIN` then failed with
  "cannot start a transaction within a transaction") is answered with a `ROLLBACK` queued behind
  it; that `ROLLBACK` (and `COMMIT`) is awaited to the end even if the caller is cancelled again, and the
  lock is released only after it. The cancellation then goes on.

`daemon_lock()` is the connector's guarantee that one daemon at a time works on the file (ADR 11): an
exclusive `flock` on `<database>.lock`, released by the OS when the process dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

import aiosqlite

from relay.exceptions import DatabaseMissing, ReadOnlyStore, StoreError, StoreUnavailable
from relay.store.connector import Migration, Param, Row, Scalar, load_migrations, load_queries
from relay.store.records import BackupResult
from relay.store.sqlite.backup import backup_database

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


T = TypeVar("T")

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


async def uninterrupted(step: Awaitable[T]) -> T:
    """Await `step` to its end even if the caller is cancelled meanwhile (then re-raise the cancellation
    afterwards). For the statements that end a transaction: the lock must not be released before they ran."""
    task = asyncio.ensure_future(step)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            interrupted = True
        except BaseException:
            break
    if interrupted:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what goes on
        raise asyncio.CancelledError
    return task.result()


async def _rollback(db: aiosqlite.Connection) -> None:
    """Queued behind any statement still running for a cancelled await; a no-op outside a transaction."""
    with suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


class FlockDaemonLock:
    """An exclusive, non-blocking `flock` on a sidecar file, released by the OS if the process dies.

    The holder writes `pid=... host=... since=...` into the file, so a refused daemon can say who holds it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this process holds it now."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the daemon lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        holder = f"pid={os.getpid()} host={socket.gethostname()} since={time.time():.0f}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd
        return True

    async def holder(self) -> str | None:
        """What the holder wrote into the lock file, or None."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(fd, 4096).decode("utf-8", "replace").strip() or None
        finally:
            os.close(fd)

    async def release(self) -> None:
        """Release the lock (closing the descriptor releases the flock); a no-op when not held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class NoDaemonLock:
    """For a `:memory:` database, which no other process can open: always free."""

    async def try_acquire(self) -> bool:
        return True

    async def holder(self) -> str | None:
        return None

    async def release(self) -> None:
        return None


class SQLiteConnector:
    """A `relay.store.connector.Connector` for one SQLite file."""

    migrations: Sequence[Migration] = MIGRATIONS

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def _in_memory(self) -> bool:
        return self.path == ":memory:" or self.path.startswith("file::memory:") or self.path == ""

    async def open(self) -> None:
        """Connect in autocommit mode (transactions are explicit) with WAL, synchronous=FULL, foreign keys;
        then the read connection (query-only). Read-only (`read_only=True`): only the read connection,
        opened `file:PATH?mode=ro` with no pragma that writes; a missing file raises `DatabaseMissing`
        (nothing is created). SQLite itself may create the empty `-wal`/`-shm` files beside an existing
        WAL database that no daemon has open: run read-only commands as the daemon's user."""
        if self.read_only:
            await self._open_read_only()
            return
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
            self._db = db
            db.row_factory = sqlite3.Row
            await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")
            if not self._in_memory:
                reader = await aiosqlite.connect(self.path, isolation_level=None)
                self._reader = reader
                reader.row_factory = sqlite3.Row
                await reader.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                await reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            await self.close()
            raise translate(exc) from exc

    def _read_only_uri(self) -> str:
        """`file:PATH?mode=ro` for an existing file; `DatabaseMissing` otherwise."""
        if self._in_memory or not os.path.isfile(self.path):
            raise DatabaseMissing(f"database file {self.path} does not exist (nothing was created)")
        return "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"

    async def _open_read_only(self) -> None:
        uri = self._read_only_uri()
        try:
            reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            self._reader = reader
            reader.row_factory = sqlite3.Row
            await reader.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            await self.close()
            raise translate(exc) from exc

    async def close(self) -> None:
        """Close both connections; a no-op when not open."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        """The open writer connection (tests and the bench attach a trace callback to it)."""
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    def daemon_lock(self) -> FlockDaemonLock | NoDaemonLock:
        """The lock that keeps a second daemon off this file (`<database>.lock`)."""
        return NoDaemonLock() if self._in_memory else FlockDaemonLock(f"{self.path}.lock")

    async def backup(
        self, path: str, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> BackupResult:
        """See `Connector.backup`: SQLite's online backup API on a connection of its own, in a thread
        (`relay.store.sqlite.backup`). Cancelling stops the copy at its next step; its temporary file
        is removed before the cancellation goes on."""
        if self._in_memory:
            raise StoreError("an in-memory database cannot be backed up")
        cancelled = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(
                backup_database, self.path, path, force=force, cancelled=cancelled, progress=progress
            )
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled.set()
            await asyncio.wait([work])
            if not work.cancelled():
                work.exception()  # retrieved: the cancellation is what goes on
            raise
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer, for at most busy_timeout of waiting: when another process holds the database
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
        """One write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any error or cancellation
        (see the module docstring: the lock is released only once the connection is out of it).
        Raises `ReadOnlyStore` on a store opened read-only."""
        if self.read_only:
            raise ReadOnlyStore(f"database {self.path} was opened read-only: no change was made")
        async with self._locked() as db:
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield SQLiteTransaction(db)
            except BaseException as exc:
                await uninterrupted(_rollback(db))
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc) from exc
                raise
            try:
                await uninterrupted(db.execute("COMMIT"))
            except sqlite3.Error as exc:
                await uninterrupted(_rollback(db))
                raise translate(exc) from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SQLiteTransaction]:
        """Reads on the read connection (autocommit: each statement sees the latest commit). It never
        begins a transaction and cannot write (`query_only`)."""
        if self._reader is None:
            async with self._locked() as db:
                try:
                    yield SQLiteTransaction(db)
                except sqlite3.Error as exc:
                    raise translate(exc) from exc
            return
        try:
            yield SQLiteTransaction(self._reader)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
