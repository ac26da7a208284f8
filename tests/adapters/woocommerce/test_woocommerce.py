"""WooCommerce adapter against FakeWooCommerce over real HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from adapters.woocommerce import WooCommerceStorefront
from adapters.woocommerce.adapter import GROW_AFTER_S, ORDER_FIELDS
from adapters.woocommerce.client import WooCommerceError
from adapters.woocommerce.fake import FakeWooCommerce, WooError, load_fixture
from relay.contracts import AdapterContext
from relay.domain.models import Address, Malformed, Order, ShipmentLine, ShipmentPush
from relay.exceptions import AuthError, FatalAdapterError, RetriableAdapterError, Throttled
from relay.testing.vendor import SeedLine

from .conftest import make_context

Make = Callable[..., WooCommerceStorefront]
T0 = 1_793_609_600.0  # 2026-11-02T08:53:20Z


async def collect(
    adapter: WooCommerceStorefront, since: datetime | None = None
) -> list[list[Order | Malformed]]:
    return [list(page) async for page in adapter.fetch_orders(since)]


def flat(pages: list[list[Order | Malformed]]) -> list[Order | Malformed]:
    return [record for page in pages for record in page]


def list_calls(fake: FakeWooCommerce) -> list[dict[str, str]]:
    return [query for method, path, query in fake.calls if path == "/wp-json/wc/v3/orders"]


def push_for(
    fake: FakeWooCommerce,
    order_id: str,
    *,
    fully: bool = True,
    url: str | None = None,
    unknown: bool = True,
) -> ShipmentPush:
    line_id = fake.line_ids(order_id)[0]
    return ShipmentPush(
        key=f"sp_{order_id}_parcel1",
        storefront="mywoo",
        order_id=order_id,
        order_number=order_id,
        carrier="DHL",
        tracking_number="00340434161094042557",
        tracking_url=url,
        lines=(ShipmentLine(line_id=line_id, quantity=1),),
        order_fully_shipped=fully,
        prior_attempt_unknown=unknown,
    )


# --- listing -------------------------------------------------------------------------------------


async def test_drains_every_page_in_modification_order(fake: FakeWooCommerce, make_adapter: Make) -> None:
    ids = [fake.add_order([SeedLine("MUG-1")], updated_at=T0 + i) for i in range(8)]

    pages = await collect(make_adapter())

    assert [o.external_id for o in flat(pages)] == ids
    assert all(len(page) <= 3 for page in pages) and len(pages) >= 3
    calls = list_calls(fake)
    assert {c["per_page"] for c in calls} == {"3"}
    assert all(c["orderby"] == "modified" and c["order"] == "asc" and c["status"] == "any" for c in calls)


async def test_stops_at_x_wp_totalpages_even_when_last_page_is_full(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    for i in range(6):
        fake.add_order([SeedLine("MUG-1")], updated_at=T0 + 10 * i)

    assert len(flat(await collect(make_adapter()))) == 6
    assert list_calls(fake)[-1]["page"] == "1"  # keyset window: the last query fits on one page
    assert len(list_calls(fake)) == 3


async def test_many_orders_in_one_second_still_page_through(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    ids = [fake.add_order([SeedLine("MUG-1")], updated_at=T0) for _ in range(7)]

    assert [o.external_id for o in flat(await collect(make_adapter()))] == ids
    by_id = [c for c in list_calls(fake) if c["orderby"] == "id"]
    assert [c["offset"] for c in by_id] == ["0", "2", "4"]  # each page from the last row read
    assert {(c["modified_after"], c["modified_before"]) for c in by_id} == {
        ("2026-11-02T08:53:19", "2026-11-02T08:53:21")
    }


async def test_a_2000_order_backlog_sharing_seconds_loses_nothing_while_relay_writes(
    make_adapter: Make,
) -> None:
    """Issue 11 item 0: 250 orders share each second; after every page relay completes some orders it
    has read (as the shipper does during a first scan), which moves them to the end of a date-sorted
    listing. Page-number paging inside a shared second skipped the orders shifted past the cursor;
    paging the second by id with X-WP-Total-aware offsets cannot."""
    fake = FakeWooCommerce(page_size=100)
    await fake.start()
    try:
        ids = [fake.add_order([SeedLine("MUG-1")], updated_at=T0 + i // 250) for i in range(2000)]
        seen: set[str] = set()
        completed = 0
        async for page in make_adapter(page_size=100, store_url=fake.url).fetch_orders(None):
            fresh = [o.external_id for o in page if isinstance(o, Order) and o.external_id not in seen]
            seen.update(fresh)
            for order_id in fresh[:40]:  # relay's own writes during the scan: tracking added, completed
                fake.set_status(order_id, "completed")
                completed += 1
        assert completed > 0
        assert sorted(set(ids) - seen) == []
    finally:
        await fake.close()


class _Shipping(FakeWooCommerce):
    """The store while relay's shipper completes orders: before answering each listing by id it completes
    the next order of `shipping` (which re-stamps it, moving it out of its second). Refuses (400) listing
    requests after the 50th, so a scan that keeps asking fails instead of hanging."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.shipping: list[str] = []

    async def _list_orders(self, request: web.Request) -> web.Response:
        if len(list_calls(self)) > 50:
            raise WooError(400, "stalled", "the listing keeps asking for the same rows")
        if self.shipping and request.query.get("orderby") == "id":
            self.set_status(self.shipping.pop(0), "completed")
        return await super()._list_orders(request)


