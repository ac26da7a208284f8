"""The inbound HTTP server: factory callbacks and operator endpoints on one aiohttp application."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from relay.inbound.callbacks import FactoryCallbacks
from relay.inbound.ops import CounterSample, OpsEndpoints
from relay.store import Store


class InboundServer:
    """Routes: `POST /v1/factories/{factory}/events`, `GET /healthz`, `GET /metrics`."""

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
        counters: Callable[[], Iterable[CounterSample]] | None = None,
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
        self.ops = OpsEndpoints(store, stats=stats, counters=counters, log=log)
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_post("/v1/factories/{factory}/events", self.callbacks.factory_event)
        self.app.router.add_get("/healthz", self.ops.healthz)
        self.app.router.add_get("/metrics", self.ops.metrics)
