"""The whole loop through the daemon with a 1688 factory: storefront order -> one 1688 order (looked up by
`outOrderId` after a lost answer) -> two parcels polled -> two fulfilments on the storefront with the right
lines. Runs the real adapter against its fake gateway, found through the `relay.fakes` entry point."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest

from adapters.alibaba1688.fake import Fake1688Gateway
from relay.demo import run_demo
from relay.domain.models import factory_order_key
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


@pytest.fixture
async def ali() -> AsyncIterator[Fake1688Gateway]:
    fake = Fake1688Gateway("ali", cancel_min_age_s=0)
    await fake.start()
    yield fake
    await fake.close()


async def test_one_1688_order_then_two_parcels_become_two_fulfilments(tmp_path, ali: Fake1688Gateway) -> None:
    harness = Harness(
        tmp_path,
        factories=(),
        sku_map={"MUG-WHT": "ali", "CAP-BLK": "ali"},
        config={"factories": {"ali": ali.factory_config()}},
    )
    async with harness as h:
        oid = h.storefront.add_order([SeedLine("MUG-WHT", quantity=2), SeedLine("CAP-BLK")])
        key = factory_order_key("shop", oid, "ali")
        ali.lose_answer_next("reset")  # 1688 makes the order, relay never hears back
        async with h.app() as app:
            await app.run_once()
            await app.run_once()
            assert ali.held_keys() == [key], "exactly one 1688 order per factory order"
            placed = (await app.store.find_order(1)).order.state
            ali.ship(key, parcels=[[0], [1]])
            await app.run_once()
            await app.run_once()  # a second poll from the stored cursor changes nothing
            view = await app.store.find_order(1)
            cursor = await app.store.get_factory_cursor("ali")
    assert placed == "placed"
    assert view.order.state == "completed"
    assert cursor is not None
    fulfilments = h.storefront.fulfilments(oid)
    line_ids = h.storefront.line_ids(oid)
    assert sorted((f.line_ids, f.quantities) for f in fulfilments) == sorted(
        [((line_ids[0],), (2,)), ((line_ids[1],), (1,))]
    )
    assert {f.tracking_number for f in fulfilments} == {
        p.bill_no for o in ali.orders.values() for p in o.parcels
    }
    assert ali.creates[key] == 1


async def test_relay_demo_runs_the_whole_loop_through_the_1688_adapter() -> None:
    out = io.StringIO()
    status = await run_demo(8, factory="alibaba1688", give_up_after_s=60, out=out)
    assert status == 0, out.getvalue()
    assert "factories acme and bolt (alibaba1688)" in out.getvalue()


async def test_a_cancellation_after_payment_flags_the_order_refund_required_with_the_1688_order(
    tmp_path, ali: Fake1688Gateway
) -> None:
    harness = Harness(
        tmp_path,
        factories=(),
        sku_map={"MUG-WHT": "ali"},
        config={"factories": {"ali": ali.factory_config()}},
    )
    async with harness as h:
        oid = h.storefront.add_order([SeedLine("MUG-WHT")])
        key = factory_order_key("shop", oid, "ali")
        async with h.app() as app:
            await app.run_once()
            ali.mark_paid(key)
            h.storefront.cancel(oid)
            await app.run_once()
            await app.run_once()
            view = await app.store.find_order(1)
    assert not ali.is_cancelled(key), "a paid 1688 order cannot be cancelled, only refunded"
    trade_id = ali.orders_of(key)[0].order_id
    assert view.order.attention_reason == "refund_required"
    assert trade_id in (view.order.attention_detail or "")
