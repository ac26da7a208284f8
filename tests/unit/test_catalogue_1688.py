"""Issue 13, item 1: the 1688 adapter takes offerId:specId from the SKU catalogue (`FactoryOrder.factory_skus`)
when it names one, and from its `skus` map otherwise; against the fake 1688 gateway over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import structlog

from adapters.alibaba1688 import Alibaba1688Factory
from adapters.alibaba1688.fake import Fake1688Gateway
from relay.contracts import AdapterContext, NeedsAttention
from relay.domain.models import Address, FactoryOrder, OrderLine
from relay.testing.contract import SessionTracker, loopback_egress

ADDRESS = Address(
    name="张三",
    line1="科技园南路 1 号",
    city="深圳市",
    region="广东省",
    postal_code="518000",
    country_code="CN",
    phone="+86 138 0013 8000",
)


@pytest.fixture
async def gateway() -> AsyncIterator[Fake1688Gateway]:
    fake = Fake1688Gateway()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def adapter(gateway: Fake1688Gateway) -> AsyncIterator[Alibaba1688Factory]:
    tracker = SessionTracker(loopback_egress(2.0), max_total_timeout_s=2.0)
    options: dict[str, Any] = {**gateway.adapter_options(), "skus": {"MUG-WHT": "600000000001:aaaa"}}
    context = AdapterContext(
        new_session=tracker, clock=gateway.clock, sleep=_no_sleep, log=structlog.get_logger()
    )
    made = Alibaba1688Factory("ali", Alibaba1688Factory.Options.model_validate(options), context)  # type: ignore[arg-type]
    yield made
    await made.aclose()
    await tracker.aclose()


async def _no_sleep(_: float) -> None:
    return None


def factory_order(key: str, factory_skus: dict[str, str]) -> FactoryOrder:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    return FactoryOrder(
        key=key,
        factory="ali",
        storefront="shop",
        order_id="1001",
        order_number="#1001",
        created_at=when,
        currency="CNY",
        shipping_address=ADDRESS,
        lines=(
            OrderLine(line_id="L1", sku="MUG-WHT", quantity=2, unit_price=Decimal(30)),
            OrderLine(line_id="L2", sku="NEW-HAT", quantity=1, unit_price=Decimal(50)),
        ),
        factory_skus=factory_skus,
    )


async def test_offer_and_spec_come_from_the_catalogue_first_and_the_skus_map_otherwise(gateway, adapter):
    key = "fo_" + "1" * 32
    await adapter.submit(factory_order(key, {"L2": "600000000099:bbbb"}))
    (made,) = gateway.orders_of(key)
    assert sorted((i.offer_id, i.spec_id, i.quantity) for i in made.items) == [
        ("600000000001", "aaaa", 2),  # from the adapter's `skus` map
        ("600000000099", "bbbb", 1),  # from the catalogue
    ]


async def test_a_sku_in_neither_is_held_for_a_person_and_nothing_is_made(gateway, adapter):
    key = "fo_" + "2" * 32
    with pytest.raises(NeedsAttention, match="NEW-HAT") as err:
        await adapter.submit(factory_order(key, {"L2": "not-an-offer"}))
    assert err.value.reason == "unknown_sku"
    assert gateway.orders_of(key) == []
