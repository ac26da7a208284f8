"""Issue 15 (fast on the real path): the cheaper log pipeline and callback checks give exactly what the
plain ones gave. Log lines: the one-pass scrub (`redact_and_scrub`), the timestamp, the JSON rendering and
the write; callbacks: the cached HMAC keys, the nesting pre-check and the body read without a timer."""

from __future__ import annotations

import base64
import copy
import datetime
import enum
import hashlib
import hmac
import io
import json
from decimal import Decimal
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from relay import logging as relay_logging
from relay.domain.models import OrderState
from relay.exceptions import remember_secrets
from relay.inbound import callbacks
from relay.observability.logs import log_state_changes
from relay.signing import SignatureError, secret_bytes, sign, signed_headers, verify
from relay.store.records import StateChange

SECRET = "fastpath-secret-5d1e0c"
remember_secrets([SECRET])


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


class Foreign(enum.StrEnum):  # not relay's: its words are not known to be harmless
    LEAKY = f"value {SECRET}"


class Note(str):
    pass


class Custom:
    def __structlog__(self) -> str:
        return "custom"


def events() -> list[dict[str, Any]]:
    """Events with every kind of value the scrubbing treats apart."""
    return [
        {
            "event": "order_state_changed",
            "order_id": 7,
            "number": f"#{SECRET}",
            "storefront": "shop",
            "from_state": None,
            "to_state": OrderState.SHIPPED,
            "kind": "shipped",
            "ratio": 0.5,
            "ok": True,
        },
        {"event": "x", "access_token": "abc", "headers": {"Authorization": "B", "n": SECRET}},
        {"event": "x", "url": "https://u:p@shop.example/x?token=1", "long": "y" * 100 + SECRET},
        {"event": "x", "nested": {"a": [SECRET, {"api_key": "k", "b": (SECRET,)}]}, "items": [1, SECRET]},
        {"event": "x", "foreign": Foreign.LEAKY, "note": Note(SECRET), "error": RuntimeError(SECRET)},
        {"event": "x", "amount": Decimal("1.50"), "when": datetime.date(2026, 1, 2), "empty": ""},
    ]


def redact_then_scrub(event: dict) -> dict:
    """The two processors relay ran before the one pass: credential-named fields (and keys of a dict
    value) redacted, then every value scrubbed, with no fast path."""
    for key in list(event):
        if relay_logging._is_secret_key(key):
            event[key] = relay_logging.REDACTED
        elif isinstance(event[key], dict):
            event[key] = {
                k: (relay_logging.REDACTED if relay_logging._is_secret_key(str(k)) else v)
                for k, v in event[key].items()
            }
    for key in list(event):
        event[key] = relay_logging._scrubbed(event[key])
    return event


@pytest.mark.parametrize("event", events())
def test_the_one_pass_scrub_equals_redact_then_scrub_values(event):
    slow = redact_then_scrub(copy.copy(event))
    fast = relay_logging.redact_and_scrub(None, "info", copy.copy(event))
    # The same line (relay's own enums are passed as they are, not as the plain strings `scrub` made).
    assert relay_logging.render_json(None, "info", fast) == relay_logging.render_json(None, "info", slow)
    assert SECRET not in relay_logging.render_json(None, "info", fast)


def test_a_secret_in_a_state_change_field_is_scrubbed_on_the_fast_path():
    buf = io.StringIO()
    relay_logging.configure("json", "info", stream=buf)
    late = "fastpath-late-9c41ab"
    try:
        log = structlog.get_logger("relay")
        change = StateChange(3, "shop", f"#1003 {late}", "routed", "placed", "placed", 0.0, 0.0, {})
        log_state_changes(log, [change])  # remembered as harmless: not a secret yet
        remember_secrets([late])
        log_state_changes(log, [change])
        detail = {"reference": SECRET, "factories": {"acme": SECRET}, "cause": "delivery"}
        log_state_changes(log, [StateChange(3, "shop", "#1003", "placed", "held", "held", 0.0, 0.0, detail)])
        log.info("order_event", order_id=3, state=OrderState.HELD, foreign=Foreign.LEAKY)
    finally:
        structlog.reset_defaults()
    first, second, third, fourth = lines(buf)
    assert first["number"] == f"#1003 {late}"
    assert second["number"] == "#1003 [redacted]"
    assert third["reference"] == "[redacted]" and third["factories"] == {"acme": "[redacted]"}
    assert third["level"] == "warning" and third["to_state"] == "held" and third["order_id"] == 3
    assert list(third) == [
        "order_id", "number", "storefront", "from_state", "to_state", "kind", "cause", "factories",
        "reference", "event", "level", "timestamp",
    ]  # fmt: skip
    assert fourth["state"] == "held"  # relay's own enum: its word, as is
    assert fourth["foreign"] == "value [redacted]"  # any other str subclass is scrubbed


