"""Less CPU per state change line, same output: the lines of one `log_state_changes` call reach the stream
in one write and one flush (`LinesAtOnce`), byte for byte the lines a write and flush each gave, and
values of a type known to need no scrubbing skip the rest of `redact_and_scrub`."""

from __future__ import annotations

import copy
import datetime
import enum
import io
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import logging as relay_logging
from relay.domain.models import AttentionReason, OrderState
from relay.exceptions import remember_secrets
from relay.observability.logs import log_state_changes
from relay.store.records import OrderNote, StateChange

SECRET = "fastpath3-secret-c81d27"
remember_secrets([SECRET])


class Recorder(io.StringIO):
    """A stream that records each write and flush."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)

    def flush(self) -> None:
        self.calls.append("<flush>")


def written(emit: Any, level: str, *, one_write_each: bool, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The stream after `emit(log)` under relay's configuration at `level`; `one_write_each`: with
    structlog's own `WriteLogger` (a write and a flush per line, nothing held), as before."""
    monkeypatch.setattr(time, "time_ns", lambda: 1_796_300_000_123_456_789)
    stream = Recorder()
    relay_logging.configure("json", level, stream=stream)
    if one_write_each:
        structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=stream))
    try:
        emit(structlog.get_logger("relay"))
    finally:
        structlog.reset_defaults()
        monkeypatch.undo()
    return stream


def an_orders_changes() -> tuple[list[StateChange], list[OrderNote]]:
    changes = [
        StateChange(1, "shop", "#1001", None, OrderState.RECEIVED, "received", 1.0, 1.0),
        StateChange(1, "shop", "#1001", "received", "routed", "routed", 2.0, 1.0, {"factories": {"acme": "k"}}),
        StateChange(1, "shop", "#1001 é", "routed", "held", "held", 3.0, 1.0, {"reason": "unknown_sku"}),
        StateChange(
            1, "shop", f"https://u:p@x.example/?token={SECRET}", "held", "placed", "placed", 4.0, 1.0,
            {"reference": f"R-{SECRET}", "factory": "acme", "carrier": None, "other": "not logged"},
        ),
        StateChange(1, "shop", "#1001", "placed", "failed", "failed", 5.0, 1.0, {"cause": "delivery"}),
    ]  # fmt: skip
    notes = [OrderNote(1, "shop", "#1001", "factory_accepted", {"factory": "bolt", "reference": "B-7"})]
    return changes, notes


def emit_calls(log: Any) -> None:
    changes, notes = an_orders_changes()
    log.info("before", n=1)
    log_state_changes(log, changes, notes)
    log_state_changes(log, changes[:1])
    log_state_changes(log, [])
    log_state_changes(log.bind(component="store"), changes[2:3])
    log.info("after", n=2)


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_a_calls_lines_are_one_write_with_the_bytes_of_a_write_each(
    level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = written(emit_calls, level, one_write_each=True, monkeypatch=monkeypatch)
    after = written(emit_calls, level, one_write_each=False, monkeypatch=monkeypatch)
    assert after.getvalue() == before.getvalue()
    assert SECRET not in after.getvalue()
    lines = before.getvalue().splitlines(keepends=True)
    assert before.calls == [x for line in lines for x in (line, "<flush>")]
    if level == "info":  # before, the 6 lines of the first call, the 1 of the second, the bound one, after
        assert [after.calls[n].count("\n") for n in range(0, len(after.calls), 2)] == [1, 6, 1, 1, 1]
    elif level == "warning":  # the held and failed lines only
        assert [after.calls[n].count("\n") for n in range(0, len(after.calls), 2)] == [2, 1]
    else:  # nothing logged: nothing written
        assert after.calls == []
    assert after.calls[1::2] == ["<flush>"] * (len(after.calls) // 2)


def test_console_lines_are_the_same_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def console(one_write_each: bool) -> str:
        monkeypatch.setattr(time, "time_ns", lambda: 1_796_300_000_123_456_789)
        stream = Recorder()
        relay_logging.configure("console", "info", stream=stream)
        if one_write_each:
            structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=stream))
        try:
            emit_calls(structlog.get_logger("relay"))
        finally:
            structlog.reset_defaults()
            monkeypatch.undo()
        return stream.getvalue()

    assert console(one_write_each=False) == console(one_write_each=True)


