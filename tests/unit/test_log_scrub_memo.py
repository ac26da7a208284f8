"""Log lines are scrubbed with remembered answers for short repeated values (issue 15: cheaper logging on
the per-order path); a value remembered as harmless is scrubbed as soon as it becomes a known secret."""

from __future__ import annotations

import io
import json

import structlog

from relay import logging as relay_logging
from relay.exceptions import remember_secrets


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_value_remembered_as_harmless_is_redacted_once_it_is_a_secret() -> None:
    buf = io.StringIO()
    relay_logging.configure("json", "info", stream=buf)
    try:
        log = structlog.get_logger("relay")
        log.info("order_placed", factory="acme", note="k3y-6f0b2a-memo")
        log.info("order_placed", factory="acme", note="k3y-6f0b2a-memo")  # answered from the memo
        remember_secrets(["k3y-6f0b2a-memo"])
        log.info("order_placed", factory="acme", note="k3y-6f0b2a-memo", api_key="anything")
    finally:
        structlog.reset_defaults()
    first, second, third = lines(buf)
    assert first["note"] == second["note"] == "k3y-6f0b2a-memo"
    assert third["note"] == "[redacted]"
    assert third["api_key"] == "[redacted]"  # by its field name
    assert third["factory"] == "acme" and third["level"] == "info" and str(third["timestamp"]).endswith("Z")


def test_long_values_and_urls_are_scrubbed_every_time() -> None:
    buf = io.StringIO()
    relay_logging.configure("json", "info", stream=buf)
    try:
        log = structlog.get_logger("relay")
        for _ in range(2):
            log.info("poll_failed", url="https://shop.example/wp-json?consumer_secret=cs_abc", text="x" * 200)
    finally:
        structlog.reset_defaults()
    for line in lines(buf):
        assert "cs_abc" not in json.dumps(line)
        assert line["text"] == "x" * 200
