"""Operator endpoints: `GET /healthz`, `GET /readyz` and (admin listener only) `GET /metrics`.

`/healthz` and `/readyz` are on the public inbound port too, so there they give no error details:
`/healthz` names the failing components only (their errors are in the logs), an unavailable store is just
`store`, and the public `/readyz` answers only ready or not. The admin listener's `/readyz` names the
checks that failed, and its `/metrics` serves Prometheus text (`relay.observability.metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from relay.exceptions import StoreUnavailable
from relay.observability.metrics import Counters, Metrics
from relay.store import Store

Readiness = Callable[[], Mapping[str, bool]]
"""The process's own readiness checks besides the store: `{"loops_running": ..., "draining": ...}`."""


class OpsEndpoints:
    """Health, readiness and metrics. The store is read at request time; `stats` reports failing
    components (`{"failing": {name: error}}`, errors for logs only), `readiness` the loops' state,
    `counters` in-process counters kept outside `metrics`. `detailed`: the admin listener's variant."""

    def __init__(
        self,
        store: Store,
        *,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        readiness: Readiness | None = None,
        metrics: Metrics | None = None,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.time,
        detailed: bool = False,
        log: Any = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.readiness = readiness
        self._metrics = metrics
        self.counters = counters
        self.clock = clock
        self.detailed = detailed
        self.log = log or structlog.get_logger("relay").bind(component="inbound")

    async def healthz(self, request: web.Request) -> web.Response:
        """200 `{"status": "ok", "failing": []}`, or 503 `{"status": "degraded"|"unavailable",
        "failing": [component names]}`; never an error text (it may quote URLs or credentials)."""
        try:
            await self.store.ping()
        except Exception as exc:
            self.log.debug("healthz_store_unavailable", error=str(exc))
            return web.json_response({"status": "unavailable", "failing": ["store"]}, status=503)
        report = self.stats() if self.stats else {}
        failing = sorted(str(name) for name in report.get("failing") or {})
        status = 503 if failing else 200
        return web.json_response(
            {"status": "degraded" if failing else "ok", "failing": failing}, status=status
        )

    async def readyz(self, request: web.Request) -> web.Response:
        """200 `{"status": "ready"}` when the store answers, the loops run and the daemon is not draining
        (stopping); else 503 `{"status": "not_ready"}`. The admin listener adds `"failed": [checks]`
        (`store`, `loops_not_running`, `draining`)."""
        failed: list[str] = []
        try:
            await self.store.ping()
        except Exception as exc:
            self.log.debug("readyz_store_unavailable", error=str(exc))
            failed.append("store")
        checks = self.readiness() if self.readiness else {"loops_running": False, "draining": False}
        if not checks.get("loops_running"):
            failed.append("loops_not_running")
        if checks.get("draining"):
            failed.append("draining")
        body: dict[str, Any] = {"status": "not_ready" if failed else "ready"}
        if self.detailed:
            body["failed"] = failed
        return web.json_response(body, status=503 if failed else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text: the store's gauges read now, the counters and histograms, the process."""
        if self._metrics is None:
            raise web.HTTPNotFound()
        try:
            stats = await self.store.stats()
            status = await self.store.status(self.clock(), hours=0.0, limit=0)  # the gauges: no lists
        except StoreUnavailable as exc:
            self.log.debug("metrics_store_unavailable", error=str(exc))
            return web.json_response({"error": "store unavailable"}, status=503)
        body = self._metrics.exposition(stats, status, self.counters() if self.counters else ())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
