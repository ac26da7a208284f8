"""Hostile input against the callback endpoint (real HTTP to a running App) and the signature verifier.

Properties: never a 5xx; never a state change without a valid signature; a validly signed but bad
event changes nothing either. Bodies: random bytes, non-UTF-8, random JSON, deeply nested JSON, huge
numbers, shipment-shaped events with random fields; oversized and slow-drip bodies.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.signing import SignatureError, sign, signed_headers, verify
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine
from tests.fault.summary import env_int, record

EXAMPLES = env_int("RELAY_FAULT_FUZZ_EXAMPLES", 300)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
COUNTS: dict[str, int] = {}


class LiveRelay:
    """A Harness and an App running in a background thread's event loop, with one placed order."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self) -> None:
        self.h = Harness(self.tmp_path)
        await self.h.__aenter__()
        self.h.storefront.add_order([SeedLine("TEE-RED-M", 2), SeedLine("TEE-BLU-L", 1)])
        self.ctx = self.h.app()
        self.app = await self.ctx.__aenter__()
        await self.app.run_once()
        acme = self.h.factories["acme"]
        self.key = next(iter(acme.orders))
        self.line_ids = [li["line_id"] for li in acme.orders[self.key].payload["lines"]]
        self.secret = acme.callback_secret
        host, port = self.app.inbound_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)

    async def _stop(self) -> None:
        await self.ctx.__aexit__(None, None, None)
        await self.h.__aexit__(None, None, None)

    def close(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def post(self, body: bytes, headers: dict[str, str], factory: str = "acme") -> int:
        con = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            con.request("POST", f"/v1/factories/{factory}/events", body=body, headers=headers)
            resp = con.getresponse()
            resp.read()
            return resp.status
        finally:
            con.close()

    def signed(self, body: bytes, message_id: str = "fuzz") -> dict[str, str]:
        return signed_headers(self.secret, message_id, int(time.time()), body)

    def state(self) -> tuple:
        con = sqlite3.connect(f"file:{self.tmp_path / 'relay.db'}?mode=ro", uri=True)
        try:
            return tuple(
                con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("shipments", "inbound_messages", "order_events", "storefront_pushes")
            )
        finally:
            con.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    relay = LiveRelay(tmp_path_factory.mktemp("hostile"))
    yield relay
    relay.close()
    total = sum(COUNTS.values())
    record(
        "hostile input: callback endpoint + verifier",
        runs=total,
        note=", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())),
    )


def count(kind: str) -> None:
    COUNTS[kind] = COUNTS.get(kind, 0) + 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@FUZZ
@given(body=st.binary(max_size=2048))
def test_random_signed_bytes_get_4xx_and_change_nothing(live, body):
    count("random bytes")
    before = live.state()
    status = live.post(body, live.signed(body, f"b-{time.time_ns()}"))
    assert 400 <= status < 500, status
    assert live.state() == before


@FUZZ
@given(value=json_values)
def test_random_signed_json_never_5xx_and_changes_nothing(live, value):
    count("random JSON")
    body = json.dumps(value).encode()
    before = live.state()
    status = live.post(body, live.signed(body, f"j-{time.time_ns()}"))
    assert 400 <= status < 500, status
    assert live.state() == before


@FUZZ
@given(
    key=st.one_of(st.just("REAL"), st.text(max_size=80)),
    shipment_id=st.text(max_size=40),
    tracking=st.text(max_size=40),
    lines=st.lists(
        st.tuples(
            st.one_of(st.just("REAL"), st.text(max_size=20)),
            st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none()),
        ),
        max_size=4,
    ),
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_shipment_shaped_events_never_5xx_and_only_accepted_ones_change_state(
    live, key, shipment_id, tracking, lines, extra
):
    count("shipment-shaped events")
    data = {
        "factory_order_key": live.key if key == "REAL" else key,
        "shipment_id": shipment_id,
        "carrier": "SF",
        "tracking_number": tracking,
        "lines": [{"line_id": live.line_ids[0] if lid == "REAL" else lid, "quantity": q} for lid, q in lines],
        **extra,
    }
    body = json.dumps({"type": "shipment.created", "data": data}).encode()
    before = live.state()
    status = live.post(body, live.signed(body, f"s-{time.time_ns()}"))
    assert status < 500, status
    if status != 200:
        assert live.state() == before


@FUZZ
@given(
    mutation=st.sampled_from(
        [
            "flip_body",
            "wrong_secret",
            "stale",
            "future",
            "drop_header",
            "garbage_header",
            "other_factory",
            "id_swap",
        ]
    ),
    garbage=st.text(max_size=200),
    position=st.integers(0, 10_000),
)
def test_bad_signatures_are_refused_without_a_state_change(live, mutation, garbage, position):
    count("bad signatures")
    data = {
        "factory_order_key": live.key,
        "shipment_id": f"P-{time.time_ns()}",
        "carrier": "SF",
        "tracking_number": "T",
        "lines": [{"line_id": live.line_ids[0], "quantity": 1}],
    }
    body = json.dumps({"type": "shipment.created", "data": data}).encode()
    message_id, ts = f"sig-{time.time_ns()}", int(time.time())
    headers = signed_headers(live.secret, message_id, ts, body)
    factory = "acme"
    if mutation == "flip_body":
        i = position % len(body)
        body = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
    elif mutation == "wrong_secret":
        headers = signed_headers(live.secret + "x", message_id, ts, body)
    elif mutation == "stale":
        headers = signed_headers(live.secret, message_id, ts - 301 - position, body)
    elif mutation == "future":
        headers = signed_headers(live.secret, message_id, ts + 301 + position, body)
    elif mutation == "drop_header":
        headers.pop(sorted(headers)[position % 3])
    elif mutation == "garbage_header":
        name = sorted(headers)[position % 3]
        headers[name] = garbage.encode("ascii", "ignore").decode().replace("\r", "").replace("\n", "")
    elif mutation == "other_factory":
        factory = "bolt"  # signed with acme's secret
    elif mutation == "id_swap":
        headers["webhook-id"] = message_id + "x"
    before = live.state()
    status = live.post(body, headers, factory)
    assert 400 <= status < 500, (mutation, status)
    assert live.state() == before


def test_nasty_bodies(live):
    cases = {
        "non-UTF-8": b'{"type": "shipment.created", "data": "\xff\xfe\xfa"}',
        "deeply nested arrays": b"[" * 100_000 + b"]" * 100_000,
        "deeply nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "huge integer": b'{"type": "shipment.created", "data": ' + b"9" * 100_000 + b"}",
        "huge float": b'{"type": "shipment.created", "data": {"lines": [{"quantity": 1e999}]}}',
        "NaN": b'{"type": "shipment.created", "data": NaN}',
        "empty": b"",
        "null": b"null",
        "BOM": b"\xef\xbb\xbf{}",
    }
    for name, body in cases.items():
        count("nasty bodies")
        before = live.state()
        status = live.post(
            body[:60_000] if name.startswith("deeply") else body,
            live.signed(body[:60_000] if name.startswith("deeply") else body, f"n-{time.time_ns()}"),
        )
        assert 400 <= status < 500, (name, status)
        assert live.state() == before, name


