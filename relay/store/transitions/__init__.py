"""State transitions, written once for every backend.

Each function runs inside a transaction the caller (`relay.store.manager.RelayStore`) opened, through the
connector's `Transaction`: named queries, named parameters, rows read by column name. None of them opens
or commits a transaction, so a public store method can combine several and still be one transaction.
They check each state change against the domain's transition tables (`IllegalTransition` aborts the
whole transaction) and queue its history event in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import orjson

from relay.store.connector import Scalar
from relay.store.jsontext import ORJSON_OPTIONS, wrote_no_nan

EventRow = dict[str, Scalar]
"""The parameters of one `insert_event` row."""

E = TypeVar("E", bound=Enum)


def member_of(kind: type[E]) -> Callable[[Any], E]:
    """`kind(value)` for the values read from rows, as a dict lookup (~5x faster than `Enum`'s call, which
    shows in the per-row loops); a value that is no member's goes to `kind`, which raises as before."""
    members: dict[object, E] = {m.value: m for m in kind}
    lookup = members.get

    def of(value: Any) -> E:
        found = lookup(value)
        return kind(value) if found is None else found

    return of


def event(
    order_id: int, at: float, kind: str, src: str | None = None, dst: str | None = None, **detail: object
) -> EventRow:
    """One `order_events` row; `detail` (None values included) is stored as a JSON object."""
    return {
        "order_id": order_id,
        "at": at,
        "kind": kind,
        "from_state": src,
        "to_state": dst,
        "detail": detail_json(detail) if detail else None,
    }


def _str(value: Any) -> str:
    """orjson's default: `str`, as `json`'s, but for what `json` writes as it is and orjson does not (a float
    or tuple subclass, e.g. a named tuple): refused, so it goes to `json`."""
    if isinstance(value, float | tuple):
        raise TypeError
    return str(value)


def detail_json(detail: dict[str, object]) -> str:
    """`json.dumps(detail, default=str)` to `json.loads` (the same object, keys in the same order), built by
    orjson (3-5x faster): compact, non-ASCII as UTF-8. What orjson refuses (integers beyond 64 bits, keys
    that are not strings, lone surrogates) and NaN or infinities (orjson writes `null`, `json` `NaN`) go to
    `json`. Unlike `json`'s default, orjson writes a plain `Enum` member as its value (relay has none)."""
    try:
        text = orjson.dumps(detail, default=_str, option=ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(detail, default=str)
    if b"null" in text and not wrote_no_nan(text, list(detail.values())):  # no `null`: no NaN either
        return json.dumps(detail, default=str)
    return text.decode()
