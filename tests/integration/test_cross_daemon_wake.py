"""Several daemons on one PostgreSQL database wake each other (issue 16): work one daemon commits is done
at once by whichever daemon is free, not when that daemon's timer next fires.

Daemon B runs its loops with every timer set to hours; daemon A only takes callbacks (its loops never run).
Without the wake-up A's commit sends, B would push nothing before the test gave up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from adapters.alibaba1688.client import GET_BUYER_ORDER_LIST, GET_LOGISTICS_INFOS
from adapters.alibaba1688.fake import Fake1688Gateway
from relay.app import App
from relay.domain.models import factory_order_key
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

WAIT_S = 5.0  # a bound for failures only: each step takes milliseconds
HOURS = 3600.0


async def until(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Return once `check()` holds; fail (TimeoutError) if it does not within `WAIT_S`."""

    async def poll() -> None:
        while not await _holds(check()):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT_S)


async def _holds(answer: bool | Awaitable[bool]) -> bool:
    return answer if isinstance(answer, bool) else await answer


def sleep_for_hours(app: App) -> None:
    """Every loop of `app` runs its first pass at start, then only when woken (or hours later)."""
    for loop in [*app.pollers, app.router, app.forwarder, *app.factory_pollers, app.shipper]:
        loop.interval = HOURS


async def test_a_parcel_reported_to_one_daemon_is_pushed_at_once_by_another(
    tmp_path: Path, postgres_url: str
) -> None:
    async with Harness(tmp_path, factories=("acme",), sku_map={"TEE-RED-M": "acme"}) as h:
        h.database = postgres_url
        acme = h.factories["acme"]
        settings = h.settings(storefronts={"shop": {"poll_interval_s": HOURS}})
        async with h.app(settings=settings) as a, h.app(settings=settings) as b:
            acme.callback_url = a.callback_url("acme")  # parcels are reported to A
            order = h.storefront.add_order([SeedLine("TEE-RED-M")])
            sleep_for_hours(b)
            running = asyncio.create_task(b.run())
            try:
                # B's first passes: it polls, routes and places the order (its shipper found nothing yet).
                await until(lambda: acme.held == 1)
                order_id = await b.store.find_order_id("shop", order)
                assert order_id is not None

                async def placed() -> bool:  # B committed the factory's answer
                    view = await b.store.find_order(order_id)
                    return view is not None and view.order.state == "placed"

                await until(placed)
                assert await acme.ship_all() == 1  # A records the parcel and its push: `ship:shop`
                assert acme.callbacks_sent == {200: 1}
                await until(lambda: len(h.storefront.fulfilments(order)) == 1)  # B's shipper pushed it
            finally:
                b.stop()
                await asyncio.wait_for(running, WAIT_S)
            view = await a.store.find_order(order_id)
        assert view is not None and view.order.state == "completed"


async def test_a_push_message_to_one_daemon_makes_the_daemon_polling_the_factory_look_at_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """1688 pushes go to A; B holds the factory's poller lease (A's loops never run) and polls hourly."""
    ali = Fake1688Gateway("ali", cancel_min_age_s=0)
    await ali.start()
    factory = {**ali.factory_config(), "shipment_poll_interval_s": HOURS}
    harness = Harness(
        tmp_path, factories=(), sku_map={"MUG-WHT": "ali"}, config={"factories": {"ali": factory}}
    )
    try:
        async with harness as h:
            h.database = postgres_url
            settings = h.settings(storefronts={"shop": {"poll_interval_s": HOURS}})
            async with h.app(settings=settings) as a, h.app(settings=settings) as b:
                order = h.storefront.add_order([SeedLine("MUG-WHT")])
                key = factory_order_key("shop", order, "ali")
                sleep_for_hours(b)
                running = asyncio.create_task(b.run())
                try:
                    # B's first passes: it places the order, and its factory poller lists what changed and
                    # the unpaid orders once, then sleeps for hours.
                    await until(
                        lambda: ali.held_keys() == [key] and ali.calls.count(GET_BUYER_ORDER_LIST) >= 2
                    )
                    ali.ship(key)  # paid and sent at 1688: nothing tells relay but the push
                    before = len(ali.calls)
                    ali.push_url = a.push_url("ali")
                    assert await ali.send_push(ali.push_message("ORDER_BUYER_VIEW_ANNOUNCE_SENDGOODS")) == 200
                    await until(lambda: len(h.storefront.fulfilments(order)) == 1)
                finally:
                    b.stop()
                    await asyncio.wait_for(running, WAIT_S)
    finally:
        await ali.close()
    assert GET_LOGISTICS_INFOS in ali.calls[before:], "B's woken poller read the parcels"


async def test_an_order_an_operator_releases_elsewhere_is_placed_at_once_by_the_daemon(
    tmp_path: Path, postgres_url: str
) -> None:
    """`relay release` runs in a process of its own (here: A's store): the daemon's router hears it."""
    async with Harness(tmp_path, factories=("acme",), sku_map={"TEE-RED-M": "acme"}) as h:
        h.database = postgres_url
        acme = h.factories["acme"]
        settings = h.settings(storefronts={"shop": {"poll_interval_s": HOURS, "auto_place": False}})
        async with h.app(settings=settings) as a, h.app(settings=settings) as b:
            order = h.storefront.add_order([SeedLine("TEE-RED-M")])
            sleep_for_hours(b)
            running = asyncio.create_task(b.run())
            try:
                order_id = None

                async def held() -> bool:  # B's router held it (auto_place is off), then slept
                    nonlocal order_id
                    order_id = await a.store.find_order_id("shop", order)
                    view = None if order_id is None else await a.store.find_order(order_id)
                    return view is not None and view.order.state == "held"

                await until(held)
                assert order_id is not None
                assert await a.store.release_order(order_id, time.time())  # `route`
                await until(lambda: acme.held == 1)
            finally:
                b.stop()
                await asyncio.wait_for(running, WAIT_S)
