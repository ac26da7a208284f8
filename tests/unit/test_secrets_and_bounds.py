"""Issue 11, items 11 (secrets leak) and 12 (bounds): the scrubber at every exit, `whsec_` secrets
checked by `relay check`, capped Retry-After, hostile webhook headers, and embedded-IPv4 egress."""

from __future__ import annotations

import base64
import io
import json
import math
import time

import pytest
import structlog

from relay import logging as relay_logging
from relay.cli import EX_CONFIG, main
from relay.domain.retry import MAX_RETRY_AFTER_S, RetryPolicy
from relay.exceptions import RetriableAdapterError, describe, scrub
from relay.outbound.policy import address_allowed
from relay.outbound.retries import parse_retry_after, retry_after_of
from relay.signing import SignatureError, secret_bytes, signed_headers, verify

CONSUMER_SECRET = "cs_0123456789abcdef0123456789abcdef01234567"
LOCATION = f"https://shop.example/wp-json/wc/v3/orders?consumer_key=ck_0011&consumer_secret={CONSUMER_SECRET}"


# --- item 11: one scrubber -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        (
            f"HTTP 301: redirect to {LOCATION!r} not followed",
            CONSUMER_SECRET,
            "shop.example/wp-json/wc/v3/orders",
        ),
        ("connect to https://admin:pa55w0rd-x@db.example:8443/x failed", "pa55w0rd-x", "db.example:8443/x"),
        ("Cannot connect to host admin:pa55w0rd-x@db.example:443", "pa55w0rd-x", "db.example:443"),
        ('HTTP 400: {"access_token": "tok-abcdef-123", "error": "bad"}', "tok-abcdef-123", '"error": "bad"'),
        ("retry with signature=v1,abcdefgh&token=zzz-secret-1", "zzz-secret-1", "retry with"),
        ("header Authorization: Bearer shpat_0123456789abcdef0123", "0123456789abcdef0123", "Authorization"),
        ("bad key whsec_c2VjcmV0LXNlY3JldA== here", "c2VjcmV0LXNlY3JldA", "bad key"),
    ],
)
def test_scrub_strips_query_strings_userinfo_and_secret_parameters(text, gone, kept):
    out = scrub(text)
    assert gone not in out
    assert kept in out


def test_describe_scrubs_what_the_store_and_logs_record():
    error = RetriableAdapterError(f"HTTP 301: redirect to {LOCATION!r} not followed", status=301)
    assert CONSUMER_SECRET not in describe(error)
    assert "redirect to 'https://shop.example/wp-json/wc/v3/orders?[redacted]'" in describe(error)
    quoted = RetriableAdapterError("HTTP 502", body=f"upstream {LOCATION}")
    assert CONSUMER_SECRET not in describe(quoted)


def test_every_log_field_and_message_is_scrubbed():
    buf = io.StringIO()
    relay_logging.configure("json", "debug", stream=buf)
    try:
        log = structlog.get_logger("relay")
        log.error("delivery_failed", error=f"redirect to {LOCATION}", nested={"detail": [LOCATION]})
        try:
            raise RuntimeError(f"boom at {LOCATION}")
        except RuntimeError:
            log.exception("crashed")
        log.info(f"free text {LOCATION}")
    finally:
        structlog.reset_defaults()
    text = buf.getvalue()
    assert CONSUMER_SECRET not in text
    events = [json.loads(line) for line in text.splitlines()]
    assert events[0]["error"] == "redirect to https://shop.example/wp-json/wc/v3/orders?[redacted]"
    assert "boom at" in events[1]["exception"]


