"""PostgreSQL on psycopg 3 (ADR 13): a connection pool, the same named queries as SQLite, one transaction
per store method.

* Writes: each `run_write(fn)` is one transaction on a pooled connection that first takes the database's
  writer lock, a transaction-level advisory lock (`pg_advisory_xact_lock`, released by COMMIT or ROLLBACK). Write
  transactions are therefore serialized across every process on the database, exactly as SQLite's
  `BEGIN IMMEDIATE` serializes them: the transitions (read, decide, write) keep the meaning they have on
  SQLite at PostgreSQL's default READ COMMITTED isolation. The same lock makes migrations safe when several
  daemons start together: each migration's transaction holds it while it reads the version and applies
  the next step, so a migration runs once. Waiting for it longer than `lock_timeout` (5 s, SQLite's
  busy_timeout) raises `StoreUnavailable`.
* Claims lock the rows they take `FOR UPDATE SKIP LOCKED` and carry a fencing token (queries.sql).
* Reads: `run_read()` is a READ ONLY transaction on a pooled connection, concurrent with writes (MVCC).
* Read-only stores (`read_only=True`): every `run_write()` raises `ReadOnlyStore`; reads as above. Nothing
  migrates them.
* `daemon_lock()`: shared (`SharedDaemonLock`): every daemon on the database is active (ADR 14).
* Wake-ups (`wakeups`): a write transaction's `tx.notify` topics go out with one `pg_notify` before its
  COMMIT (none without topics); a daemon's `on_wakeup` listens on a connection of its own.

Every advisory lock key is (a relay lock class, a hash of the connection's schema): two relay databases in
two schemas of one PostgreSQL database do not share locks.

URL: `postgresql://user@host:port/dbname?...`, anything libpq accepts (`options=-csearch_path=relay`,
`sslmode`, ...), plus the pool's own parameters, taken out before the URL goes to libpq: `pool_min_size`
(default 1), `pool_max_size` (default 10) and `pool_timeout` (seconds to wait for a free connection,
default 5; then `StoreUnavailable`).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from relay.exceptions import (
    ConfigurationError,
    DatabaseMissing,
    ReadOnlyStore,
    StoreError,
    StoreUnavailable,
)
from relay.store.connector import (
    Migration,
    Param,
    Row,
    Scalar,
    Transaction,
    load_migrations,
    load_queries,
)
from relay.store.postgres import wakeups
from relay.store.postgres.wakeups import WakeupListener
from relay.store.records import BackupResult

WRITER_LOCK_CLASS = 0x52_4C_57  # "RLW": the writer (and migration) lock, per transaction
LOCK_TIMEOUT_MS = 5000
IDLE_IN_TRANSACTION_MS = 3000
"""A session idle inside a transaction this long is ended by the server, its locks released: a daemon
paused (SIGSTOP) or wedged mid-transaction, holding the writer lock, stalls the other daemons' writes at
most this long (less than `LOCK_TIMEOUT_MS`, so their waits succeed). Its unit, resumed, is unavailable."""
POOL_PARAMETERS = ("pool_min_size", "pool_max_size", "pool_timeout")
_NOTIFY = "SELECT pg_notify(%s, %s)"

T = TypeVar("T")

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

# SQLSTATE classes and codes that mean "not now" rather than "bug": connection failures (08), too many
# connections / out of resources (53), the server shutting down (57P01-03), lock timeouts and deadlocks,
# serialization failures, a read-only server (25006: a standby after failover), a session ended for idling in
# a transaction (25P03: the process was paused).
_UNAVAILABLE_CLASSES = ("08", "53", "57P", "58")
_UNAVAILABLE_CODES = ("40001", "40P01", "55P03", "57014", "25006", "25P03")


def to_psycopg(query: str) -> str:
    """`:name` -> `%(name)s`, and every literal `%` doubled (psycopg's placeholder syntax). `::casts` stay."""
    return _PARAM.sub(r"%(\1)s", query.replace("%", "%%"))


def statements(script: str) -> Iterator[str]:
    """Split a migration script into statements: a line ending in `;` ends one, unless it is inside a
    `$$`-quoted function body."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if line.rstrip().endswith(";") and buf.count("$$") % 2 == 0:
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise StoreError(f"incomplete statement in migration: {buf.strip()[:80]}")


SQL: dict[str, str] = load_queries(__package__ or "relay.store.postgres")
"""The named queries as written (`:name` parameters), as sqlite/queries.sql."""
QUERIES: dict[str, str] = {name: to_psycopg(text) for name, text in SQL.items()}
"""The named queries in psycopg's parameter syntax."""
MIGRATIONS: tuple[Migration, ...] = load_migrations(__package__ or "relay.store.postgres", statements)


def translate(exc: BaseException) -> StoreError:
    """`StoreUnavailable` for connection, resource, lock-timeout and shutdown errors; `StoreError` otherwise."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return StoreUnavailable(f"database unavailable: no free connection ({exc})")
    state = getattr(exc, "sqlstate", None) or ""
    if (isinstance(exc, psycopg.OperationalError) and not state) or state.startswith(
        _UNAVAILABLE_CLASSES + _UNAVAILABLE_CODES
    ):
        return StoreUnavailable(f"database unavailable: {exc}")
    return StoreError(f"database error: {exc}")


def _bind(params: dict[str, Param]) -> dict[str, Any]:
    """Tuples become lists (psycopg sends a list as an array, a tuple not at all)."""
    return {name: list(v) if isinstance(v, tuple) else v for name, v in params.items()}


def lock_key(schema: str) -> int:
    """The second half of every advisory lock key: a stable non-negative int4 of the schema's name."""
    return zlib.crc32(schema.encode()) & 0x7FFF_FFFF


def parse_url(url: str) -> tuple[str, dict[str, float]]:
    """Split a `postgresql://` URL into the libpq URL (pool parameters taken out) and the pool settings.
    Raises `ConfigurationError` naming `daemon.database` for another scheme or a bad pool setting."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "postgresql" or (not parts.netloc and not parts.path.strip("/")):
        raise ConfigurationError(
            [("daemon.database", f"unsupported database URL {url!r}; use postgresql://USER@HOST:PORT/DBNAME")]
        )
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    pool: dict[str, float] = {"pool_min_size": 1, "pool_max_size": 10, "pool_timeout": 5.0}
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key in POOL_PARAMETERS:
            try:
                pool[key] = float(value)
            except ValueError:
                raise ConfigurationError([("daemon.database", f"{key}={value!r} is not a number")]) from None
        else:
            rest.append((key, value))
    if not 1 <= pool["pool_min_size"] <= pool["pool_max_size"] or pool["pool_timeout"] <= 0:
        raise ConfigurationError(
            [("daemon.database", "need 1 <= pool_min_size <= pool_max_size and pool_timeout > 0")]
        )
    conninfo = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(rest)))
    return conninfo, pool


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class PostgresTransaction:
    """Named queries on one pooled connection inside its transaction (`relay.store.connector.Transaction`)."""

    __slots__ = ("_conn", "topics")

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        self._conn = conn
        self.topics: set[str] = set()

    async def fetch(self, query: str, /, **params: Param) -> Sequence[Row]:
        """Every row of `query`."""
        cursor = await self._conn.execute(QUERIES[query], _bind(params))
        return await cursor.fetchall()

    async def fetch_one(self, query: str, /, **params: Param) -> Row | None:
        """The first row of `query`, or None."""
        cursor = await self._conn.execute(QUERIES[query], _bind(params))
        return await cursor.fetchone()

    async def execute(self, query: str, /, **params: Param) -> int:
        """Run `query`; the number of rows changed."""
        cursor = await self._conn.execute(QUERIES[query], _bind(params))
        return max(cursor.rowcount, 0)

    async def execute_many(self, query: str, rows: Sequence[Mapping[str, Scalar]], /) -> None:
        """Run `query` for each parameter mapping: one `executemany` (pipelined: one round trip)."""
        if rows:
            async with self._conn.cursor() as cursor:
                await cursor.executemany(QUERIES[query], rows)

    async def insert(self, query: str, /, **params: Param) -> int:
        """Run an INSERT and return the new row's id (`RETURNING id` is added when the query has none)."""
        sql = QUERIES[query]
        if "RETURNING" not in sql.upper():
            sql = sql.rstrip().removesuffix(";") + " RETURNING id"
        cursor = await self._conn.execute(sql, _bind(params))
        row = await cursor.fetchone()
        if row is None:
            raise StoreError(f"{query} inserted no row")
        return int(row["id"])

    async def execute_statement(self, statement: str, /) -> None:
        """One statement of a migration script (no parameters: `%` is not a placeholder)."""
        await self._conn.execute(statement.encode())

    def notify(self, topic: str, /) -> None:
        """Keep `topic` for the NOTIFY sent just before this transaction's COMMIT (`wakeups`)."""
        self.topics.add(topic)


class SharedDaemonLock:
    """PostgreSQL's daemon lock (`relay.store.connector.DaemonLock`): shared, it keeps no daemon off the
    database (ADR 14). Every daemon on PostgreSQL is active: outbox claims are leased and fenced per row
    (ADR 11, 13), each storefront and polled factory is polled by one daemon at a time under a poller lease
    (ADR 14), so no daemon may treat another's leases as orphaned (`exclusive` is False)."""

    exclusive = False

    async def try_acquire(self) -> bool:
        """Always True: nothing to wait for."""
        return True

    async def holder(self) -> str | None:
        """None: nobody holds the database for themselves."""
        return None

    async def release(self) -> None:
        """Nothing to give up."""


class PostgresConnector:
    """A `relay.store.connector.Connector` for one PostgreSQL database (one schema: the search_path's)."""

    migrations: Sequence[Migration] = MIGRATIONS

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self.conninfo, self.pool_settings = parse_url(url)
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] | None = None
        self._key: int | None = None
        self.sender = secrets.token_hex(8)
        """This store's id in its wake-up notifications: its own are ignored (`wakeups`)."""
        self._listener: WakeupListener | None = None

    async def open(self) -> None:
        """Check that the database answers (one connection: a missing database raises `DatabaseMissing`,
        an unreachable server `StoreUnavailable`), learn its schema (the advisory locks' key), then open the
        pool, whose connections wait at most `LOCK_TIMEOUT_MS` for a lock."""
        if self._pool is not None:
            return
        try:
            async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                cursor = await conn.execute("SELECT current_schema()")
                row = await cursor.fetchone()
        except psycopg.Error as exc:
            if getattr(exc, "sqlstate", None) == "3D000" or "does not exist" in str(exc):
                raise DatabaseMissing(f"database {describe(self.url)} does not exist: {exc}") from exc
            raise translate(exc) from exc
        if row is None or row[0] is None:
            raise StoreError(f"database {describe(self.url)} has no schema on its search_path")
        self._key = lock_key(str(row[0]))
        pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = (
            psycopg_pool.AsyncConnectionPool(
                self.conninfo,
                min_size=int(self.pool_settings["pool_min_size"]),
                max_size=int(self.pool_settings["pool_max_size"]),
                timeout=self.pool_settings["pool_timeout"],
                kwargs={
                    "autocommit": True,
                    "row_factory": dict_row,
                    "application_name": f"relay pool pid={os.getpid()} host={socket.gethostname()}"[:63],
                },
                configure=self._configure,
                open=False,
                name="relay",
            )
        )
        try:
            await pool.open(wait=True, timeout=self.pool_settings["pool_timeout"])
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            await pool.close()
            raise translate(exc) from exc
        self._pool = pool

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        await conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")

    async def close(self) -> None:
        """Stop listening for wake-ups and close the pool; a no-op when not open."""
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def key(self) -> int:
        """The schema's advisory lock key (known once open)."""
        if self._key is None:
            raise StoreError("store is not open")
        return self._key

    async def on_wakeup(self, callback: Callable[[set[str]], None], /) -> None:
        """`LISTEN` on the schema's channel on a connection of its own (`wakeups.WakeupListener`), handing
        `callback` the topics other stores' transactions notified; returns once listening. Only daemons
        call it: read-only commands never open that connection."""
        if self._listener is not None:
            self._listener.callback = callback
            return
        listener = WakeupListener(self.conninfo, wakeups.channel(self.key), self.sender, callback)
        try:
            await listener.start()
        except psycopg.Error as exc:
            raise translate(exc) from exc
        self._listener = listener

    async def notify(self, topics: Collection[str], /) -> None:
        """One `pg_notify` on a pooled connection, outside any transaction (no writer lock)."""
        if not topics:
            return
        if self._pool is None:
            raise StoreError("store is not open")
        try:
            async with self._pool.connection() as conn:
                await conn.execute(_NOTIFY, (wakeups.channel(self.key), wakeups.payload(self.sender, topics)))
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise translate(exc) from exc

    def daemon_lock(self) -> SharedDaemonLock:
        """The shared daemon lock: every daemon on PostgreSQL works (ADR 14)."""
        return SharedDaemonLock()

    async def backup(
        self, path: str, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> BackupResult:
        """Not relay's job on PostgreSQL: the server's own tools do it consistently and online."""
        raise StoreError(
            "relay backup copies SQLite databases only; back a PostgreSQL database up with pg_dump "
            f"(e.g. `pg_dump --format=custom --file={path} DBNAME`) or the server's base backups and WAL "
            "archiving"
        )

    async def run_write(self, fn: Callable[[Transaction], Awaitable[T]], /, *, urgent: bool = False) -> T:
        """`await fn(tx)` in one write transaction under the writer lock; rolled back, and the error
        raised, if it raises. Raises `ReadOnlyStore` on a store opened read-only. `urgent` changes nothing
        here: the writer lock's waiters, from every daemon, are the server's to order."""
        if self.read_only:
            raise ReadOnlyStore(f"database {describe(self.url)} was opened read-only: no change was made")
        return await _to_the_end(self._unit(fn, read_only=False))

    async def run_read(self, fn: Callable[[Transaction], Awaitable[T]], /) -> T:
        """`await fn(tx)` in a READ ONLY transaction on a pooled connection, concurrent with writes; never
        the writer lock."""
        return await _to_the_end(self._unit(fn, read_only=True))

    async def _unit(self, fn: Callable[[Transaction], Awaitable[T]], *, read_only: bool) -> T:
        if self._pool is None:
            raise StoreError("store is not open")
        try:
            async with self._pool.connection() as conn:
                await conn.set_read_only(read_only)
                async with conn.transaction():
                    if not read_only:
                        await conn.execute(
                            "SELECT pg_advisory_xact_lock(%s, %s)", (WRITER_LOCK_CLASS, self.key)
                        )
                    tx = PostgresTransaction(conn)
                    result = await fn(tx)
                    if tx.topics:  # delivered by the COMMIT, dropped by a ROLLBACK
                        await conn.execute(
                            _NOTIFY, (wakeups.channel(self.key), wakeups.payload(self.sender, tx.topics))
                        )
                    return result
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise translate(exc) from exc


async def _to_the_end(unit: Coroutine[Any, Any, T]) -> T:
    """Run `unit` in a task of its own and wait for it; a caller cancelled meanwhile gets the cancellation
    only once the unit ended (committed or rolled back), so no transaction is left open or running."""
    task = asyncio.ensure_future(unit)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
        except BaseException:
            break
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what goes on
        raise asyncio.CancelledError
    return task.result()
