"""Operator endpoints: `GET /healthz` (store reachable, no loop failing) and `GET /metrics` (Prometheus).

Both are served on the public inbound port, so neither gives error details: `/healthz` names the failing
components only (their errors are in the logs), and an unavailable store is just `store`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import structlog
from aiohttp import web

from relay.exceptions import StoreUnavailable
from relay.store import Store


class CounterSample(NamedTuple):
    """One Prometheus counter value: `name{labels} value` (e.g. `relay_future_timestamps_total`)."""

    name: str
    labels: Mapping[str, str]
    value: int


class OpsEndpoints:
    """Health and metrics: the store is read at request time; `stats` reports failing components
    (`{"failing": {name: error}}`, errors for logs only) and `counters` in-process counters."""

    def __init__(
        self,
        store: Store,
        *,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        counters: Callable[[], Iterable[CounterSample]] | None = None,
        log: Any = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.counters = counters
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

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format: gauges from the store, read at scrape time, and in-process counters."""
        try:
            stats = await self.store.stats()
        except StoreUnavailable as exc:
            self.log.debug("metrics_store_unavailable", error=str(exc))
            return web.json_response({"error": "store unavailable"}, status=503)
        lines = ["# TYPE relay_orders gauge"]
        lines += [f'relay_orders{{state="{k}"}} {v}' for k, v in sorted(stats.orders.items())]
        lines.append("# TYPE relay_orders_needing_attention gauge")
        lines += [
            f'relay_orders_needing_attention{{reason="{k}"}} {v}' for k, v in sorted(stats.attention.items())
        ]
        lines.append("# TYPE relay_factory_orders gauge")
        lines += [f'relay_factory_orders{{state="{k}"}} {v}' for k, v in sorted(stats.factory_orders.items())]
        lines.append("# TYPE relay_storefront_pushes gauge")
        lines += [
            f'relay_storefront_pushes{{state="{k}"}} {v}' for k, v in sorted(stats.storefront_pushes.items())
        ]
        lines.append("# TYPE relay_quarantined_records gauge")
        lines.append(f"relay_quarantined_records {stats.quarantined}")
        lines += render_counters(self.counters() if self.counters else ())
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def render_counters(samples: Iterable[CounterSample]) -> list[str]:
    """Prometheus text lines for counter samples, one `# TYPE` line per metric name."""
    by_name: dict[str, list[CounterSample]] = {}
    for sample in samples:
        by_name.setdefault(sample.name, []).append(sample)
    lines: list[str] = []
    for name, group in sorted(by_name.items()):
        lines.append(f"# TYPE {name} counter")
        for sample in sorted(group, key=lambda s: sorted(s.labels.items())):
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
            lines.append(f"{name}{{{labels}}} {sample.value}" if labels else f"{name} {sample.value}")
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
