"""The daemon as a real process: crash between the factory's 2xx and our commit, SIGTERM, migrations."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from relay.domain.models import factory_order_key
from relay.exceptions import UnsupportedDatabaseVersion
from relay.store import open_store
from relay.store.sqlite import MIGRATIONS
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

RELAY = str(Path(sys.executable).with_name("relay"))


async def relay(config: Path, *args: str, crash_at: str | None = None, timeout: float = 30) -> int:
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CRASH_AT"}
    if crash_at:
        env["RELAY_CRASH_AT"] = crash_at
    proc = await asyncio.create_subprocess_exec(
        RELAY,
        "-c",
        str(config),
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), timeout)


def factory_order_states(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT key, state, attempts FROM factory_orders ORDER BY id").fetchall()


async def test_sigkill_after_factory_accepted_resends_with_the_same_key(tmp_path):
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        key = factory_order_key("shop", oid, "acme")
        config = h.write_config(tmp_path / "relay.toml", inbound={"enabled": False})
        acme = h.factories["acme"]

        assert await relay(config, "run", "--once", crash_at="after_factory_post") == -signal.SIGKILL
        assert acme.deliveries == {key: 1} and acme.held == 1
        assert factory_order_states(tmp_path / "relay.db") == [(key, "pending", 0)]

        assert await relay(config, "run", "--once") == 0
        assert acme.deliveries == {key: 2}  # re-sent, same idempotency key
        assert acme.held == 1  # ... and the factory still holds it once
        assert factory_order_states(tmp_path / "relay.db") == [(key, "placed", 1)]


async def test_sigterm_stops_the_daemon_cleanly(tmp_path):
    async with Harness(tmp_path, ship_after_s=0) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        config = h.write_config(tmp_path / "relay.toml", inbound={"port": 0})
        env = {k: v for k, v in os.environ.items() if k != "RELAY_CRASH_AT"}
        proc = await asyncio.create_subprocess_exec(
            RELAY,
            "-c",
            str(config),
            "run",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            for _ in range(200):
                if h.factories["acme"].held:
                    break
                await asyncio.sleep(0.05)
            assert h.factories["acme"].held == 1
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
        log = (await proc.stderr.read()).decode()
        assert '"event": "relay_stopped"' in log


async def test_a_database_newer_than_the_code_is_refused(tmp_path):
    db = tmp_path / "relay.db"
    store = open_store(f"sqlite:///{db}")
    await store.open()
    await store.migrate()
    await store.close()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (MIGRATIONS[-1].version + 1,)
        )
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        with pytest.raises(UnsupportedDatabaseVersion):
            await store.migrate()
    finally:
        await store.close()


async def test_store_runs_wal_with_full_sync(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    await store.open()
    try:
        pragmas = await store.connector.on_writer(  # the writer's own connection, on its thread
            lambda db: [
                db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("journal_mode", "synchronous")
            ]
        )
        assert pragmas == ["wal", 2]  # synchronous = FULL
    finally:
        await store.close()
