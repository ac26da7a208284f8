"""Wake-ups between the daemons on one PostgreSQL database: `NOTIFY` on commit, one `LISTEN` per daemon
(issue 16, ADR 14; the topics: `relay.store.wakeups`).

* Sending: a write transaction that called `tx.notify(topic)` sends its topics with one
  `SELECT pg_notify(channel, payload)` just before its COMMIT (`PostgresConnector._unit`); PostgreSQL
  delivers it at the COMMIT, in commit order, and drops it on a ROLLBACK. A transaction without topics
  sends nothing: no round trip is added to it.
* The channel is `relay_wake_<hash of the schema>` (the advisory locks' key): two relay databases in two
  schemas of one PostgreSQL database do not wake each other.
* The payload is `<sender> <topic> <topic>...`: the sender is the store's random id, so a daemon ignores
  its own notifications (its loops woke each other in process already). Names are `[a-z0-9_-]`, so a space
  separates. A payload that would reach PostgreSQL's 8000-byte limit says `<sender> *` instead.
* Listening (`WakeupListener`): one dedicated connection (not pooled) doing `LISTEN`, read with psycopg's
  async `notifies()`. When it drops (server restart, network cut, `pg_terminate_backend`) it logs
  `wakeup_listener_lost` once, reconnects with backoff (at once, then 0.1 s doubling to 10 s), logs
  `wakeup_listener_restored` and delivers `*`: notifications sent meanwhile are lost. TCP keepalives make a
  silently vanished server count as dropped within ~25 s. Any other error while listening is logged
  (`wakeup_listener_failed`, with its traceback) and handled the same way; a callback that raises is logged
  (`wakeup_callback_failed`) and listening goes on. Should the listening task ever end other than by
  `close`, `wakeup_listener_ended` says so (an error: no wake-ups from other daemons until a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import structlog

from relay.store.wakeups import ALL

PAYLOAD_LIMIT = 8000
"""PostgreSQL refuses a NOTIFY payload of this many bytes or more."""
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""libpq's client-side TCP keepalives for the listening connection (ignored on a Unix socket)."""
BACKOFF_S = (0.1, 10.0)
"""The listener's reconnect delays after the immediate first attempt: the first one, and the most."""


def channel(key: int) -> str:
    """The channel of the relay database whose advisory lock key is `key` (a non-negative int4)."""
    return f"relay_wake_{key}"


def payload(sender: str, topics: Iterable[str]) -> str:
    """`<sender> <topic>...`, sorted; `<sender> *` when that would not fit in a NOTIFY."""
    text = " ".join([sender, *sorted(topics)])
    return text if len(text.encode()) < PAYLOAD_LIMIT else f"{sender} {ALL}"


def topics_of(text: str, own: str) -> set[str]:
    """The topics of a payload; none when `own` (this store) sent it."""
    sender, _, rest = text.partition(" ")
    return set() if sender == own else set(rest.split())


class WakeupListener:
    """`LISTEN`s on `channel` on a connection of its own and hands each other sender's topics to
    `callback`, on the loop that started it, until closed (module docstring)."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        sender: str,
        callback: Callable[[set[str]], None],
    ) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.sender = sender
        self.callback = callback
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("relay").bind(component="wakeups")

    async def start(self) -> None:
        """Connect and `LISTEN` (a failure raises `psycopg.Error`), then read notifications in a task."""
        self._conn = await self._connect()
        self._task = asyncio.create_task(self._listen(self._conn), name="relay:wakeups")
        self._task.add_done_callback(self._ended)

    async def close(self) -> None:
        """Stop listening and close the connection; a no-op when not started."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.wait([task])
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        name = f"relay wakeups pid={os.getpid()} host={socket.gethostname()}"[:63]
        conn = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, application_name=name, **KEEPALIVES
        )
        try:
            await conn.execute(f"LISTEN {self.channel}")  # a digits-only suffix: a plain identifier
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            try:
                async for note in conn.notifies():
                    self._deliver(topics_of(note.payload, self.sender))
            except psycopg.Error as exc:
                self._log.warning(
                    "wakeup_listener_lost", error=str(exc), hint="reconnecting; loops keep their timers"
                )
            except Exception:
                self._log.exception("wakeup_listener_failed", hint="reconnecting; loops keep their timers")
            else:
                continue  # the notifications generator ended without an error: read on
            self._conn = None
            # A broken connection may fail to close: it is dropped anyway.
            with contextlib.suppress(Exception):
                await conn.close()
            conn = self._conn = await self._reconnect()
            self._log.info("wakeup_listener_restored")
            self._deliver({ALL})  # whatever was sent while nobody listened

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        """A listening connection again: at once, then after a delay doubling from `BACKOFF_S`."""
        delay, most = BACKOFF_S
        while True:
            try:
                return await self._connect()
            except Exception:  # psycopg.Error, or any other failure to connect: try again later
                await asyncio.sleep(delay)
                delay = min(2 * delay, most)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # `close`
        exc = task.exception()
        self._log.error(
            "wakeup_listener_ended",
            error=repr(exc),
            exc_info=exc,
            hint="no wake-ups from other daemons until a restart; loops keep their timers",
        )

    def _deliver(self, topics: set[str]) -> None:
        if not topics:
            return
        try:
            self.callback(topics)
        except Exception:
            self._log.exception("wakeup_callback_failed", topics=sorted(topics))
