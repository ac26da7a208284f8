"""Completions that come together share one `POST orders/batch`; alone, or on a store without batches, each
order gets its `PUT` (adapters.woocommerce.completions)."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable

from adapters.woocommerce import WooCommerceStorefront
from adapters.woocommerce.completions import BATCH_SIZE
from adapters.woocommerce.fake import FakeWooCommerce
from relay.exceptions import FatalAdapterError
from relay.testing.vendor import SeedLine

from .conftest import make_context
from .test_woocommerce import push_for

Make = Callable[..., WooCommerceStorefront]
BATCH = ("POST", "/wp-json/wc/v3/orders/batch")


def writes(fake: FakeWooCommerce) -> Counter[tuple[str, str]]:
    """Order writes by (method, route): `PUT /orders/{id}` counted as one route."""
    counted: Counter[tuple[str, str]] = Counter()
    for method, path in fake.requests:
        if method in ("PUT", "POST") and "/notes" not in path:
            counted[(method, path if path.endswith("/batch") else "/wp-json/wc/v3/orders/{id}")] += 1
    return counted


async def push_all(
    adapter: WooCommerceStorefront, fake: FakeWooCommerce, order_ids: list[str]
) -> list[object]:
    """Every order's last parcel at once (first attempts: no look before writing)."""
    return await asyncio.gather(
        *(adapter.push_shipment(push_for(fake, order_id, unknown=False)) for order_id in order_ids),
        return_exceptions=True,
    )


async def test_completions_that_come_together_share_a_batch_request(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    order_ids = [fake.add_order([SeedLine("MUG-1")]) for _ in range(BATCH_SIZE + 5)]
    adapter = make_adapter()

    outcomes = await push_all(adapter, fake, order_ids)

    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert all(fake.status(order_id) == "completed" for order_id in order_ids)
    assert all(len(fake.fulfilments(order_id)) == 1 for order_id in order_ids)
    counted = writes(fake)
    # Completions that come while a request is out go together, BATCH_SIZE at a time.
    assert counted[BATCH] >= 1
    assert counted[BATCH] + counted[("PUT", "/wp-json/wc/v3/orders/{id}")] < len(order_ids) // 2


async def test_a_completion_alone_is_one_put(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])

    await push_all(make_adapter(), fake, [order_id])

    assert fake.status(order_id) == "completed"
    assert writes(fake) == Counter({("PUT", "/wp-json/wc/v3/orders/{id}"): 1})


async def test_a_store_without_the_batch_route_gets_puts_from_then_on(make_adapter: Make) -> None:
    fake = FakeWooCommerce(page_size=3, batch=False)
    await fake.start()
    try:
        options = WooCommerceStorefront.Options.model_validate(fake.adapter_options())
        adapter = WooCommerceStorefront("mywoo", options, make_context([], total_timeout_s=5))
        try:
            first = [fake.add_order([SeedLine("MUG-1")]) for _ in range(6)]
            await push_all(adapter, fake, first)
            tried = writes(fake)[BATCH]
            then = [fake.add_order([SeedLine("MUG-1")]) for _ in range(6)]
            outcomes = await push_all(adapter, fake, then)
        finally:
            await adapter.aclose()
    finally:
        await fake.close()

    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert all(fake.status(order_id) == "completed" for order_id in first + then)
    assert tried >= 1  # it asked once (404 rest_no_route) ...
    assert writes(fake)[BATCH] == tried  # ... and never again
    assert writes(fake)[("PUT", "/wp-json/wc/v3/orders/{id}")] == 12


