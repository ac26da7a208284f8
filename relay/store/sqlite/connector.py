"""SQLite on plain `sqlite3`: one writer connection, WAL, synchronous=FULL, every write `BEGIN IMMEDIATE`;
reads on a second, query-only connection. Each connection lives on a thread of its own (ADR 12).

A store method hands the connector one unit of work, `async (tx) -> T` (`run_write`, `run_read`). The
connection's thread runs the whole unit (`BEGIN IMMEDIATE`, every statement, `COMMIT` or `ROLLBACK`) as
one synchronous call: the `Transaction` methods are `async def` for the backend-agnostic transitions, but
here they call `sqlite3` directly and never suspend, so the thread drives the unit's coroutine to its end
with one `send` and no event loop. A unit costs one hop to the thread and one wake-up of the caller's
loop, however many statements it runs (with aiosqlite, each statement was a hop of its own, ~100 µs). A
unit that does suspend (it awaited something other than its `Transaction`: a main-loop future, a sleep)
is closed, rolled back and fails with `StoreError`: nothing on the connection's thread may touch the
caller's loop.

Transactions cannot nest, by construction (issue 11, item 13): a thread runs its units one at a time, in
submission order (urgent writes, on an order's way to its factory, are taken in turn with the rest, so
they do not queue behind a backlog of outcomes and callbacks: `_Jobs`). Write units queued behind a
running one share its transaction (ADR 17): one `BEGIN IMMEDIATE`, one `COMMIT` and so one fsync for as
many as are waiting, for at most `SHARED_COMMIT_S`. Each is still all or nothing: every unit after the
first runs in a savepoint and one that raises is rolled back alone; the first one's failure rolls the
transaction back before any other joined it. No caller is answered before the COMMIT. A caller cancelled
while its unit waits in the queue withdraws it (it never starts); one
cancelled while its unit runs waits for the unit's end (commit or rollback) before the cancellation goes on,
so nothing of a cancelled caller's transaction is left running when it returns. A unit that waited longer
than the busy timeout for the writer (another process held the database long enough for work to queue up
here) fails with `StoreUnavailable` without starting, instead of waiting out one busy timeout per queued
write.

`daemon_lock()` is the connector's guarantee that one daemon at a time works on the file (ADR 11): an
exclusive `flock` on `<database>.lock`, released by the OS when the process dies.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import itertools
import json
import os
import socket
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any, Generic, TypeVar, cast

import orjson

from relay.exceptions import DatabaseMissing, ReadOnlyStore, StoreError, StoreUnavailable
from relay.store.connector import Migration, Param, Row, Scalar, Transaction, load_migrations, load_queries
from relay.store.jsontext import ORJSON_OPTIONS, wrote_no_nan
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

SHARED_COMMIT_S = 0.005
"""A write transaction takes in the units queued behind it (one COMMIT for all) for at most this long."""

_CACHED_STATEMENTS = 512
"""Prepared statements kept per connection: every named query stays prepared (there are ~180)."""


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

QUERIES: dict[str, str] = {
    **load_queries(__package__ or "relay.store.sqlite"),
    **load_queries(__package__ or "relay.store.sqlite", "rows.sql"),  # `<query>[]`: set-based forms
}
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
            params[name] = _array_json(value)
    return params


def _array_json(values: list[Any] | tuple[Any, ...]) -> str:
    """`json.dumps(list(values))` as `json_each` reads it. orjson writes non-ASCII as UTF-8 rather than
    `\\uXXXX` (the same strings to SQLite); it refuses integers beyond 64 bits and lone surrogates, and writes
    NaN and infinities as `null` where `json` writes `NaN` (malformed JSON to SQLite: an error): those go to
    `json` (`wrote_no_nan`)."""
    try:
        text = orjson.dumps(values, option=ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(list(values))
    if not wrote_no_nan(text, values):
        return json.dumps(list(values))
    return text.decode()


def _rows_json(rows: Sequence[Mapping[str, Scalar]]) -> str:
    """`json.dumps([dict(row) for row in rows], ensure_ascii=False)` as `json_each` reads it (see
    `_array_json`); rows orjson cannot take as they are (not dicts in a list or tuple) go to `json`."""
    try:
        text = orjson.dumps(rows, option=ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: also any row that is not a dict
        return json.dumps([dict(row) for row in rows], ensure_ascii=False)
    dicts = cast("Sequence[dict[str, Scalar]]", rows)  # orjson took each row: a dict
    if b"null" in text and not wrote_no_nan(
        text, list(itertools.chain.from_iterable(map(dict.values, dicts)))
    ):
        return json.dumps([dict(row) for row in rows], ensure_ascii=False)
    return text.decode()


class SQLiteTransaction:
    """Named queries on a connection, called on its thread (see `relay.store.connector.Transaction`).
    Each method is synchronous under its `async def`: awaiting it never suspends."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def fetch(self, query: str, /, **params: Param) -> Sequence[Row]:
        """Every row of `query`."""
        rows: list[Row] = self._db.execute(QUERIES[query], _bind(params)).fetchall()
        return rows

    async def fetch_one(self, query: str, /, **params: Param) -> Row | None:
        """The first row of `query`, or None."""
        row: Row | None = self._db.execute(QUERIES[query], _bind(params)).fetchone()
        return row

    async def execute(self, query: str, /, **params: Param) -> int:
        """Run `query`; the number of rows changed."""
        return self._db.execute(QUERIES[query], _bind(params)).rowcount

    async def execute_many(self, query: str, rows: Sequence[Mapping[str, Scalar]], /) -> None:
        """Run `query` for each parameter mapping: several rows in ONE statement when `query` has a
        set-based form (`<query>[]` in rows.sql, given the rows as a JSON array), else one `executemany`."""
        if len(rows) > 1 and (batch := QUERIES.get(query + "[]")) is not None:
            self._db.execute(batch, {"rows": _rows_json(rows)})
        elif rows:
            self._db.executemany(QUERIES[query], rows)

    async def insert(self, query: str, /, **params: Param) -> int:
        """Run an INSERT; the new row's rowid."""
        cursor = self._db.execute(QUERIES[query], _bind(params))
        if cursor.lastrowid is None:
            raise StoreError(f"{query} inserted no row")
        return cursor.lastrowid

    async def execute_statement(self, statement: str, /) -> None:
        """One statement of a migration script."""
        self._db.execute(statement)

    def notify(self, topic: str, /) -> None:
        """Nothing: one daemon per file, whose loops wake each other in process."""


