"""Per-fault-class results, printed by conftest at the end of the session."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Row:
    fault_class: str
    runs: int = 0
    orders: int = 0
    lost: int = 0
    duplicated: int = 0  # at a factory
    dup_tracking: int = 0  # fulfilments or tracking notes on the storefront
    stuck: int = 0  # orders left in a non-final state without an attention reason
    note: str = ""


SUMMARY: dict[str, Row] = {}


def record(
    fault_class: str,
    *,
    runs: int = 0,
    orders: int = 0,
    lost: int = 0,
    duplicated: int = 0,
    dup_tracking: int = 0,
    stuck: int = 0,
    note: str = "",
) -> None:
    """Add to the summary row of one fault class (several tests may feed the same class)."""
    row = SUMMARY.setdefault(fault_class, Row(fault_class))
    row.runs += runs
    row.orders += orders
    row.lost += lost
    row.duplicated += duplicated
    row.dup_tracking += dup_tracking
    row.stuck += stuck
    if note:
        row.note = f"{row.note}; {note}" if row.note else note


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)
