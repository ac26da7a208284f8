"""Regression: a callback whose declared Content-Length exceeds the limit is refused at once with 413,
instead of the server waiting (up to its 10 s read deadline) for a body it will refuse anyway."""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from relay.inbound import callbacks
from relay.testing.harness import Harness


async def status_of_a_partial_body(inbound_url: str, content_length: int) -> bytes:
    """The status code answered to a callback that declares `content_length` bytes and sends 100."""
    host, port = inbound_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/factories/acme/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Content-Type: application/json\r\n\r\n" % content_length + b"x" * 100
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    await writer.wait_closed()
    return status_line.split(b" ")[1]


async def test_declared_oversized_body_gets_413_before_the_body_arrives(tmp_path):
    async with Harness(tmp_path) as h, h.app() as app:
        # would be a 408 after 10 s without the fix
        assert await status_of_a_partial_body(app.inbound_url, 100_000_000) == b"413"


async def test_a_body_that_does_not_arrive_in_time_gets_408(tmp_path, monkeypatch):
    # A whole body is read without a timer (issue 15); one still arriving is read under the deadline.
    monkeypatch.setattr(callbacks, "BODY_READ_TIMEOUT_S", 0.3)
    async with Harness(tmp_path) as h, h.app() as app:
        assert await status_of_a_partial_body(app.inbound_url, 1000) == b"408"


async def test_a_body_that_has_arrived_is_read_without_arming_a_timer(monkeypatch):
    class NoTimer:
        @staticmethod
        def timeout(delay: float) -> None:
            raise AssertionError("a timer was armed for a body that had arrived")

    monkeypatch.setattr(callbacks, "asyncio", NoTimer)
    payload = streams.StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(b'{"a": 1}')
    payload.feed_eof()
    request = make_mocked_request("POST", "/v1/factories/acme/events", payload=payload)
    assert await callbacks.read_body(request, 1024) == b'{"a": 1}'
