"""A Shopify shop under throttling, end to end: the daemon's pushes wait for the platform's schedule."""

from __future__ import annotations

from pathlib import Path

from adapters.shopify.fake import FakeShopify
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine

ORDERS = 6


async def test_throttled_shop_completes_every_push_without_failing_orders(tmp_path: Path) -> None:
    """Issue 11 item 10: a throttled answer is the platform's schedule, not a failed attempt. The bucket
    refills at 1 point/s, so every push is throttled for minutes, far past the storefront's three-attempt
    retry schedule; every order still ends completed, none failed, one fulfilment each."""
    clock = ManualClock()
    shop = FakeShopify(page_size=10, bucket_size=1000.0, restore_rate=1.0, clock=clock)
    config = {"storefronts": {"shop": {"adapter": "shopify", "retry": {"schedule_s": [0, 5, 30]}}}}
    harness = Harness(tmp_path, config=config)
    harness.storefront = shop
    async with harness as h:
        ids = [shop.add_order([SeedLine("TEE-RED-M")], updated_at=clock.now) for _ in range(ORDERS)]
        async with h.app(clock=clock) as app:
            await app.run_once()  # listed (the bucket is full), routed, sent to the factory
            await h.factories["acme"].ship_all()
            shop.set_bucket(0.0)  # another app on the shop has just spent the bucket
            for _ in range(200):
                await app.run_once()
                states = [(await app.store.find_order(i + 1)).order.state for i in range(ORDERS)]
                if all(state == "completed" for state in states) or "failed" in states:
                    break
                clock.advance(60)
            views = [await app.store.find_order(i + 1) for i in range(ORDERS)]
        assert states == ["completed"] * ORDERS
        # Throttled passes spent no attempt: each push counts exactly the one that went through.
        assert [[s.push_attempts for s in view.shipments] for view in views] == [[1]] * ORDERS
        assert [len(shop.fulfilments(order)) for order in ids] == [1] * ORDERS
        assert shop.throttled > 0  # the shop did throttle
