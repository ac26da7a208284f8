"""`relay backup`'s engine: SQLite's online backup API, consistent while the daemon runs.

The copy is made on a connection of its own (read-only, never the daemon's), inside one read
transaction: WAL gives it one snapshot of the database for the whole copy, so the copy is consistent
(and the backup never restarts, whatever the daemon commits meanwhile), and a WAL reader never blocks
the writer. Pages are copied in steps, so a cancellation stops the copy at the next step. The copy is
written to `PATH.tmp`, switched to a rollback journal (a self-contained file), fsynced, renamed into
place and the directory fsynced; then it is opened again and checked (`PRAGMA integrity_check`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from relay.exceptions import DatabaseMissing, StoreError
from relay.store.records import BackupResult

STEP_PAGES = 1024
"""Pages copied per step (4 MiB at SQLite's default page size)."""


class BackupCancelled(Exception):
    """The copy was asked to stop; the temporary file is gone."""


def _read_only(path: str) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def _fsync(path: str | Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_database(
    source: str,
    target: str,
    *,
    force: bool,
    cancelled: threading.Event,
    progress: Callable[[int, int], None] | None = None,
    step_pages: int = STEP_PAGES,
) -> BackupResult:
    """Copy the SQLite database `source` to `target` (blocking: run it in a thread). `progress(done,
    total)` (pages) is called after each step of `step_pages`. Raises `DatabaseMissing` when `source`
    does not exist, `FileExistsError` when `target` does and not `force`, `BackupCancelled` once
    `cancelled` is set, `StoreError` when the copy fails its check."""
    if not os.path.isfile(source):
        raise DatabaseMissing(f"database file {source} does not exist")
    destination = Path(target).absolute()
    if destination.exists() and not force:
        raise FileExistsError(f"{target} exists (not replaced)")
    if not destination.parent.is_dir():
        raise FileNotFoundError(f"directory {destination.parent} does not exist")
    tmp = destination.with_name(destination.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a killed backup's (SQLite drops the journal beside an empty file)

    def step(_status: int, remaining: int, total: int) -> None:
        if cancelled.is_set():
            raise BackupCancelled("backup cancelled")
        if progress is not None:
            progress(total - remaining, total)

    try:
        src = _read_only(source)
        try:
            src.execute("PRAGMA busy_timeout = 5000")
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # the snapshot starts here
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst, pages=step_pages, progress=step, sleep=0)
                dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            finally:
                dst.close()
        finally:
            src.close()
        if cancelled.is_set():  # asked to stop during the last step
            raise BackupCancelled("backup cancelled")
        _fsync(tmp)
        if destination.exists() and not force:  # appeared while we copied
            raise FileExistsError(f"{target} exists (not replaced)")
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(destination.parent, os.O_RDONLY | os.O_DIRECTORY)
    return check_backup(str(destination))


def check_backup(path: str) -> BackupResult:
    """Open the copy at `path` read-only: `integrity_check` must say ok; read its schema version."""
    conn = _read_only(path)
    try:
        integrity = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check").fetchall())
        has_versions = conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'schema_version'").fetchone()
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] if has_versions else 0
    finally:
        conn.close()
    if integrity != "ok":
        raise StoreError(f"the backup at {path} failed its integrity check: {integrity[:200]}")
    return BackupResult(path=path, size_bytes=os.path.getsize(path), schema_version=int(version or 0))