def test_lines_render_as_structlogs_json_renderer_did():
    event = {"event": "x", "n": 1, "d": Decimal("2.5"), "c": Custom(), "s": "é\n", "none": None}
    assert relay_logging.render_json(None, "info", dict(event)) == structlog.processors.JSONRenderer()(
        None, "info", dict(event)
    )


@pytest.mark.parametrize(
    "ns", [1_796_300_000_000_000_000, 1_796_300_000_123_456_789, 1_796_300_000_000_000_999]
)
def test_the_timestamp_is_structlogs_iso_utc_stamp(monkeypatch, ns):
    monkeypatch.setattr(relay_logging.time, "time_ns", lambda: ns)
    stamp = relay_logging.add_timestamp(None, "info", {})["timestamp"]
    at = datetime.datetime.fromtimestamp(ns // 1000 / 1e6, datetime.UTC).replace(
        microsecond=ns // 1000 % 10**6
    )
    assert stamp == at.isoformat().replace("+00:00", "Z")
    assert stamp.endswith("Z") and ("." in stamp) == (ns // 1000 % 10**6 != 0)


def test_a_line_is_one_write_and_one_flush():
    class Stream(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def write(self, text: str) -> int:
            self.calls.append(text)
            return super().write(text)

        def flush(self) -> None:
            self.calls.append("<flush>")

    stream = Stream()
    relay_logging.configure("json", "info", stream=stream)
    try:
        structlog.get_logger("relay").info("order_placed", order_id=1, api_key="k")
    finally:
        structlog.reset_defaults()
    [line, flush] = stream.calls
    assert flush == "<flush>" and line.endswith("}\n") and line.count("\n") == 1
    assert json.loads(line)["api_key"] == "[redacted]"


@pytest.mark.parametrize("secret", ["plain-secret-1", "whsec_" + base64.b64encode(b"key-bytes-2").decode()])
def test_sign_is_the_standard_webhooks_hmac_with_each_secret_apart(secret):
    for body in (b"", b'{"a": 1}', b"x" * 5000):
        expected = hmac.new(secret_bytes(secret), b"m1.1700000000." + body, hashlib.sha256).digest()
        assert sign(secret, "m1", 1700000000, body) == "v1," + base64.b64encode(expected).decode()
    assert sign(secret, "m1", 1700000000, b"b") != sign("other-" + secret, "m1", 1700000000, b"b")


def test_verify_with_cached_keys_still_takes_any_rotated_secret_and_nothing_else():
    body, now = b'{"x": 1}', 1_700_000_000
    headers = signed_headers("new-secret-3", "m2", now, body)
    secrets = ["whsec_!!", "old-secret-3", "new-secret-3"]  # the first one is unusable: it matches nothing
    for _ in range(2):  # the second time from the cached keys
        assert verify(secrets, headers, body, now=now, tolerance_s=300) == ("m2", now)
        with pytest.raises(SignatureError):
            verify(["old-secret-3"], headers, body, now=now, tolerance_s=300)
        with pytest.raises(SignatureError):
            verify(["new-secret-3"], headers, body + b" ", now=now, tolerance_s=300)


json_values = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=60,
)


def nest(value: Any, depth: int) -> Any:
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


@given(json_values, st.integers(0, 40), st.sampled_from(["utf-8", "utf-16", "utf-32"]))
def test_the_nesting_precheck_never_passes_a_body_that_is_too_deep(value, depth, encoding):
    raw = nest(value, depth)
    body = json.dumps(raw).encode(encoding)
    if callbacks._too_deep(json.loads(body)):
        assert callbacks._could_be_too_deep(body)


def test_a_body_nested_one_level_too_deep_is_still_refused():
    deep = json.dumps(nest(1, callbacks.MAX_JSON_DEPTH + 1)).encode()
    with pytest.raises(callbacks.Refused) as refused:
        callbacks._parse_event(deep)
    assert (refused.value.status, refused.value.title) == (400, "JSON nested too deeply")
    fine = json.dumps(nest(1, callbacks.MAX_JSON_DEPTH)).encode()
    with pytest.raises(callbacks.Refused) as refused:
        callbacks._parse_event(fine)
    assert refused.value.status == 422  # deep enough to count, not too deep: an invalid event