def offsets_in_second(fake: FakeWooCommerce, second: str, after: str) -> list[int]:
    """The `offset` of every listing by id of the window around one second (GMT, as sent)."""
    return [
        int(c["offset"])
        for c in list_calls(fake)
        if c["orderby"] == "id" and (c["modified_after"], c["modified_before"]) == (second, after)
    ]


async def test_more_orders_leaving_a_shared_second_than_were_read_do_not_stall_the_scan(
    make_adapter: Make,
) -> None:
    """P3's bench stall: 300 orders share a second; while relay pages that second by id, its shipper
    completes 250 of them (orders it knows from an earlier poll, most not yet read in this scan), which
    moves them to a later second. `X-WP-Total` then dropped by more than the rows already read and the
    scan stepped back to offset 0 against its stale total, forever (one listing request after another,
    nothing yielded, no error). It must step back, read the 50 left, and go on to the later second."""
    fake = _Shipping(page_size=100)
    await fake.start()
    try:
        ids = [fake.add_order([SeedLine("MUG-1")], updated_at=T0) for _ in range(300)]
        seen: set[str] = set()
        shipped = False
        async for page in make_adapter(page_size=100, store_url=fake.url).fetch_orders(None):
            seen.update(o.external_id for o in page if isinstance(o, Order))
            if not shipped and ids[150] in seen:  # mid-scan of the shared second, by id
                shipped = True
                for order_id in ids[:250]:
                    fake.set_status(order_id, "completed")
        assert shipped
        assert sorted(set(ids) - seen) == []
        # Pages overlap by one row (a page starting at a row already read proves none was skipped);
        # after the 250 left, offset 198 is past the window and the scan steps back to the 50 rows left.
        assert offsets_in_second(fake, "2026-11-02T08:53:19", "2026-11-02T08:53:21") == [0, 99, 198, 0]
    finally:
        await fake.close()


async def test_orders_leaving_a_shared_second_at_every_request_do_not_livelock_the_scan(
    make_adapter: Make,
) -> None:
    """P3's repro: the shipper completes the orders of a shared second in id order, one before every
    listing request of the scan. Stepping back by the drop in `X-WP-Total` alone re-stepped on every
    answer (each showed one more row gone) until the second was empty; the one-row overlap tells when a
    page is safe to take, so the scan moves on a page every few requests and loses nothing."""
    fake = _Shipping(page_size=100)
    await fake.start()
    try:
        ids = [fake.add_order([SeedLine("MUG-1")], updated_at=T0) for _ in range(300)]
        fake.shipping = ids[:200]
        seen: set[str] = set()
        async for page in make_adapter(page_size=100, store_url=fake.url).fetch_orders(None):
            seen.update(o.external_id for o in page if isinstance(o, Order))
        assert sorted(set(ids) - seen) == []
        # Each page's first try starts at a row that has just left (gap possible), the step back holds.
        offsets = offsets_in_second(fake, "2026-11-02T08:53:19", "2026-11-02T08:53:21")
        assert offsets == [0, 99, 97, 196, 194, 293, 291]
    finally:
        await fake.close()


