"""A foreign process holding the write lock: queued writers give up together, they don't wait in turn."""

from __future__ import annotations

import asyncio
import sqlite3

from relay.exceptions import StoreUnavailable
from relay.store.manager import RelayStore
from relay.store.sqlite import SQLiteConnector


async def test_writers_queued_behind_a_foreign_lock_fail_fast_as_unavailable(tmp_path):
    path = str(tmp_path / "relay.db")
    store = RelayStore(SQLiteConnector(path, busy_timeout_ms=200))
    await store.open()
    await store.migrate()
    foreign = sqlite3.connect(path, isolation_level=None)
    foreign.execute("BEGIN IMMEDIATE")
    try:
        results = await asyncio.gather(
            *(store.claim_deliveries("me", ["acme"], 0.0, 60, 10) for _ in range(3)), return_exceptions=True
        )
    finally:
        foreign.execute("ROLLBACK")
        foreign.close()
    assert all(isinstance(r, StoreUnavailable) for r in results)
    # The first hits SQLite's busy timeout. The last cannot get the connection within its own wait
    # (ahead of it the connection is busy for at least two busy timeouts), so it gives up as
    # "writer is busy" instead of waiting out yet another busy timeout in turn.
    assert sum("writer is busy" in str(r) for r in results) >= 1
    assert await store.claim_deliveries("me", ["acme"], 0.0, 60, 10) == []  # recovered
    await store.close()
