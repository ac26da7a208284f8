"""docs/factory-api.md stays true: its verification code accepts what relay signs, and its example signature."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from relay.signing import signed_headers

DOC = (Path(__file__).parents[2] / "docs" / "factory-api.md").read_text(encoding="utf-8")


def doc_verify():
    code = re.search(r"```python\n(.*?)```", DOC, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "factory-api.md", "exec"), namespace)  # noqa: S102 (our own documentation)
    return namespace["verify"]


@pytest.mark.parametrize("secret", ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain-secret"])
def test_the_documented_python_verifier_accepts_relay_signatures_and_rejects_tampering(secret):
    verify = doc_verify()
    body = b'{"type":"order.created","data":{"key":"fo_1"}}'
    headers = signed_headers(secret, "fo_1", int(time.time()), body)
    assert verify(secret, headers, body) == "fo_1"
    with pytest.raises(ValueError, match="signature"):
        verify(secret, headers, body + b" ")
    stale = signed_headers(secret, "fo_1", int(time.time()) - 301, body)
    with pytest.raises(ValueError, match="tolerance"):
        verify(secret, stale, body)


def test_the_documented_example_signature_is_right():
    headers = signed_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "fo_991f10f8136054d38e7d5d96b1afe7d2",
        1741944413,
        b'{"hello":"world"}',
    )
    assert headers["webhook-signature"] in DOC