def test_oversized_body_gets_413(live):
    count("oversized body")
    body = b'{"pad": "' + b"x" * 200_000 + b'"}'
    assert live.post(body, live.signed(body)) == 413


def test_oversized_declared_length_gets_413_without_reading_it(live):
    count("oversized body")
    with socket.create_connection((live.host, live.port), timeout=30) as s:
        s.sendall(
            b"POST /v1/factories/acme/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
            b"Content-Type: application/json\r\n\r\n" + b"x" * 1000
        )
        assert s.recv(100).split(b" ")[1] == b"413"


def test_slow_drip_body_is_cut_off_with_4xx(live):
    """A body trickling in a byte at a time is abandoned at the read deadline (10 s), never a 5xx."""
    count("slow-drip body")
    before = live.state()
    with socket.create_connection((live.host, live.port), timeout=60) as s:
        s.sendall(
            b"POST /v1/factories/acme/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Content-Type: application/json\r\n\r\n"
        )
        s.settimeout(0.5)
        answer = b""
        for _ in range(80):  # at most 40 s, dripping
            try:
                s.sendall(b" ")
                answer = s.recv(100)
                break
            except TimeoutError:
                continue
            except OSError:
                break
    assert answer, "no answer to a slow-drip body"
    status = int(answer.split(b" ")[1])
    assert 400 <= status < 500, answer
    assert live.state() == before


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]),
        st.text(max_size=300),
        max_size=4,
    ),
    body=st.binary(max_size=512),
    secrets=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3),
)
def test_verifier_only_raises_signature_error(headers, body, secrets):
    count("verifier inputs")
    secrets = [s for s in secrets if not s.startswith("whsec_")] or ["k"]
    try:
        verify(secrets, headers, body, now=time.time(), tolerance_s=300)
    except SignatureError:
        return
    pytest.fail("random headers verified")  # a random signature matching would be a break of HMAC


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=st.binary(min_size=1, max_size=256), position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_verifier_rejects_any_single_bit_flip(body, position, bit):
    count("verifier inputs")
    ts = int(time.time())
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign("secret", "m", ts, body),
    }
    assert verify(["secret"], headers, body, now=ts, tolerance_s=300) == ("m", ts)
    i = position % len(body)
    flipped = body[:i] + bytes([body[i] ^ (1 << bit)]) + body[i + 1 :]
    with pytest.raises(SignatureError):
        verify(["secret"], headers, flipped, now=ts, tolerance_s=300)
