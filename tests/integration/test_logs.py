"""Operators tail JSON logs: one object per line, snake_case events, context bound, no secret ever printed."""

from __future__ import annotations

import io
import json
import re
import time

import aiohttp
import structlog

from adapters.webhook.fake import Fault
from relay import logging as relay_logging
from relay.signing import signed_headers
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


async def test_json_logs_carry_context_and_never_a_secret(tmp_path):
    buf = io.StringIO()
    relay_logging.configure("json", "debug", stream=buf)
    try:
        async with Harness(tmp_path) as h:
            h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("MUG-WHT")])
            h.storefront.add_order([SeedLine("UNMAPPED")])
            h.factories["bolt"].fail_next(Fault(status=503))
            async with h.app() as app:
                await app.run_once()
                await h.factories["acme"].ship_all()
                await app.run_once()
                body = b"{}"
                headers = signed_headers("not-the-secret", "m1", int(time.time()), body)
                async with (
                    aiohttp.ClientSession() as s,
                    s.post(app.callback_url("acme"), data=body, headers=headers) as r,
                ):
                    assert r.status == 401
            secrets = [h.storefront.token] + [
                v for f in h.factories.values() for v in (f.signing_secret, f.callback_secret)
            ]
    finally:
        structlog.reset_defaults()
    lines = buf.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) >= 10
    for event in events:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", event["event"]), event
        assert "timestamp" in event and "level" in event
    by_name = {e["event"]: e for e in events}
    assert {"order_id", "factory", "attempt", "key"} <= set(by_name["order_placed"])
    assert by_name["delivery_failed"]["factory"] == "bolt"
    assert by_name["order_held"]["reason"] == "unknown_sku"
    assert {"order_id", "storefront", "attempt"} <= set(by_name["tracking_pushed"])
    assert by_name["callback_unauthenticated"]["factory"] == "acme"
    text = buf.getvalue()
    for secret in secrets:
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text


def test_credential_like_fields_are_redacted():
    event = relay_logging.redact_and_scrub(
        None, "info", {"event": "x", "access_token": "abc", "headers": {"Authorization": "B"}}
    )
    assert event == {"event": "x", "access_token": "[redacted]", "headers": {"Authorization": "[redacted]"}}
