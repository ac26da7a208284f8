"""Issue 15: the writer thread's fast paths keep behaviour. orjson builds the JSON the SQLite connector binds
(`execute_many`'s rows, list parameters) and the history events' detail; `Order.payload_and_hash` serialises
an order once for its payload and its version. Each is checked against what it replaces."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
from collections import namedtuple
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.domain.models import (
    Address,
    AttentionReason,
    Order,
    OrderLine,
    OrderState,
    ShipmentLine,
    ShipmentPush,
)
from relay.store import Store
from relay.store.changes import EventTap
from relay.store.connector import Transaction
from relay.store.manager import RelayStore
from relay.store.sqlite.connector import _array_json, _bind, _rows_json
from relay.store.transitions import detail_json, event
from relay.store.transitions.outbox import _claimed_push

# --- the connector's JSON: read by SQLite exactly as `json`'s ---------------------------------------------

_DB = sqlite3.connect(":memory:")

texts = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "null", "NaN", 'a"b\\c', "é😀\x7f\x00\n", "\udc80", "routed"]
)
ints = st.integers(-(2**70), 2**70) | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63)])
floats = st.floats() | st.sampled_from(
    [0.0, -0.0, 1e16, 1e-5, 5e-324, 1.7976931348623157e308, 1764790000.123456]
)
scalars = st.none() | st.booleans() | ints | floats | texts | st.sampled_from(list(OrderState))
keys = st.sampled_from(["order_id", "at", "kind", "from_state", "to_state", "detail", "now", "payload"])


def sqlite_reads(text: str) -> Any:
    """What `json_each` (and `->>`, which reads the same values) gives for a JSON array of rows or values,
    floats by their bits; or the error SQLite (or the binding) raises."""
    query = (
        "SELECT j.key, k.key, typeof(k.value), k.value FROM json_each(?) AS j, json_each(j.value) AS k "
        "ORDER BY j.key, k.id"
        if text.lstrip().startswith("[{")
        else "SELECT key, typeof(value), value FROM json_each(?) ORDER BY key"
    )
    try:
        rows = _DB.execute(query, (text,)).fetchall()
    except (sqlite3.Error, UnicodeError) as exc:
        return ("error", type(exc).__name__, str(exc))
    return [tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in row) for row in rows]


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return sqlite_reads(fn(*args))
    except Exception as exc:  # the failure is the outcome compared
        return ("raised", type(exc).__name__)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.dictionaries(keys, scalars, max_size=8), min_size=2, max_size=6))
def test_rows_json_reads_in_sqlite_as_json_dumps_does(rows: list[dict[str, Any]]) -> None:
    old = outcome(lambda r: json.dumps([dict(row) for row in r], ensure_ascii=False), rows)
    assert outcome(_rows_json, rows) == old


@settings(max_examples=400, deadline=None)
@given(st.lists(scalars, max_size=8), st.booleans())
def test_list_parameters_read_in_sqlite_as_json_dumps_does(values: list[Any], as_tuple: bool) -> None:
    param = tuple(values) if as_tuple else values
    assert outcome(_array_json, param) == outcome(lambda v: json.dumps(list(v)), param)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), [1.0, float("nan")], {"x": float("inf")}],
    ids=["nan", "inf", "-inf", "nested-list", "nested-dict"],
)
def test_non_finite_floats_fail_in_sqlite_as_before(value: object) -> None:
    """orjson would write them `null`: `json`'s `NaN` (malformed JSON to SQLite) is kept, and the error."""
    rows: list[dict[str, Any]] = [{"a": None, "b": value}, {"a": "null", "b": 1.5}]
    expected = json.dumps(rows, ensure_ascii=False)
    assert _rows_json(rows) == expected
    assert sqlite_reads(_rows_json(rows))[0] == "error"
    assert _array_json([None, value]) == json.dumps([None, value])


def test_rows_that_are_not_dicts_and_types_json_refuses_behave_as_before() -> None:
    class Row:  # a Mapping that is not a dict: `dict(row)` reads it
        def __init__(self, **values: object) -> None:
            self.values = values

        def keys(self) -> Any:
            return self.values.keys()

        def __getitem__(self, key: str) -> object:
            return self.values[key]

    rows: Any = [Row(a=1, b="x"), Row(a=2, b=None)]
    assert _rows_json(rows) == json.dumps([{"a": 1, "b": "x"}, {"a": 2, "b": None}], ensure_ascii=False)
    refusals: list[Any] = [datetime(2026, 1, 1, tzinfo=UTC), date(2026, 1, 1), Decimal("1.5")]
    for refused in refusals:
        with pytest.raises(TypeError):
            _rows_json([{"a": refused}, {"a": 1}])
        with pytest.raises(TypeError):
            _array_json([refused])


