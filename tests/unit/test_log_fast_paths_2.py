"""Issue 15 (less CPU per order, same output): log lines rendered by orjson where it writes `json`'s bytes,
the state change lines through a logger looked up once, and the state change counters' children
remembered. Each gives exactly what the plain path gave."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import io
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Counter

from adapters.demo import client as demo_client
from relay import logging as relay_logging
from relay.domain.models import OrderState
from relay.exceptions import remember_secrets
from relay.observability.logs import log_state_changes
from relay.observability.metrics import Metrics
from relay.store.records import StateChange

SECRET = "fastpath2-secret-7a3f9e"
remember_secrets([SECRET])

JSON_RENDERER = structlog.processors.JSONRenderer()
"""What relay rendered lines with before (`render_json` must give its bytes)."""


def stock(event: dict[str, Any]) -> str:
    return str(JSON_RENDERER(None, "info", dict(event)))


class Plain(enum.Enum):  # orjson writes its value, `json` its repr
    A = "a"


class Note(str):
    pass


class Loud(dict):  # type: ignore[type-arg]
    def items(self):  # type: ignore[no-untyped-def]
        return [("loud", 1)]


@dataclasses.dataclass
class Point:
    x: int


class Custom:
    def __structlog__(self) -> str:
        return "custom"


scalars = (
    st.text()
    | st.text(alphabet=st.characters(max_codepoint=127))  # control characters, DEL
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.booleans()
    | st.none()
    | st.sampled_from(list(OrderState))
    | st.sampled_from([Plain.A, Note("n"), Decimal("1.50"), datetime.date(2026, 1, 2), uuid.UUID(int=7)])
    | st.sampled_from([Point(1), Custom(), RuntimeError("boom"), b"bytes", "\ud800", {1: 2}, (1, "t")])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
events = st.dictionaries(st.text(max_size=12), values, max_size=12)


@settings(max_examples=300, deadline=None)
@given(events)
def test_a_line_is_the_json_renderers_line_byte_for_byte(event):
    assert relay_logging.render_json(None, "info", dict(event)) == stock(event)


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"event": "x"},
        {
            "event": "order_state_changed",
            "order_id": 10423,
            "to_state": OrderState.PLACED,
            "from_state": None,
        },
        {"event": "x", "text": 'quote " back \\ slash / tab \t nl \n cr \r ff \f bs \b nul \x00 us \x1f'},
        {"event": "x", "del": "a\x7fb"},
        {"event": "x", "nonascii": "café ✓ 😀", "é": 1},
        {"event": "x", "n": 2**63 - 1, "m": -(2**63), "big": 2**64, "bigger": -(2**65)},
        {"event": "x", "f": 0.1, "g": -0.0, "h": 1e16, "i": 1.7976931348623157e308, "j": 1e-4, "k": 123.0},
        {"event": "x", "tiny": 1e-5, "tinier": 5e-324},
        {"event": "x", "nan": float("nan")},
        {"event": "x", "inf": float("inf"), "ninf": float("-inf")},
        {"event": "x", "plain_enum": Plain.A, "note": Note("n,\n  x")},
        {"event": "x", "d": Decimal("2.5"), "c": Custom(), "p": Point(3), "u": uuid.UUID(int=9)},
        {"event": "x", "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)},
        {"event": "x", "nested": {"a": [1, {"b": (2, 3)}], "loud": Loud(q=1)}, "after": "y"},
        {"event": "x", "lone": "\udc80"},
        {"event": "x", ", ": ",\n  ", '": "': "}\n{"},
    ],
)
def test_each_kind_of_value_renders_as_the_json_renderer_did(event):
    assert relay_logging.render_json(None, "info", dict(event)) == stock(event)


def test_an_event_dict_subclass_is_rendered_as_json_iterates_it():
    event = Loud(event="x")
    assert relay_logging.render_json(None, "info", event) == JSON_RENDERER(None, "info", event)


def test_a_circular_event_fails_as_the_json_renderer_did():
    looped: dict[str, Any] = {"event": "x"}
    looped["self"] = looped
    with pytest.raises(ValueError, match="Circular reference detected"):
        JSON_RENDERER(None, "info", looped)
    with pytest.raises(ValueError, match="Circular reference detected"):
        relay_logging.render_json(None, "info", looped)
    # and the next line is rendered as ever (nothing is left remembered from the failed one)
    assert relay_logging.render_json(None, "info", {"event": "y", "n": [1]}) == '{"event": "y", "n": [1]}'


def configured_lines(renderer: Any, emit: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lines `emit(log)` writes under relay's configuration, rendered by `renderer`."""
    monkeypatch.setattr(relay_logging.time, "time_ns", lambda: 1_796_300_000_123_456_789)
    monkeypatch.setattr(relay_logging, "render_json", renderer)
    buf = io.StringIO()
    relay_logging.configure("json", "info", stream=buf)
    try:
        emit(structlog.get_logger("relay"))
    finally:
        structlog.reset_defaults()
        monkeypatch.undo()
    return buf.getvalue().splitlines(keepends=True)


