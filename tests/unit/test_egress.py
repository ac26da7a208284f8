"""The egress policy, exercised through real sessions against a loopback server."""

from __future__ import annotations

import pytest
from aiohttp import web

from relay.config import EgressSettings
from relay.exceptions import ResponseTooLarge, RetriableAdapterError, UnsafeURL, Verdict, classify
from relay.outbound.policy import address_allowed, check_url
from relay.outbound.session import new_session

BIG = b"x" * 3_000_000


@pytest.fixture
async def server():
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=BIG)

    async def chunked(_: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(_)
        for _i in range(40):
            await resp.write(b"y" * 100_000)
        await resp.write_eof()
        return resp

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("http://127.0.0.1:1/elsewhere")

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def loopback(**kw) -> EgressSettings:
    return EgressSettings(allow_plain_http=True, allow_private_addresses=True, **kw)


async def test_multi_chunk_bodies_under_the_cap_arrive_whole(server):
    async with new_session(loopback(max_response_bytes=8_000_000)) as s:
        async with s.get(f"{server}/big") as r:
            assert await r.read() == BIG
        async with s.get(f"{server}/chunked") as r:
            assert len(await r.text()) == 4_000_000


@pytest.mark.parametrize("path", ["/big", "/chunked"])
async def test_bodies_over_the_cap_are_refused(server, path):
    async with new_session(loopback(max_response_bytes=1_000_000)) as s:
        with pytest.raises(ResponseTooLarge, match="cap") as caught:
            async with s.get(f"{server}{path}") as r:
                await r.text()
    # Not an egress refusal: its own error, retriable later (docs/factory-api.md: "refuses ... and retries").
    assert not isinstance(caught.value, UnsafeURL)
    assert isinstance(caught.value, RetriableAdapterError)
    assert classify(caught.value) is Verdict.RETRY


async def test_redirects_are_never_followed(server):
    async with new_session(loopback()) as s:
        with pytest.raises(RetriableAdapterError, match="not followed"):
            async with s.get(f"{server}/redirect", allow_redirects=True):
                pass


async def test_loopback_is_refused_unless_allowed(server):
    async with new_session(EgressSettings(allow_plain_http=True)) as s:
        with pytest.raises(UnsafeURL):
            async with s.get(f"{server}/big"):
                pass
    port = server.rsplit(":", 1)[1]
    async with new_session(EgressSettings(allow_plain_http=True)) as s:
        with pytest.raises(UnsafeURL, match="forbids"):
            async with s.get(f"http://localhost:{port}/big"):  # refused after DNS resolution
                pass


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x",
        "ftp://example.com/x",
        "https://user:pw@example.com/",
        "https://169.254.169.254/",
        "https://10.1.2.3/",
        "https://[::ffff:127.0.0.1]/",
    ],
)
def test_configured_urls_outside_the_policy_are_refused(url):
    with pytest.raises(UnsafeURL):
        check_url(url, allow_plain_http=False, allow_private=False)


def test_metadata_address_is_refused_even_when_private_addresses_are_allowed():
    assert not address_allowed("169.254.169.254", allow_private=True)
    assert address_allowed("10.0.0.1", allow_private=True)
    assert not address_allowed("10.0.0.1", allow_private=False)
    assert address_allowed("93.184.216.34", allow_private=False)
