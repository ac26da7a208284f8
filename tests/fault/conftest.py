"""Fault suite plumbing: everything here carries the `fault` marker, and a table of runs and oracle
results per fault class is printed at the end of the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401  (imported now: CPython 3.11.7 fails to import it lazily at session end with

#                   "AST constructor recursion depth mismatch" once a test hit a RecursionError)
import pytest

from tests.fault.summary import SUMMARY, Row


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.fault)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SUMMARY:
        return
    tr = terminalreporter
    tr.section("fault suite summary")
    width = max(len(r.fault_class) for r in SUMMARY.values())
    # dup = held twice at a factory; dup-trk = a parcel's fulfilment / tracking note on the storefront more
    # than once; stuck = left in a non-final state without an attention reason. All must be 0.
    tr.write_line(
        f"{'fault class':<{width}}  {'runs':>6}  {'orders':>7}  {'lost':>5}  {'dup':>5}  {'dup-trk':>7}  "
        f"{'stuck':>5}  note"
    )
    totals = Row("TOTAL")
    for row in [*SUMMARY.values(), totals]:
        tr.write_line(
            f"{row.fault_class:<{width}}  {row.runs:>6}  {row.orders:>7}  {row.lost:>5}  "
            f"{row.duplicated:>5}  {row.dup_tracking:>7}  {row.stuck:>5}  {row.note}"
        )
        if row is not totals:
            totals.runs += row.runs
            totals.orders += row.orders
            totals.lost += row.lost
            totals.duplicated += row.duplicated
            totals.dup_tracking += row.dup_tracking
            totals.stuck += row.stuck


@pytest.fixture
def fault_seed() -> Iterator[int]:
    """RELAY_FAULT_SEED or a fresh seed; printed so a failing run can be replayed."""
    seed = int(os.environ.get("RELAY_FAULT_SEED") or int.from_bytes(os.urandom(4), "big"))
    print(f"\nRELAY_FAULT_SEED={seed}")
    yield seed
