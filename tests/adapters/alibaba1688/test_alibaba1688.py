"""The 1688 adapter against its fake gateway: exactly one 1688 order whatever goes wrong, parcels mapped to
relay's lines, cancellation before and after payment, payment deadlines, money to the fen, the signature.

A manual clock drives the fake and the adapter alike; the adapter's `sleep` advances it, so the
too-fast-cancel window and the payment deadline cost no real time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from adapters.alibaba1688 import Alibaba1688Factory
from adapters.alibaba1688.adapter import parse_trailer
from adapters.alibaba1688.client import CANCEL, FAST_CREATE_ORDER, GET_BUYER_ORDER_LIST, PREPARE_PAY
from adapters.alibaba1688.fake import Fake1688Gateway
from relay.contracts import AdapterContext, NeedsAttention
from relay.domain.models import (
    Address,
    AttentionReason,
    FactoryOrder,
    FactoryOrderNotice,
    OrderLine,
    Shipment,
)
from relay.exceptions import AlreadyShipped, AuthError, FatalAdapterError, RetriableAdapterError
from relay.signing import aop_signature
from relay.testing.contract import SessionTracker, drain_shipments, loopback_egress

T0 = 1_790_000_000.0
OFFER = {sku: target for sku, target in Fake1688Gateway().adapter_options()["skus"].items()}


@dataclass
class ManualClock:
    now: float = T0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[Fake1688Gateway]:
    gateway = Fake1688Gateway()
    gateway.clock = clock
    await gateway.start()
    yield gateway
    await gateway.close()


@pytest.fixture
async def make(fake: Fake1688Gateway, clock: ManualClock) -> AsyncIterator[Any]:
    made: list[Alibaba1688Factory] = []
    tracker = SessionTracker(loopback_egress(0.3), max_total_timeout_s=0.3)

    def build(**options: Any) -> Alibaba1688Factory:
        opts = Alibaba1688Factory.Options.model_validate(fake.adapter_options() | options)
        context = AdapterContext(
            new_session=tracker, clock=clock, sleep=clock.sleep, log=structlog.get_logger()
        )
        adapter = Alibaba1688Factory("ali", opts, context)  # type: ignore[arg-type]
        made.append(adapter)
        return adapter

    yield build
    for adapter in made:
        await adapter.aclose()
    await tracker.aclose()


@pytest.fixture
async def adapter(make: Any) -> Alibaba1688Factory:
    result: Alibaba1688Factory = make()
    return result


CN_ADDRESS = Address(
    name="张三",
    line1="科技园南路 1 号",
    line2="2 栋 301",
    city="深圳市",
    region="广东省",
    postal_code="518000",
    country_code="CN",
    phone="+86 138 0013 8000",
)


def order(
    n: int = 1, *, address: Address = CN_ADDRESS, lines: tuple[OrderLine, ...] | None = None
) -> FactoryOrder:
    return FactoryOrder(
        key=f"fo_{n:032x}",
        factory="ali",
        storefront="shop",
        order_id=str(1000 + n),
        order_number=f"#{1000 + n}",
        created_at=datetime.fromtimestamp(T0, UTC),
        currency="CNY",
        shipping_address=address,
        lines=lines
        or (
            OrderLine(
                line_id="L1",
                sku="MUG-WHT",
                quantity=2,
                unit_price=Decimal("30"),
                properties={"engraving": "For Ada"},
            ),
            OrderLine(line_id="L2", sku="TEE-RED-M", quantity=1, unit_price=Decimal("50")),
        ),
    )


async def shipments_of(
    adapter: Alibaba1688Factory, since: str | None = None
) -> tuple[list[Shipment], str | None]:
    return await drain_shipments(adapter, since)


async def notices_of(adapter: Alibaba1688Factory, since: str | None = None) -> list[FactoryOrderNotice]:
    """The notices of one whole poll (every page's)."""
    return [n async for page in adapter.fetch_shipments(since) for n in page.notices]


# --- the signature ---------------------------------------------------------------------------------


def test_signature_matches_the_documented_worked_example() -> None:
    # open.1688.com sysSignature: params b=2&a=1, secret test123, path param2/1/system/currentTime/1000000.
    # The value is the one /work/shared/1688.md records (re-computed there); `openssl dgst -sha1 -hmac test123`
    # over "param2/1/system/currentTime/1000000a1b2" gives the same.
    signature = aop_signature("test123", "param2/1/system/currentTime/1000000", {"b": "2", "a": "1"})
    assert signature == "33E54F4F7B989E3E0E912D3FBD2F1A03CA7CCE88"


def test_signature_sorts_key_value_strings_not_keys() -> None:
    # "ab1" sorts before "az" although key "a" sorts before "ab" (the SDK sorts key+value strings).
    params = {"a": "z", "ab": "1", "_aop_signature": "ignored"}
    expected = hmac.new(b"s3cret", b"param2/1/ns/api/1ab1az", hashlib.sha1).hexdigest().upper()
    assert aop_signature("s3cret", "param2/1/ns/api/1", params) == expected


async def test_the_fake_refuses_a_wrong_signature(fake: Fake1688Gateway, make: Any) -> None:
    adapter = make(app_secret="not-the-secret")  # noqa: S106 - a wrong secret on purpose
    with pytest.raises(AuthError):
        await adapter.submit(order())
    assert fake.rejected_signatures >= 1
    assert fake.held_keys() == []


# --- placing exactly once --------------------------------------------------------------------------


async def test_create_that_times_out_after_the_gateway_made_the_order_is_one_order(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fo = order()
    fake.lose_answer_next("timeout")  # the create is made, its answer never comes
    placement = await adapter.submit(fo)
    assert fake.creates[fo.key] == 1
    assert placement.reference and placement.reference.startswith(
        f"1688:{fake.orders_of(fo.key)[0].order_id}"
    )
    again = await adapter.submit(fo)  # the core's retry after a crash: looked up, not created
    assert again.reference == placement.reference
    assert fake.held_keys() == [fo.key]
    assert fake.calls.count(FAST_CREATE_ORDER) == 1


async def test_a_reset_create_is_looked_up_never_blindly_repeated(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fo = order()
    fake.lose_answer_next("reset")
    await adapter.submit(fo)
    assert fake.held_keys() == [fo.key]
    assert fake.calls.count(FAST_CREATE_ORDER) == 1


async def test_an_uncertain_create_that_made_nothing_is_retried_later_after_a_lookup(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fo = order()
    fake.fail_next(502, api=FAST_CREATE_ORDER)  # the gateway failed: no order (but relay cannot know)
    with pytest.raises(RetriableAdapterError):
        await adapter.submit(fo)
    assert fake.calls == [GET_BUYER_ORDER_LIST, FAST_CREATE_ORDER, GET_BUYER_ORDER_LIST]
    await adapter.submit(fo)  # the persisted retry: looks up, finds nothing, creates
    assert fake.held_keys() == [fo.key]


async def test_flow_control_is_retried_in_call_and_makes_one_order(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway, clock: ManualClock
) -> None:
    fo = order()
    fake.flow_control_next(times=2, api=FAST_CREATE_ORDER)  # a definite refusal: safe to repeat
    fake.flow_control_next(times=1, api=GET_BUYER_ORDER_LIST)
    await adapter.submit(fo)
    assert fake.calls.count(FAST_CREATE_ORDER) == 3
    assert fake.held_keys() == [fo.key]
    assert clock.sleeps, "waited between attempts"


async def test_persistent_flow_control_is_retriable_and_makes_nothing(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fake.flow_control_next(times=50, api=FAST_CREATE_ORDER)
    with pytest.raises(RetriableAdapterError):
        await adapter.submit(order())
    assert fake.held_keys() == []


async def test_an_expired_token_is_refreshed_and_makes_one_order(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fo = order()
    await adapter.submit(order(2))
    fake.expire_token()
    await adapter.submit(fo)
    assert fake.token_refreshes == 1
    assert fake.held_keys() == [order(2).key, fo.key]
    assert fake.creates[fo.key] == 1


async def test_a_refused_refresh_is_an_auth_error(adapter: Alibaba1688Factory, fake: Fake1688Gateway) -> None:
    fake.expire_token()
    fake.refresh_token = "revoked"  # the fake's refresh token no longer matches
    with pytest.raises(AuthError, match="authorise the app again"):
        await adapter.submit(order())
    assert fake.held_keys() == []


async def test_two_live_orders_under_one_key_need_attention(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fo = order()
    await adapter.submit(fo)
    fake.duplicate(fo.key)
    with pytest.raises(NeedsAttention) as caught:
        await adapter.submit(fo)
    assert caught.value.reason is AttentionReason.DUPLICATE_AT_FACTORY
    assert all(o.order_id in str(caught.value) for o in fake.orders_of(fo.key))
    with capture_logs() as logs:
        notices = await notices_of(adapter)
    assert [e["needs_attention"] for e in logs if e["event"] == "alibaba1688_duplicate_order"] == [
        "duplicate_at_factory"
    ] * 2
    assert [(n.factory_order_key, n.reason) for n in notices] == [
        (fo.key, AttentionReason.DUPLICATE_AT_FACTORY)
    ]
    assert all(o.order_id in notices[0].detail for o in fake.orders_of(fo.key))


@pytest.mark.parametrize(("filters", "echoes"), [(False, True), (True, False), (False, False)])
async def test_lookups_hold_whatever_the_list_filter_and_the_echo_do(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway, filters: bool, echoes: bool
) -> None:
    fake.list_filters_out_order_id, fake.echoes_out_order_id = filters, echoes
    cargo = [{"offerId": 1, "specId": "a", "quantity": 1}]
    fake._create("", "general", {}, "bought by hand", cargo)
    fo = order()
    fake.lose_answer_next("reset")
    first = await adapter.submit(fo)
    for n in range(3):  # newer orders, by hand or by another tool: ours is no longer on the first page
        fake._create(f"ERP-{n}" if n % 2 else "", "general", {}, "not relay's", cargo)
    again = await adapter.submit(fo)
    assert fake.creates[fo.key] == 1, "other orders never pass for ours, ours is always found"
    assert first.reference == again.reference
    fake.ship(fo.key)
    shipments, _ = await shipments_of(adapter)
    assert [s.factory_order_key for s in shipments] == [fo.key]


async def test_a_submit_is_bounded_by_timeout_s_whatever_it_retries(make: Any, fake: Fake1688Gateway) -> None:
    adapter = make(timeout_s=0.5)  # each request gives up after 0.3 s; three lookups would take 0.9 s
    fake.hang_next(times=50)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RetriableAdapterError, match=r"timeout_s=0\.5s"):
        await adapter.submit(order())
    assert loop.time() - started < 0.8
    assert fake.held_keys() == []


# --- mapping -----------------------------------------------------------------------------------------


async def test_the_order_maps_to_offers_address_message_and_flow(make: Any, fake: Fake1688Gateway) -> None:
    adapter = make(flow="saleproxy")
    fo = order()
    await adapter.submit(fo)
    [made] = fake.orders_of(fo.key)
    assert made.flow == "saleproxy"
    assert [(i.offer_id, i.spec_id, i.quantity) for i in made.items] == [
        (*OFFER["MUG-WHT"].split(":"), 2),
        (*OFFER["TEE-RED-M"].split(":"), 1),
    ]
    assert made.address == {
        "fullName": "张三",
        "mobile": "13800138000",
        "phone": "",
        "postCode": "518000",
        "provinceText": "广东省",
        "cityText": "深圳市",
        "areaText": "",
        "townText": "",
        "address": "科技园南路 1 号 2 栋 301",
    }
    assert "#1001" in made.message and "engraving: For Ada" in made.message
    key, refs = parse_trailer(made.message)
    assert key == fo.key
    assert [(r.line_id, r.quantity) for r in refs] == [("L1", 2), ("L2", 1)]


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        (CN_ADDRESS.model_copy(update={"phone": ""}), "missing phone"),
        (CN_ADDRESS.model_copy(update={"region": "", "city": ""}), r"missing region \(province\), city"),
        (CN_ADDRESS.model_copy(update={"country_code": "GB"}), "not mainland China"),
    ],
)
async def test_an_address_1688_cannot_take_needs_attention_before_any_call(
    make: Any, fake: Fake1688Gateway, address: Address, problem: str
) -> None:
    adapter = make(forwarder=None)
    with pytest.raises(NeedsAttention, match=problem) as caught:
        await adapter.submit(order(address=address))
    assert caught.value.reason is AttentionReason.ADDRESS_INVALID
    assert fake.calls == []


async def test_an_address_abroad_goes_to_the_forwarder_with_the_customer_in_the_message(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    abroad = Address(name="Ada Lovelace", line1="12 St James's Square", city="London", country_code="GB")
    fo = order(address=abroad)
    await adapter.submit(fo)
    [made] = fake.orders_of(fo.key)
    assert made.address["fullName"] == "Relay Forwarding"
    assert "ship to: Ada Lovelace, 12 St James's Square, London, GB" in made.message


async def test_an_sku_without_an_offer_needs_attention(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    lines = (OrderLine(line_id="L9", sku="NOT-MAPPED", quantity=1, unit_price=Decimal("1")),)
    with pytest.raises(NeedsAttention) as caught:
        await adapter.submit(order(lines=lines))
    assert caught.value.reason is AttentionReason.UNKNOWN_SKU
    assert fake.calls == []


async def test_money_in_fen_is_recorded_exactly(adapter: Alibaba1688Factory, fake: Fake1688Gateway) -> None:
    mug, tee = (tuple(OFFER[s].split(":")) for s in ("MUG-WHT", "TEE-RED-M"))
    fake.prices[mug] = 1999  # fen
    fake.prices[tee] = 1
    placement = await adapter.submit(order())
    assert (
        placement.amount == Decimal("47.99") and str(placement.amount) == "47.99"
    )  # goods 39.99 + post 8.00
    assert placement.currency == "CNY"
    assert placement.reference == f"1688:{next(iter(fake.orders))}; waitbuyerpay; CNY 47.99"  # short


# --- parcels ------------------------------------------------------------------------------------------


async def test_two_parcels_are_two_shipments_with_the_right_lines(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway, clock: ManualClock
) -> None:
    fo = order()
    await adapter.submit(fo)
    assert (await shipments_of(adapter))[0] == [], "unpaid, unsent: nothing to report"
    clock.now += 60
    first, second = fake.ship(fo.key, parcels=[[0], [1]], carrier="SF")
    shipments, cursor = await shipments_of(adapter)
    assert [(s.shipment_id, s.tracking_number, s.carrier) for s in shipments] == [
        (first.logistics_id, first.bill_no, "SF Express"),
        (second.logistics_id, second.bill_no, "SF Express"),
    ]
    assert [[(ln.line_id, ln.quantity) for ln in s.lines] for s in shipments] == [[("L1", 2)], [("L2", 1)]]
    assert {s.factory_order_key for s in shipments} == {fo.key}
    assert (await shipments_of(adapter, cursor)) == ([], cursor), "resumed: nothing repeated"


async def test_one_line_split_over_two_parcels_and_two_lines_of_one_offer(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    lines = (
        OrderLine(
            line_id="A", sku="MUG-WHT", quantity=1, unit_price=Decimal("1"), properties={"name": "Ada"}
        ),
        OrderLine(
            line_id="B", sku="MUG-WHT", quantity=2, unit_price=Decimal("1"), properties={"name": "Bob"}
        ),
    )
    fo = order(lines=lines)
    await adapter.submit(fo)
    [made] = fake.orders_of(fo.key)
    assert [i.quantity for i in made.items] == [3], "one cargo entry per offer/spec"
    sub = made.items[0].sub_item_id
    fake.ship(fo.key, parcels=[[0]])
    made.parcels[0].goods = [(sub, 2)]  # the first parcel holds 2 of the 3
    fake.ship(fo.key, parcels=[[0]])
    made.parcels[1].goods = [(sub, 1)]
    shipments, _ = await shipments_of(adapter)
    assert [[(ln.line_id, ln.quantity) for ln in s.lines] for s in shipments] == [
        [("A", 1), ("B", 1)],
        [("B", 1)],
    ]


# --- cancelling ----------------------------------------------------------------------------------------


async def test_cancel_before_payment_cancels_at_1688_past_the_too_fast_window(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway, clock: ManualClock
) -> None:
    fo = order()
    await adapter.submit(fo)
    await adapter.cancel(fo, cancelled_at=datetime.fromtimestamp(T0, UTC))  # within 10 s of creation
    assert fake.is_cancelled(fo.key)
    assert fake.calls.count(CANCEL) == 2, "refused as too fast, then cancelled"
    assert clock.sleeps and clock.sleeps[-1] == pytest.approx(10.0)
    await adapter.cancel(fo, cancelled_at=datetime.fromtimestamp(T0, UTC))  # a repeat is harmless
    assert fake.calls.count(CANCEL) == 2
    with pytest.raises(FatalAdapterError, match="not re-created"):
        await adapter.submit(fo)
    assert fake.held_keys() == [fo.key]


async def test_cancel_after_payment_needs_a_refund(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fo = order()
    await adapter.submit(fo)
    fake.mark_paid(fo.key)
    with pytest.raises(NeedsAttention) as caught:
        await adapter.cancel(fo, cancelled_at=datetime.fromtimestamp(T0, UTC))
    [made] = fake.orders_of(fo.key)
    assert caught.value.reason is AttentionReason.REFUND_REQUIRED
    assert caught.value.reference == made.order_id
    assert made.status == "waitsellersend"
    assert CANCEL not in fake.calls


async def test_cancel_after_a_parcel_left_is_already_shipped(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fo = order()
    await adapter.submit(fo)
    fake.ship(fo.key, parcels=[[0]])  # one of two lines sent
    with pytest.raises(AlreadyShipped):
        await adapter.cancel(fo, cancelled_at=datetime.fromtimestamp(T0, UTC))


# --- payment --------------------------------------------------------------------------------------------


async def test_unpaid_orders_wait_visibly_are_flagged_before_the_deadline_and_never_recreated(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway, clock: ManualClock
) -> None:
    fo = order()
    placement = await adapter.submit(fo)
    assert "waitbuyerpay" in (placement.reference or "")
    assert placement.attention is AttentionReason.AWAITING_PAYMENT
    assert placement.pay_deadline is not None  # T0 + 12 h (payTimeout)
    assert placement.pay_deadline.astimezone(UTC).isoformat(timespec="minutes") == "2026-09-22T02:13+00:00"
    with capture_logs() as logs:
        assert await notices_of(adapter) == []
    assert not [e for e in logs if e["event"] == "alibaba1688_payment_due"], "12 h left: not yet"
    clock.now += 43200 - 3600  # one hour before 1688 closes it
    with capture_logs() as logs:
        due_notices = await notices_of(adapter)
        await shipments_of(adapter)
    due = [e for e in logs if e["event"] == "alibaba1688_payment_due"]
    assert [(e["needs_attention"], e["key"]) for e in due] == [("awaiting_payment", fo.key)], "flagged once"
    assert [(n.factory_order_key, n.reason) for n in due_notices] == [
        (fo.key, AttentionReason.AWAITING_PAYMENT)
    ]
    assert "2026-09-22T02:13" in due_notices[0].detail
    clock.now += 3600
    with capture_logs() as logs:
        closed_notices = await notices_of(adapter)
    closed = [e for e in logs if e["event"] == "alibaba1688_order_closed_unpaid"]
    assert [e["needs_attention"] for e in closed] == ["payment_expired"]
    assert [(n.factory_order_key, n.reason) for n in closed_notices] == [
        (fo.key, AttentionReason.PAYMENT_EXPIRED)
    ]
    with pytest.raises(NeedsAttention) as caught:
        await adapter.submit(fo)
    assert caught.value.reason is AttentionReason.PAYMENT_EXPIRED
    assert fake.creates[fo.key] == 1, "closed unpaid is flagged, never silently re-created"


async def test_an_order_paid_at_1688_is_reported_paid_by_the_poll(
    adapter: Alibaba1688Factory, fake: Fake1688Gateway
) -> None:
    fo = order()
    await adapter.submit(fo)
    fake.mark_paid(fo.key)
    notices = await notices_of(adapter)
    assert [(n.factory_order_key, n.reason) for n in notices] == [(fo.key, None)]
    assert "paid" in notices[0].detail


async def test_protocol_pay_is_confirmed_by_rereading_not_by_its_answer(
    make: Any, fake: Fake1688Gateway
) -> None:
    adapter = make(protocol_pay=True)
    fake.lose_pay_answer_next()  # the money is taken, the answer says paySuccess=false
    placement = await adapter.submit(order())
    assert "waitsellersend" in (placement.reference or "")
    assert fake.calls.count(PREPARE_PAY) == 1, "re-read showed it paid: never paid twice"


async def test_protocol_pay_lost_in_transit_is_retried_only_while_unpaid(
    make: Any, fake: Fake1688Gateway
) -> None:
    adapter = make(protocol_pay=True)
    fake.hang_next(api=PREPARE_PAY)  # no answer, nothing done
    placement = await adapter.submit(order())
    assert "waitsellersend" in (placement.reference or "")
    assert fake.calls.count(PREPARE_PAY) == 2


async def test_a_refused_protocol_pay_needs_attention_with_the_deadline(
    make: Any, fake: Fake1688Gateway
) -> None:
    adapter = make(protocol_pay=True)
    fake.refuse_pay_next("BALANCE_NOT_ENOUGH")
    with pytest.raises(NeedsAttention, match=r"BALANCE_NOT_ENOUGH.*before 2026-09-22T02:13") as caught:
        await adapter.submit(order())
    assert caught.value.reason is AttentionReason.AWAITING_PAYMENT
    fake.mark_paid(order().key)  # the reseller pays at 1688; the operator retries
    placement = await adapter.submit(order())
    assert "waitsellersend" in (placement.reference or "")
    assert fake.creates[order().key] == 1
