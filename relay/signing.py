"""Standard Webhooks 1.0 signatures (https://www.standardwebhooks.com/).

The signed content is `"{webhook-id}.{webhook-timestamp}.{raw body}"`; the signature header is a
space-separated list of `v1,<base64 HMAC-SHA256>` so secrets can rotate. Secrets may be given raw or in
the spec's `whsec_<base64>` form.

This is the only place relay computes or checks these signatures: the webhook factory client signs
with `signed_headers`, the inbound callback endpoint verifies with `verify`, and the fake factory does
both. `SignatureError` lives in the error tree (`relay.exceptions`) and is re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping

from relay.exceptions import SignatureError

__all__ = [
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "aop_push_signature",
    "aop_push_signature_matches",
    "aop_signature",
    "aop_signature_matches",
    "secret_bytes",
    "sign",
    "signed_headers",
    "verify",
]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
MAX_HEADER_LENGTH = 4096
MAX_TIMESTAMP_DIGITS = 12
"""Seconds since the epoch have 10 digits until 2286; a longer stamp is malformed, not a big number."""


def secret_bytes(secret: str) -> bytes:
    """The HMAC key for a secret: `whsec_`-prefixed secrets are base64, others are used as UTF-8.
    Raise `ValueError` for an empty key or a `whsec_` secret that is not base64 (`relay check` reports it)."""
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
            raise ValueError("whsec_ secret is not valid base64") from exc
    else:
        key = secret.encode()
    if not key:
        raise ValueError("secret is empty")
    return key


_KEYED_MAX = 256
_keyed: dict[str, hmac.HMAC] = {}
"""Secret -> an HMAC-SHA256 object keyed with it that has hashed nothing yet. Secrets are few (they are
configured); the cache is emptied if it ever holds `_KEYED_MAX`."""


def _mac(secret: str) -> hmac.HMAC:
    """A fresh HMAC-SHA256 for `secret`: a copy of the kept keyed object (the key is decoded and its pads
    hashed once per secret, not once per message). `ValueError` as from `secret_bytes`."""
    keyed = _keyed.get(secret)
    if keyed is None:
        keyed = hmac.new(secret_bytes(secret), digestmod=hashlib.sha256)
        if len(_keyed) >= _KEYED_MAX:
            _keyed.clear()
        _keyed[secret] = keyed
    return keyed.copy()


def _signature(secret: str, prefix: bytes, body: bytes) -> str:
    # The base64 HMAC of `prefix + body` (`prefix` is "{message_id}.{timestamp}.").
    mac = _mac(secret)
    mac.update(prefix)
    mac.update(body)
    return base64.b64encode(mac.digest()).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one message."""
    return "v1," + _signature(secret, f"{message_id}.{timestamp}.".encode(), body)


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one message."""
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, message_id, timestamp, body),
    }


def verify(
    secrets: Iterable[str], headers: Mapping[str, str], body: bytes, *, now: float, tolerance_s: float
) -> tuple[str, int]:
    """Check a message's signature against any of `secrets`. Return (message id, timestamp).

    Raise `SignatureError` for a missing or malformed header (an id or signature that is not printable
    ASCII, a timestamp that is not 1 to `MAX_TIMESTAMP_DIGITS` digits), a timestamp outside ±tolerance,
    or no matching signature. Comparison is constant-time. A secret that cannot be used (see
    `secret_bytes`; `relay check` refuses it) matches nothing.
    """
    message_id = headers.get(ID_HEADER, "")
    raw_ts = headers.get(TIMESTAMP_HEADER, "")
    signatures = headers.get(SIGNATURE_HEADER, "")
    if not message_id or not raw_ts or not signatures:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if (
        max(len(message_id), len(signatures)) > MAX_HEADER_LENGTH
        or len(raw_ts) > MAX_TIMESTAMP_DIGITS
        or not (raw_ts.isascii() and raw_ts.isdigit())
        or not _printable_ascii(message_id)
        or not _printable_ascii(signatures)
    ):
        raise SignatureError("malformed webhook headers")
    timestamp = int(raw_ts)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError("webhook-timestamp outside the allowed tolerance")
    offered = [part[3:].encode() for part in signatures.split() if part.startswith("v1,")]
    prefix = f"{message_id}.{timestamp}.".encode()
    for secret in secrets:
        try:
            expected = _signature(secret, prefix, body).encode()
        except ValueError:
            continue
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return message_id, timestamp
    raise SignatureError("no valid signature")


def _printable_ascii(value: str) -> bool:
    # Header bytes outside ASCII arrive as surrogate escapes that cannot be encoded (or stored).
    return value.isascii() and value.isprintable()


def aop_signature(secret: str, url_path: str, params: Mapping[str, str]) -> str:
    """The 1688 open platform's `_aop_signature`: uppercase hex HMAC-SHA1 keyed with the app secret over
    `url_path` (from `param2/`, e.g. `param2/1/system/currentTime/1000000`) followed by the sorted
    `key + value` strings of every other parameter (`_aop_signature` itself is left out). The 1688
    adapter's client signs with it and its fake gateway verifies with it (open.1688.com sysSignature)."""
    pairs = sorted(f"{key}{value}" for key, value in params.items() if key != "_aop_signature")
    message = (url_path + "".join(pairs)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha1).hexdigest().upper()


def aop_signature_matches(secret: str, url_path: str, params: Mapping[str, str], offered: str) -> bool:
    """Constant-time check of an offered `_aop_signature` (case-insensitive, as the SDK compares)."""
    return hmac.compare_digest(aop_signature(secret, url_path, params).encode(), offered.upper().encode())


def aop_push_signature(secret: str, params: Mapping[str, str]) -> str:
    """The `_aop_signature` of a 1688 push message: `aop_signature` without a URL path, i.e. over the sorted
    `key + value` of every parameter but the signature, `"message" + <json>` for the usual push that carries
    only `message` (open.1688.com messageDoc; the AliOpen SDK's `SignatureUtil.hmacSha1(params, key)`)."""
    return aop_signature(secret, "", params)


def aop_push_signature_matches(secret: str, params: Mapping[str, str], offered: str) -> bool:
    """Constant-time check of a push message's offered `_aop_signature` (case-insensitive)."""
    return aop_signature_matches(secret, "", params, offered)
