"""`Store.backup` / `relay backup`: SQLite's online backup, consistent while the daemon runs and writes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from relay.cli import main
from relay.exceptions import DatabaseMissing
from relay.store import open_store
from relay.store.sqlite import MIGRATIONS
from relay.store.sqlite.backup import BackupCancelled, backup_database
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def placed(db: Path) -> int:
    return int(rows(db, "SELECT count(*) FROM orders WHERE state = 'placed'")[0][0])


async def wait_for(condition, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_backup_while_the_daemon_runs_is_one_consistent_snapshot(tmp_path):
    """The daemon commits while the copy is half done: the copy has everything committed before it
    started and nothing after, the daemon's write is not blocked by it, and the copy checks out."""
    db = tmp_path / "relay.db"
    async with Harness(tmp_path) as h:
        for _ in range(5):
            h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app(sleep=asyncio.sleep) as app:
            runner = asyncio.create_task(app.run())
            try:
                await wait_for(lambda: placed(db) == 5)
                before = rows(db, "SELECT id, state FROM orders ORDER BY id")
                loop = asyncio.get_running_loop()
                written: list[bool] = []

                def progress(done: int, total: int) -> None:
                    if not written:  # mid-copy: the daemon's writer commits through its own store
                        change = app.store.disable_factory("bolt", "during the backup", time.time())
                        written.append(asyncio.run_coroutine_threadsafe(change, loop).result(timeout=30))

                result = await asyncio.to_thread(
                    backup_database,
                    str(db),
                    str(tmp_path / "copy.db"),
                    force=False,
                    cancelled=threading.Event(),
                    progress=progress,
                    step_pages=2,
                )
                assert written == [True]
                h.storefront.add_order([SeedLine("TEE-BLU-L")])  # and the daemon goes on working
                await wait_for(lambda: placed(db) == 6)
            finally:
                app.stop()
                await runner
    copy = tmp_path / "copy.db"
    assert result.path == str(copy) and result.schema_version == MIGRATIONS[-1].version
    assert result.size_bytes == copy.stat().st_size
    assert len(before) == 5 and {state for _, state in before} == {"placed"}
    assert rows(copy, "SELECT id, state FROM orders ORDER BY id") == before
    assert rows(copy, "PRAGMA integrity_check") == [("ok",)]
    assert rows(copy, "PRAGMA foreign_key_check") == []
    assert rows(copy, "PRAGMA journal_mode") == [("delete",)]  # one self-contained file
    # the write made mid-copy is in the live database only
    assert rows(copy, "SELECT disabled_at FROM factories WHERE name = 'bolt'") in ([], [(None,)])
    assert rows(db, "SELECT disabled_at IS NOT NULL FROM factories WHERE name = 'bolt'") == [(1,)]
    assert not (tmp_path / "copy.db.tmp").exists()


async def test_store_backup_refuses_to_overwrite_unless_forced_and_reopens(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    await store.open()
    try:
        await store.migrate()
        target = tmp_path / "backup.db"
        steps: list[tuple[int, int]] = []
        first = await store.backup(str(target), progress=lambda done, total: steps.append((done, total)))
        assert first.schema_version == MIGRATIONS[-1].version
        assert steps and steps[-1][0] == steps[-1][1]  # the last step copied the last page
        with pytest.raises(FileExistsError, match="exists"):
            await store.backup(str(target))
        await store.disable_factory("acme", "after the first backup", time.time())
        await store.backup(str(target), force=True)
        assert rows(target, "SELECT name FROM factories WHERE disabled_at IS NOT NULL") == [("acme",)]
        with pytest.raises(FileNotFoundError, match="does not exist"):
            await store.backup(str(tmp_path / "no-such-dir" / "backup.db"))
    finally:
        await store.close()
    # the restored copy is a working database: open it as the daemon would
    restored = open_store(f"sqlite:///{target}")
    await restored.open()
    try:
        assert await restored.migrate() == MIGRATIONS[-1].version
    finally:
        await restored.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name) == ["backup.db"]


async def test_a_cancelled_backup_leaves_nothing_behind(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    await store.open()
    try:
        await store.migrate()
    finally:
        await store.close()
    cancelled = threading.Event()
    with pytest.raises(BackupCancelled):
        backup_database(
            str(tmp_path / "relay.db"),
            str(tmp_path / "backup.db"),
            force=False,
            cancelled=cancelled,
            progress=lambda done, total: cancelled.set(),
            step_pages=1,
        )
    assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name) == []


async def test_backup_of_a_missing_database_creates_nothing(tmp_path):
    with pytest.raises(DatabaseMissing, match="does not exist"):
        backup_database(
            str(tmp_path / "relay.db"), str(tmp_path / "b.db"), force=False, cancelled=threading.Event()
        )
    assert list(tmp_path.iterdir()) == []


async def test_cancelling_a_backup_removes_its_temporary_file(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    await store.open()
    try:
        await store.migrate()
        in_step, go_on = threading.Event(), threading.Event()

        def progress(done: int, total: int) -> None:
            in_step.set()
            go_on.wait(30)

        task = asyncio.create_task(store.backup(str(tmp_path / "backup.db"), progress=progress))
        assert await asyncio.to_thread(in_step.wait, 30)
        assert (tmp_path / "backup.db.tmp").exists()
        task.cancel()
        await asyncio.sleep(0)  # the cancellation reaches the backup, which tells its thread
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await store.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name) == []


def migrated(db: Path) -> None:
    async def migrate() -> None:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(migrate())


def test_relay_backup_command(tmp_path, capsys):
    db, target = tmp_path / "relay.db", tmp_path / "backups" / "relay-1.db"
    migrated(db)
    target.parent.mkdir()
    assert main(["--database", str(db), "backup", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"to {target}:" in out and f"schema version {MIGRATIONS[-1].version}, integrity ok" in out

    assert main(["--database", str(db), "backup", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "exists" in err and "--force" in err and len(err.splitlines()) == 1

    assert main(["--database", str(db), "backup", "--force", "--json", str(target)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["path"] == str(target) and data["integrity"] == "ok"
    assert data["schema_version"] == MIGRATIONS[-1].version and data["size_bytes"] == target.stat().st_size
    assert sorted(p.name for p in target.parent.iterdir()) == ["relay-1.db"]


def test_relay_backup_refuses_a_missing_database_or_directory(tmp_path, capsys):
    assert main(["--database", str(tmp_path / "relay.db"), "backup", str(tmp_path / "b.db")]) == 66
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the database nor a backup was created
    migrated(tmp_path / "relay.db")
    assert main(["--database", str(tmp_path / "relay.db"), "backup", str(tmp_path / "no" / "b.db")]) == 1
    assert "does not exist" in capsys.readouterr().err
