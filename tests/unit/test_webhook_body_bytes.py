"""The webhook bodies are built with orjson where that gives exactly the bytes `json.dumps` gave, the bytes
relay has always signed and sent: a retry after an upgrade sends the same body (docs/factory-api.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.webhook.adapter import canonical_json, order_cancelled_body, order_created_body
from relay.domain.models import Address, FactoryOrder, OrderLine


def reference(body: bytes) -> bytes:
    """What relay sent before orjson: `json.dumps` of the same message, compact, keys sorted."""
    return json.dumps(json.loads(body), separators=(",", ":"), sort_keys=True).encode()


text = st.text(max_size=12)  # every code point: ASCII, control characters, DEL, non-ASCII, surrogates


@st.composite
def factory_orders(draw: Any) -> FactoryOrder:
    lines = tuple(
        OrderLine(
            line_id=f"L{i}{draw(text)}",
            sku=draw(st.none() | text),
            title=draw(text),
            quantity=draw(st.integers(1, 100_000)),
            unit_price=draw(st.decimals(min_value=0, max_value=10**6, places=2)),
            properties=draw(st.dictionaries(text, text, max_size=3)),
        )
        for i in range(draw(st.integers(1, 3)))
    )
    return FactoryOrder(
        key=f"shop:1:{draw(text)}",
        factory="acme",
        storefront="shop",
        order_id=draw(text) or "1",
        order_number=draw(text),
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        currency="USD",
        email=draw(text),
        shipping_address=Address(name=draw(text), line1=draw(text), city=draw(text), phone=draw(text)),
        lines=lines,
        factory_skus=draw(st.dictionaries(st.sampled_from([ln.line_id for ln in lines]), text, max_size=2)),
    )


@settings(max_examples=300, deadline=None)
@given(factory_orders())
def test_bodies_are_the_bytes_json_dumps_gives(order: FactoryOrder) -> None:
    created = order_created_body(order)
    cancelled = order_cancelled_body(order, datetime(2026, 1, 3, tzinfo=UTC))
    assert created == reference(created)
    assert cancelled == reference(cancelled)


def test_text_orjson_writes_differently_goes_through_json() -> None:
    for value in ("café", "\x7f", '\x00\x1f\n\t"\\/', "\ud800", "😀", "plain ascii"):
        message = {"b": value, "a": [value, 1, None, True]}
        assert canonical_json(message) == json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


def test_an_integer_orjson_cannot_write_goes_through_json() -> None:
    message = {"big": 2**70, "price": str(Decimal("1.10"))}
    assert canonical_json(message) == b'{"big":1180591620717411303424,"price":"1.10"}'
