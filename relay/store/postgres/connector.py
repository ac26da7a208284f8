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
* `daemon_lock()`: a session-level `pg_try_advisory_lock` held on a dedicated connection (not pooled),
  released by the server when that session ends (the daemon died, or its connection was cut).

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
import signal
import socket
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import structlog
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
from relay.store.records import BackupResult

WRITER_LOCK_CLASS = 0x52_4C_57  # "RLW": the writer (and migration) lock, per transaction
DAEMON_LOCK_CLASS = 0x52_4C_44  # "RLD": the daemon lock, per session
LOCK_TIMEOUT_MS = 5000
KEEPALIVES = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
)
"""The daemon lock's session: the server ends it (releasing the lock) ~25 s after the holder's machine
stopped answering, not after the OS default of two hours. Ignored on a Unix socket."""
POOL_PARAMETERS = ("pool_min_size", "pool_max_size", "pool_timeout")

T = TypeVar("T")

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

# SQLSTATE classes and codes that mean "not now" rather than "bug": connection failures (08), too many
# connections / out of resources (53), the server shutting down (57P01-03), lock timeouts and deadlocks,
# serialization failures, a read-only server (25006: a standby after failover).
_UNAVAILABLE_CLASSES = ("08", "53", "57P", "58")
_UNAVAILABLE_CODES = ("40001", "40P01", "55P03", "57014", "25006")


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

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        self._conn = conn

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


class AdvisoryDaemonLock:
    """A session-level advisory lock on a dedicated connection (`relay.store.connector.DaemonLock`).

    The key is (DAEMON_LOCK_CLASS, the schema's hash), read on the lock's own connection, so the lock works
    on a store that is not open. The holder's connection carries `application_name = relay pid=... host=...`,
    which `holder()` reads back from `pg_stat_activity`, so a refused daemon can say who holds it.

    The server releases the lock when the session ends, also when only the connection was lost (a server
    restart, a network cut) while this process lives on: then another daemon may take over. So the holder
    checks its session every `check_s` seconds, and when the session is gone it logs
    `daemon_lock_lost` and sends itself SIGTERM: the daemon stops in order (in-flight sends drain, fencing
    makes any late outcome harmless) and, restarted, waits as a standby.
    """

    def __init__(self, conninfo: str, *, check_s: float = 5.0) -> None:
        self._conninfo = conninfo
        self._check_s = check_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._watch: asyncio.Task[None] | None = None

    async def _key(self, conn: psycopg.AsyncConnection[Any]) -> int:
        cursor = await conn.execute("SELECT current_schema()")
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            raise StoreError("the database URL's search_path names no existing schema")
        return lock_key(str(row[0]))

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this process holds it now."""
        if self._conn is not None:
            return True
        name = f"relay pid={os.getpid()} host={socket.gethostname()}"[:63]
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, application_name=name
            )
        except psycopg.Error as exc:
            raise translate(exc) from exc
        try:
            for setting in KEEPALIVES:  # the server notices a vanished holder's machine within ~25 s
                await conn.execute(setting)
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (DAEMON_LOCK_CLASS, await self._key(conn))
            )
            row = await cursor.fetchone()
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise translate(exc) from exc
            raise
        if not (row and row[0]):
            await conn.close()
            return False
        self._conn = conn
        self._watch = asyncio.create_task(self._watch_session(conn))
        return True

    async def _watch_session(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            await asyncio.sleep(self._check_s)
            try:
                await conn.execute("SELECT 1")
            except psycopg.Error as exc:
                structlog.get_logger("relay").error(
                    "daemon_lock_lost",
                    error=str(exc),
                    hint="stopping: restarted, this daemon waits as a standby",
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    async def holder(self) -> str | None:
        """The holding session's application name, client and start time, or None when nobody holds it."""
        try:
            async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                cursor = await conn.execute(
                    "SELECT a.application_name, a.client_addr, extract(epoch FROM a.backend_start)"
                    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.granted AND l.database = ("
                    "   SELECT oid FROM pg_database WHERE datname = current_database())"
                    " AND l.classid = %s AND l.objid = %s AND l.objsubid = 2",
                    (DAEMON_LOCK_CLASS, await self._key(conn)),
                )
                row = await cursor.fetchone()
        except psycopg.Error:
            return None
        if row is None:
            return None
        name, addr, since = row
        return f"{name or 'unknown'} client={addr or 'local'} since={float(since or 0):.0f}"

    async def release(self) -> None:
        """Give the lock up by ending its session; a no-op when not held."""
        if self._watch is not None:
            watch, self._watch = self._watch, None
            watch.cancel()
            await asyncio.wait([watch])
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()  # the session ends: the server releases its advisory locks


class PostgresConnector:
    """A `relay.store.connector.Connector` for one PostgreSQL database (one schema: the search_path's)."""

    migrations: Sequence[Migration] = MIGRATIONS

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self.conninfo, self.pool_settings = parse_url(url)
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] | None = None
        self._key: int | None = None

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

    async def close(self) -> None:
        """Close the pool; a no-op when not open."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def key(self) -> int:
        """The schema's advisory lock key (known once open)."""
        if self._key is None:
            raise StoreError("store is not open")
        return self._key

    def daemon_lock(self) -> AdvisoryDaemonLock:
        """The session-level advisory lock that keeps a second daemon off this database (the store need
        not be open)."""
        return AdvisoryDaemonLock(self.conninfo)

    async def backup(
        self, path: str, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> BackupResult:
        """Not relay's job on PostgreSQL: the server's own tools do it consistently and online."""
        raise StoreError(
            "relay backup copies SQLite databases only; back a PostgreSQL database up with pg_dump "
            f"(e.g. `pg_dump --format=custom --file={path} DBNAME`) or the server's base backups and WAL "
            "archiving"
        )

    async def run_write(self, fn: Callable[[Transaction], Awaitable[T]], /) -> T:
        """`await fn(tx)` in one write transaction under the writer lock; rolled back, and the error
        raised, if it raises. Raises `ReadOnlyStore` on a store opened read-only."""
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
                    return await fn(PostgresTransaction(conn))
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