def drive(unit: Awaitable[T]) -> T:
    """Run `unit` to its end synchronously. It may await only what never suspends (a `SQLiteTransaction`):
    if it suspends anyway, it is closed (its `finally` blocks run) and `StoreError` is raised."""
    steps = unit.__await__()
    try:
        awaited = steps.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    steps.close()
    raise StoreError(
        f"a store unit suspended on {awaited!r}: on the connection's thread it may await only its Transaction"
    )


def _rollback(db: sqlite3.Connection) -> None:
    """Out of any transaction; a no-op outside one."""
    with suppress(sqlite3.Error):
        if db.in_transaction:
            db.execute("ROLLBACK")


class _Job(Generic[T]):
    """One call handed to a connection's thread, and the caller's future for its outcome: a plain call
    (`call(connection)`), or a write unit (`unit(tx)`) the thread runs inside a transaction it may share
    with the write units queued behind it (`_Connection._run_units`)."""

    __slots__ = ("abandoned", "call", "done", "loop", "queued_at", "unit")

    def __init__(
        self,
        call: Callable[[sqlite3.Connection], T] | None,
        loop: asyncio.AbstractEventLoop,
        unit: Callable[[Transaction], Awaitable[T]] | None = None,
    ) -> None:
        self.call = call
        self.unit = unit
        self.loop = loop
        self.done: asyncio.Future[T] = loop.create_future()
        self.queued_at = time.monotonic()
        self.abandoned = False  # set by a cancelled caller: not started yet, it never will be