def emit_an_orders_lines(log: Any) -> None:
    detail = {"reference": f"R-{SECRET}", "factory": "acme", "carrier": "ups", "tracking_number": "1Z 9"}
    changes = [
        StateChange(1, "shop", "#1001", None, OrderState.RECEIVED, "received", 1.0, 1.0, {}),
        StateChange(
            1, "shop", "#1001", "received", "routed", "routed", 2.0, 1.0, {"factories": {"acme": "k"}}
        ),
        StateChange(1, "shop", "#1001", "routed", "placed", "placed", 3.0, 1.0, detail),
        StateChange(1, "shop", "#1001 é", "placed", "held", "held", 4.0, 1.0, {"reason": "unknown_sku"}),
        StateChange(
            2, "shop", f"https://u:p@x.example/?token={SECRET}", None, "received", "received", 5.0, 5.0
        ),
    ]
    for change in changes:
        log_state_changes(log, [change])
    log_state_changes(log, changes)
    log.info("order_placed", order_id=1, api_key="k", took_s=0.25, attempt=2, url=f"https://x/?sig={SECRET}")
    log.warning("delivery_failed", error=RuntimeError(SECRET), status=None, ratio=float("nan"))
    try:
        raise ValueError(f"bad {SECRET}")
    except ValueError:
        log.exception("loop_failed", loop="router")


def test_the_configured_pipeline_writes_the_lines_it_wrote_before(monkeypatch):
    before = configured_lines(JSON_RENDERER, emit_an_orders_lines, monkeypatch)
    after = configured_lines(relay_logging.render_json, emit_an_orders_lines, monkeypatch)
    assert after == before
    assert len(after) == 13 and all(line.endswith("}\n") and line.count("\n") == 1 for line in after)
    text = "".join(after)
    assert SECRET not in text and '"api_key": "[redacted]"' in text
    first = json.loads(after[0])
    assert list(first) == [
        "order_id", "number", "storefront", "from_state", "to_state", "kind", "event", "level", "timestamp",
    ]  # fmt: skip
    assert first["timestamp"] == "2026-12-03T12:13:20.123456Z" and first["from_state"] is None


def test_state_change_lines_through_a_logger_bound_or_not_are_the_same(monkeypatch):
    def through_bound(log: Any) -> None:
        emit_an_orders_lines(log.bind())

    assert configured_lines(relay_logging.render_json, through_bound, monkeypatch) == configured_lines(
        relay_logging.render_json, emit_an_orders_lines, monkeypatch
    )


