"""Small helpers shared by the factory-side integration tests."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from relay.signing import signed_headers


async def post_event(
    app: Any, factory: str, secret: str, event: dict[str, Any], message_id: str, *, ts: float
) -> tuple[int, dict[str, Any]]:
    """POST one signed callback to relay; return (status, JSON answer)."""
    body = json.dumps(event).encode()
    headers = signed_headers(secret, message_id, int(ts), body)
    async with (
        aiohttp.ClientSession() as s,
        s.post(app.callback_url(factory), data=body, headers=headers) as r,
    ):
        return r.status, await r.json()


def shipment(key: str, lines: list[tuple[str, int]], parcel: str) -> dict[str, Any]:
    """A `shipment.created` event for one parcel."""
    return {
        "type": "shipment.created",
        "data": {
            "factory_order_key": key,
            "shipment_id": parcel,
            "carrier": "SF Express",
            "tracking_number": f"SF-{parcel}",
            "lines": [{"line_id": lid, "quantity": q} for lid, q in lines],
        },
    }


def events(view: Any) -> list[str]:
    """The kinds of an order's history, in order."""
    return [e.kind for e in view.events]
