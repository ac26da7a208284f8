"""The daemon's HTTP servers: the inbound one (factory-facing) and the optional admin listener.

The inbound server is what factories reach: their signed callbacks, and `/healthz` and `/readyz` without
details. The admin listener (`[admin] listen`, off unless set; bind it to loopback or a private network)
serves operators: `/metrics`, `/healthz`, a detailed `/readyz`, and with `[admin] status_page = true` the
status page (`/status`, `/status.json`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from relay.contracts import PushReceiver
from relay.inbound.callbacks import FactoryCallbacks
from relay.inbound.ops import OpsEndpoints, Readiness
from relay.inbound.push import FactoryPushes
from relay.observability.status_page import StatusPage
from relay.store import Store


class InboundServer:
    """Routes: `POST /v1/factories/{factory}/events`, `POST /v1/factories/{factory}/push` (factories whose
    adapter takes pushes: `push_receivers`; `on_push(factory)` wakes its poller), `GET /healthz`,
    `GET /readyz`."""

    def __init__(
        self,
        store: Store,
        callback_secrets: Mapping[str, Sequence[str]],
        *,
        clock: Callable[[], float],
        tolerance_s: float,
        max_body_bytes: int,
        log: Any,
        on_shipment: Callable[[], None] = lambda: None,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        readiness: Readiness | None = None,
        push_receivers: Mapping[str, PushReceiver] | None = None,
        on_push: Callable[[str], None] = lambda factory: None,
    ) -> None:
        self.callbacks = FactoryCallbacks(
            store,
            callback_secrets,
            clock=clock,
            tolerance_s=tolerance_s,
            max_body_bytes=max_body_bytes,
            log=log,
            on_shipment=on_shipment,
        )
        self.ops = OpsEndpoints(store, stats=stats, readiness=readiness, clock=clock, log=log)
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_post("/v1/factories/{factory}/events", self.callbacks.factory_event)
        self.pushes = FactoryPushes(
            push_receivers or {}, max_body_bytes=max_body_bytes, log=log, on_push=on_push
        )
        self.app.router.add_post("/v1/factories/{factory}/push", self.pushes.factory_push)
        self.app.router.add_get("/healthz", self.ops.healthz)
        self.app.router.add_get("/readyz", self.ops.readyz)


class AdminServer:
    """Routes: `GET /metrics`, `GET /healthz`, `GET /readyz` (detailed), and with a `status_page`
    `GET /status` (`/` redirects there) and `GET /status.json`. Read only: no route changes anything."""

    def __init__(self, ops: OpsEndpoints, status_page: StatusPage | None = None) -> None:
        self.ops = ops
        self.app = web.Application(client_max_size=4096)
        self.app.router.add_get("/metrics", ops.metrics)
        self.app.router.add_get("/healthz", ops.healthz)
        self.app.router.add_get("/readyz", ops.readyz)
        if status_page is not None:
            self.app.router.add_get("/status", status_page.page)
            self.app.router.add_get("/status.json", status_page.data)
            self.app.router.add_get("/", _to_status)


async def _to_status(request: web.Request) -> web.Response:
    raise web.HTTPFound("/status")