def test_state_change_lines_keep_the_loggers_bound_context_and_level():
    buf = io.StringIO()
    relay_logging.configure("json", "warning", stream=buf)
    try:
        log = structlog.get_logger("relay").bind(component="store")
        log_state_changes(log, [StateChange(1, "shop", "#1", "routed", "placed", "placed", 1.0, 1.0)])
        log_state_changes(log, [StateChange(1, "shop", "#1", "placed", "held", "held", 1.0, 1.0)])
    finally:
        structlog.reset_defaults()
    [line] = [json.loads(x) for x in buf.getvalue().splitlines()]  # info is below the level
    assert line["component"] == "store" and line["to_state"] == "held" and line["level"] == "warning"


def changes_for_metrics() -> list[StateChange]:
    out = []
    for n, storefront in enumerate(["shop", "mall", "shop"]):
        out += [
            StateChange(n, storefront, "#", None, "received", "received", 10.0, 10.0),
            StateChange(n, storefront, "#", "received", OrderState.ROUTED, "routed", 11.0, 10.0),
            StateChange(n, storefront, "#", "routed", "placed", "placed", 12.5, 10.0),
            StateChange(n, storefront, "#", "placed", "shipped", "shipped", 13.0, 10.0),
            StateChange(n, storefront, "#", "shipped", "completed", "completed", 20.0, 10.0),
            StateChange(n, storefront, "#", "received", "held", "held", 11.0, 10.0, {"reason": f"r{n % 2}"}),
            StateChange(n, storefront, "#", "received", "held", "held", 11.0, 10.0),
        ]
    return out


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        if family.name.startswith("relay_order")
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_state_change_counters_count_as_labels_did(monkeypatch):
    fast = Metrics()
    for _ in range(3):
        fast.state_changes(changes_for_metrics())
    plain = Metrics()
    for _ in range(3):
        for c in changes_for_metrics():  # what `state_changes` did, a `labels()` call per count
            plain.transitions.labels(c.from_state or "new", c.to_state).inc()
            if c.from_state is None:
                plain.orders_polled.labels(c.storefront).inc()
            elif c.to_state == "routed":
                plain.orders_routed.labels(c.storefront).inc()
            elif c.to_state == "held":
                plain.orders_held.labels(str(c.detail.get("reason") or "unknown")).inc()
            elif c.to_state == "placed":
                plain.age_at_placement.observe(c.at - c.received_at)
            elif c.to_state == "shipped":
                plain.orders_shipped.labels(c.storefront).inc()
            elif c.to_state == "completed":
                plain.age_at_push.observe(c.at - c.received_at)
    assert samples(fast) == samples(plain)
    assert (
        samples(fast)[("relay_order_transitions_total", (("from_state", "new"), ("to_state", "received")))]
        == 9
    )

    calls: list[tuple[Any, ...]] = []
    labels = Counter.labels
    monkeypatch.setattr(Counter, "labels", lambda self, *v: calls.append(v) or labels(self, *v))
    fast.state_changes(changes_for_metrics())
    assert calls == []  # every child was remembered
    fast.state_changes([StateChange(9, "new-shop", "#", None, "received", "received", 1.0, 1.0)])
    assert calls == [("new-shop",)]


@pytest.mark.parametrize(
    "text",
    [
        '{"orders": [{"id": 1, "price": 12.50, "q": 1e2, "n": -0, "big": 123456789012345678901234567890}]}',
        '{"a": NaN, "b": Infinity, "c": -Infinity, "d": [true, false, null], "e": "caf\\u00e9 \\ud800"}',
        '  {"dup": 1, "dup": 2}\n',
        "\ufeff{}",
        "",
        "{",
        '{"a": 1} x',
        "[1, 2,]",
        '{"a": "\x01"}',
        "Infinity",
    ],
)
def test_the_demo_client_parses_and_fails_as_json_loads_did(text):
    try:
        expected: Any = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        with pytest.raises(type(exc)) as raised:
            demo_client._loads(text)
        assert str(raised.value) == str(exc) and raised.value.args == exc.args
    else:
        got = demo_client._loads(text)
        assert repr(got) == repr(expected)  # Decimal('12.50') stays itself, NaN compares by its repr
