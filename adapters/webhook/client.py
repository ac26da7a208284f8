"""A thin client that POSTs one Standard Webhooks-signed JSON message.

From relay it uses only `relay.signing` (the one implementation of the signature, shared with the
inbound verifier and the fake factory); HTTP errors and transport failures are left to the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from yarl import URL

from relay.signing import signed_headers


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    body: str
    headers: dict[str, str]


class WebhookClient:
    """POSTs signed messages. The caller owns the session (and its timeouts and egress rules)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, secret: str) -> None:
        self._session = session
        self._url = URL(url)  # parsed once, as aiohttp would parse the string on every post
        self._secret = secret

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """Content type, the three Standard Webhooks headers, and `Idempotency-Key` (= the message id)."""
        return {
            "Content-Type": "application/json",
            **signed_headers(self._secret, message_id, timestamp, body),
            "Idempotency-Key": message_id,
        }

    async def post(self, message_id: str, timestamp: int, body: bytes) -> WebhookResponse:
        async with self._session.post(
            self._url, data=body, headers=self.headers(message_id, timestamp, body), allow_redirects=False
        ) as resp:
            text = await resp.text(errors="replace")
            return WebhookResponse(resp.status, text, dict(resp.headers))
