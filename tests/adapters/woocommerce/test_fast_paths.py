"""The adapter's CPU shortcuts change no answer: a record listed again unchanged is not mapped again (the
same `Order` comes back), any change is mapped afresh (same id and stamp too, even a number's type), and a
call that succeeds at once builds no retry policy (one that fails still retries as before)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import adapters.woocommerce.adapter as woo
from adapters.woocommerce import WooCommerceStorefront
from adapters.woocommerce.fake import FakeWooCommerce, load_fixture
from relay.domain.models import Malformed, Order
from relay.testing.vendor import SeedLine

from .test_woocommerce import T0, collect, flat, push_for

Make = Callable[..., WooCommerceStorefront]


@pytest.fixture
def mapped(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the records the adapter maps (`_to_record` calls), in order."""
    ids: list[str] = []
    to_record = woo._to_record

    def counting(raw: Any, test_meta: Any) -> Order | Malformed:
        ids.append(str(raw.get("id")) if isinstance(raw, dict) else "")
        return to_record(raw, test_meta)

    monkeypatch.setattr(woo, "_to_record", counting)
    return ids


def only_order(pages: list[list[Order | Malformed]]) -> Order:
    (record,) = flat(pages)
    assert isinstance(record, Order)
    return record


async def test_a_record_listed_again_unchanged_is_not_mapped_again(
    fake: FakeWooCommerce, make_adapter: Make, mapped: list[str]
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1", quantity=2), SeedLine("TEE-1")], updated_at=T0)
    adapter = make_adapter()

    first = only_order(await collect(adapter))
    again = only_order(await collect(adapter))

    assert again is first
    assert mapped == [order_id]


async def test_a_record_changed_within_its_second_is_mapped_again(
    fake: FakeWooCommerce, make_adapter: Make, mapped: list[str]
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1", quantity=2)], updated_at=T0)
    adapter = make_adapter()
    before = only_order(await collect(adapter))

    fake.edit_line(order_id, 0, 3)
    fake.touch(order_id, updated_at=T0)  # the same date_modified_gmt: only the content tells
    after = only_order(await collect(adapter))

    assert after.updated_at == before.updated_at
    assert (before.lines[0].quantity, after.lines[0].quantity) == (2, 3)
    assert mapped == [order_id, order_id]


async def test_a_number_that_only_changes_its_type_is_mapped_again(
    fake: FakeWooCommerce, make_adapter: Make, mapped: list[str]
) -> None:
    """`15` and `15.0` are equal in Python but map to different prices (`Decimal("15")` / `"15.0"`)."""
    doc = load_fixture("order.json")
    adapter = make_adapter()
    fake.add_document(doc)
    before = only_order(await collect(adapter))

    doc["line_items"][1]["price"] = 15.0
    fake.add_document(doc)
    after = only_order(await collect(adapter))

    assert (str(before.lines[1].unit_price), str(after.lines[1].unit_price)) == ("15", "15.0")
    assert after.content_hash() != before.content_hash()
    assert mapped == [str(doc["id"])] * 2


async def test_a_record_read_by_the_exact_parser_is_mapped_every_time(
    fake: FakeWooCommerce, make_adapter: Make, mapped: list[str]
) -> None:
    """A body with a run of 16 digits is parsed with `Decimal` numbers (adapters.woocommerce.client),
    which the mapping cache does not key: such a record is mapped each time, with the same answer."""
    doc = load_fixture("order.json")
    doc["billing"]["phone"] = "+49 3012345678901234"
    fake.add_document(doc)
    adapter = make_adapter()

    first = only_order(await collect(adapter))
    again = only_order(await collect(adapter))

    assert str(first.lines[0].unit_price) == "14.99" and first.shipping_address.phone
    assert again == first and again is not first
    assert mapped == [str(doc["id"])] * 2


async def test_a_malformed_record_is_not_kept(
    fake: FakeWooCommerce, make_adapter: Make, mapped: list[str]
) -> None:
    order_id = fake.add_malformed_order()
    adapter = make_adapter()

    pages = [flat(await collect(adapter)) for _ in range(2)]

    assert all(isinstance(record, Malformed) for page in pages for record in page)
    assert mapped == [order_id, order_id]


async def test_the_mapped_orders_kept_are_bounded(
    fake: FakeWooCommerce, make_adapter: Make, mapped: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(woo, "MAPPED_ORDERS", 2)
    ids = [fake.add_order([SeedLine("MUG-1")], updated_at=T0 + i) for i in range(3)]
    adapter = make_adapter()

    await collect(adapter)
    assert mapped == ids and list(adapter._mapped_orders) == ids[1:]
    latest = flat(await collect(adapter, since=woo._gmt("2026-11-02T08:53:22")))
    assert [o.external_id for o in latest] == ids[2:] and mapped == ids  # the newest is still kept


@pytest.fixture
def policies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per in-call retry policy the adapter builds."""
    built: list[int] = []
    make = woo.in_call_retries

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return make(*args, **kwargs)

    monkeypatch.setattr(woo, "in_call_retries", counting)
    return built


async def test_calls_that_succeed_at_once_build_no_retry_policy(
    fake: FakeWooCommerce, make_adapter: Make, policies: list[int]
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    adapter = make_adapter()

    await collect(adapter)
    await adapter.push_shipment(push_for(fake, order_id, unknown=False))

    assert fake.status(order_id) == "completed" and len(fake.fulfilments(order_id)) == 1
    assert policies == []


async def test_a_failed_first_attempt_counts_as_the_policys_first(
    fake: FakeWooCommerce, make_adapter: Make, policies: list[int], sleeps: list[float]
) -> None:
    """Four attempts in all, as before: the first (outside the policy) and three retries."""
    fake.fail_next(500, times=3)
    order_id = fake.add_order([SeedLine("MUG-1")])

    assert [o.external_id for o in flat(await collect(make_adapter()))] == [order_id]
    assert policies == [1] and len(sleeps) == 3 and len(fake.requests) == 4
