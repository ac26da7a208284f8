"""Thin client for a polled factory's shipment listing. Imports nothing from relay.

Orders are POSTed with `adapters.webhook.client.WebhookClient` (the same signed messages); this client
only reads `GET {shipments_url}?since=<cursor>&limit=<n>` with a bearer token.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class ListingResponse:
    status: int
    body: str
    headers: dict[str, str]


class ShipmentListingClient:
    """Reads one page of the shipment listing. The caller owns the session (timeouts, egress rules)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self._session = session
        self._url = url
        self._auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    async def page(self, since: str | None, limit: int) -> ListingResponse:
        params = {"limit": str(limit)} | ({"since": since} if since else {})
        async with self._session.get(
            self._url, params=params, headers=self._auth, allow_redirects=False
        ) as resp:
            return ListingResponse(resp.status, await resp.text(errors="replace"), dict(resp.headers))
