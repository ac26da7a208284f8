"""Database and disk faults against the running daemon: a foreign write lock, and a full disk.

In both cases the daemon must stay up, callbacks it cannot record get 503 with Retry-After (so the
factory retries), nothing is half-written, and everything completes once the fault clears.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from relay.signing import signed_headers
from tests.fault.summary import record
from tests.fault.support import World

ORDERS = 8
LOCKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
"""


class ForeignLock:
    """Another process holding `BEGIN IMMEDIATE` on the database until `release()`."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.proc.communicate("\n", timeout=30)  # commits, exits, and closes our pipe ends


async def until(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


async def probe_callback(world: World, factory: str = "acme") -> tuple[int, str | None]:
    """POST one correctly signed shipment for a held order under a fresh message id."""
    f = world.factories[factory]
    held = next(iter(f.orders.values()))
    lines = [{"line_id": li["line_id"], "quantity": li["quantity"]} for li in held.payload["lines"]]
    event = {
        "type": "shipment.created",
        "data": {
            "factory_order_key": held.key,
            "shipment_id": f"{held.reference}-P1",
            "carrier": "SF Express",
            "tracking_number": "PROBE",
            "lines": lines,
        },
    }
    body = json.dumps(event).encode()
    headers = signed_headers(f.callback_secret, f"probe-{time.time_ns()}", int(time.time()), body)
    async with aiohttp.ClientSession() as s, s.post(f.callback_url, data=body, headers=headers) as r:
        return r.status, r.headers.get("Retry-After")


async def placed_world(world: World, rng: random.Random):
    for _ in range(ORDERS):
        world.add_order(rng)
    daemon = await world.start()
    assert await world.wait_ready(daemon), world.log_tail()
    assert await until(
        lambda: set(world.order_states().values()) == {"placed"} and len(world.order_states()) == ORDERS
    ), world.log_tail()
    return daemon


async def finish(world: World, daemon, fault_class: str, runs: int, ship: asyncio.Task | None = None) -> None:
    if ship is not None:
        await ship
    settled = await world.wait_settled(timeout=60)
    assert daemon.alive(), f"the daemon died\n{world.log_tail()}"
    daemon.term()
    rc = await daemon.wait(30)
    verdict = world.oracle()
    record(fault_class, runs=runs, orders=verdict.orders, lost=verdict.lost, duplicated=verdict.duplicated)
    assert verdict.lost == 0 and verdict.duplicated == 0 and not verdict.problems, verdict.report()
    assert settled and rc == 0, world.log_tail()


async def test_short_foreign_write_lock_is_waited_out(tmp_path):
    async with World(tmp_path, ship_after_s=None) as world:
        daemon = await placed_world(world, random.Random(21))
        lock = ForeignLock(world.db_path)
        ship = asyncio.ensure_future(asyncio.gather(*(f.ship_all() for f in world.factories.values())))
        await asyncio.sleep(1.0)  # callbacks are now waiting on the lock (busy_timeout is 5 s)
        lock.release()
        await finish(world, daemon, "db: foreign write lock < busy_timeout", runs=1, ship=ship)
        assert sum(f.callbacks_sent[503] for f in world.factories.values()) == 0, "a callback was refused"


async def test_long_foreign_write_lock_gets_503_with_retry_after_then_recovers(tmp_path):
    async with World(tmp_path, ship_after_s=None) as world:
        daemon = await placed_world(world, random.Random(22))
        lock = ForeignLock(world.db_path)
        try:
            status, retry_after = await probe_callback(world)
            assert (status, retry_after) == (503, "5")
            ship = asyncio.ensure_future(asyncio.gather(*(f.ship_all() for f in world.factories.values())))
            # The factories' callbacks now fail (503, or their own 10 s timeout while queued behind the
            # daemon's other writers): none may be acknowledged, nothing may be written meanwhile.
            await asyncio.sleep(3)
            assert not any(f.acked for f in world.factories.values()), (
                "a callback was acknowledged while locked"
            )
            assert world.query("SELECT COUNT(*) FROM shipments") == [(0,)]
            assert daemon.alive()
        finally:
            lock.release()
        await finish(world, daemon, "db: foreign write lock > busy_timeout (503)", runs=1, ship=ship)


@contextlib.contextmanager
def tiny_disk(path: Path, size: str = "8m"):
    path.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError), filler.open("ab") as fh:  # the last few bytes, one at a time
        while True:
            fh.write(b"\0")
            fh.flush()
    return filler


async def test_disk_full_gets_503_writes_nothing_half_and_recovers(tmp_path):
    with tiny_disk(tmp_path / "disk") as disk:
        async with World(tmp_path, ship_after_s=None, db_dir=disk) as world:
            daemon = await placed_world(world, random.Random(23))
            import sqlite3

            con = sqlite3.connect(world.db_path, timeout=10)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next write must grow the WAL
            con.close()
            filler = fill(disk)
            try:
                ship = asyncio.ensure_future(
                    asyncio.gather(*(f.ship_all() for f in world.factories.values()))
                )
                refused = await until(
                    lambda: any(f.callbacks_sent[503] for f in world.factories.values()), 30
                )
                assert refused, f"no callback was refused on a full disk\n{world.log_tail()}"
                status, retry_after = await probe_callback(world)
                assert (status, retry_after) == (503, "5")
                assert daemon.alive(), world.log_tail()
                assert world.query("PRAGMA integrity_check") == [("ok",)]
            finally:
                filler.unlink()
            await finish(world, daemon, "disk full (tmpfs)", runs=1, ship=ship)
