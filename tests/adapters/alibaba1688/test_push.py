"""1688 push messages over real HTTP: the signature (`message` + its JSON, HMAC-SHA1 with the app secret),
the size limit, repeats, and that a push only wakes the factory's shipment poller, which reads the truth.

The endpoint tests run the inbound push handler (`relay.inbound.push.FactoryPushes`) with the 1688
adapter behind it and record what it wakes; the end-to-end test runs the daemon with a poll interval of an
hour, so only a push can make it read the parcel that 1688 sent."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from adapters.alibaba1688 import Alibaba1688Factory
from adapters.alibaba1688.client import GET_BUYER_ORDER_LIST, GET_LOGISTICS_INFOS
from adapters.alibaba1688.fake import Fake1688Gateway
from relay.contracts import PushReceiver
from relay.domain.models import factory_order_key
from relay.inbound.push import FactoryPushes
from relay.signing import aop_push_signature
from relay.testing.contract import make_context
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

MAX_BODY = 32 * 1024  # the inbound limit in these tests; the adapter's own is 16 KiB


@dataclass
class Endpoint:
    fake: Fake1688Gateway
    woken: list[str]
    url: str

    async def post(self, fields: dict[str, str]) -> int:
        async with aiohttp.ClientSession() as s, s.post(self.url, data=fields) as r:
            return r.status


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    fake = Fake1688Gateway("ali")
    await fake.start()
    options = Alibaba1688Factory.Options.model_validate(fake.adapter_options())
    adapter = Alibaba1688Factory("ali", options, make_context(asyncio.sleep))
    assert isinstance(adapter, PushReceiver)
    woken: list[str] = []
    pushes = FactoryPushes(
        {"ali": adapter}, max_body_bytes=MAX_BODY, log=structlog.get_logger(), on_push=woken.append
    )
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/v1/factories/{factory}/push", pushes.factory_push)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/factories"
    fake.push_url = f"{base}/ali/push"
    try:
        yield Endpoint(fake, woken, fake.push_url)
    finally:
        await runner.cleanup()
        await adapter.aclose()
        await fake.close()


def test_the_push_signature_is_hmac_sha1_of_message_and_its_json_in_uppercase_hex() -> None:
    """open.1688.com messageDoc: the signed content is key + value, i.e. "message" + the JSON string."""
    body = '{"msgId":"1","type":"ORDER_BUYER_VIEW_ORDER_PAY"}'
    expected = hmac.new(b"test123", b"message" + body.encode(), hashlib.sha1).hexdigest().upper()
    assert aop_push_signature("test123", {"message": body}) == expected


async def test_a_signed_push_is_answered_200_and_wakes_the_factory(endpoint: Endpoint) -> None:
    status = await endpoint.fake.send_push(endpoint.fake.push_message("ORDER_BUYER_VIEW_ANNOUNCE_SENDGOODS"))
    assert status == 200
    assert endpoint.woken == ["ali"]


async def test_a_push_with_a_bad_signature_is_refused_401_and_wakes_nothing(endpoint: Endpoint) -> None:
    message = endpoint.fake.push_message("ORDER_BUYER_VIEW_ANNOUNCE_SENDGOODS")
    assert await endpoint.fake.send_push(message, secret="not-the-app-secret")  # noqa: S106 == 401
    unsigned = {"message": json.dumps(message)}
    assert await endpoint.post(unsigned) == 401
    assert endpoint.woken == []


async def test_an_oversized_push_is_refused_413_and_wakes_nothing(endpoint: Endpoint) -> None:
    message = endpoint.fake.push_message("ORDER_BUYER_VIEW_ANNOUNCE_SENDGOODS")
    over_adapter_limit = {**message, "extraInfo": "x" * 20_000}  # signed, above the adapter's 16 KiB
    assert await endpoint.fake.send_push(over_adapter_limit) == 413
    over_server_limit = {**message, "extraInfo": "x" * 40_000}  # above the inbound limit: never read whole
    assert await endpoint.fake.send_push(over_server_limit) == 413
    assert endpoint.woken == []


async def test_a_repeated_push_is_answered_200_and_wakes_at_most_once(endpoint: Endpoint) -> None:
    message = endpoint.fake.push_message("ORDER_BUYER_VIEW_ORDER_PAY")
    assert [await endpoint.fake.send_push(message) for _ in range(3)] == [200, 200, 200]
    assert endpoint.woken == ["ali"]
    assert await endpoint.fake.send_push(endpoint.fake.push_message("ORDER_BUYER_VIEW_ORDER_PAY")) == 200
    assert endpoint.woken == ["ali", "ali"], "a new message wakes again"


async def test_signed_but_malformed_or_unrelated_pushes_wake_nothing(endpoint: Endpoint) -> None:
    secret = endpoint.fake.app_secret
    not_json = {"message": "{not json"}
    assert await endpoint.post({**not_json, "_aop_signature": aop_push_signature(secret, not_json)}) == 400
    other = endpoint.fake.push_message("SYSTEM_TEST_PLATFORM")  # the console's test message
    assert await endpoint.fake.send_push(other) == 200
    assert endpoint.woken == []
    async with aiohttp.ClientSession() as s, s.post(endpoint.url.replace("/ali/", "/acme/"), data={}) as r:
        assert r.status == 404


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_a_push_makes_the_daemon_read_the_parcel_at_once_although_it_polls_hourly(tmp_path) -> None:
    ali = Fake1688Gateway("ali", cancel_min_age_s=0)
    await ali.start()
    factory: dict[str, Any] = {**ali.factory_config(), "shipment_poll_interval_s": 3600}
    harness = Harness(
        tmp_path, factories=(), sku_map={"MUG-WHT": "ali"}, config={"factories": {"ali": factory}}
    )
    try:
        async with harness as h:
            oid = h.storefront.add_order([SeedLine("MUG-WHT")])
            key = factory_order_key("shop", oid, "ali")
            async with h.app() as app:
                await app.run_once()
                assert ali.held_keys() == [key]
                listings = ali.calls.count(GET_BUYER_ORDER_LIST)
                runner = asyncio.create_task(app.run())
                # The first pass of the factory poller lists what changed, then the unpaid orders; after it,
                # the poller sleeps for an hour.
                await wait_for(
                    lambda: ali.calls.count(GET_BUYER_ORDER_LIST) >= listings + 2, "the first poll"
                )
                ali.ship(key)  # paid and sent at 1688; nothing tells relay but the push
                before = len(ali.calls)
                ali.push_url = app.push_url("ali")
                status = await ali.send_push(ali.push_message("ORDER_BUYER_VIEW_ANNOUNCE_SENDGOODS"))
                await wait_for(lambda: bool(h.storefront.fulfilments(oid)), "the parcel on the storefront")
                app.stop()
                await runner
    finally:
        await ali.close()
    assert status == 200
    assert GET_LOGISTICS_INFOS in ali.calls[before:], "the woken poller read the parcels"
    [fulfilment] = h.storefront.fulfilments(oid)
    assert fulfilment.tracking_number == ali.orders_of(key)[0].parcels[0].bill_no
