"""Connection limits for the inbound server: a request-head deadline and a cap on open connections.

aiohttp has no deadline for reading a request's line and headers (its `keepalive_timeout` covers an
idle kept-alive connection, and only recent versions also arm it when a connection opens), and no cap on
connections, so 200 clients dripping header bytes each hold a connection for as long as they like. The
`GuardedSite` listens like `web.TCPSite`, but wraps each connection's aiohttp protocol in a
`_GuardedProtocol` that

* closes the connection (after a `408`) when its first request head (line and headers, up to the blank
  line) has not fully arrived `header_timeout_s` after the connection opened, whatever trickles in
  meanwhile; later requests on a kept-alive connection are bounded by aiohttp's `keepalive_timeout`,
  which `relay.app` sets to the same value (it closes a connection still waiting for a whole head);
* answers `503` (with `Retry-After`) and closes a new connection while `max_connections` are open.
  Webhook senders retry a 503; slots free up within `header_timeout_s` of an attack's connections.

Counts (`refused`, `timed_out`) are exposed as counters on `/metrics`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

_TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
)
LIMIT_LOG_INTERVAL_S = 60.0
"""At most one `inbound_connection_limit` warning per this many seconds (with the refusals since)."""


class ConnectionGuard:
    """Counts open inbound connections and enforces the request-head deadline and the connection cap."""

    def __init__(self, *, max_connections: int, header_timeout_s: float, log: Any) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.log = log
        self.open = 0
        """Connections currently open (accepted and not yet closed)."""
        self.refused = 0
        """Connections refused since start because `max_connections` were open."""
        self.timed_out = 0
        """Connections closed since start because their request head was not in by the deadline."""
        self._refused_unlogged = 0
        self._logged_at: float | None = None

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` that guards each protocol `factory` makes."""
        return lambda: _GuardedProtocol(factory(), self)

    def _admit(self) -> bool:
        if self.open < self.max_connections:
            self.open += 1
            return True
        self.refused += 1
        self._refused_unlogged += 1
        now = asyncio.get_running_loop().time()
        if self._logged_at is None or now - self._logged_at >= LIMIT_LOG_INTERVAL_S:
            self.log.warning(
                "inbound_connection_limit",
                max_connections=self.max_connections,
                refused=self._refused_unlogged,
            )
            self._logged_at, self._refused_unlogged = now, 0
        return False


class _GuardedProtocol(asyncio.Protocol):
    """Delegates everything to aiohttp's protocol, watching for the end of the first request head."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._head_in = False
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, not necessarily an `asyncio.Transport` instance: uvloop's is not one.
        self._transport = stream = cast(asyncio.Transport, transport)
        if not self._guard._admit():
            stream.write(_BUSY_ANSWER)
            stream.close()
            return
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.header_timeout_s, self._head_deadline)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if not self._head_in:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._head_in = True
                self._cancel_timer()
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._admitted:
            self._admitted = False
            self._guard.open -= 1
            self._inner.connection_lost(exc)

    def _head_deadline(self) -> None:
        self._timer = None
        if self._head_in or self._transport is None or self._transport.is_closing():
            return
        self._guard.timed_out += 1
        self._guard.log.debug("inbound_header_timeout", peer=self._transport.get_extra_info("peername"))
        self._transport.write(_TIMEOUT_ANSWER)
        self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class GuardedSite(web.BaseSite):
    """Like `web.TCPSite(runner, host, port)`, with every connection under `guard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, guard: ConnectionGuard) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        """The site's URL as aiohttp logs it."""
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen on host:port (after registering with the runner, as `web.TCPSite` does)."""
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )
