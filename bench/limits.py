"""The machine's own limits, measured in the same run as the relay.

* Raw HTTP: aiohttp client (this process) → trivial aiohttp server (its own process) on loopback,
  POSTing a body the size of a factory order, at 1 and at C requests in flight.
* SQLite: committed write transactions per second with the store's own settings (WAL, synchronous=FULL,
  one row per transaction), through aiosqlite like the store and through plain sqlite3, in a database
  next to the relay's (same disk).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite


async def raw_post(
    url: str, body: bytes, inflight: int, *, seconds: float = 3.0, cap: int = 30000
) -> dict[str, Any]:
    """Requests per second and latency percentiles for `inflight` concurrent POST loops."""
    connector = aiohttp.TCPConnector(limit=max(inflight, 1))
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()

        await asyncio.gather(*(one() for _ in range(max(inflight, 50))))  # warm-up: open the connections
        deadline = time.perf_counter() + seconds
        done = 0

        async def worker() -> None:
            nonlocal done
            while done < cap and time.perf_counter() < deadline:
                t = time.perf_counter()
                await one()
                latencies.append(time.perf_counter() - t)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "inflight": inflight,
        "requests": done,
        "per_s": done / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def _prepare(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


_DDL = "CREATE TABLE t (id INTEGER PRIMARY KEY, state TEXT, body BLOB, updated REAL)"


def sqlite_commits(path: Path, *, seconds: float = 1.5, cap: int = 20000) -> dict[str, Any]:
    """Plain sqlite3, one INSERT + COMMIT per transaction, WAL + FULL."""
    _prepare(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(_DDL)
    body = os.urandom(1024)
    n, started = 0, time.perf_counter()
    while n < cap and time.perf_counter() - started < seconds:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (state, body, updated) VALUES ('new', ?, ?)", (body, time.time()))
        db.execute("COMMIT")
        n += 1
    elapsed = time.perf_counter() - started
    db.close()
    _prepare(path)
    return {"lib": "sqlite3", "tx": n, "per_s": n / elapsed}


async def aiosqlite_commits(path: Path, *, seconds: float = 1.5, cap: int = 20000) -> dict[str, Any]:
    """aiosqlite like the store: BEGIN IMMEDIATE, INSERT, COMMIT, each awaited (3 thread hops)."""
    _prepare(path)
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute(_DDL)
    body = os.urandom(1024)
    n, started = 0, time.perf_counter()
    while n < cap and time.perf_counter() - started < seconds:
        await db.execute("BEGIN IMMEDIATE")
        await db.execute("INSERT INTO t (state, body, updated) VALUES ('new', ?, ?)", (body, time.time()))
        await db.execute("COMMIT")
        n += 1
    elapsed = time.perf_counter() - started
    await db.close()
    _prepare(path)
    return {"lib": "aiosqlite", "tx": n, "per_s": n / elapsed}
