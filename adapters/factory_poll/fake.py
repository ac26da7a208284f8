"""The factory_poll adapter's fake: a `FakeFactory` that never calls back and lists its parcels instead.

Orders and cancellations are taken exactly as by the webhook fake (it is one, with the same knobs).
`GET /shipments?since=<cursor>&limit=<n>` (bearer `status_token`) answers
`{"shipments": [...], "next_cursor": "<n>", "has_more": bool}`; the cursor is the index of the next
parcel, and a page holds at most `page_size` parcels whatever the client asks for. It implements
`relay.testing.vendor.FakeShipmentListing` (registered as `relay.fakes` -> `factory_poll`); listing
faults are scripted with `fail_listing_next(status, times=, retry_after=)` (or by appending statuses
to `listing_faults`), and `reject_credentials()` refuses the listing too.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from adapters.webhook.fake import FakeFactory, Fault


class FakePolledFactory(FakeFactory):
    """Parcels shipped by `ship_all()` are appended to the listing instead of being POSTed to relay."""

    adapter = "factory_poll"

    def __init__(self, name: str = "slow", *, page_size: int = 2, **kwargs: Any) -> None:
        kwargs.pop("ship_after_s", None)  # it never ships on its own: `ship_all()` lists parcels
        super().__init__(name, ship_after_s=None, **kwargs)
        self.page_size = page_size
        self.status_token = secrets.token_urlsafe(16)
        self.listed: list[dict[str, Any]] = []
        self.listing_requests: list[str | None] = []  # the `since` of each authorised request
        self.listing_faults: list[int | Fault] = []  # how to answer the next listing requests

    @property
    def shipments_url(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/shipments"

    def adapter_options(self, url: str | None = None) -> dict[str, Any]:
        """The `factory_poll` adapter's keys for this fake (orders to `url` if given, e.g. a proxy)."""
        return super().adapter_options(url) | {
            "shipments_url": self.shipments_url,
            "status_token": self.status_token,
        }

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/shipments", self._list)

    def fail_listing_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        self.listing_faults.extend([Fault(status=status, retry_after=retry_after)] * times)

    def listed_ids(self) -> list[str]:
        return [str(parcel.get("shipment_id")) for parcel in self.listed]

    async def send_event(self, event: dict[str, Any], message_id: str, *, attempts: int = 50) -> int:
        self.listed.append(event["data"])
        return 200

    async def _list(self, request: web.Request) -> web.Response:
        if self.auth_status is not None:
            return web.json_response({"error": "unauthorized"}, status=self.auth_status)
        if request.headers.get("Authorization") != f"Bearer {self.status_token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        since = request.query.get("since")
        self.listing_requests.append(since)
        if self.listing_faults:
            fault = self.listing_faults.pop(0)
            fault = fault if isinstance(fault, Fault) else Fault(status=fault)
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return web.json_response({"error": "injected"}, status=fault.status or 503, headers=headers)
        start = int(since or 0)
        limit = min(int(request.query.get("limit", "100")), self.page_size)
        page = self.listed[start : start + limit]
        end = start + len(page)
        return web.json_response(
            {"shipments": page, "next_cursor": str(end), "has_more": end < len(self.listed)}
        )