def test_bind_encodes_only_sequences() -> None:
    params: dict[str, Any] = {"ids": [3, 1], "names": ("é", "b"), "one": "x", "none": None}
    assert _bind(params) == {"ids": "[3,1]", "names": '["é","b"]', "one": "x", "none": None}


# --- the events' detail: `json.loads` reads what it read before ------------------------------------------

Point = namedtuple("Point", "x y")


class Money(float):
    pass


json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        | st.dictionaries(st.integers(0, 3), inner, max_size=2)
    ),
    max_leaves=8,
)
odd_values = st.sampled_from(
    [
        Decimal("12.50"),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=8))),
        date(2026, 1, 2),
        AttentionReason.UNKNOWN_SKU,
        OrderState.ROUTED,
        Point(1, "a"),
        Money(2.5),
        (1, "x"),
        {3, 4},
        "\udc80",
        2**64,
    ]
)


def loaded(text: str) -> str:
    """The object `text` loads to, keys in order and floats by `repr` (so NaN equals NaN, -0.0 is not 0.0)."""
    return repr(json.loads(text, object_pairs_hook=list))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values | odd_values, min_size=1, max_size=6))
def test_event_detail_loads_to_what_json_dumps_gave(detail: dict[str, Any]) -> None:
    try:
        old = json.dumps(detail, default=str)
    except Exception as exc:
        with pytest.raises(type(exc)):
            detail_json(detail)
        return
    assert loaded(detail_json(detail)) == loaded(old)


def test_event_row_keeps_its_shape() -> None:
    row = event(7, 1.5, "held", OrderState.RECEIVED, OrderState.HELD, reason="unknown_sku", detail=None)
    assert row == {
        "order_id": 7,
        "at": 1.5,
        "kind": "held",
        "from_state": "received",
        "to_state": "held",
        "detail": '{"reason":"unknown_sku","detail":null}',
    }
    assert event(7, 1.5, "received")["detail"] is None
    assert event(1, 1.0, "x", why="Ünïcode", n=1)["detail"] == '{"why":"Ünïcode","n":1}'
    # NaN: `json`'s text, which `json.loads` reads back as NaN (orjson would write null)
    assert (
        event(1, 1.0, "x", why="Ünïcode", when=float("nan"))["detail"]
        == '{"why": "\\u00dcn\\u00efcode", "when": NaN}'
    )


# --- the order's payload and version, serialised once ----------------------------------------------------


def old_content_hash(order: Order) -> str:
    """The formula every stored `content_hash` was made with."""
    return hashlib.sha256(order.model_dump_json(exclude={"updated_at"}).encode()).hexdigest()[:32]


def sample(**update: object) -> Order:
    base = Order(
        external_id="5523411234567",
        number="#1001",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        updated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        currency="USD",
        total=Decimal("25.00"),
        email="jane@example.com",
        shipping_address=Address(name="Jane", line1="12 Main St", country_code="US"),
        lines=(OrderLine(line_id="l1", sku="MUG", quantity=2, unit_price=Decimal("12.50")),),
    )
    return base.model_copy(update=update)


def test_the_version_of_a_sample_order_is_pinned() -> None:
    """A changed hash would make every stored order look edited."""
    payload, version = sample().payload_and_hash()
    assert payload == sample().model_dump_json()
    assert (
        version == old_content_hash(sample()) == sample().content_hash() == "a0c34d1e97354f5751b910c47a85444d"
    )


stamps = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]),
)
tricky = st.text(max_size=20) | st.sampled_from([',"updated_at":"', '\\",\\"updated_at\\":\\"x', '"', "\\"])


@settings(max_examples=300, deadline=None)
@given(
    external_id=tricky.filter(lambda s: s.strip() != "" and len(s.strip()) <= 512),
    number=tricky,
    created_at=stamps,
    updated_at=stamps,
    email=tricky,
    line_id=tricky.filter(lambda s: s.strip() != ""),
    prop=tricky,
)
def test_payload_and_hash_match_the_two_serialisations(**fields: Any) -> None:
    line = OrderLine(
        line_id=fields.pop("line_id"), quantity=1, unit_price=Decimal(1), properties={"p": fields.pop("prop")}
    )
    order = Order.model_validate({**sample().model_dump(), **fields, "lines": [line.model_dump()]})
    assert order.payload_and_hash() == (order.model_dump_json(), old_content_hash(order))


async def stored(store: Store, order_id: int) -> tuple[str, str, list[str]]:
    """The order's stored payload and version, and its events' kinds."""

    async def read(tx: Transaction) -> tuple[str, str, list[str]]:
        [row] = await tx.fetch("order_versions", order_ids=[order_id])
        events = [str(e["kind"]) for e in await tx.fetch("events_of_order", order_id=order_id)]
        return str(row["payload"]), str(row["content_hash"]), events

    assert isinstance(store, RelayStore)
    return await store.connector.run_read(read)