def test_relay_check_never_echoes_a_url_password(tmp_path, capsys):
    path = tmp_path / "relay.toml"
    path.write_text(
        '[storefronts.shop]\nadapter = "demo"\nurl = "https://admin:hunter2-pw@shop.example/?token=tok-77x"\n'
        'token = "t0k3n-abc"\n'
        '[factories.acme]\nadapter = "webhook"\nurl = "https://ops:s3cr3t-pw@factory.example/orders"\n'
        'signing_secret = "signing-secret-1"\ncallback_secrets = ["callback-secret-1"]\n'
    )
    assert main(["-c", str(path), "check"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "factories.acme.url" in err and "credentials in URLs are not allowed" in err
    for secret in ("hunter2-pw", "s3cr3t-pw", "tok-77x"):
        assert secret not in err


@pytest.mark.parametrize("bad", ["whsec_", "whsec_not*base64!", "whsec_é"])
def test_invalid_whsec_callback_secret_fails_relay_check_by_key(tmp_path, capsys, bad):
    path = tmp_path / "relay.toml"
    path.write_text(
        '[storefronts.shop]\nadapter = "demo"\nurl = "https://shop.example/"\ntoken = "t0k3n-abc"\n'
        '[factories.acme]\nadapter = "webhook"\nurl = "https://factory.example/orders"\n'
        f'signing_secret = "signing-secret-1"\ncallback_secrets = ["callback-secret-1", "{bad}"]\n'
    )
    assert main(["-c", str(path), "check"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "factories.acme.callback_secrets" in err
    with pytest.raises(ValueError):
        secret_bytes(bad)


def test_an_unusable_secret_matches_nothing_instead_of_raising():
    body = b"{}"
    headers = signed_headers("good-secret", "m1", int(time.time()), body)
    assert verify(["whsec_", "good-secret"], headers, body, now=time.time(), tolerance_s=300)[0] == "m1"
    with pytest.raises(SignatureError):
        verify(["whsec_!!"], headers, body, now=time.time(), tolerance_s=300)


# --- item 12a: Retry-After is capped --------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("1e9", MAX_RETRY_AFTER_S),
        ("inf", MAX_RETRY_AFTER_S),
        ("Infinity", MAX_RETRY_AFTER_S),
        ("nan", None),
        ("-5", None),
        ("120", 120.0),
        ("Fri, 01 Jan 9999 00:00:00 GMT", MAX_RETRY_AFTER_S),
    ],
)
def test_retry_after_is_capped_and_nonsense_is_no_hint(header, expected):
    assert parse_retry_after(header) == expected
    assert MAX_RETRY_AFTER_S == 3600.0


@pytest.mark.parametrize("hint", [1e9, math.inf, math.nan])
def test_the_persisted_schedule_never_waits_longer_than_the_cap(hint):
    policy = RetryPolicy(jitter=0.0, clock=lambda: 1000.0)
    decision = policy.decide(RetriableAdapterError("HTTP 503", retry_after=hint), 1)
    assert decision is not None
    assert decision.retry_at == 1000.0 + MAX_RETRY_AFTER_S
    assert retry_after_of(RetriableAdapterError("x", retry_after=hint)) == MAX_RETRY_AFTER_S


# --- item 12b: hostile webhook headers are a 401, never a 500 -------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"webhook-timestamp": "9" * 400},
        {"webhook-timestamp": "1" * 13},
        {"webhook-id": "msg_\udcff"},  # a non-UTF-8 byte, as aiohttp hands it over
        {"webhook-signature": "v1,\udcffabc"},
        {"webhook-id": "msg\x00id"},
    ],
)
def test_hostile_headers_are_signature_errors(override):
    body = b"{}"
    headers = {**signed_headers("secret-1", "msg_1", int(time.time()), body), **override}
    with pytest.raises(SignatureError):
        verify(["secret-1"], headers, body, now=time.time(), tolerance_s=300)


# --- item 12d: embedded IPv4 and metadata endpoints -----------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64 of 10.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "::ffff:192.168.1.1",  # IPv4-mapped
        "::10.0.0.1",  # IPv4-compatible
    ],
)
def test_ipv6_embeddings_of_private_ipv4_are_private(address):
    assert not address_allowed(address, allow_private=False)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "8.8.8.8", "2606:4700::1"])
def test_ipv6_embeddings_of_public_ipv4_stay_public(address):
    assert address_allowed(address, allow_private=False)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "fd00:ec2::254",
        "::ffff:169.254.170.2",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:6464:64c8::1",  # 6to4 of 100.100.100.200
    ],
)
def test_metadata_endpoints_are_refused_even_with_private_addresses_allowed(address):
    assert not address_allowed(address, allow_private=True)
    assert not address_allowed(address, allow_private=False)


def test_whsec_secret_base64_roundtrip():
    raw = b"0123456789abcdef0123456789"
    assert secret_bytes("whsec_" + base64.b64encode(raw).decode()) == raw
