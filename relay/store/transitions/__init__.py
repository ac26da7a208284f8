"""State transitions, written once for every backend.

Each function runs inside a transaction the caller (`relay.store.manager.RelayStore`) opened, through the
connector's `Transaction`: named queries, named parameters, rows read by column name. None of them opens
or commits a transaction, so a public store method can combine several and still be one transaction.
They check each state change against the domain's transition tables (`IllegalTransition` aborts the
whole transaction) and queue its history event in the same transaction.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from relay.store.connector import Scalar

EventRow = dict[str, Scalar]
"""The parameters of one `insert_event` row."""


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


# Datetimes and dataclasses reach `_str` as they reach `json`'s default (orjson would write its own form).
_ORJSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


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
        text = orjson.dumps(detail, default=_str, option=_ORJSON)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(detail, default=str)
    if b"null" in text and not _finite(text, detail):
        return json.dumps(detail, default=str)
    return text.decode()


def _finite(text: bytes, detail: dict[str, object]) -> bool:
    """Whether orjson's `text` of `detail` holds no NaN or infinity (each written `null`): its `null`s are
    only the None values (others may be in strings), or no value is such a float or a container."""
    values = list(detail.values())
    if text.count(b"null") == values.count(None):
        return True
    for value in values:
        if type(value) is float:
            if not math.isfinite(value):
                return False
        elif isinstance(value, list | tuple | dict):
            return False
    return True
