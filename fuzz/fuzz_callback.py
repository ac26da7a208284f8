"""Coverage-guided fuzzing (atheris/libFuzzer) of the callback parser and the signature verifier.

    make fuzz                          # 60 s
    make fuzz ARGS="-max_total_time=600 -jobs=2"

Not part of CI. A crash (an exception other than the ones the inbound handler maps to 4xx) is written
by libFuzzer as crash-<sha1> in the working directory; replay it with `python fuzz/fuzz_callback.py FILE`.
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from pydantic import ValidationError

    from relay.inbound.callbacks import ShipmentEvent, _too_deep
    from relay.signing import SignatureError, sign, verify

NOW = 1_700_000_000


def parse_like_the_handler(body: bytes) -> None:
    """The inbound handler's steps after the signature check; these exceptions become 400/422."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        return
    if _too_deep(raw):
        return
    try:
        ShipmentEvent.model_validate(raw)
    except ValidationError:
        return


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        parse_like_the_handler(fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    headers = {
        "webhook-id": fdp.ConsumeUnicodeNoSurrogates(64),
        "webhook-timestamp": fdp.ConsumeUnicodeNoSurrogates(16),
        "webhook-signature": fdp.ConsumeUnicodeNoSurrogates(200),
    }
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 2:  # a valid signature over a possibly different body: only an exact match may pass
        headers["webhook-timestamp"] = str(NOW)
        headers["webhook-signature"] = sign("secret", headers["webhook-id"] or "x", NOW, body[::-1])
    try:
        verify(["secret", "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"], headers, body, now=NOW, tolerance_s=300)
    except SignatureError:
        return
    if mode == 2 and body != body[::-1]:
        raise AssertionError("a signature over different bytes verified")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