def _settle(done: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if done.done():
        return
    if isinstance(error, asyncio.CancelledError):
        done.cancel()
    elif error is None:
        done.set_result(result)  # type: ignore[arg-type]
    else:
        done.set_exception(error)


class _Jobs:
    """The calls waiting for a connection's thread, of two kinds: *urgent* ones (on an order's way to its
    factory: `Connector.run_write(urgent=True)`) and the rest (outcomes, callbacks, claims of pushes, ...).
    Each kind is taken in the order it was handed over; while both wait they are taken in turn, so an
    urgent call waits for at most one other call besides the one running, and the rest are never starved.
    `get()` answers None once closed and empty."""

    def __init__(self) -> None:
        self._urgent: collections.deque[_Job[Any]] = collections.deque()
        self._rest: collections.deque[_Job[Any]] = collections.deque()
        self._urgent_next = True
        self._closed = False
        self._ready = threading.Condition(threading.Lock())

    def put(self, job: _Job[Any], *, urgent: bool) -> None:
        with self._ready:
            (self._urgent if urgent else self._rest).append(job)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def get(self) -> _Job[Any] | None:
        with self._ready:
            while not (self._urgent or self._rest or self._closed):
                self._ready.wait()
            return self._take()

    def next_unit(self) -> _Job[Any] | None:
        """The job whose turn it is if it is a write unit, without waiting; else None (it stays queued)."""
        with self._ready:
            queue = self._urgent if self._urgent and (self._urgent_next or not self._rest) else self._rest
            return self._take() if queue and queue[0].unit is not None else None

    def _take(self) -> _Job[Any] | None:
        if self._urgent and (self._urgent_next or not self._rest):
            self._urgent_next = not self._rest
            return self._urgent.popleft()
        self._urgent_next = True
        return self._rest.popleft() if self._rest else None


class _Connection:
    """One `sqlite3` connection and the thread that owns it: every call on the connection runs on that
    thread, one at a time, in the order they were handed over (`call`), urgent calls taken in turn with
    the rest (`_Jobs`)."""

    def __init__(
        self, name: str, connect: Callable[[], sqlite3.Connection], wait_limit_s: float | None
    ) -> None:
        self._connect = connect
        self._wait_limit_s = wait_limit_s
        self._jobs = _Jobs()
        self._db: sqlite3.Connection | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            result: Any = None
            error = self._refusal(job)
            if error is None:
                try:
                    if self._db is None:
                        self._db = self._connect()
                    if job.unit is not None:
                        self._run_units(self._db, job)
                        continue
                    assert job.call is not None
                    result = job.call(self._db)
                except BaseException as exc:  # handed to the caller, whatever it is
                    error = exc
            _answer(job, result, error)
            del job, result, error
        if self._db is not None:
            self._db.close()

    def _refusal(self, job: _Job[Any]) -> BaseException | None:
        """Why `job` must not start: its caller was cancelled, or it waited past the busy limit."""
        if job.abandoned:
            return asyncio.CancelledError()
        if self._wait_limit_s is not None and time.monotonic() - job.queued_at > self._wait_limit_s:
            return StoreUnavailable("database unavailable: the writer is busy")
        return None

    def _run_units(self, db: sqlite3.Connection, first: _Job[Any]) -> None:
        """Run `first`, and the write units whose turn comes next, in shared transactions: one
        `BEGIN IMMEDIATE` and one `COMMIT` (one fsync) for as many units as are queued when each one
        ends, for at most `SHARED_COMMIT_S`. Each unit runs in a savepoint: one that raises is rolled
        back alone, and its caller gets the error. Callers are answered after the COMMIT, so none sees
        a result that is not durable, and a crash anywhere in the transaction loses only unanswered
        work. If the transaction itself is lost (a failed COMMIT, SQLite rolling back on disk full),
        every unit it held fails (`StoreUnavailable` for those that did nothing wrong): none of them
        happened."""
        began = time.monotonic()
        ran: list[tuple[_Job[Any], Any, BaseException | None]] = []
        job: _Job[Any] | None = first
        try:
            db.execute("BEGIN IMMEDIATE")
            while job is not None:
                ran.append(_run_unit(db, job, first=not ran))
                if not db.in_transaction:  # rolled back whole: the first unit failed, or SQLite did it
                    if len(ran) == 1 and ran[0][2] is not None:
                        break
                    raise _Lost(ran[-1][2])
                job = None
                while time.monotonic() - began < SHARED_COMMIT_S and (queued := self._jobs.next_unit()):
                    if (refused := self._refusal(queued)) is None:
                        job = queued
                        break
                    _answer(queued, None, refused)
            if db.in_transaction:
                db.execute("COMMIT")
        except (sqlite3.Error, _Lost) as exc:
            _rollback(db)  # a failed COMMIT (disk full, I/O) may leave the transaction open
            cause = exc.cause if isinstance(exc, _Lost) else _translated(exc)
            lost = StoreUnavailable(f"database unavailable: the shared transaction was lost ({cause})")
            last = ran[-1][0] if ran else first
            ran = [(j, None, error or (cause if j is last else lost)) for j, _, error in ran] or [
                (first, None, cause)
            ]
        for done, result, error in ran:
            _answer(done, result, error)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the connection's thread (the first call connects). Cancelled while it waits
        in the queue, it is withdrawn; cancelled while it runs, it is awaited to its end first."""
        return await self._handed_over(_Job(fn, asyncio.get_running_loop()), urgent=False)

    async def write(self, unit: Callable[[Transaction], Awaitable[T]], *, urgent: bool = False) -> T:
        """`unit(tx)` in a write transaction on the connection's thread, which it may share with other
        units (`_run_units`); `urgent`: taken in turn with the rest (`_Jobs`). Cancellation as `call`."""
        return await self._handed_over(_Job(None, asyncio.get_running_loop(), unit), urgent=urgent)

    async def _handed_over(self, job: _Job[T], *, urgent: bool) -> T:
        if self._stopped:
            raise StoreError("store is not open")
        self._jobs.put(job, urgent=urgent)
        try:
            return await asyncio.shield(job.done)
        except asyncio.CancelledError:
            job.abandoned = True
            while not job.done.done():
                with suppress(asyncio.CancelledError):
                    await asyncio.shield(job.done)
            if not job.done.cancelled():
                job.done.exception()  # retrieved: the cancellation is what goes on
            raise

    async def stop(self) -> None:
        """Run what was handed over, close the connection, end the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._jobs.close()
        await asyncio.to_thread(self._thread.join)


class FlockDaemonLock:
    """An exclusive, non-blocking `flock` on a sidecar file, released by the OS if the process dies.

    The holder writes `pid=... host=... since=...` into the file, so a refused daemon can say who holds it.
    """

    exclusive = True

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

    exclusive = True

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
        self._writer: _Connection | None = None
        self._reader: _Connection | None = None

    @property
    def _in_memory(self) -> bool:
        return self.path == ":memory:" or self.path.startswith("file::memory:") or self.path == ""

    def _connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit), rows by column name; on the thread
        that will own it."""
        db = sqlite3.connect(target, uri=uri, isolation_level=None, cached_statements=_CACHED_STATEMENTS)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        return db

    def _writer_connection(self) -> sqlite3.Connection:
        db = self._connect(self.path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _reader_connection(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        db = self._connect(target, uri=uri)
        db.execute("PRAGMA query_only = ON")
        return db

    async def open(self) -> None:
        """Connect in autocommit mode (transactions are explicit) with WAL, synchronous=FULL, foreign keys;
        then the read connection (query-only). Read-only (`read_only=True`): only the read connection,
        opened `file:PATH?mode=ro` with no pragma that writes; a missing file raises `DatabaseMissing`
        (nothing is created). SQLite itself may create the empty `-wal`/`-shm` files beside an existing
        WAL database that no daemon has open: run read-only commands as the daemon's user."""
        if self._writer is not None or self._reader is not None:
            return
        busy_s = self._busy_timeout_ms / 1000
        try:
            if self.read_only:
                uri = self._read_only_uri()
                self._reader = _Connection(
                    "relay-db-reader", lambda: self._reader_connection(uri, uri=True), None
                )
                await self._reader.call(_connected)
                return
            self._writer = _Connection("relay-db-writer", self._writer_connection, busy_s)
            await self._writer.call(_connected)
            if not self._in_memory:  # a second connection cannot see a `:memory:` database
                self._reader = _Connection(
                    "relay-db-reader", lambda: self._reader_connection(self.path), None
                )
                await self._reader.call(_connected)
        except sqlite3.Error as exc:
            await self.close()
            raise translate(exc) from exc
        except BaseException:
            await self.close()
            raise

    def _read_only_uri(self) -> str:
        """`file:PATH?mode=ro` for an existing file; `DatabaseMissing` otherwise."""
        if self._in_memory or not os.path.isfile(self.path):
            raise DatabaseMissing(f"database file {self.path} does not exist (nothing was created)")
        return "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"

    async def close(self) -> None:
        """Close both connections once the work handed to them ran; a no-op when not open."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.stop()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.stop()

    async def run_write(self, fn: Callable[[Transaction], Awaitable[T]], /, *, urgent: bool = False) -> T:
        """See `Connector.run_write`: `BEGIN IMMEDIATE`, `fn(tx)`, `COMMIT` on the writer's thread, in a
        transaction shared with the units queued behind it (`_Connection._run_units`); undone alone if it
        raises (driver errors translated). An `urgent` unit is taken in
        turn with the others waiting for the writer (`_Jobs`). Raises `ReadOnlyStore` on a store opened
        read-only."""
        if self.read_only:
            raise ReadOnlyStore(f"database {self.path} was opened read-only: no change was made")
        return await self._open(self._writer).write(fn, urgent=urgent)

    async def run_read(self, fn: Callable[[Transaction], Awaitable[T]], /) -> T:
        """See `Connector.run_read`: `fn(tx)` on the read connection's thread, autocommit (each statement
        sees the latest commit); it never begins a transaction and cannot write (`query_only`). A
        `:memory:` database reads on the writer, outside any transaction."""
        connection = self._reader if self._reader is not None else self._open(self._writer)
        return await connection.call(lambda db: _read(db, fn))

    async def on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` with the writer's `sqlite3` connection, on its thread, between transactions:
        for instruments (the bench's and the tests' trace callbacks, pragma checks), not for data."""
        return await self._open(self._writer).call(fn)

    def _open(self, connection: _Connection | None) -> _Connection:
        if connection is None:
            raise StoreError("store is not open")
        return connection

    async def on_wakeup(self, callback: Callable[[set[str]], None], /) -> None:
        """Nothing to listen to: no other daemon works on the file (`daemon_lock`)."""

    async def notify(self, topics: Collection[str], /) -> None:
        """Nothing: no other daemon works on the file."""

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


