"""A fake polled factory: takes signed orders like `FakeFactory`, never calls back, lists its parcels.

`GET /shipments?since=<cursor>&limit=<n>` (bearer `status_token`) answers
`{"shipments": [...], "next_cursor": "<n>", "has_more": bool}`; the cursor is the index of the next parcel.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from adapters.webhook.fake import FakeFactory


class FakePolledFactory(FakeFactory):
    """Parcels shipped by `ship_all()` are appended to the listing instead of being POSTed to relay."""

    def __init__(self, name: str = "slow", *, page_size: int = 2, **kwargs: Any) -> None:
        super().__init__(name, ship_after_s=None, **kwargs)
        self.page_size = page_size
        self.status_token = secrets.token_urlsafe(16)
        self.listed: list[dict[str, Any]] = []
        self.listing_requests: list[str | None] = []  # the `since` of each authorised request
        self.listing_faults: list[int] = []  # statuses to answer the next listing requests with

    @property
    def shipments_url(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/shipments"

    def adapter_options(self) -> dict[str, Any]:
        """The `factory_poll` adapter's config keys for this fake."""
        return {
            "adapter": "factory_poll",
            "url": self.url,
            "shipments_url": self.shipments_url,
            "signing_secret": self.signing_secret,
            "status_token": self.status_token,
            "callback_secrets": [self.callback_secret],
        }

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/shipments", self._list)

    async def send_event(self, event: dict[str, Any], message_id: str, *, attempts: int = 50) -> int:
        self.listed.append(event["data"])
        return 200

    async def _list(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.status_token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        since = request.query.get("since")
        self.listing_requests.append(since)
        if self.listing_faults:
            return web.json_response({"error": "injected"}, status=self.listing_faults.pop(0))
        start = int(since or 0)
        limit = min(int(request.query.get("limit", "100")), self.page_size)
        page = self.listed[start : start + limit]
        end = start + len(page)
        return web.json_response(
            {"shipments": page, "next_cursor": str(end), "has_more": end < len(self.listed)}
        )
