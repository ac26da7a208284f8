"""The one-pass validation of a listing record (`_to_order`: the order, its address and its lines checked
in one pydantic-core call) maps every record as the model-by-model construction did: the same `Order`
(values, types, timestamps, Decimal exponents, fields set), or `Malformed` with the same reason.

`reference_to_record` is that construction as it was written before, kept here as the oracle; the records
are the fixtures and fake orders with odd values put in, one or two at a time (the order in which a
record's faults are found decides its reason)."""

from __future__ import annotations

import copy
import html
import json
import random
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.woocommerce.adapter import (
    CANCELLED_STATUSES,
    PAID_STATUSES,
    UNPAID_STATUSES,
    _decimal,
    _gmt,
    _jsonable,
    _text,
    _to_record,
)
from adapters.woocommerce.fake import FakeWooCommerce, load_fixture
from relay.domain.models import Address, Malformed, Order, OrderLine
from relay.testing.vendor import SeedLine

TEST_META = {"_wcpay_mode": "test"}


# --- the reference: records mapped model by model, as before ---------------------------------------


def reference_to_record(raw: Any, test_meta: Mapping[str, str]) -> Order | Malformed:
    try:
        return reference_to_order(raw, test_meta)
    except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        external_id = str(raw["id"]) if isinstance(raw, dict) and raw.get("id") is not None else None
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        return Malformed(external_id=external_id, reason=reason, raw=_jsonable(raw))


def reference_to_order(raw: dict[str, Any], test_meta: Mapping[str, str]) -> Order:
    status = str(raw.get("status") or "")
    if status in PAID_STATUSES:
        paid = True
    elif status in UNPAID_STATUSES:
        paid = False
    else:
        paid = raw.get("date_paid_gmt") is not None
    billing = raw.get("billing") or {}
    created = reference_gmt(raw["date_created_gmt"])
    return Order(
        external_id=str(raw["id"]),
        number=_text(raw.get("number")) or str(raw["id"]),
        created_at=created,
        updated_at=reference_gmt(raw["date_modified_gmt"]) if raw.get("date_modified_gmt") else created,
        currency=raw["currency"],
        total=None if raw.get("total") is None else _decimal(raw["total"]),
        email=_text(billing.get("email")),
        paid=paid,
        test=any(
            isinstance(meta, dict) and test_meta.get(str(meta.get("key"))) == meta.get("value")
            for meta in raw.get("meta_data") or []
        ),
        cancelled=status in CANCELLED_STATUSES,
        fulfilled=status == "completed",
        shipping_address=reference_address(raw.get("shipping") or {}, billing),
        lines=tuple(reference_line(item) for item in raw["line_items"]),
    )


