"""Operator endpoints: `GET /healthz` (store reachable, no loop failing) and `GET /metrics` (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from relay.exceptions import StoreUnavailable
from relay.inbound.callbacks import problem
from relay.store import Store


class OpsEndpoints:
    """Health and metrics, read from the store at request time."""

    def __init__(self, store: Store, *, stats: Callable[[], Any] | None = None) -> None:
        self.store = store
        self.stats = stats

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.store.ping()
        except Exception as exc:
            return problem(503, "store unavailable", str(exc))
        report = self.stats() if self.stats else {}
        status = 200 if not report.get("failing") else 503
        return web.json_response({"status": "ok" if status == 200 else "degraded", **report}, status=status)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format: gauges from the store, read at scrape time."""
        try:
            stats = await self.store.stats()
        except StoreUnavailable as exc:
            return problem(503, "store unavailable", str(exc))
        lines = ["# TYPE relay_orders gauge"]
        lines += [f'relay_orders{{state="{k}"}} {v}' for k, v in sorted(stats["orders"].items())]
        lines.append("# TYPE relay_orders_needing_attention gauge")
        lines += [
            f'relay_orders_needing_attention{{reason="{k}"}} {v}'
            for k, v in sorted(stats["attention"].items())
        ]
        lines.append("# TYPE relay_factory_orders gauge")
        lines += [
            f'relay_factory_orders{{state="{k}"}} {v}' for k, v in sorted(stats["factory_orders"].items())
        ]
        lines.append("# TYPE relay_storefront_pushes gauge")
        lines += [
            f'relay_storefront_pushes{{state="{k}"}} {v}'
            for k, v in sorted(stats["storefront_pushes"].items())
        ]
        lines.append("# TYPE relay_quarantined_records gauge")
        lines.append(f"relay_quarantined_records {stats['quarantined']}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
