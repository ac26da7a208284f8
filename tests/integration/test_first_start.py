"""Issue 11, item 8: the first start re-ordered the shop's whole history. With no cursor the first poll
now starts at the storefront's `start_from` ("now" by default, or a date), orders already fulfilled on the
storefront are recorded and never routed, and `relay check` and the log say what the first poll picks up."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from relay.cli import main
from relay.exceptions import ConfigurationError
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

DAY = 86_400.0


async def test_the_first_start_does_not_reorder_the_shops_history(tmp_path):
    async with Harness(tmp_path) as h:
        old = h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=time.time() - 30 * DAY)
        new = h.storefront.add_order([SeedLine("TEE-BLU-L")])
        async with h.app() as app:
            with capture_logs() as logs:
                await app.run_once()
            assert await app.store.find_order_id("shop", old) is None
            cursor = await app.store.get_cursor("shop")
        placed = [o.payload["order_id"] for o in h.factories["acme"].orders.values()]
    assert placed == [new]  # before: both, the 30-day-old order re-ordered from the factory
    assert cursor is not None and cursor > datetime.fromtimestamp(time.time() - DAY, UTC)
    [first] = [e for e in logs if e["event"] == "first_poll"]
    assert first["storefront"] == "shop" and first["start_from"] == "now"


async def test_start_from_a_date_lists_orders_updated_since_that_date(tmp_path):
    start = datetime.fromtimestamp(time.time() - 10 * DAY, UTC).date().isoformat()
    async with Harness(tmp_path, config={"storefronts": {"shop": {"start_from": start}}}) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")], updated_at=time.time() - 30 * DAY)
        recent = h.storefront.add_order([SeedLine("TEE-BLU-L")], updated_at=time.time() - 5 * DAY)
        async with h.app() as app:
            await app.run_once()
            await app.run_once()  # later polls never read before the start point either
        placed = [o.payload["order_id"] for o in h.factories["acme"].orders.values()]
    assert placed == [recent]


async def test_an_order_already_fulfilled_on_the_storefront_is_recorded_never_routed(tmp_path):
    async with Harness(tmp_path) as h:
        done = h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.storefront.mark_fulfilled(done)
        async with h.app() as app:
            await app.run_once()
            order_id = await app.store.find_order_id("shop", done)
            assert order_id is not None
            view = await app.store.find_order(order_id)
        assert h.factories["acme"].orders == {}
    assert view is not None and view.order.state == "completed" and view.factory_orders == ()
    assert [e.kind for e in view.events] == ["already_fulfilled"]


async def test_an_order_fulfilled_by_hand_while_held_stays_held_with_a_reason(tmp_path):
    async with Harness(tmp_path) as h:
        unpaid = h.storefront.add_order([SeedLine("TEE-RED-M")], paid=False)
        async with h.app() as app:
            await app.run_once()
            h.storefront.mark_paid(unpaid)
            h.storefront.mark_fulfilled(unpaid, updated_at=time.time() + 1)
            await app.run_once()
            order_id = await app.store.find_order_id("shop", unpaid)
            assert order_id is not None
            view = await app.store.find_order(order_id)
        assert h.factories["acme"].orders == {}
    assert view is not None and (view.order.state, view.order.attention_reason) == (
        "held",
        "already_fulfilled",
    )


async def test_check_prints_what_the_first_poll_picks_up(tmp_path, capsys):
    async with Harness(tmp_path, config={"storefronts": {"shop": {"start_from": "2026-11-01"}}}) as h:
        path = h.write_config(tmp_path / "relay.toml")
        assert main(["-c", str(path), "check"]) == 0
    out = capsys.readouterr().out
    assert (
        "storefront shop: the first poll (no stored cursor) lists orders updated since 2026-11-01T00:00:00Z"
        in out
    )


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", ""])
async def test_a_bad_start_from_is_a_configuration_error(tmp_path, value):
    async with Harness(tmp_path, config={"storefronts": {"shop": {"start_from": value}}}) as h:
        with pytest.raises(ConfigurationError) as caught:
            h.settings()
    problems = dict(caught.value.problems)
    assert "ISO 8601" in problems["storefronts.shop.start_from"]
