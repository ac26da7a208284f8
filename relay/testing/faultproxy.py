"""A small fault-injecting TCP proxy for loopback tests (a Toxiproxy subset, in-process, asyncio).

    proxy = FaultProxy("127.0.0.1", factory_port)
    await proxy.start()                       # proxy.port now forwards to the factory
    proxy.next_connections(Toxic.reset_peer(direction="downstream", after_bytes=20), times=2)
    proxy.default = Toxic.latency(0.2)         # every other connection: 200 ms per chunk

A toxic applies to a whole TCP connection, chosen when the connection is accepted: first from the
queue given to `next_connections`, else `default` (None = pass through). `direction` is "upstream"
(client → server, i.e. the request) or "downstream" (server → client, the response).

Kinds (after Toxiproxy's names):
  latency     delay every chunk by `seconds`
  timeout     stop forwarding in `direction`; with `seconds` > 0 close the connection after that long,
              with 0 hang until the client gives up (upstream: the server never sees the request;
              downstream: the server handled it but the answer never arrives)
  reset_peer  forward `after_bytes` bytes in `direction`, then reset both sides (TCP RST)
  limit_data  forward `after_bytes` bytes in `direction`, then close both sides cleanly
  slicer      forward in `size`-byte slices, `seconds` apart (slow drip)

`Balancer` is the same proxy in front of several upstreams, round-robin per connection (an L4 load
balancer in front of several daemons): an upstream that refuses the connection is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_CHUNK = 65536


@dataclass(frozen=True)
class Toxic:
    kind: str
    direction: str = "downstream"
    seconds: float = 0.0
    after_bytes: int = 0
    size: int = 1

    @classmethod
    def latency(cls, seconds: float, direction: str = "downstream") -> Toxic:
        return cls("latency", direction, seconds=seconds)

    @classmethod
    def timeout(cls, seconds: float = 0.0, direction: str = "downstream") -> Toxic:
        return cls("timeout", direction, seconds=seconds)

    @classmethod
    def reset_peer(cls, after_bytes: int = 0, direction: str = "downstream") -> Toxic:
        return cls("reset_peer", direction, after_bytes=after_bytes)

    @classmethod
    def limit_data(cls, after_bytes: int, direction: str = "downstream") -> Toxic:
        return cls("limit_data", direction, after_bytes=after_bytes)

    @classmethod
    def slicer(cls, size: int, seconds: float, direction: str = "downstream") -> Toxic:
        return cls("slicer", direction, seconds=seconds, size=size)


class _Cut(Exception):
    def __init__(self, reset: bool) -> None:
        self.reset = reset


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1:<port> and forwards each connection to the upstream, applying toxics."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.default: Toxic | None = None
        self._queue: list[Toxic | None] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.toxics_applied: dict[str, int] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def next_connections(self, toxic: Toxic | None, *, times: int = 1) -> None:
        """Apply `toxic` to the next `times` new connections (None: pass them through)."""
        self._queue.extend([toxic] * times)

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(creader, cwriter)
        except asyncio.CancelledError:
            pass  # close() ends the connections still open; asyncio's streams would log it as an error
        finally:
            self._tasks.discard(task)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        toxic = self._queue.pop(0) if self._queue else self.default
        if toxic is not None:
            self.toxics_applied[toxic.kind] = self.toxics_applied.get(toxic.kind, 0) + 1
        try:
            ureader, uwriter = await self._open_upstream()
        except OSError:
            _rst(cwriter)
            return
        up = asyncio.create_task(
            self._pipe(creader, uwriter, toxic if toxic and toxic.direction == "upstream" else None)
        )
        down = asyncio.create_task(
            self._pipe(ureader, cwriter, toxic if toxic and toxic.direction == "downstream" else None)
        )
        cut: BaseException | None = None
        try:
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            cut = next((t.exception() for t in done if isinstance(t.exception(), _Cut)), None)
            if cut is None:
                await asyncio.wait({up, down})  # normal half-close: let the other side finish
                cut = next(
                    (t.exception() for t in (up, down) if t.done() and isinstance(t.exception(), _Cut)), None
                )
        finally:
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            for w in (cwriter, uwriter):
                if isinstance(cut, _Cut) and cut.reset:
                    _rst(w)
                else:
                    w.close()
            for w in (cwriter, uwriter):
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.upstream)

    @staticmethod
    async def _forward(writer: asyncio.StreamWriter, data: bytes, toxic: Toxic | None, sent: int) -> None:
        """Pass one chunk on through `toxic` (None: unchanged); `sent` bytes went before it."""
        if toxic is None:
            writer.write(data)
            return
        if toxic.kind == "latency":
            await asyncio.sleep(toxic.seconds)
            writer.write(data)
        elif toxic.kind == "timeout":
            # Swallow everything; close after `seconds`, or hang until the peer gives up.
            if toxic.seconds > 0:
                await asyncio.sleep(toxic.seconds)
                raise _Cut(reset=False)
        elif toxic.kind in ("reset_peer", "limit_data"):
            room = toxic.after_bytes - sent
            if room > 0:
                writer.write(data[:room])
                await writer.drain()
            if len(data) >= room:
                raise _Cut(reset=toxic.kind == "reset_peer")
        elif toxic.kind == "slicer":
            for i in range(0, len(data), max(1, toxic.size)):
                writer.write(data[i : i + toxic.size])
                await writer.drain()
                await asyncio.sleep(toxic.seconds)
        else:
            raise ValueError(f"unknown toxic {toxic.kind!r}")

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, toxic: Toxic | None
    ) -> None:
        sent = 0
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._forward(writer, data, toxic, sent)
                sent += len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            raise _Cut(reset=True) from None
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()


class Balancer(FaultProxy):
    """Forwards each new connection to the next of `upstreams` in turn that accepts it (round-robin;
    refused ones are skipped, none accepting resets the client). `per_upstream` counts connections."""

    def __init__(self, upstreams: Sequence[tuple[str, int]], *, host: str = "127.0.0.1") -> None:
        if not upstreams:
            raise ValueError("a balancer needs at least one upstream")
        super().__init__(*upstreams[0], host=host)
        self.upstreams = list(upstreams)
        self.per_upstream: Counter[tuple[str, int]] = Counter()
        self._turn = 0

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in range(len(self.upstreams)):
            target = self.upstreams[self._turn % len(self.upstreams)]
            self._turn += 1
            try:
                opened = await asyncio.open_connection(*target)
            except OSError:
                continue
            self.per_upstream[target] += 1
            return opened
        raise ConnectionRefusedError(f"no upstream of {self.upstreams} accepts connections")