def test_the_lines_before_an_exception_are_written_before_it_leaves_the_call() -> None:
    looped: list[Any] = []
    looped.append(looped)  # the JSON renderer refuses it
    good = StateChange(1, "shop", "#1", None, "received", "received", 1.0, 1.0)
    bad = StateChange(1, "shop", "#1", "received", "held", "held", 1.0, 1.0, {"reason": looped})
    stream = Recorder()
    relay_logging.configure("json", "info", stream=stream)
    try:
        log = structlog.get_logger("relay")
        with pytest.raises(ValueError, match="Circular reference"):
            log_state_changes(log, [good, good, bad, good])
        assert stream.calls[1:] == ["<flush>"] and stream.calls[0].count('"order_state_changed"') == 2
        log.info("next")  # nothing is held past the call
    finally:
        structlog.reset_defaults()
    assert len(stream.calls) == 4 and '"event": "next"' in stream.calls[2]


def test_only_the_held_loggers_lines_are_held() -> None:
    stream = Recorder()
    relay_logging.configure("json", "info", stream=stream)
    try:
        log = structlog.get_logger("relay").bind()
        with relay_logging.LinesAtOnce(log) as held:
            held.info("first")
            log.info("elsewhere")  # the same logger outside the block, as another task would
            other = threading.Thread(target=lambda: structlog.get_logger("relay").info("thread"))
            other.start()
            other.join()
            held.warning("second")
            assert stream.calls[1::2] == ["<flush>", "<flush>"]
        log.info("after")
    finally:
        structlog.reset_defaults()
    events = [
        [line.split('"event": "')[1].split('"')[0] for line in c.splitlines()] for c in stream.calls[::2]
    ]
    assert events == [["elsewhere"], ["thread"], ["first", "second"], ["after"]]


def test_a_logger_configure_did_not_set_up_is_used_as_it_is() -> None:
    stream = io.StringIO()
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=stream))
    try:
        log = structlog.get_logger().bind()
        with relay_logging.LinesAtOnce(log) as same:
            assert same is log
        proxy = structlog.get_logger()
        with relay_logging.LinesAtOnce(proxy) as same:
            assert same is proxy
    finally:
        structlog.reset_defaults()


# --- redact_and_scrub: a type known to be plain skips the rest of the checks ----------------------------


class Foreign(enum.StrEnum):  # not relay's: scrubbed
    LEAKY = f"value {SECRET}"


class RelayDictEnum(dict[str, str], enum.Enum):  # type: ignore[misc]  # relay's enum, but a dict: its keys are redacted
    A = {"api_token": "t", "n": SECRET}  # noqa: RUF012


RelayDictEnum.__module__ = "relay.fake"


class Note(str):
    pass


def slow_redact_and_scrub(event: dict[str, Any]) -> dict[str, Any]:
    """Each field as `redact_and_scrub` treats it, with no fast path: a credential-named field redacted, a
    dict's credential-named keys redacted, then every value scrubbed unless its type is plain."""
    for key, value in event.items():
        if relay_logging._is_secret_key(key):
            event[key] = relay_logging.REDACTED
        elif isinstance(value, dict):
            redacted = {
                k: (relay_logging.REDACTED if relay_logging._is_secret_key(str(k)) else v)
                for k, v in value.items()
            }
            event[key] = relay_logging._scrubbed(redacted)
        elif not relay_logging._is_plain(type(value)):
            event[key] = relay_logging._scrubbed(value)
    return event


field_values = st.sampled_from(
    [
        1, -2**70, 0.5, float("nan"), True, None, "", "plain", f"#{SECRET}", "https://u:p@x.example/?token=1",
        OrderState.HELD, AttentionReason.UNKNOWN_SKU, Foreign.LEAKY, Note(SECRET), RelayDictEnum.A,
        {"Authorization": "b", "k": [SECRET]}, [SECRET, 1], (SECRET,), RuntimeError(SECRET), Decimal("1.5"),
        datetime.date(2026, 1, 2), b"bytes",
    ]
)  # fmt: skip
events = st.dictionaries(
    st.sampled_from(["order_id", "number", "api_key", "state", "x", "headers"]), field_values
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_the_plain_type_fast_path_equals_the_checks_it_skips(event: dict[str, Any]) -> None:
    for _ in range(2):  # the second time every type is known
        fast = relay_logging.redact_and_scrub(None, "info", dict(event))
        slow = slow_redact_and_scrub(dict(event))
        assert list(fast) == list(slow)
        assert all(fast[k] is slow[k] or fast[k] == slow[k] or repr(fast[k]) == repr(slow[k]) for k in fast)
        assert SECRET not in relay_logging.render_json(None, "info", copy.copy(fast))


def test_a_relay_enum_that_is_a_dict_is_never_plain() -> None:
    assert not relay_logging._is_plain(RelayDictEnum)
    for _ in range(2):
        [value] = relay_logging.redact_and_scrub(None, "info", {"v": RelayDictEnum.A}).values()
        assert value == {"api_token": "[redacted]", "n": "[redacted]"}
