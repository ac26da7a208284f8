"""JSON text the store writes (set-based rows, list parameters, history details), built by orjson where its
text reads back as `json`'s would; the callers fall back to `json` where it would not."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from typing import Any

import orjson

ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
"""Datetimes and dataclasses pass through to the caller's `default` (or orjson's TypeError), as they reach
`json`'s: orjson would write its own form of them."""

_NULL = b"null"
_SCALARS = frozenset({str, int, float, bool, type(None)})


def wrote_no_nan(text: bytes, values: Sequence[Any]) -> bool:
    """Whether orjson's `text` of `values` (a list's items, or a mapping's values) holds no NaN or infinity,
    which orjson writes as `null` where `json` writes `NaN` (malformed JSON to SQLite: an error): its `null`s
    are just the None values (others may be inside strings), or none of `values` is such a float, nor a
    container (which might hold one)."""
    if _NULL not in text or text.count(_NULL) == values.count(None):
        return True
    kinds = list(map(type, values))  # each step in C: a few ns per value
    floats = itertools.compress(values, map(operator.is_, kinds, itertools.repeat(float)))
    if not math.isfinite(sum(floats)):  # or the sum overflowed: `json` then, to be sure
        return False
    return not any(issubclass(kind, list | tuple | dict) for kind in set(kinds) - _SCALARS)
