"""The writer thread's fast paths, part 2: the history details the event tap reads back (orjson, `json` where
orjson reads otherwise) and the state enums looked up per row. Each is checked against what it replaces."""

from __future__ import annotations

import contextlib
import json
from enum import Enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.domain.models import AttentionReason, CancelState, FactoryOrderState, OrderState, PushState
from relay.json_exact import loads as _detail
from relay.store.transitions import detail_json, member_of
from tests.unit.test_store_fast_paths import json_values, odd_values


def read(fn: Any, text: str) -> str:
    """What `fn` reads from `text`, as `repr` (keys in order, ints apart from floats, NaN equal to NaN, -0.0
    apart from 0.0), or the error it raises."""
    try:
        return repr(fn(text))
    except Exception as exc:  # the failure is the outcome compared
        return repr((type(exc), str(exc)))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values | odd_values, min_size=1, max_size=6))
def test_the_tap_reads_a_detail_as_json_loads_does(detail: dict[str, Any]) -> None:
    texts = [detail_json(detail)]
    for ensure_ascii in (True, False):
        with contextlib.suppress(
            TypeError, ValueError
        ):  # what `json` refuses is never stored: nothing to read
            texts.append(json.dumps(detail, default=str, ensure_ascii=ensure_ascii))
    for text in texts:
        assert read(_detail, text) == read(json.loads, text)


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 1180591620717411303424}',  # beyond 64 bits: orjson would read a float
        '{"n":-9223372036854775809}',
        '{"n":18446744073709551615}',
        '{"tracking_number":"9400111899223197428490"}',
        '{"when": NaN, "far": Infinity, "near": -Infinity}',
        '{"big": 1e400}',
        '{"s": "\\udc80"}',
        '{"s": "\udc80"}',
        '{"a": 1, "b": 2, "a": 3}',
        '{"z": -0.0, "i": -0, "f": 5e-324, "g": 1.7976931348623157e308}',
        "\ufeff{}",
        "[1, 2]",
        "",
        "{",
        '{"a": 1} x',
    ],
)
def test_numbers_and_texts_orjson_reads_otherwise_go_to_json(text: str) -> None:
    assert read(_detail, text) == read(json.loads, text)


@pytest.mark.parametrize("kind", [OrderState, FactoryOrderState, PushState, CancelState, AttentionReason])
def test_a_member_lookup_is_the_enums_call(kind: type[Enum]) -> None:
    of = member_of(kind)
    for m in kind:
        assert of(m.value) is kind(m.value) is m
        assert of(m) is m
    for value in ("nope", "", None, 1, "ROUTED"):
        with pytest.raises(ValueError) as expected:
            kind(value)
        with pytest.raises(ValueError) as got:
            of(value)
        assert str(got.value) == str(expected.value)
