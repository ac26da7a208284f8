"""systemd's notify protocol: `relay run` as a real process reports READY, WATCHDOG and STOPPING."""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.systemd import Notifier
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

RELAY = str(Path(sys.executable).with_name("relay"))


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """What systemd listens on: a datagram socket (non-blocking, for `sock_recv`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def receive(sock: socket.socket, until: str, seen: list[str]) -> None:
    """Collect datagrams' assignments into `seen` until one is `until`."""
    loop = asyncio.get_running_loop()
    while until not in seen:
        seen.extend((await loop.sock_recv(sock, 4096)).decode().splitlines())


async def test_the_daemon_reports_ready_watchdog_and_stopping(tmp_path, notify_socket):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        config = h.write_config(tmp_path / "relay.toml")
        env = {k: v for k, v in os.environ.items() if k not in {"RELAY_CRASH_AT", "WATCHDOG_PID"}}
        env |= {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "400000"}
        proc = await asyncio.create_subprocess_exec(
            RELAY,
            "-c",
            str(config),
            "run",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        seen: list[str] = []
        try:
            await asyncio.wait_for(receive(notify_socket, "READY=1", seen), 30)
            assert any(line.startswith("STATUS=running: 1 storefront(s), 2 factory(ies)") for line in seen)
            assert "WATCHDOG=1" not in seen  # the watchdog starts with the loops, after READY
            await asyncio.wait_for(receive(notify_socket, "WATCHDOG=1", seen), 30)
            # The order went through: READY came with the daemon working, and the pings continue.
            for _ in range(400):
                if h.factories["acme"].held:
                    break
                await asyncio.sleep(0.05)
            assert h.factories["acme"].held == 1
            seen.clear()
            await asyncio.wait_for(receive(notify_socket, "WATCHDOG=1", seen), 30)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(receive(notify_socket, "STOPPING=1", seen), 30)
            assert "STATUS=stopping: draining in-flight sends" in seen
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log = (await proc.stderr.read()).decode()
        assert '"event": "relay_stopped"' in log


async def test_a_standby_is_ready_and_keeps_pinging_while_it_waits(tmp_path, notify_socket):
    """A second daemon on the same database is a hot standby: up as designed, so READY with its status."""
    async with Harness(tmp_path) as h:
        config = h.write_config(tmp_path / "relay.toml")
        lock = (tmp_path / "relay.db.lock").open("w")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another daemon holds the database
        lock.write("pid=1 host=elsewhere since=0\n")
        lock.flush()
        env = {k: v for k, v in os.environ.items() if k not in {"RELAY_CRASH_AT", "WATCHDOG_PID"}}
        env |= {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "400000"}
        proc = await asyncio.create_subprocess_exec(
            RELAY,
            "-c",
            str(config),
            "run",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        seen: list[str] = []
        try:
            await asyncio.wait_for(receive(notify_socket, "READY=1", seen), 30)
            assert any(line.startswith("STATUS=standby:") and "pid=1 host=elsewhere" in line for line in seen)
            await asyncio.wait_for(receive(notify_socket, "WATCHDOG=1", seen), 30)
            proc.send_signal(signal.SIGHUP)  # `systemctl reload` reaches a standby too: it lives on
            lock.close()  # the first daemon stops: the standby takes over and says so
            seen.clear()
            await asyncio.wait_for(receive(notify_socket, "READY=1", seen), 30)
            assert any(line.startswith("STATUS=running:") for line in seen)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(receive(notify_socket, "STOPPING=1", seen), 30)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            lock.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_watchdog_pings_only_while_alive():
    """Pings stop as soon as the loops are not all alive (systemd then restarts the daemon)."""
    name = f"@relay-test-{secrets.token_hex(6)}"  # the abstract namespace, as systemd may use
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.setblocking(False)
    answers = iter([True, True, False, False])
    done = asyncio.Event()

    def alive() -> bool:
        answer = next(answers, None)
        if answer is None:
            done.set()
            return False
        return answer

    notifier = Notifier(name, watchdog_usec=2000)
    task = asyncio.create_task(notifier.watchdog(alive))
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        task.cancel()
        await asyncio.wait([task])
    pings = []
    while True:
        try:
            pings.append(sock.recv(4096))
        except BlockingIOError:
            break
    sock.close()
    assert pings == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_environment_decides_whether_and_how_often():
    assert Notifier.from_environment({}).address is None
    assert Notifier.from_environment({}).watchdog_interval_s is None
    n = Notifier.from_environment({"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"})
    assert (n.address, n.watchdog_interval_s) == ("/run/systemd/notify", 15.0)
    other = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environment(other).watchdog_interval_s is None  # the watchdog is another process's
    mine = {**other, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environment(mine).watchdog_interval_s == 15.0
    Notifier().notify("READY=1")  # no socket: nothing happens, nothing raises
    Notifier("/nonexistent/notify.sock").notify("READY=1")  # best effort: a dead socket is ignored
