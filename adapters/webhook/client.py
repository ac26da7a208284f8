"""A thin client that POSTs one Standard Webhooks-signed JSON message. Imports nothing from relay."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    body: str
    headers: dict[str, str]


def _key(secret: str) -> bytes:
    """Standard Webhooks keys: `whsec_<base64>` is decoded, anything else is used as UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode()


class WebhookClient:
    """POSTs signed messages. The caller owns the session (and its timeouts and egress rules)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, secret: str) -> None:
        self._session = session
        self._url = url
        self._secret = secret

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        content = f"{message_id}.{timestamp}.".encode() + body
        signature = base64.b64encode(hmac.new(_key(self._secret), content, hashlib.sha256).digest()).decode()
        return {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{signature}",
            "Idempotency-Key": message_id,
        }

    async def post(self, message_id: str, timestamp: int, body: bytes) -> WebhookResponse:
        async with self._session.post(
            self._url, data=body, headers=self.headers(message_id, timestamp, body), allow_redirects=False
        ) as resp:
            text = await resp.text(errors="replace")
            return WebhookResponse(resp.status, text, dict(resp.headers))