async def test_ingest_stores_each_version_with_its_payload_and_hash(store: Store) -> None:
    first = sample(number="#1001 «ü»")
    await store.ingest("shop", [first], [], None, 1.0)
    assert (await stored(store, 1))[:2] == (first.model_dump_json(), old_content_hash(first))
    again = await store.ingest(
        "shop", [sample(number="#1001 «ü»", updated_at=datetime(2026, 1, 3, tzinfo=UTC))], [], None, 2.0
    )
    assert again.updated == 0  # the same content: its stored hash matched
    edited = sample(number="#1001 «ü»", email="new@example.com", updated_at=datetime(2026, 1, 4, tzinfo=UTC))
    result = await store.ingest("shop", [edited], [], None, 3.0)
    assert result.updated == 1
    payload, version, events = await stored(store, 1)
    assert (payload, version) == (edited.model_dump_json(), old_content_hash(edited))
    assert events == ["received"]


# --- a claimed push, validated once ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    carrier=tricky,
    tracking_number=tricky,
    tracking_url=st.none() | tricky,
    notify_customer=st.booleans(),
    prior_attempt_unknown=st.booleans(),
)
def test_a_claimed_push_is_the_stored_push_with_the_claims_flag(
    prior_attempt_unknown: bool, **fields: Any
) -> None:
    push = ShipmentPush(
        key="sp_1",
        storefront="shop",
        order_id="55",
        order_number="#1",
        lines=(ShipmentLine(line_id="l1", quantity=1),),
        order_fully_shipped=True,
        **fields,
    )
    payload = push.model_dump_json()
    old = ShipmentPush.model_validate_json(payload).model_copy(
        update={"prior_attempt_unknown": prior_attempt_unknown}
    )
    new = _claimed_push(payload, prior_attempt_unknown=prior_attempt_unknown)
    assert new == old and new.prior_attempt_unknown is prior_attempt_unknown
    assert new.model_fields_set == old.model_fields_set and new.model_dump_json() == payload


def test_a_push_payload_that_holds_the_flag_is_copied_as_before() -> None:
    payload = json.dumps(
        {
            "key": "sp_1",
            "storefront": "shop",
            "order_id": "55",
            "order_number": "#1",
            "carrier": "UPS",
            "tracking_number": "1Z",
            "lines": [{"line_id": "l1", "quantity": 1}],
            "order_fully_shipped": True,
            "prior_attempt_unknown": True,
        },
        indent=1,
    )
    assert _claimed_push(payload + "\n", prior_attempt_unknown=False).prior_attempt_unknown is False
    assert _claimed_push(payload, prior_attempt_unknown=False).prior_attempt_unknown is False


# --- the event tap: straight through, keeping only history events ---------------------------------------


class Recorder:
    """A `Transaction` that records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    async def fetch(self, query: str, /, **params: Any) -> list[Any]:
        self.calls.append(("fetch", query, params))
        return [{"id": 1}]

    async def fetch_one(self, query: str, /, **params: Any) -> Any:
        self.calls.append(("fetch_one", query, params))
        return None

    async def execute(self, query: str, /, **params: Any) -> int:
        self.calls.append(("execute", query, params))
        return 2

    async def execute_many(self, query: str, rows: Any, /) -> None:
        self.calls.append(("execute_many", query, rows))

    async def insert(self, query: str, /, **params: Any) -> int:
        self.calls.append(("insert", query, params))
        return 3

    async def execute_statement(self, statement: str, /) -> None:
        self.calls.append(("execute_statement", statement))

    def notify(self, topic: str, /) -> None:
        self.calls.append(("notify", topic))


async def test_the_event_tap_passes_every_call_through_and_keeps_only_events() -> None:
    inner = Recorder()
    tap = EventTap(inner)
    assert await tap.fetch("q", a=1) == [{"id": 1}]
    assert await tap.fetch_one("q1", b=[1]) is None
    assert await tap.execute("set_order_state", state="held", from_state=None, to_state="held") == 2
    await tap.execute_many("set_order_state", [{"to_state": "held", "from_state": None}])
    assert await tap.insert("ins", c="x") == 3
    await tap.execute_statement("SELECT 1")
    tap.notify("route")
    assert [c[0] for c in inner.calls] == [
        "fetch",
        "fetch_one",
        "execute",
        "execute_many",
        "insert",
        "execute_statement",
        "notify",
    ]
    assert tap._kept == []
    moved = event(1, 1.0, "held", "received", "held")
    stayed = event(1, 1.0, "note", "held", "held")
    noted = event(1, 1.0, "factory_accepted", None, None, factory="acme")
    await tap.execute("insert_event", **moved)
    await tap.execute_many("insert_event", [moved, stayed, noted, event(1, 1.0, "x")])
    assert tap._kept == [(False, moved), (False, moved), (False, noted)]
