"""`[daemon] gc` (issue 15): `relay run` freezes what start-up built and raises the collector's thresholds
(`tuned`, the default), or leaves CPython's collector alone (`python`). Each case runs in its own
interpreter: freezing the test process would keep every test's garbage."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from relay.collector import THRESHOLDS
from relay.config import DaemonSettings


def collector_after(setting: str) -> dict[str, object]:
    """`tune_collector(setting)` in a fresh interpreter: the thresholds and frozen-object count after it."""
    code = textwrap.dedent(
        f"""
        import gc, json
        from relay.collector import tune_collector
        default = gc.get_threshold()
        tune_collector({setting!r})
        print(json.dumps({{"default": default, "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_tuned_is_the_default_and_freezes_start_up_and_raises_the_thresholds() -> None:
    assert DaemonSettings().gc == "tuned"
    after = collector_after("tuned")
    assert after["threshold"] == list(THRESHOLDS) != after["default"]
    assert isinstance(after["frozen"], int) and after["frozen"] > 1000  # the modules imported so far


def test_python_leaves_cpythons_collector_alone() -> None:
    after = collector_after("python")
    assert after["threshold"] == after["default"] and after["frozen"] == 0


def test_an_unknown_setting_is_refused_by_its_key() -> None:
    with pytest.raises(ValidationError, match="gc"):
        DaemonSettings(gc="off")  # type: ignore[arg-type]