async def test_an_items_error_goes_to_its_order_alone(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_ids = [fake.add_order([SeedLine("MUG-1")]) for _ in range(4)]
    adapter = make_adapter()
    gone = order_ids[2]

    async def complete_all() -> list[object]:
        return await asyncio.gather(
            *(
                adapter._completions.complete(order_id)
                for order_id in [*order_ids[:2], "999999", *order_ids[3:]]
            ),
            return_exceptions=True,
        )

    outcomes = await complete_all()

    assert [isinstance(o, BaseException) for o in outcomes] == [False, False, True, False]
    assert "woocommerce_rest_shop_order_invalid_id" in str(outcomes[2])
    assert writes(fake)[BATCH] == 1
    assert fake.status(gone) != "completed"
    assert all(fake.status(o) == "completed" for o in order_ids if o != gone)


async def test_an_items_error_is_what_a_put_of_that_order_raises(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    """Through the adapter, an item's 400 is the same fatal error a refused `PUT` is: no in-call retry."""
    order_ids = [fake.add_order([SeedLine("MUG-1")]) for _ in range(3)]
    adapter = make_adapter()

    async def complete(order_id: str) -> None:
        await adapter._call(lambda: adapter._complete(order_id, {}))

    outcomes = await asyncio.gather(
        *(complete(o) for o in [order_ids[0], "999999", order_ids[2]]), return_exceptions=True
    )

    assert isinstance(outcomes[1], FatalAdapterError) and outcomes[1].status == 400
    assert outcomes[0] is None and outcomes[2] is None


async def test_a_failed_batch_request_fails_every_caller_and_each_retries(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    order_ids = [fake.add_order([SeedLine("MUG-1")]) for _ in range(5)]
    adapter = make_adapter()
    fake.fail_next(503)
    rest = [asyncio.ensure_future(adapter._completions.complete(o)) for o in order_ids]  # one batch

    outcomes = await asyncio.gather(*rest, return_exceptions=True)

    assert all(isinstance(o, BaseException) and "503" in str(o) for o in outcomes), outcomes
    # The adapter's in-call retries complete them (setting a status twice is harmless).
    assert writes(fake) == Counter({BATCH: 1})
    await asyncio.gather(*(adapter._call(functools.partial(adapter._complete, o, {})) for o in order_ids))
    assert all(fake.status(o) == "completed" for o in order_ids)


async def test_an_answer_over_the_response_cap_halves_the_batch_and_the_orders_get_puts() -> None:
    fake = FakeWooCommerce(page_size=3, meta_padding=20_000)
    await fake.start()
    try:
        options = WooCommerceStorefront.Options.model_validate(fake.adapter_options())
        adapter = WooCommerceStorefront(
            "mywoo", options, make_context([], total_timeout_s=5, max_response_bytes=64 * 1024)
        )
        try:
            order_ids = [fake.add_order([SeedLine("MUG-1")]) for _ in range(10)]
            outcomes = await push_all(adapter, fake, order_ids)
            size = adapter._completions.batch_size
        finally:
            await adapter.aclose()
    finally:
        await fake.close()

    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert all(fake.status(o) == "completed" for o in order_ids)
    assert size < 9  # 9 orders of ~20 kB overflowed a 64 kB cap


async def test_a_cancelled_caller_leaves_the_others_waiting_for_their_outcome(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    order_ids = [fake.add_order([SeedLine("MUG-1")]) for _ in range(4)]
    adapter = make_adapter()
    calls = [asyncio.ensure_future(adapter._completions.complete(o)) for o in order_ids]
    await asyncio.sleep(0)
    calls[2].cancel()

    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert [o for i, o in enumerate(outcomes) if i != 2] == [None, None, None]


async def test_a_batch_refused_as_a_whole_sends_those_orders_puts_and_no_more_batches(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    """A firewall that blocks the batch route (403): the orders are completed by `PUT`s, at once."""
    order_ids = [fake.add_order([SeedLine("MUG-1")]) for _ in range(5)]
    adapter = make_adapter()
    fake.fail_next(403)

    outcomes = await asyncio.gather(
        *(adapter._completions.complete(o) for o in order_ids), return_exceptions=True
    )

    assert outcomes == [None] * 5
    assert all(fake.status(o) == "completed" for o in order_ids)
    assert writes(fake) == Counter({BATCH: 1, ("PUT", "/wp-json/wc/v3/orders/{id}"): 5})
    assert adapter._completions.batch_size == 1
