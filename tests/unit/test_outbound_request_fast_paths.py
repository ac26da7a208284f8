"""The per-request fast paths of the outbound clients give what the slow ways gave: the webhook answer read
by orjson where `json.loads` would read the same value, and headers built once that no request changes."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.demo.client import DemoClient
from adapters.webhook.adapter import _error_code, _reference
from adapters.woocommerce.client import WooCommerceClient
from relay.config import EgressSettings
from relay.json_exact import loads as _loads
from relay.outbound.session import new_session

LOOPBACK = EgressSettings(allow_plain_http=True, allow_private_addresses=True)

numbers = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e400", "-1e400", "1.5e-400", "-0", "-0.0", "1E5", "0.1000000000000000055511"]),
)
"""Numbers as JSON text: ints within and beyond 64 bits, floats, and spellings orjson may read otherwise."""


def number_text(value: int | float | str) -> str:
    return value if isinstance(value, str) else json.dumps(value)


json_texts = st.recursive(
    numbers.map(number_text)
    | st.text(max_size=8).map(json.dumps)  # escapes, surrogates
    | st.text(max_size=8).map(lambda t: json.dumps(t, ensure_ascii=False))
    | st.sampled_from(["true", "false", "null"]),
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.dictionaries(st.sampled_from(["reference", "id", "error", "lines", "x"]), inner, max_size=3).map(
            lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
        )
    ),
    max_leaves=8,
)
"""JSON documents (and, with duplicate keys or odd spellings, texts on the edge of it)."""


def outcome(parse: Any, text: str) -> tuple[str, str]:
    """What `parse(text)` gives, comparable across parsers: the repr of the value (NaN, -0.0 and int
    versus float told apart), or the error type and message."""
    try:
        return ("value", repr(parse(text)))
    except ValueError as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=500, deadline=None)
@given(st.one_of(json_texts, st.text(max_size=20), json_texts.map(lambda t: "\ufeff" + t)))
def test_loads_gives_what_json_loads_gives(text: str) -> None:
    assert outcome(_loads, text) == outcome(json.loads, text)


@settings(max_examples=300, deadline=None)
@given(json_texts)
def test_the_answer_fields_are_read_as_before(text: str) -> None:
    def reference_before(body: str) -> str | None:
        try:
            data: Any = json.loads(body)
        except ValueError:
            return None
        if isinstance(data, dict):
            ref = data.get("reference") or data.get("id")
            return str(ref)[:200] if ref is not None else None
        return None

    def error_code_before(body: str) -> str | None:
        try:
            data: Any = json.loads(body)
        except ValueError:
            return None
        return str(data.get("error")) if isinstance(data, dict) else None

    assert _reference(text) == reference_before(text)
    assert _error_code(text) == error_code_before(text)


def test_numbers_orjson_would_read_differently_take_json_loads() -> None:
    assert _loads('{"reference": 123456789012345678901234}') == {"reference": 123456789012345678901234}
    assert _loads('{"reference": -9223372036854775809}') == {"reference": -9223372036854775809}
    assert math.isinf(_loads('{"id": 1e400}')["id"])
    assert _reference('{"reference": 123456789012345678901234}') == "123456789012345678901234"


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A loopback server recording each request's headers; it answers a demo listing, or `{}`."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"orders": [], "next_cursor": None} if "/api/" in request.path else {})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_woocommerce_headers_built_once_stay_per_request(
    echo: tuple[str, list[dict[str, str]]],
) -> None:
    root, seen = echo
    async with new_session(LOOPBACK) as session:
        client = WooCommerceClient(session, root, "ck_x", "cs_y")
        await client.create_note("1", "hello", customer_note=False)
        await client.get_order("1")
        await client.get_order("1", {"context": "edit"})
        by_query = WooCommerceClient(session, root, "ck_x", "cs_y", query_string_auth=True)
        await by_query.batch_orders({"update": []})
        await by_query.list_orders({"page": "1"})
    basic = "Basic Y2tfeDpjc195"
    assert [(h.get("Authorization"), h.get("Content-Type")) for h in seen] == [
        (basic, "application/json"),
        (basic, None),
        (basic, None),
        (None, "application/json"),
        (None, None),
    ]


async def test_demo_headers_built_once_stay_per_request(echo: tuple[str, list[dict[str, str]]]) -> None:
    root, seen = echo
    async with new_session(LOOPBACK) as session:
        client = DemoClient(session, root, "tok")
        await client.create_fulfilment("1", "key-1", {"tracking": "T"})
        await client.list_orders(None, 10, None)
    assert [(h.get("Authorization"), h.get("Idempotency-Key")) for h in seen] == [
        ("Bearer tok", "key-1"),
        ("Bearer tok", None),
    ]
