"""A PostgreSQL server for tests (issue 16): the one at `RELAY_TEST_POSTGRES_URL`, or a throwaway cluster.

`find_server()` answers, in this order:

1. `RELAY_TEST_POSTGRES_URL` when set (CI points it at the server it starts or finds);
2. otherwise a throwaway cluster made with the PostgreSQL binaries (`initdb`, `pg_ctl` on PATH or under
   /usr/lib/postgresql/*/bin) in a temporary directory, listening on a Unix socket there and on a free
   loopback port, trust authentication, run as the `postgres` user (else `nobody`) when this process is root
   (the server refuses to run as root);
3. otherwise `Unavailable` with the reason, which the fixture turns into a visible skip, or a failure when
   `RELAY_REQUIRE_POSTGRES=1` (CI: the PostgreSQL half of the store suite must not skip silently).

`fresh_schema(url)` creates an empty schema and returns the URL whose connections use it (`search_path`):
one fresh database per test, at the cost of one `CREATE SCHEMA`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import uuid
from dataclasses import dataclass, field

URL_VARIABLE = "RELAY_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "RELAY_REQUIRE_POSTGRES"


class Unavailable(Exception):
    """No PostgreSQL server for the tests; the message says why."""


def _binaries() -> tuple[str, str] | None:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        initdb, pg_ctl = os.path.join(folder, "initdb"), os.path.join(folder, "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A server the tests may use: its URL, and for a throwaway cluster what stops it."""

    url: str
    _stop: list[str] = field(default_factory=list)
    _directory: str | None = None

    def stop(self) -> None:
        """Stop a throwaway cluster and remove its directory; a no-op for a given server."""
        if self._stop:
            subprocess.run(self._stop, check=False, capture_output=True, timeout=60)  # noqa: S603 (our own pg_ctl)
        if self._directory:
            shutil.rmtree(self._directory, ignore_errors=True)


def _as_user() -> tuple[list[str], str | None]:
    """The command prefix that runs the server's tools as a non-root user, and that user (when root)."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which(
        "runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    )
    if runuser is None:
        raise Unavailable("running as root without runuser: cannot start PostgreSQL as another user")
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return [runuser, "-u", name, "--"], name
    raise Unavailable("running as root and neither a postgres nor a nobody user exists")


def start_cluster() -> Server:
    """initdb + pg_ctl start in a new temporary directory. Raises `Unavailable` without the binaries."""
    found = _binaries()
    if found is None:
        raise Unavailable(
            f"no PostgreSQL for the store tests: {URL_VARIABLE} is not set and initdb/pg_ctl are not installed"
        )
    initdb, pg_ctl = found
    prefix, user = _as_user()
    directory = tempfile.mkdtemp(prefix="relay-pg-")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    data = os.path.join(directory, "data")
    port = _free_port()
    try:
        subprocess.run(  # noqa: S603 (the PostgreSQL binaries found above)
            [*prefix, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off -c max_connections=200"
        )
        subprocess.run(  # noqa: S603 (the PostgreSQL binaries found above)
            [*prefix, pg_ctl, "-D", data, "-o", options, "-l", os.path.join(directory, "log"), "-w", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        raise Unavailable(
            f"could not start a throwaway PostgreSQL cluster: {exc} {detail.decode()[-500:]}"
        ) from exc
    return Server(
        f"postgresql://postgres@127.0.0.1:{port}/postgres",
        [*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
        directory,
    )


def find_server() -> Server:
    """The server named by `RELAY_TEST_POSTGRES_URL`, else a throwaway cluster; `Unavailable` otherwise."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if url:
        return Server(url)
    return start_cluster()


def required() -> bool:
    """True when a missing server must fail the tests rather than skip them (`RELAY_REQUIRE_POSTGRES=1`)."""
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def with_schema(url: str, schema: str) -> str:
    """`url` whose connections use `schema` (libpq `options=-csearch_path=SCHEMA`)."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def fresh_schema(url: str) -> tuple[str, str]:
    """Create an empty schema on the server at `url`; (its name, the URL that uses it)."""
    import psycopg  # noqa: PLC0415 (optional dependency: relay[postgres])

    schema = f"relay_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, with_schema(url, schema)


def drop_schema(url: str, schema: str) -> None:
    """Drop a schema `fresh_schema` made, with everything in it."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def raw_sql(url: str, sql: str) -> list[tuple[object, ...]]:
    """Run one raw statement on the database of a store URL of either backend and commit it; its rows, if
    any (tests that look at, or plant, what is stored beneath the store's interface)."""
    if url.startswith("sqlite:///"):
        import sqlite3  # noqa: PLC0415

        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = [tuple(row) for row in con.execute(sql).fetchall()]
            con.commit()
            return rows
        finally:
            con.close()
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.encode())
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
