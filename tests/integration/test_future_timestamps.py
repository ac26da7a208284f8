"""Issue 11, item 9: one storefront order stamped in the future carried the poll cursor past every order
updated before that stamp, and they were never listed. The cursor now stays at or below relay's clock
minus `CURSOR_MARGIN_S`; each future stamp is logged once and counted on `/metrics`."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import aiohttp
from structlog.testing import capture_logs

from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

DAY = 86_400.0
CURSOR_MARGIN_S = 60.0  # relay.loops.order_poller.CURSOR_MARGIN_S, the documented margin


async def test_a_future_stamp_does_not_skip_later_orders_and_is_logged_once_and_counted(tmp_path):
    async with Harness(tmp_path) as h:
        first = h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=time.time() + DAY)
        async with h.app(settings=h.settings(admin={"listen": "127.0.0.1:0"})) as app:
            with capture_logs() as logs:
                await app.run_once()
                cursor = await app.store.get_cursor("shop")
                second = h.storefront.add_order([SeedLine("TEE-BLU-L")])  # now: before the future stamp
                await app.run_once()
                await app.run_once()
            async with aiohttp.ClientSession() as s, s.get(f"{app.admin_url}/metrics") as r:
                metrics = await r.text()
        placed = sorted(o.payload["order_id"] for o in h.factories["acme"].orders.values())
    assert placed == sorted([first, second])  # before: only the first, the second skipped for good
    assert cursor is not None and cursor <= datetime.fromtimestamp(time.time() - CURSOR_MARGIN_S, UTC)
    future = [e for e in logs if e["event"] == "future_timestamp"]
    assert len(future) == 1  # listed three times, logged once
    assert future[0]["storefront"] == "shop" and future[0]["external_id"] == first
    assert DAY - 60 < future[0]["ahead_s"] <= DAY
    assert 'relay_future_timestamps_total{storefront="shop"} 1.0' in metrics


async def test_a_cursor_already_stored_in_the_future_is_not_trusted(tmp_path):
    async with Harness(tmp_path) as h:
        first = h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=time.time() + DAY)
        async with h.app() as app:
            future = datetime.fromtimestamp(time.time() + DAY, UTC)
            await app.store.ingest("shop", [], [], future, time.time())  # as the old poller stored it
            second = h.storefront.add_order([SeedLine("TEE-BLU-L")])
            await app.run_once()
        placed = sorted(o.payload["order_id"] for o in h.factories["acme"].orders.values())
    assert placed == sorted([first, second])


async def test_a_small_skew_is_no_future_stamp(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=time.time() + CURSOR_MARGIN_S / 2)
        async with h.app() as app:
            with capture_logs() as logs:
                await app.run_once()
        assert h.factories["acme"].held == 1
    assert not [e for e in logs if e["event"] == "future_timestamp"]