def _connected(db: sqlite3.Connection) -> None:
    """The first call on a connection's thread: connecting (and its pragmas) is all it does."""


class _Lost(Exception):
    """The shared transaction was rolled back by SQLite itself while a unit ran (`cause`: its error)."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(cause)
        self.cause = cause or StoreUnavailable("database unavailable: the transaction was rolled back")


def _run_unit(
    db: sqlite3.Connection, job: _Job[T], *, first: bool
) -> tuple[_Job[T], T | None, BaseException | None]:
    """`job`'s unit in the open transaction: its result, or its error (driver errors translated) with its
    writes undone. The transaction's `first` unit is undone by rolling the transaction back (out of it
    then); the others run in a savepoint, so that undoing one keeps the units before it."""
    assert job.unit is not None
    if not first:
        db.execute("SAVEPOINT unit")
    try:
        result = drive(job.unit(SQLiteTransaction(db)))
        if not first:
            db.execute("RELEASE unit")
    except BaseException as exc:  # handed to the caller, whatever it is
        try:
            if first:
                raise sqlite3.OperationalError("first unit: the whole transaction is undone")
            db.execute("ROLLBACK TO unit")
            db.execute("RELEASE unit")
        except sqlite3.Error:
            _rollback(db)  # not undone alone: nothing else is kept
        return job, None, _translated(exc) if isinstance(exc, sqlite3.Error) else exc
    return job, result, None


def _translated(exc: sqlite3.Error) -> StoreError:
    """`translate(exc)`, caused by `exc` (as `raise ... from exc` would leave it)."""
    error = translate(exc)
    error.__cause__ = exc
    return error


def _answer(job: _Job[T], result: T | None, error: BaseException | None) -> None:
    """Wake `job`'s caller with its outcome (from the connection's thread)."""
    with suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
        job.loop.call_soon_threadsafe(_settle, job.done, result, error)


def _read(db: sqlite3.Connection, fn: Callable[[Transaction], Awaitable[T]]) -> T:
    """Reads, on the read connection's thread (or, for `:memory:`, the writer's)."""
    try:
        return drive(fn(SQLiteTransaction(db)))
    except sqlite3.Error as exc:
        raise translate(exc) from exc
