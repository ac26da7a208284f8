"""Fixtures: a running FakeWooCommerce and adapters pointed at it, with a recording no-op sleep."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import structlog

import relay.outbound.session
from adapters.woocommerce import WooCommerceStorefront
from adapters.woocommerce.fake import FakeWooCommerce
from relay.config import EgressSettings
from relay.contracts import AdapterContext


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def context(sleeps: list[float]) -> AdapterContext:
    return make_context(sleeps)


def make_context(
    sleeps: list[float], total_timeout_s: float = 2, max_response_bytes: int = 1024 * 1024
) -> AdapterContext:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    egress = EgressSettings(
        allow_plain_http=True,
        allow_private_addresses=True,
        total_timeout_s=total_timeout_s,
        max_response_bytes=max_response_bytes,
    )
    return AdapterContext(
        new_session=functools.partial(relay.outbound.session.new_session, egress),
        clock=time.time,
        sleep=sleep,
        log=structlog.get_logger(),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeWooCommerce]:
    server = FakeWooCommerce(page_size=3)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def make_adapter(
    fake: FakeWooCommerce, context: AdapterContext
) -> AsyncIterator[Callable[..., WooCommerceStorefront]]:
    made: list[WooCommerceStorefront] = []

    def make(ctx: AdapterContext | None = None, **overrides: Any) -> WooCommerceStorefront:
        options = WooCommerceStorefront.Options.model_validate(fake.adapter_options() | overrides)
        adapter = WooCommerceStorefront("mywoo", options, ctx or context)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.aclose()
