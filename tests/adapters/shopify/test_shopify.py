"""Shopify-specific behaviour: throttle math, cost limits, mapping, fulfilment details, options."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.shopify import ShopifyStorefront
from adapters.shopify.adapter import (
    API_VERSION,
    FULFILLMENT_ORDERS_QUERY,
    FULFILLMENT_ORDERS_SHAPES,
    FULFILLMENTS_QUERY,
    FULFILLMENTS_SHAPES,
    MAX_QUERY_COST,
    ORDER_LINES_FIRST,
    ORDER_LINES_QUERY,
    ORDERS_QUERY,
    QUERY_COST_TARGET,
    THROTTLE_ATTEMPTS,
    ShopifyOptions,
    fulfillment_orders_query_cost,
    fulfillments_query_cost,
    lines_per_order,
    listing_shape,
    order_from_node,
    order_lines_query_cost,
    orders_query_cost,
    relay_error,
)
from adapters.shopify.client import ShopifyConnectionError, ShopifyGraphQLError, throttle_wait
from adapters.shopify.fake import FakeShopify, parse_operation, requested_cost
from relay.contracts import AdapterContext
from relay.domain.models import Malformed, Order, ShipmentLine, ShipmentPush
from relay.exceptions import AuthError, FatalAdapterError, RetriableAdapterError
from relay.testing.contract import (
    RecordingSleep,
    SessionTracker,
    drain,
    loopback_egress,
    make_context,
    orders_only,
)
from relay.testing.vendor import SeedLine

T0 = 1_790_000_000


def fixture(name: str) -> Any:
    return json.loads((resources.files("adapters.shopify") / "fixtures" / name).read_text("utf-8"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeShopify]:
    fake = FakeShopify()
    await fake.start()
    yield fake
    await fake.close()


async def make_adapter(fake: FakeShopify, context: AdapterContext, **options: Any) -> ShopifyStorefront:
    return ShopifyStorefront("shop", ShopifyOptions.model_validate(fake.adapter_options() | options), context)


@pytest.fixture
async def adapter(fake: FakeShopify, adapter_context: AdapterContext) -> AsyncIterator[ShopifyStorefront]:
    adapter = await make_adapter(fake, adapter_context)
    yield adapter
    await adapter.aclose()


def push_for(
    fake: FakeShopify, order_id: str, tracking: str, lines: list[tuple[int, int]], **kw: Any
) -> ShipmentPush:
    line_ids = fake.line_ids(order_id)
    return ShipmentPush(
        key=f"sp_{tracking}",
        storefront="shop",
        order_id=order_id,
        order_number="#1001",
        carrier=kw.pop("carrier", "DHL Express"),
        tracking_number=tracking,
        lines=tuple(ShipmentLine(line_id=line_ids[i], quantity=q) for i, q in lines),
        order_fully_shipped=False,
        **kw,
    )


# --- throttle math -------------------------------------------------------------------------------


def test_throttle_wait_is_the_missing_points_over_the_restore_rate() -> None:
    cost = fixture("throttled.json")["extensions"]["cost"]
    assert throttle_wait(cost) == (752 - 552) / 100.0


@pytest.mark.parametrize(
    ("cost", "wait"),
    [
        ({"requestedQueryCost": 100, "throttleStatus": {"currentlyAvailable": 150, "restoreRate": 50}}, 0.0),
        ({"requestedQueryCost": 101, "throttleStatus": {"currentlyAvailable": 0, "restoreRate": 300}}, 0.337),
        ({"requestedQueryCost": 100}, 1.0),
        ({"requestedQueryCost": 100, "throttleStatus": {"currentlyAvailable": 0, "restoreRate": 0}}, 1.0),
        ({}, 1.0),
    ],
)
def test_throttle_wait_rounds_up_and_survives_missing_data(cost: dict[str, Any], wait: float) -> None:
    assert throttle_wait(cost) == wait


async def test_empty_bucket_waits_exactly_until_it_refills() -> None:
    """A real leaky bucket: the adapter's sleep advances the fake's clock."""
    now = [0.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    fake = FakeShopify(bucket_size=1000.0, restore_rate=50.0, clock=lambda: now[0])
    await fake.start()
    sessions = SessionTracker(loopback_egress())
    adapter = await make_adapter(fake, make_context(sleep, sessions))
    try:
        order = fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.set_bucket(100.0)
        assert [o.external_id for o in await drain(adapter, None)] == [order]
        variables = {"first": adapter.page_size, "lineFirst": adapter.lines_per_order}
        cost = sum(requested_cost(f) for f in parse_operation(ORDERS_QUERY, variables)[1])
        assert sleeps == [(cost - 100) / 50.0]
    finally:
        await adapter.aclose()
        await fake.close()
        await sessions.aclose()


async def test_persistent_throttling_gives_up_retriable_with_the_wait(
    adapter: ShopifyStorefront, fake: FakeShopify, recording_sleep: RecordingSleep
) -> None:
    fake.fail_next(429, times=100, retry_after=3.0)
    with pytest.raises(RetriableAdapterError) as caught:
        await drain(adapter, None)
    assert caught.value.retry_after == 3.0
    assert len(fake.requests) == THROTTLE_ATTEMPTS
    assert recording_sleep.calls == [3.0] * (THROTTLE_ATTEMPTS - 1)


async def test_plain_http_429_honours_retry_after_else_the_throttle_status(
    adapter: ShopifyStorefront, fake: FakeShopify, recording_sleep: RecordingSleep
) -> None:
    order = fake.add_order([SeedLine(sku="S")], updated_at=T0)
    fake.fail_next(429, retry_after=7, plain_http=True)
    fake.fail_next(429, plain_http=True)  # no Retry-After: the body's cost says cost / restore rate
    assert [o.external_id for o in await drain(adapter, None)] == [order]
    variables = {"first": adapter.page_size, "lineFirst": adapter.lines_per_order}
    cost = sum(requested_cost(f) for f in parse_operation(ORDERS_QUERY, variables)[1])
    assert recording_sleep.calls == [7.0, cost / fake.restore_rate]


@pytest.mark.parametrize("plain_http", [False, True])
async def test_long_waits_are_left_to_the_core(
    adapter: ShopifyStorefront, fake: FakeShopify, recording_sleep: RecordingSleep, plain_http: bool
) -> None:
    fake.fail_next(429, retry_after=600, plain_http=plain_http)
    with pytest.raises(RetriableAdapterError) as caught:
        await drain(adapter, None)
    assert caught.value.retry_after == 600
    assert recording_sleep.calls == []


# --- query cost ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", range(1, 51))
def test_default_query_shape_fits_the_single_query_cap(page_size: int) -> None:
    variables = {"first": page_size, "lineFirst": lines_per_order(page_size)}
    assert sum(requested_cost(f) for f in parse_operation(ORDERS_QUERY, variables)[1]) <= MAX_QUERY_COST


async def test_max_cost_exceeded_shrinks_the_page(adapter_context: AdapterContext) -> None:
    fake = FakeShopify(page_size=20, max_query_cost=150)
    await fake.start()
    adapter = await make_adapter(fake, adapter_context)
    try:
        ids = [fake.add_order([SeedLine(sku="S")], updated_at=T0 + i) for i in range(12)]
        assert [o.external_id for o in await drain(adapter, None)] == ids
        assert adapter.page_size < 20
        assert fake.operations[-1][1]["first"] == adapter.page_size
    finally:
        await adapter.aclose()
        await fake.close()


async def test_long_orders_are_completed_with_follow_up_queries(adapter_context: AdapterContext) -> None:
    fake = FakeShopify(page_size=50)
    await fake.start()
    adapter = await make_adapter(fake, adapter_context)
    try:
        assert (adapter.page_size, adapter.lines_per_order) == (20, 1)  # 50 would not fit QUERY_COST_TARGET
        order = fake.add_order([SeedLine(sku=f"SKU-{i}") for i in range(5)], updated_at=T0)
        [mapped] = await drain(adapter, None)
        assert isinstance(mapped, Order)
        assert [line.line_id for line in mapped.lines] == fake.line_ids(order)
        assert [name for name, _ in fake.operations] == ["orders", "order"]  # one follow-up of 50
    finally:
        await adapter.aclose()
        await fake.close()


@pytest.mark.parametrize("page_size", [1, 3, 10, 20, 50])
async def test_every_query_requests_well_under_the_bucket(
    adapter_context: AdapterContext, page_size: int
) -> None:
    """Issue 11 item 10: listing pages requested ~900 of 1000 points and the fulfillment-order query ~530.
    Every query the adapter sends now requests at most QUERY_COST_TARGET (a quarter of the bucket),
    by the fake's cost calculation, and the adapter's own cost model agrees with it exactly."""
    fake = FakeShopify(page_size=page_size)
    await fake.start()
    adapter = await make_adapter(fake, adapter_context)
    try:
        long_order = fake.add_order([SeedLine(sku=f"SKU-{i}", quantity=2) for i in range(60)], updated_at=T0)
        for i in range(25):
            fake.add_order([SeedLine(sku="S")], updated_at=T0 + 1 + i)
        assert len(await drain(adapter, None)) == 26
        await adapter.push_shipment(push_for(fake, long_order, "TRK-1", [(0, 1), (59, 2)]))
        await adapter.push_shipment(
            push_for(fake, long_order, "TRK-1", [(0, 1), (59, 2)])
        )  # found, not redone
        assert {name for names, _ in fake.costs for name in names} == {
            "orders",
            "order",
            "fulfillmentCreate",
        }
        assert max(cost for _, cost in fake.costs) <= QUERY_COST_TARGET
        first, lines = listing_shape(page_size)
        assert fake.costs[0] == (["orders"], orders_query_cost(first, lines))
        variables = [v for name, v in fake.operations if name == "order" and "trackingFirst" in v]
        assert variables and {
            requested_cost(f) for v in variables for f in parse_operation(FULFILLMENTS_QUERY, v)[1]
        } == {fulfillments_query_cost(*FULFILLMENTS_SHAPES[0])}
        shape = dict(zip(("first", "lineFirst"), FULFILLMENT_ORDERS_SHAPES[0], strict=True))
        assert requested_cost(parse_operation(FULFILLMENT_ORDERS_QUERY, shape)[1][0]) == (
            fulfillment_orders_query_cost(*FULFILLMENT_ORDERS_SHAPES[0])
        )
        assert order_lines_query_cost(ORDER_LINES_FIRST) == requested_cost(
            parse_operation(ORDER_LINES_QUERY, {"first": ORDER_LINES_FIRST})[1][0]
        )
    finally:
        await adapter.aclose()
        await fake.close()


async def test_a_query_costing_more_than_the_bucket_shrinks_instead_of_waiting_forever(
    adapter_context: AdapterContext, recording_sleep: RecordingSleep
) -> None:
    fake = FakeShopify(page_size=10, bucket_size=100.0, restore_rate=10.0)
    await fake.start()
    adapter = await make_adapter(fake, adapter_context)
    try:
        ids = [fake.add_order([SeedLine(sku="S")], updated_at=T0 + i) for i in range(7)]
        assert [o.external_id for o in await drain(adapter, None)] == ids
        assert orders_query_cost(adapter.page_size, adapter.lines_per_order) <= 100
        assert recording_sleep.calls == []
    finally:
        await adapter.aclose()
        await fake.close()


async def test_poller_and_shipper_share_one_cost_budget() -> None:
    """Issue 11 item 10: one adapter instance serves both loops, so the bucket a listing page left
    behind makes the next push wait for capacity, instead of being sent and throttled."""
    now = [0.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    fake = FakeShopify(bucket_size=1000.0, restore_rate=50.0, clock=lambda: now[0], actual_cost_ratio=1.0)
    await fake.start()
    sessions = SessionTracker(loopback_egress())
    context = make_context(sleep, sessions)
    context = AdapterContext(context.new_session, lambda: now[0], sleep, context.log)
    adapter = await make_adapter(fake, context)
    try:
        order = fake.add_order([SeedLine(sku="S", quantity=2)], updated_at=T0)
        listing = orders_query_cost(*listing_shape(3))
        fake.set_bucket(listing + 20.0)
        await drain(adapter, None)  # the poller's page leaves 20 points
        await adapter.push_shipment(push_for(fake, order, "TRK-9", [(0, 2)]))  # the shipper's push
        assert fake.fulfilments(order)
        assert fake.throttled == 0  # every query waited for its capacity first
        first_push_query = fulfillments_query_cost(*FULFILLMENTS_SHAPES[0])
        assert sleeps[0] == pytest.approx((first_push_query - 20) / 50.0, abs=0.01)
    finally:
        await adapter.aclose()
        await fake.close()
        await sessions.aclose()


# --- the request -----------------------------------------------------------------------------------


async def test_listing_request_uses_the_pinned_version_filter_and_sort_key(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    since = datetime(2026, 9, 21, 12, 30, 5, 987654, tzinfo=timezone(timedelta(hours=2)))
    await drain(adapter, since)
    assert fake.requests == [("POST", f"/admin/api/{API_VERSION}/graphql.json")]
    [(name, variables)] = fake.operations
    assert name == "orders"
    assert variables["query"] == "updated_at:>='2026-09-21T10:30:05Z'"
    assert "sortKey: UPDATED_AT" in ORDERS_QUERY


async def test_wrong_token_is_an_auth_error(fake: FakeShopify, adapter_context: AdapterContext) -> None:
    adapter = await make_adapter(fake, adapter_context, access_token="shpat_wrong")  # noqa: S106
    try:
        with pytest.raises(AuthError):
            await drain(adapter, None)
    finally:
        await adapter.aclose()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ShopifyGraphQLError([{"message": "no", "extensions": {"code": "ACCESS_DENIED"}}], None), AuthError),
        (
            ShopifyGraphQLError([{"message": "oops", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}], None),
            RetriableAdapterError,
        ),
        (
            ShopifyGraphQLError([{"message": "Field 'x' doesn't exist on type 'Order'"}], None),
            FatalAdapterError,
        ),
        (ShopifyConnectionError("reset"), RetriableAdapterError),
    ],
)
def test_graphql_errors_map_to_the_error_tree(error: Exception, expected: type[Exception]) -> None:
    mapped = relay_error(error)  # type: ignore[arg-type]
    assert type(mapped) is expected


# --- mapping -------------------------------------------------------------------------------------


def test_fixture_order_maps_every_field() -> None:
    order = order_from_node(fixture("order.json"))
    assert order.external_id == "gid://shopify/Order/5550000001"
    assert order.number == "#1001"
    assert order.created_at == datetime(2026, 11, 20, 9, 12, 45, tzinfo=UTC)
    assert order.updated_at == datetime(2026, 11, 20, 9, 14, 2, tzinfo=UTC)
    assert (order.currency, order.total) == ("EUR", Decimal("44.90"))
    assert isinstance(order.total, Decimal)
    assert (order.email, order.paid, order.test, order.cancelled) == ("ada@example.com", True, False, False)
    assert order.tags == ("vip", "gift")
    address = order.shipping_address
    assert (address.name, address.company, address.line1, address.line2) == (
        "Ada Lovelace",
        "Analytical Engines Ltd",
        "12 St James's Square",
        "Flat 3",
    )
    assert (address.city, address.region, address.postal_code, address.country_code, address.phone) == (
        "London",
        "ENG",
        "SW1Y 4JH",
        "GB",
        "+44 20 7946 0958",
    )
    mug, tee = order.lines
    assert (mug.line_id, mug.sku, mug.variant_id, mug.quantity, mug.unit_price) == (
        "gid://shopify/LineItem/13370000001",
        "MUG-BLK-11",
        "gid://shopify/ProductVariant/42000000001",
        2,
        Decimal("12.45"),
    )
    assert mug.title == "Mug - Black / 11oz"
    assert mug.properties == {"Engraving": "To Charles", "Gift wrap": "yes"}
    assert (tee.sku, tee.unit_price, tee.properties) == ("TEE-WHT-M", Decimal("20.00"), {})


@pytest.mark.parametrize(
    ("status", "paid"),
    [
        ("PAID", True),
        ("PARTIALLY_REFUNDED", True),
        ("PENDING", False),
        ("AUTHORIZED", False),
        ("PARTIALLY_PAID", False),
        ("REFUNDED", False),
        ("VOIDED", False),
        ("EXPIRED", False),
        (None, False),
    ],
)
def test_financial_status_decides_paid(status: str | None, paid: bool) -> None:
    assert order_from_node({**fixture("order.json"), "displayFinancialStatus": status}).paid is paid


def test_test_cancelled_and_missing_parts_map() -> None:
    node = fixture("order.json") | {
        "test": True,
        "cancelledAt": "2026-11-21T08:00:00Z",
        "shippingAddress": None,
        "email": None,
        "totalPriceSet": None,
    }
    line = node["lineItems"]["edges"][0]["node"]
    line.update(sku="", variant=None, customAttributes=[{"key": "Note", "value": None}])
    order = order_from_node(node)
    assert (order.test, order.cancelled, order.email, order.total) == (True, True, "", None)
    assert order.shipping_address.line1 == ""
    assert (order.lines[0].sku, order.lines[0].variant_id, order.lines[0].properties) == (
        None,
        None,
        {"Note": ""},
    )


async def test_bad_money_becomes_malformed_with_the_raw_record(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    order = fake.add_order([SeedLine(sku="S", unit_price=Decimal("-1.00"))], updated_at=T0)
    [record] = await drain(adapter, None)
    assert isinstance(record, Malformed)
    assert record.external_id == order
    assert record.raw["id"] == order


async def test_edited_lines_map_current_quantity_and_removed_lines_are_dropped(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    """Issue 11 item 5: `quantity` is what was first ordered; an order edit changes `currentQuantity`."""
    order = fake.add_order(
        [SeedLine(sku="MUG", quantity=3), SeedLine(sku="TEE", quantity=2), SeedLine(sku="CAP")], updated_at=T0
    )
    fake.edit_line(order, 0, 1)  # edited down on the storefront: 3 -> 1
    fake.edit_line(order, 1, 0)  # removed
    [mapped] = await drain(adapter, None)
    assert isinstance(mapped, Order)
    line_ids = fake.line_ids(order)
    assert [(line.line_id, line.sku, line.quantity) for line in mapped.lines] == [
        (line_ids[0], "MUG", 1),
        (line_ids[2], "CAP", 1),
    ]


def test_fixture_line_without_current_quantity_falls_back_to_quantity() -> None:
    node = fixture("order.json")
    del node["lineItems"]["edges"][0]["node"]["currentQuantity"]
    assert order_from_node(node).lines[0].quantity == 2


# --- pushing tracking ------------------------------------------------------------------------------


async def test_fulfilment_carries_tracking_url_and_only_the_shipped_quantities(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    order = fake.add_order([SeedLine(sku="A", quantity=3), SeedLine(sku="B")], updated_at=T0)
    receipt = await adapter.push_shipment(
        push_for(fake, order, "JD0001", [(0, 2)], tracking_url="https://dhl.example/JD0001")
    )
    [created] = fake.fulfilments(order)
    assert receipt.reference and receipt.reference.startswith("gid://shopify/Fulfillment/")
    assert (created.carrier, created.line_ids, created.quantities) == (
        "DHL Express",
        (fake.line_ids(order)[0],),
        (2,),
    )
    mutation = next(v for name, v in fake.operations if name == "fulfillmentCreate")
    assert mutation["fulfillment"]["trackingInfo"] == {
        "company": "DHL Express",
        "number": "JD0001",
        "url": "https://dhl.example/JD0001",
    }
    [group] = mutation["fulfillment"]["lineItemsByFulfillmentOrder"]
    assert [item["quantity"] for item in group["fulfillmentOrderLineItems"]] == [2]
    await adapter.push_shipment(push_for(fake, order, "JD0002", [(0, 1), (1, 1)]))
    assert [f.quantities for f in fake.fulfilments(order)] == [(2,), (1, 1)]


@pytest.mark.parametrize(
    ("option", "per_push", "expected"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
async def test_notify_customer_needs_both_the_option_and_the_push(
    fake: FakeShopify, adapter_context: AdapterContext, option: bool, per_push: bool, expected: bool
) -> None:
    adapter = await make_adapter(fake, adapter_context, notify_customer=option)
    try:
        order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
        await adapter.push_shipment(push_for(fake, order, "N1", [(0, 1)], notify_customer=per_push))
        assert fake.notified(order) == [expected]
    finally:
        await adapter.aclose()


async def test_user_errors_are_fatal_and_create_nothing(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
    fake.reject_next_fulfillment("Tracking number is invalid for this carrier.")
    with pytest.raises(FatalAdapterError, match="Tracking number is invalid"):
        await adapter.push_shipment(push_for(fake, order, "BAD", [(0, 1)]))
    assert fake.fulfilments(order) == []


async def test_lines_already_fulfilled_elsewhere_are_fatal(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
    await adapter.push_shipment(push_for(fake, order, "FIRST", [(0, 1)]))
    with pytest.raises(FatalAdapterError, match="nothing open to fulfil"):
        await adapter.push_shipment(push_for(fake, order, "SECOND", [(0, 1)]))
    assert [f.tracking_number for f in fake.fulfilments(order)] == ["FIRST"]


async def test_cancelled_or_unknown_orders_are_fatal(adapter: ShopifyStorefront, fake: FakeShopify) -> None:
    order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
    fake.cancel(order)
    with pytest.raises(FatalAdapterError, match="nothing open"):
        await adapter.push_shipment(push_for(fake, order, "C1", [(0, 1)]))
    missing = push_for(fake, order, "C2", [(0, 1)]).model_copy(update={"order_id": "gid://shopify/Order/1"})
    with pytest.raises(FatalAdapterError, match="not found"):
        await adapter.push_shipment(missing)


async def test_location_id_restricts_the_fulfillment_orders(
    fake: FakeShopify, adapter_context: AdapterContext
) -> None:
    adapter = await make_adapter(fake, adapter_context, location_id="gid://shopify/Location/1")
    try:
        order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
        with pytest.raises(FatalAdapterError, match="another location"):
            await adapter.push_shipment(push_for(fake, order, "L1", [(0, 1)]))
    finally:
        await adapter.aclose()


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"page_size": 51},
        {"page_size": 0},
        {"api_version": "2026-11"},
        {"api_version": "latest"},
        {"shop_url": "not a url"},
        {"access_token": ""},
        {"unknown": 1},
    ],
)
def test_options_are_validated(override: dict[str, Any]) -> None:
    base = {"shop_url": "https://example.myshopify.com", "access_token": "shpat_x"}
    with pytest.raises(ValidationError):
        ShopifyOptions.model_validate(base | override)


def test_options_defaults_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPIFY_TOKEN", "shpat_from_env")
    options = ShopifyOptions.model_validate(
        {"shop_url": "https://example.myshopify.com", "access_token": {"env": "SHOPIFY_TOKEN"}}
    )
    assert (options.api_version, options.page_size, options.notify_customer) == (API_VERSION, 10, True)
    assert options.access_token.get_secret_value() == "shpat_from_env"
    assert "shpat_from_env" not in repr(options)


# --- requests per push (issue 15) -----------------------------------------------------------------


def reads_of(fake: FakeShopify, since: int) -> list[str]:
    """What each operation since the `since`-th one read: fulfilments, fulfillment orders, or a mutation."""
    kinds = []
    for name, variables in fake.operations[since:]:
        if name == "order":
            kinds.append("fulfillments" if "trackingFirst" in variables else "fulfillmentOrders")
        else:
            kinds.append(name)
    return kinds


async def test_a_first_attempt_reads_fulfillment_orders_and_creates(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
    await adapter.push_shipment(push_for(fake, order, "JD-FIRST", [(0, 1)], prior_attempt_unknown=False))
    assert reads_of(fake, 0) == ["fulfillmentOrders", "fulfillmentCreate"]
    assert len(fake.requests) == 2
    assert [f.tracking_number for f in fake.fulfilments(order)] == ["JD-FIRST"]


async def test_a_retry_after_an_unknown_outcome_finds_the_fulfilment(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    order = fake.add_order([SeedLine(sku="A"), SeedLine(sku="B")], updated_at=T0)
    push = push_for(fake, order, "JD-CRASH", [(0, 1)], prior_attempt_unknown=False)
    await adapter.push_shipment(push)
    seen = len(fake.operations)
    receipt = await adapter.push_shipment(push.model_copy(update={"prior_attempt_unknown": True}))
    assert reads_of(fake, seen) == ["fulfillments"]
    assert [f.tracking_number for f in fake.fulfilments(order)] == ["JD-CRASH"]
    assert receipt.reference and receipt.reference.startswith("gid://shopify/Fulfillment/")


async def test_a_failed_read_is_retried_without_a_look(adapter: ShopifyStorefront, fake: FakeShopify) -> None:
    """Only a sent mutation makes the outcome unknown: a read that failed is simply read again."""
    order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
    fake.fail_next(502)
    await adapter.push_shipment(push_for(fake, order, "JD-502", [(0, 1)], prior_attempt_unknown=False))
    assert reads_of(fake, 0) == ["fulfillmentOrders", "fulfillmentCreate"]
    assert len(fake.requests) == 3
    assert [f.tracking_number for f in fake.fulfilments(order)] == ["JD-502"]


async def test_the_last_parcel_fulfils_the_order_in_its_mutation(
    adapter: ShopifyStorefront, fake: FakeShopify
) -> None:
    order = fake.add_order([SeedLine(sku="A"), SeedLine(sku="B")], updated_at=T0)
    await adapter.push_shipment(push_for(fake, order, "JD-1", [(0, 1)], prior_attempt_unknown=False))
    [listed] = orders_only(await drain(adapter, None))
    assert listed.fulfilled is False
    seen = len(fake.requests)
    await adapter.push_shipment(push_for(fake, order, "JD-2", [(1, 1)], prior_attempt_unknown=False))
    assert len(fake.requests) - seen == 2  # the fulfillment orders, the mutation: nothing else
    [listed] = orders_only(await drain(adapter, None))
    assert listed.fulfilled is True