def reference_gmt(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def reference_address(shipping: dict[str, Any], billing: dict[str, Any]) -> Address:
    name = " ".join(p for p in (_text(shipping.get("first_name")), _text(shipping.get("last_name"))) if p)
    return Address(
        name=name,
        company=_text(shipping.get("company")),
        line1=_text(shipping.get("address_1")),
        line2=_text(shipping.get("address_2")),
        city=_text(shipping.get("city")),
        region=_text(shipping.get("state")),
        postal_code=_text(shipping.get("postcode")),
        country_code=_text(shipping.get("country")),
        phone=_text(shipping.get("phone")) or _text(billing.get("phone")),
    )


def reference_line(item: dict[str, Any]) -> OrderLine:
    quantity = item["quantity"]
    price = item.get("price")
    unit_price = _decimal(price) if price is not None else _decimal(item["subtotal"]) / Decimal(quantity)
    variant = item.get("variation_id") or item.get("product_id")
    properties = {
        meta["key"]: meta["value"]
        for meta in item.get("meta_data") or []
        if isinstance(meta, dict)
        and isinstance(meta.get("key"), str)
        and not meta["key"].startswith("_")
        and isinstance(meta.get("value"), str)
    }
    return OrderLine(
        line_id=str(item["id"]),
        sku=_text(item.get("sku")) or None,
        variant_id=str(variant) if variant else None,
        title=html.unescape(_text(item.get("name"))),
        quantity=quantity,
        unit_price=unit_price,
        properties=properties,
    )


# --- the records ----------------------------------------------------------------------------------


def base_records() -> list[dict[str, Any]]:
    """The fixtures, and fake orders (test-mode meta, item properties, no `price`) as a listing has them."""
    fake = FakeWooCommerce()
    fake.url = "http://127.0.0.1:1"
    fake.add_order([SeedLine("MUG-1", quantity=3, unit_price=Decimal("29.35"))], test=True, updated_at=1e9)
    fake.add_order(
        [
            SeedLine("TEE-1", properties={"Größe": "XL ♥", "_hidden": "x"}),
            SeedLine(None, unit_price=Decimal(0)),
        ],
        paid=False,
        currency="EUR",
        updated_at=1.5e9,
    )
    records = [fake._render(order) for order in fake._orders.values()]
    records += [load_fixture("order.json"), *load_fixture("orders_page.json")]
    no_price = copy.deepcopy(records[-1])
    for item in no_price["line_items"]:
        item.pop("price", None)
    return [*json.loads(json.dumps(records)), no_price]


ODD_VALUES: list[Any] = [
    "<missing>",
    None,
    "",
    " ",
    "0",
    "2",
    "-1",
    "abc",
    "Ünïcødé ♥ &amp; x",
    "\ud800",  # a lone surrogate (only the standard parser lets one through)
    "x" * 600,
    0,
    2,
    -3,
    100_001,
    2.0,
    2.5,
    0.1,
    1e-320,
    True,
    False,
    Decimal("14.990"),
    Decimal("NaN"),
    10**20,
    [],
    ["x"],
    {},
    {"key": "_wcpay_mode", "value": "test"},
    "2026-11-02T09:15:12",
    "2026-11-02T10:15:12+01:00",
    "2026-11-02 09:15:12.250Z",
    "29.35",
    "1E+2",
    "EUR",
    "eur",
    "refunded",
    "completed",
    "on-hold",
    "trash",
]

PATHS: list[tuple[Any, ...]] = [
    ("id",),
    ("number",),
    ("status",),
    ("currency",),
    ("total",),
    ("date_created_gmt",),
    ("date_modified_gmt",),
    ("date_paid_gmt",),
    ("billing",),
    ("billing", "email"),
    ("billing", "phone"),
    ("shipping",),
    ("shipping", "first_name"),
    ("shipping", "city"),
    ("shipping", "phone"),
    ("meta_data",),
    ("meta_data", 0),
    ("meta_data", 0, "key"),
    ("meta_data", 0, "value"),
    ("line_items",),
    ("line_items", 0),
    ("line_items", 0, "id"),
    ("line_items", 0, "quantity"),
    ("line_items", 0, "price"),
    ("line_items", 0, "subtotal"),
    ("line_items", 0, "sku"),
    ("line_items", 0, "name"),
    ("line_items", 0, "variation_id"),
    ("line_items", 0, "product_id"),
    ("line_items", 0, "meta_data"),
    ("line_items", 0, "meta_data", 0, "value"),
    ("line_items", -1, "id"),
    ("line_items", -1, "quantity"),
    ("line_items", -1, "price"),
]


def put(record: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set (or with `<missing>`, delete) the value at `path`, where the record has that place."""
    *parents, last = path
    target = record
    for step in parents:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(target, dict) or (isinstance(target, list) and isinstance(last, int) and target):
        if value == "<missing>":
            if isinstance(target, dict):
                target.pop(last, None)
            else:
                del target[last]
        else:
            target[last] = copy.deepcopy(value)


def records() -> Iterator[Any]:
    bases = base_records()
    yield from bases
    yield from (None, [], "727", 727, {}, {"id": 1})
    for base in bases[:2]:
        for path in PATHS:
            for value in ODD_VALUES:
                record = copy.deepcopy(base)
                put(record, path, value)
                yield record
    picks = random.Random(15)
    for _ in range(1000):  # two faults at once: which is found first decides the reason
        record = copy.deepcopy(picks.choice(bases))
        for _ in range(2):
            put(record, picks.choice(PATHS), picks.choice(ODD_VALUES))
        yield record


def models_of(item: Order | Malformed) -> list[Any]:
    if isinstance(item, Malformed):
        return [item]
    return [item, item.shipping_address, *item.lines]


def serialised(order: Order) -> tuple[str, str] | str:
    """The order's payload and hash, or why it has none (a lone surrogate cannot be UTF-8)."""
    try:
        return order.payload_and_hash()
    except ValueError as exc:
        return repr(exc)


# --- the tests ------------------------------------------------------------------------------------


def test_every_record_maps_as_it_did_model_by_model() -> None:
    kinds: dict[str, int] = {"Order": 0, "Malformed": 0}
    reasons: set[str] = set()
    for raw in records():
        before = copy.deepcopy(raw)
        expected = reference_to_record(copy.deepcopy(raw), TEST_META)
        got = _to_record(raw, TEST_META)

        assert repr(got) == repr(expected), raw
        assert [m.model_fields_set for m in models_of(got)] == [
            m.model_fields_set for m in models_of(expected)
        ]
        if isinstance(got, Order):
            assert isinstance(expected, Order)
            assert serialised(got) == serialised(expected)
        else:
            reasons.add(got.reason.split("\n")[0].split(" [")[0][:60])
        assert repr(raw) == repr(before)  # the record is not changed
        kinds[type(got).__name__] += 1
    assert kinds["Order"] > 500 and kinds["Malformed"] > 500
    assert any("validation error for OrderLine" in r for r in reasons)
    assert any("validation error for Order" in r and "OrderLine" not in r for r in reasons)


def test_the_fixture_maps_to_fixed_values() -> None:
    order = _to_record(load_fixture("order.json"), TEST_META)

    assert isinstance(order, Order)
    assert (order.external_id, order.number, order.currency, order.total) == (
        "727",
        "727",
        "EUR",
        Decimal("49.88"),
    )
    assert order.created_at == datetime(2026, 11, 2, 9, 15, 12, tzinfo=UTC) and order.created_at.tzinfo is UTC
    assert order.updated_at == datetime(2026, 11, 2, 9, 16, 40, tzinfo=UTC)
    assert (order.paid, order.test, order.cancelled, order.fulfilled) == (True, False, False, False)
    assert order.shipping_address.name == "Anna Schmidt" and order.shipping_address.phone == "+49 30 1234567"
    first, second = order.lines
    assert (first.line_id, first.sku, first.variant_id, first.quantity) == ("315", "MUG-ENAMEL-WHT", "93", 2)
    assert first.title == "Enamel Mug \u2013 Personalised" and first.properties == {"Engraving": "Für Oma ♥"}
    assert [str(line.unit_price) for line in order.lines] == ["14.99", "15"]
    assert (second.variant_id, second.properties) == ("23", {"pa_color": "black", "pa_size": "m"})


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-02T09:15:12",
        "2026-11-02T09:15:12.250000",
        "2026-11-02",
        "2026-11-02T09:15:12Z",
        "2026-11-02T10:15:12+01:00",
        "2024-02-29T23:59:59.999999",
        "20261102T091512",
    ],
)
def test_a_gmt_stamp_reads_as_it_did(stamp: str) -> None:
    expected = reference_gmt(stamp)

    got = _gmt(stamp)

    assert repr(got) == repr(expected) and got.tzinfo is UTC and got.fold == expected.fold == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {("line_items", 0, "quantity"): 0, ("line_items", 1, "quantity"): "<missing>"},
            "ValidationError: 1 validation error for OrderLine\nquantity\n  Input should be greater than 0",
        ),
        (
            {("line_items", 1, "quantity"): "<missing>", ("currency",): "eur"},
            "KeyError: 'quantity'",
        ),
        (
            {("line_items", 1, "price"): -1, ("currency",): "eur"},
            "ValidationError: 1 validation error for OrderLine\nunit_price\n  Input should be greater than or",
        ),
        (
            {("currency",): "eur", ("number",): " ", ("id",): " "},
            "ValidationError: 2 validation errors for Order\nexternal_id\n",
        ),
        (
            {("line_items", 0, "quantity"): "abc", ("line_items", 1, "price"): "NaN"},
            "ValidationError: 1 validation error for OrderLine\nquantity\n  Input should be a valid integer",
        ),
        (
            {("line_items", 1, "id"): 315},
            "ValidationError: 1 validation error for Order\nlines\n  Value error, line ids must be unique",
        ),
        ({("line_items", 0, "price"): "NaN"}, "ValueError: not an amount: 'NaN'"),
    ],
)
def test_a_record_that_does_not_map_keeps_its_reason(change: dict[tuple[Any, ...], Any], reason: str) -> None:
    raw = load_fixture("order.json")
    for path, value in change.items():
        put(raw, path, value)

    got = _to_record(raw, TEST_META)

    assert isinstance(got, Malformed) and got.external_id == str(raw["id"])
    assert got.reason.startswith(reason), got.reason
