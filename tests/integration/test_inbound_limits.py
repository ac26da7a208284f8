"""Regression: a callback whose declared Content-Length exceeds the limit is refused at once with 413,
instead of the server waiting (up to its 10 s read deadline) for a body it will refuse anyway."""

from __future__ import annotations

import asyncio

from relay.testing.harness import Harness


async def test_declared_oversized_body_gets_413_before_the_body_arrives(tmp_path):
    async with Harness(tmp_path) as h, h.app() as app:
        host, port = app.inbound_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/factories/acme/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
            b"Content-Type: application/json\r\n\r\n" + b"x" * 100
        )
        await writer.drain()
        status_line = await asyncio.wait_for(
            reader.readline(), 5
        )  # would be a 408 after 10 s without the fix
        writer.close()
        await writer.wait_closed()
        assert status_line.split(b" ")[1] == b"413"