async def test_modified_after_is_gmt_and_inclusive_of_since(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    fake.add_order([SeedLine("OLD")], updated_at=T0 - 1)
    at_since = fake.add_order([SeedLine("EDGE")], updated_at=T0)
    later = fake.add_order([SeedLine("NEW")], updated_at=T0 + 60)
    since = datetime.fromtimestamp(T0 + 0.5, timezone(timedelta(hours=-5)))  # any zone, sub-second

    records = flat(await collect(make_adapter(), since))

    assert [o.external_id for o in records] == [at_since, later]
    first = list_calls(fake)[0]
    assert first["modified_after"] == "2026-11-02T08:53:19"
    assert first["dates_are_gmt"] == "true"


async def test_a_page_over_the_response_cap_is_shrunk_and_everything_is_ingested(make_adapter: Make) -> None:
    """Issue 11 item 10: 100 orders x 15 KB exceed the 1 MiB response cap. The answer used to stop the
    listing for good (`ResponseTooLarge` on every poll); now the page is halved until it fits, and
    doubled again an hour after the last shrink."""
    fake = FakeWooCommerce(page_size=100, meta_padding=15_000)
    await fake.start()
    now = [T0]
    base = make_context([])
    context = AdapterContext(base.new_session, lambda: now[0], base.sleep, base.log)
    try:
        ids = [fake.add_order([SeedLine("MUG-1")], updated_at=T0 + i) for i in range(230)]
        adapter = make_adapter(context, page_size=100, store_url=fake.url)
        assert [o.external_id for o in flat(await collect(adapter))] == ids
        assert adapter.per_page == 50
        sizes = [c["per_page"] for c in list_calls(fake)]
        assert sizes[:2] == ["100", "50"] and set(sizes[2:]) == {"50"}
        now[0] += GROW_AFTER_S
        assert len(flat(await collect(adapter))) == 230
        assert list_calls(fake)[len(sizes)]["per_page"] == "100"  # tried again, and shrunk again
        assert adapter.per_page == 50
    finally:
        await fake.close()


async def test_order_modified_during_the_scan_is_not_skipped(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    ids = [fake.add_order([SeedLine("MUG-1")], updated_at=T0 + i) for i in range(6)]
    seen: list[str] = []

    async for page in make_adapter().fetch_orders(None):
        seen.extend(o.external_id for o in page if isinstance(o, Order))
        if len(seen) == 3:
            fake.touch(ids[0], updated_at=T0 + 100)  # moves to the end; plain page=2 would skip ids[3]

    assert seen[:6] == ids and seen[6:] == [ids[0]]


async def test_empty_store_yields_nothing(make_adapter: Make) -> None:
    assert await collect(make_adapter()) == []


async def test_malformed_record_is_quarantined_not_fatal(fake: FakeWooCommerce, make_adapter: Make) -> None:
    good = fake.add_order([SeedLine("MUG-1")], updated_at=T0)
    bad = fake.add_malformed_order()

    records = flat(await collect(make_adapter()))

    assert [type(r) for r in records] == [Order, Malformed]
    assert records[0].external_id == good
    malformed = records[1]
    assert isinstance(malformed, Malformed) and malformed.external_id == bad
    assert "quantity" in malformed.reason and malformed.raw["id"] == int(bad)


# --- mapping -------------------------------------------------------------------------------------


async def test_fixture_order_maps_money_address_and_personalisation(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    fake.add_document(load_fixture("order.json"))

    (order,) = flat(await collect(make_adapter()))

    assert isinstance(order, Order)
    assert order.external_id == "727" and order.number == "727"
    assert order.created_at == datetime(2026, 11, 2, 9, 15, 12, tzinfo=UTC)
    assert order.updated_at == datetime(2026, 11, 2, 9, 16, 40, tzinfo=UTC)
    assert order.currency == "EUR"
    assert order.total == Decimal("49.88") and isinstance(order.total, Decimal)
    assert order.email == "anna.schmidt@example.com"
    assert order.paid and not order.cancelled and not order.test and order.tags == ()
    assert order.shipping_address == Address(
        name="Anna Schmidt",
        company="Atelier Schmidt",
        line1="Lindenstraße 12",
        line2="Hinterhaus, 3. OG",
        city="Berlin",
        region="BE",
        postal_code="10969",
        country_code="DE",
        phone="+49 30 1234567",  # shipping phone empty: billing phone
    )
    mug, tote = order.lines
    assert (mug.line_id, mug.sku, mug.variant_id, mug.quantity) == ("315", "MUG-ENAMEL-WHT", "93", 2)
    assert mug.title == "Enamel Mug \u2013 Personalised"
    assert mug.unit_price == Decimal("14.99") and str(mug.unit_price) == "14.99"
    assert mug.properties == {"Engraving": "Für Oma ♥"}
    assert (tote.line_id, tote.variant_id, tote.unit_price) == ("316", "23", Decimal("15"))
    assert tote.properties == {"pa_color": "black", "pa_size": "m"}


async def test_fixture_page_maps_on_hold_order_as_unpaid(fake: FakeWooCommerce, make_adapter: Make) -> None:
    for doc in load_fixture("orders_page.json"):
        fake.add_document(doc)

    first, second = flat(await collect(make_adapter()))

    assert isinstance(first, Order) and isinstance(second, Order)
    assert first.paid and not second.paid
    assert second.lines[0].unit_price == Decimal("19.9")
    assert second.shipping_address.phone == "+49 40 7654321"


@pytest.mark.parametrize(
    ("status", "paid", "cancelled"),
    [
        ("pending", False, False),
        ("on-hold", False, False),
        ("failed", False, False),
        ("processing", True, False),
        ("completed", True, False),
        ("cancelled", True, True),
        ("refunded", True, True),
    ],
)
async def test_status_mapping(
    fake: FakeWooCommerce, make_adapter: Make, status: str, paid: bool, cancelled: bool
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    fake.set_status(order_id, status)

    (order,) = flat(await collect(make_adapter()))

    assert isinstance(order, Order)
    assert (order.external_id, order.paid, order.cancelled) == (order_id, paid, cancelled)


async def test_unpaid_then_paid_and_cancelled_orders(fake: FakeWooCommerce, make_adapter: Make) -> None:
    unpaid = fake.add_order([SeedLine("MUG-1")], paid=False)
    cancelled = fake.add_order([SeedLine("MUG-1")])
    fake.cancel(cancelled)
    adapter = make_adapter()

    first = {o.external_id: o for o in flat(await collect(adapter)) if isinstance(o, Order)}
    fake.mark_paid(unpaid)
    second = {o.external_id: o for o in flat(await collect(adapter)) if isinstance(o, Order)}

    assert not first[unpaid].paid and second[unpaid].paid
    assert first[cancelled].cancelled


@pytest.mark.parametrize(
    ("meta", "option", "test"),
    [
        ({"_wcpay_mode": "test"}, None, True),
        ({"_wcpay_mode": "prod"}, None, False),
        ({"_gateway_sandbox": "yes"}, {"_gateway_sandbox": "yes"}, True),
        ({"_wcpay_mode": "test"}, {}, False),
    ],
)
async def test_test_orders_are_recognised_by_meta(
    fake: FakeWooCommerce, make_adapter: Make, meta: dict[str, str], option: dict[str, str] | None, test: bool
) -> None:
    doc = load_fixture("order.json")
    doc["meta_data"] += [{"id": 1, "key": k, "value": v} for k, v in meta.items()]
    fake.add_document(doc)
    adapter = make_adapter() if option is None else make_adapter(test_order_meta=option)

    (order,) = flat(await collect(adapter))

    assert isinstance(order, Order) and order.test is test


async def test_seeded_money_and_missing_sku(fake: FakeWooCommerce, make_adapter: Make) -> None:
    fake.add_order(
        [SeedLine("A", 3, Decimal("0.10")), SeedLine(None, 1, Decimal("1234567.89"))], currency="JPY"
    )

    (order,) = flat(await collect(make_adapter()))

    assert isinstance(order, Order) and order.currency == "JPY"
    assert [line.unit_price for line in order.lines] == [Decimal("0.1"), Decimal("1234567.89")]
    assert order.total == Decimal("1234568.19")
    assert order.lines[1].sku is None


# --- tracking ------------------------------------------------------------------------------------


async def test_note_push_writes_customer_note_and_completes(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    push = push_for(fake, order_id, url="https://track.example/00340434161094042557")

    receipt = await make_adapter().push_shipment(push)

    (note,) = [n for n in fake.notes(order_id) if n["author"] == "API"]
    assert receipt.reference == f"note:{note['id']}"
    assert note["customer_note"] is True
    assert "DHL" in note["note"] and "00340434161094042557" in note["note"]
    assert "https://track.example/00340434161094042557" in note["note"] and push.key in note["note"]
    line_id = fake.line_ids(order_id)[0]
    assert f"- 1 x Product MUG-1 (item #{line_id})" in note["note"]
    (fulfilment,) = fake.fulfilments(order_id)
    assert (fulfilment.carrier, fulfilment.tracking_number) == ("DHL", "00340434161094042557")
    assert (fulfilment.line_ids, fulfilment.quantities) == ((line_id,), (1,))
    assert fake.status(order_id) == "completed"


async def test_notify_customer_false_writes_private_note(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])

    await make_adapter(notify_customer=False).push_shipment(push_for(fake, order_id))

    (note,) = [n for n in fake.notes(order_id) if n["author"] == "API"]
    assert note["customer_note"] is False


async def test_partial_shipment_leaves_order_processing(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1"), SeedLine("TOTE-1")])

    await make_adapter().push_shipment(push_for(fake, order_id, fully=False))

    assert fake.status(order_id) == "processing"
    assert len(fake.fulfilments(order_id)) == 1
    assert ("PUT", f"/wp-json/wc/v3/orders/{order_id}") not in fake.requests


async def test_cancelled_order_is_not_flipped_to_completed(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    fake.cancel(order_id)

    await make_adapter().push_shipment(push_for(fake, order_id))

    assert fake.status(order_id) == "cancelled"


@pytest.mark.parametrize("tracking", ["note", "shipment_tracking"])
async def test_push_is_idempotent(fake: FakeWooCommerce, make_adapter: Make, tracking: str) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    adapter = make_adapter(tracking=tracking)
    push = push_for(fake, order_id)

    first = await adapter.push_shipment(push)
    second = await make_adapter(tracking=tracking).push_shipment(push)

    assert first == second
    assert len(fake.fulfilments(order_id)) == 1
    posts = [p for m, p in fake.requests if m == "POST"]
    assert len(posts) == 1
    assert fake.status(order_id) == "completed"


async def test_shipment_tracking_push_with_custom_link(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    url = "https://track.example/00340434161094042557"

    receipt = await make_adapter(tracking="shipment_tracking").push_shipment(
        push_for(fake, order_id, url=url)
    )

    (post,) = [path for method, path in fake.requests if method == "POST"]
    assert post == f"/wp-json/wc-shipment-tracking/v3/orders/{order_id}/shipment-trackings"
    (item,) = fake.trackings(order_id)
    assert (item["tracking_provider"], item["tracking_link"]) == ("DHL", url)
    assert receipt.reference == f"tracking:{item['tracking_id']}"
    (fulfilment,) = fake.fulfilments(order_id)
    assert (fulfilment.carrier, fulfilment.tracking_number) == ("DHL", "00340434161094042557")
    assert not [n for n in fake.notes(order_id) if n["author"] == "API"]
    assert fake.status(order_id) == "completed"


async def test_shipment_tracking_without_extension_is_fatal(make_adapter: Make, context: object) -> None:
    server = FakeWooCommerce(shipment_tracking=False)
    await server.start()
    try:
        order_id = server.add_order([SeedLine("MUG-1")])
        options = WooCommerceStorefront.Options.model_validate(
            server.adapter_options() | {"tracking": "shipment_tracking"}
        )
        adapter = WooCommerceStorefront("mywoo", options, make_context([]))
        with pytest.raises(FatalAdapterError, match="Shipment Tracking extension"):
            await adapter.push_shipment(push_for(server, order_id))
        await adapter.aclose()
    finally:
        await server.close()


# --- errors and retries --------------------------------------------------------------------------


async def test_rejected_credentials_raise_auth_error(fake: FakeWooCommerce, make_adapter: Make) -> None:
    fake.add_order([SeedLine("MUG-1")])
    fake.reject_credentials(401)

    with pytest.raises(AuthError, match="woocommerce_rest_cannot_view") as caught:
        await collect(make_adapter())
    assert caught.value.status == 401
    assert len(fake.requests) == 1  # not retried


async def test_wrong_secret_raises_auth_error(make_adapter: Make) -> None:
    with pytest.raises(AuthError, match="Consumer secret is invalid"):
        await collect(make_adapter(consumer_secret="cs_wrong"))  # noqa: S106 (deliberately wrong)


async def test_403_on_push_raises_auth_error(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    fake.reject_credentials(403)

    with pytest.raises(AuthError):
        await make_adapter().push_shipment(push_for(fake, order_id))


async def test_429_retry_after_is_honoured(
    fake: FakeWooCommerce, make_adapter: Make, sleeps: list[float]
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    fake.fail_next(429, retry_after=7)

    assert [o.external_id for o in flat(await collect(make_adapter()))] == [order_id]
    assert sleeps == [7.0]


async def test_long_retry_after_is_left_to_the_core(
    fake: FakeWooCommerce, make_adapter: Make, sleeps: list[float]
) -> None:
    fake.fail_next(429, retry_after=600)

    with pytest.raises(RetriableAdapterError) as caught:
        await collect(make_adapter())
    assert caught.value.retry_after == 600 and sleeps == []


async def test_a_long_retry_after_holds_back_the_other_loop_too(
    fake: FakeWooCommerce, make_adapter: Make, sleeps: list[float]
) -> None:
    """Issue 11 item 10: the poller and the shipper share one adapter, so a Retry-After the store gave the
    listing makes the push wait too (here: raise `Throttled` at once, without a request)."""
    order_id = fake.add_order([SeedLine("MUG-1")])
    fake.fail_next(429, retry_after=600)
    adapter = make_adapter()
    with pytest.raises(Throttled):
        await collect(adapter)
    requests = len(fake.requests)
    with pytest.raises(Throttled) as caught:
        await adapter.push_shipment(push_for(fake, order_id))
    assert len(fake.requests) == requests and 590 < (caught.value.retry_after or 0) <= 600


async def test_5xx_burst_then_success(fake: FakeWooCommerce, make_adapter: Make, sleeps: list[float]) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    fake.fail_next(502)
    fake.fail_next(500)
    fake.fail_next(503)

    assert [o.external_id for o in flat(await collect(make_adapter()))] == [order_id]
    assert len(sleeps) == 3 and all(0 < s <= 8 for s in sleeps)  # relay.outbound.retries.BACKOFF


async def test_persistent_5xx_gives_up_retriable(
    fake: FakeWooCommerce, make_adapter: Make, sleeps: list[float]
) -> None:
    fake.fail_next(500, times=10)

    with pytest.raises(RetriableAdapterError, match="internal_server_error") as caught:
        await collect(make_adapter())
    assert caught.value.status == 500
    assert len(fake.requests) == 4 and len(sleeps) == 3


async def test_push_retry_does_not_duplicate(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    adapter = make_adapter()
    await adapter.push_shipment(push_for(fake, order_id, fully=False))
    fake.fail_next(503)

    await adapter.push_shipment(push_for(fake, order_id))

    assert len(fake.fulfilments(order_id)) == 1
    assert fake.status(order_id) == "completed"


async def test_hanging_request_times_out_and_is_retried(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    sleeps: list[float] = []
    fake.hang_next()

    records = flat(await collect(make_adapter(make_context(sleeps, total_timeout_s=0.2))))

    assert [o.external_id for o in records] == [order_id]
    assert len(sleeps) == 1


async def test_bad_request_is_fatal(fake: FakeWooCommerce, make_adapter: Make) -> None:
    fake.fail_next(400)

    with pytest.raises(FatalAdapterError) as caught:
        await collect(make_adapter())
    assert not isinstance(caught.value, AuthError) and caught.value.status == 400


# --- options and lifecycle -----------------------------------------------------------------------


async def test_query_string_auth(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])

    records = flat(await collect(make_adapter(query_string_auth=True)))

    assert [o.external_id for o in records] == [order_id]
    assert list_calls(fake)[0]["consumer_key"] == fake.consumer_key


@pytest.mark.parametrize(
    "override",
    [
        {"page_size": 101},
        {"page_size": 0},
        {"tracking": "aftership"},
        {"api_version": "v2"},
        {"consumer_key": ""},
    ],
)
def test_options_are_validated(override: dict[str, object]) -> None:
    base = {"store_url": "https://shop.example.com", "consumer_key": "ck_1", "consumer_secret": "cs_1"}
    with pytest.raises(ValidationError):
        WooCommerceStorefront.Options.model_validate(base | override)


async def test_aclose_releases_the_session(fake: FakeWooCommerce, make_adapter: Make) -> None:
    adapter = make_adapter()
    await collect(adapter)
    session = adapter._session

    await adapter.aclose()
    await adapter.aclose()

    assert session is not None and session.closed


# --- the fake stays shaped like the fixtures (real responses) --------------------------------------


async def test_fake_responses_match_fixture_shapes(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    for _ in range(3):
        fake.add_order([SeedLine("MUG-1")])
    adapter = make_adapter(tracking="shipment_tracking")
    await adapter.push_shipment(push_for(fake, order_id, fully=False))
    api = adapter._api()

    listing = await api.list_orders({"per_page": "3"})
    note = (await api.create_note(order_id, "Packed.", customer_note=False)).data
    (item,) = (await api.list_trackings(order_id)).data
    fake.reject_credentials()
    with pytest.raises(WooCommerceError) as refused:
        await api.list_orders({})

    assert set(listing.data[0]) == set(load_fixture("order.json"))
    assert set(listing.data[0]["line_items"][0]) == set(load_fixture("order.json")["line_items"][0])
    assert (listing.headers["X-WP-Total"], listing.headers["X-WP-TotalPages"]) == ("4", "2")
    assert 'rel="next"' in listing.headers["Link"]
    assert set(note) == set(load_fixture("note.json"))
    assert set(item) == set(load_fixture("shipment_tracking_item.json"))
    assert json.loads(refused.value.body) == load_fixture("error_unauthorized.json")


# --- requests per push (issue 15) -----------------------------------------------------------------


def push_requests(fake: FakeWooCommerce, since: int) -> list[tuple[str, str]]:
    """(method, path without the API prefix) of the requests since the `since`-th one."""
    return [(m, p.removeprefix("/wp-json/")) for m, p in fake.requests[since:]]


async def test_a_first_attempt_in_shipment_tracking_mode_is_one_post_and_the_completion(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    adapter = make_adapter(tracking="shipment_tracking")
    await collect(adapter)  # the poller and the shipper share the adapter: the order was listed
    listed = len(fake.requests)

    receipt = await adapter.push_shipment(push_for(fake, order_id, unknown=False))

    assert push_requests(fake, listed) == [
        ("POST", f"wc-shipment-tracking/v3/orders/{order_id}/shipment-trackings"),
        ("PUT", f"wc/v3/orders/{order_id}"),
    ]
    assert receipt.reference == f"tracking:{fake.trackings(order_id)[0]['tracking_id']}"
    assert fake.status(order_id) == "completed"
    put = [q for m, path, q in fake.calls if m == "PUT"]
    assert put == [{"_fields": "id,status"}]


@pytest.mark.parametrize("tracking", ["note", "shipment_tracking"])
async def test_a_first_attempt_for_a_listed_order_reads_nothing(
    fake: FakeWooCommerce, make_adapter: Make, tracking: str
) -> None:
    """The note's item names and the completion's status check come from the listing."""
    order_id = fake.add_order([SeedLine("MUG-1"), SeedLine("TOTE-1")])
    adapter = make_adapter(tracking=tracking)
    await collect(adapter)
    listed = len(fake.requests)

    await adapter.push_shipment(push_for(fake, order_id, fully=False, unknown=False))

    assert [m for m, _ in push_requests(fake, listed)] == ["POST"]
    if tracking == "note":
        (note,) = [n for n in fake.notes(order_id) if n["author"] == "API"]
        assert f"- 1 x Product MUG-1 (item #{fake.line_ids(order_id)[0]})" in note["note"]


async def test_an_order_listed_as_cancelled_is_not_completed(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    fake.cancel(order_id)
    adapter = make_adapter(tracking="shipment_tracking")
    await collect(adapter)
    listed = len(fake.requests)

    await adapter.push_shipment(push_for(fake, order_id, unknown=False))

    assert [m for m, _ in push_requests(fake, listed)] == ["POST"]
    assert fake.status(order_id) == "cancelled"


async def test_an_order_not_listed_is_read_before_it_is_completed(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    fake.cancel(order_id)

    await make_adapter(tracking="shipment_tracking").push_shipment(push_for(fake, order_id, unknown=False))

    assert [m for m, _ in push_requests(fake, 0)] == ["GET", "POST"]
    assert fake.status(order_id) == "cancelled"


async def test_a_first_attempt_in_note_mode_reads_only_status_and_items(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    order_id = fake.add_order([SeedLine("MUG-1"), SeedLine("TOTE-1")])

    await make_adapter().push_shipment(push_for(fake, order_id, fully=False, unknown=False))

    assert push_requests(fake, 0) == [
        ("GET", f"wc/v3/orders/{order_id}"),
        ("POST", f"wc/v3/orders/{order_id}/notes"),
    ]
    assert fake.calls[0][2] == {"_fields": "id,status,line_items"}
    (note,) = [n for n in fake.notes(order_id) if n["author"] == "API"]
    assert f"- 1 x Product MUG-1 (item #{fake.line_ids(order_id)[0]})" in note["note"]


@pytest.mark.parametrize("tracking", ["note", "shipment_tracking"])
async def test_a_retry_after_a_crash_finds_the_parcel_and_only_completes(
    fake: FakeWooCommerce, make_adapter: Make, tracking: str
) -> None:
    """The first attempt wrote the parcel and crashed before the completion and the record; the retry
    (an unknown outcome) looks, writes nothing, and completes the order."""
    order_id = fake.add_order([SeedLine("MUG-1")])
    adapter = make_adapter(tracking=tracking)
    await adapter.push_shipment(push_for(fake, order_id, fully=False, unknown=False))
    seen = len(fake.requests)

    await adapter.push_shipment(push_for(fake, order_id, unknown=True))

    assert len(fake.fulfilments(order_id)) == 1
    assert fake.status(order_id) == "completed"
    assert [m for m, _ in push_requests(fake, seen)] == ["GET", "GET", "PUT"]


async def test_a_failed_write_makes_the_in_call_retry_look(fake: FakeWooCommerce, make_adapter: Make) -> None:
    """A 5xx on the POST may follow a write the store made: the in-call retry looks before writing."""
    order_id = fake.add_order([SeedLine("MUG-1")])
    adapter = make_adapter(tracking="shipment_tracking")
    fake.fail_next(502)

    await adapter.push_shipment(push_for(fake, order_id, fully=False, unknown=False))

    assert push_requests(fake, 0) == [
        ("POST", f"wc-shipment-tracking/v3/orders/{order_id}/shipment-trackings"),
        ("GET", f"wc-shipment-tracking/v3/orders/{order_id}/shipment-trackings"),
        ("POST", f"wc-shipment-tracking/v3/orders/{order_id}/shipment-trackings"),
    ]
    assert len(fake.fulfilments(order_id)) == 1


async def test_throttled_before_any_write_stays_throttled_after_a_write_it_counts(
    fake: FakeWooCommerce, make_adapter: Make
) -> None:
    """`Throttled` (the attempt does not count, the next may write at once) only when nothing was
    written; a throttle after the tracking POST is a retriable failure, so the next attempt looks."""
    order_id = fake.add_order([SeedLine("MUG-1")])
    adapter = make_adapter(tracking="shipment_tracking")
    fake.fail_next(429, retry_after=600)
    with pytest.raises(Throttled):
        await adapter.push_shipment(push_for(fake, order_id, fully=False, unknown=False))
    assert fake.fulfilments(order_id) == []

    adapter = make_adapter(tracking="shipment_tracking")
    fake.fail_next(502)  # the POST (an unknown outcome) ...
    fake.fail_next(429, retry_after=600)  # ... then the look is throttled
    with pytest.raises(RetriableAdapterError) as caught:
        await adapter.push_shipment(push_for(fake, order_id, fully=False, unknown=False))
    assert not isinstance(caught.value, Throttled)


async def test_listing_asks_only_for_the_mapped_fields(fake: FakeWooCommerce, make_adapter: Make) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])

    [order] = flat(await collect(make_adapter()))

    assert order.external_id == order_id and order.lines[0].title == "Product MUG-1"
    assert all(query["_fields"] == ORDER_FIELDS for query in list_calls(fake))


async def test_the_fake_filters_top_level_fields_like_wordpress(fake: FakeWooCommerce) -> None:
    order_id = fake.add_order([SeedLine("MUG-1")])
    token = base64.b64encode(f"{fake.consumer_key}:{fake.consumer_secret}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        url = f"{fake.url}/wp-json/wc/v3/orders"
        async with session.get(f"{url}/{order_id}?_fields=id,status") as resp:
            assert await resp.json() == {"id": int(order_id), "status": "processing"}
        async with session.get(url, params={"_fields[]": "id"}) as resp:
            assert await resp.json() == [{"id": int(order_id)}]
            assert resp.headers["X-WP-Total"] == "1"
        async with session.get(f"{url}/999?_fields=id") as resp:
            assert resp.status == 404 and (await resp.json())["code"]  # errors are not filtered
