"""Prometheus metrics of one relay process (`prometheus-client`), served on the admin listener's `/metrics`.

Each `App` owns a `Metrics` with its own `CollectorRegistry` (never the library's global one, so several
Apps in one test process do not clash), with the process collector. Three kinds of metric:

* counters, incremented where the loops learn an outcome, after its COMMIT: delivery and push attempts
  (`Metrics.deliveries_recorded`, `Metrics.pushes_recorded`) and order state changes
  (`Metrics.state_changes`, fed by `Store.observe`: polled, routed, held, shipped). No store read;
* histograms: HTTP latency per peer (a client middleware on every adapter session,
  `Metrics.request_timer`) and order age (since relay first recorded it) when the order is placed and
  when its last tracking push is done;
* gauges read from the store at scrape time (`StoreGauges`, from `Store.stats()` and `Store.status()`):
  orders per state (every state, zeros included), outbox rows per state, orders needing a person per
  reason, oldest owed work, last successful poll per storefront, circuit state per factory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import aiohttp
from aiohttp.client_middlewares import ClientHandlerType, ClientMiddlewareType
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from relay.domain.models import AttentionReason, CancelState, FactoryOrderState, OrderState, PushState
from relay.store.records import (
    ORDER_CANCELLED,
    DeliveryOutcome,
    PushOutcome,
    StateChange,
    Stats,
    StatusReport,
)

AGE_BUCKETS = (
    1,
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
)
"""Order age buckets, in seconds: a second to a week."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class CounterSample(NamedTuple):
    """One in-process counter kept outside this module (e.g. `relay_future_timestamps_total`), exposed as
    a Prometheus counter at scrape time."""

    name: str
    labels: Mapping[str, str]
    value: int


Counters = Callable[[], Iterable[CounterSample]]
"""Where `/metrics` gets the in-process counters kept outside `Metrics` (`App.counters`)."""


def status_class(status: int | None) -> str:
    """`2xx`, `4xx`, `5xx`, ... for an HTTP status; `none` when the peer gave no HTTP answer (timeout,
    connection refused, refused egress address)."""
    return f"{status // 100}xx" if status else "none"


def delivery_outcome(out: DeliveryOutcome) -> str | None:
    """The `outcome` label of one delivery attempt, or None when nothing was sent (circuit open, the
    pre-send check refused it)."""
    if not out.attempted:
        return "gone" if out.error is not None else None  # 410: the factory is now disabled
    if out.job.kind == ORDER_CANCELLED:
        return {
            CancelState.DONE: "cancelled",
            CancelState.REFUSED: "refused",
            CancelState.DEAD: "dead",
        }.get(CancelState(out.state), "retry")
    return {FactoryOrderState.PLACED: "placed", FactoryOrderState.DEAD: "dead"}.get(
        FactoryOrderState(out.state), "retry"
    )


def push_outcome(out: PushOutcome) -> str | None:
    """The `outcome` label of one tracking push attempt, or None when nothing was sent."""
    if not out.attempted:
        return "throttled" if out.next_attempt_at is not None else None
    return {PushState.DONE: "pushed", PushState.DEAD: "dead"}.get(out.state, "retry")


class Metrics:
    """The counters and histograms of one App, in `registry` (see the module docstring)."""

    def __init__(self, *, process: bool = False) -> None:
        self.registry = CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
        r = self.registry
        self.orders_polled = Counter(
            "relay_orders_polled",
            "Orders recorded for the first time by a storefront poll",
            ["storefront"],
            registry=r,
        )
        self.orders_routed = Counter(
            "relay_orders_routed", "Orders routed to their factories", ["storefront"], registry=r
        )
        self.orders_held = Counter(
            "relay_orders_held", "Orders held for a person by the router, by reason", ["reason"], registry=r
        )
        self.orders_placed = Counter(
            "relay_orders_placed", "Factory orders the factory accepted", ["factory"], registry=r
        )
        self.orders_shipped = Counter(
            "relay_orders_shipped", "Orders whose every line has left its factory", ["storefront"], registry=r
        )
        self.orders_pushed = Counter(
            "relay_orders_pushed",
            "Tracking pushes the storefront accepted (one per parcel)",
            ["storefront"],
            registry=r,
        )
        self.transitions = Counter(
            "relay_order_transitions",
            "Order state changes (from_state `new` for an order recorded for the first time)",
            ["from_state", "to_state"],
            registry=r,
        )
        self.delivery_attempts = Counter(
            "relay_delivery_attempts",
            "Messages sent to factories, by outcome (placed, cancelled, refused, retry, dead, gone) and HTTP status class",
            ["factory", "outcome", "status_class"],
            registry=r,
        )
        self.push_attempts = Counter(
            "relay_push_attempts",
            "Tracking pushes sent to storefronts, by outcome (pushed, retry, dead, throttled) and HTTP status class",
            ["storefront", "outcome", "status_class"],
            registry=r,
        )
        self.http_latency = Histogram(
            "relay_http_request_duration_seconds",
            "Outbound HTTP request latency per peer (role storefront or factory, peer its configured name)",
            ["role", "peer", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.age_at_placement = Histogram(
            "relay_order_age_at_placement_seconds",
            "Seconds from relay first recording an order to every factory order of it being placed",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.age_at_push = Histogram(
            "relay_order_age_at_tracking_push_seconds",
            "Seconds from relay first recording an order to its last tracking push (the order completed)",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.gauges = StoreGauges()
        r.register(self.gauges)
        # (counter, label values) -> its child: `labels()` validates the values and takes a lock on every
        # call (issue 15); the counters' label values are few (states, peers, reasons, outcomes).
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}

    def _child(self, counter: Counter, *values: str) -> Counter:
        """`counter.labels(*values)`, remembered."""
        key = (counter, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*values)
        return child

    def prepare(self, storefronts: Iterable[str], factories: Iterable[str]) -> None:
        """Create the per-peer counter series at 0, so `rate()` sees the first increment."""
        for name in storefronts:
            for counter in (self.orders_polled, self.orders_routed, self.orders_shipped, self.orders_pushed):
                counter.labels(name)
        for name in factories:
            self.orders_placed.labels(name)

    # --- fed by the loops and the store, after COMMIT ---------------------------------------------------

    def state_changes(self, changes: Sequence[StateChange]) -> None:
        """Count committed order state changes (`Store.observe`) and observe order ages."""
        child = self._child
        for c in changes:
            child(self.transitions, c.from_state or "new", c.to_state).inc()
            age = max(0.0, c.at - c.received_at)
            if c.from_state is None:
                child(self.orders_polled, c.storefront).inc()
            elif c.to_state == OrderState.ROUTED:
                child(self.orders_routed, c.storefront).inc()
            elif c.to_state == OrderState.HELD:
                child(self.orders_held, str(c.detail.get("reason") or "unknown")).inc()
            elif c.to_state == OrderState.PLACED:
                self.age_at_placement.observe(age)
            elif c.to_state == OrderState.SHIPPED:
                child(self.orders_shipped, c.storefront).inc()
            elif c.to_state == OrderState.COMPLETED:
                self.age_at_push.observe(age)

    def deliveries_recorded(
        self, outcomes: Sequence[DeliveryOutcome], stale: Sequence[DeliveryOutcome]
    ) -> None:
        """Count delivery attempts whose outcomes were just committed; a stale outcome (recorded nothing)
        still counts as an attempt, not as a placement."""
        ignored = {id(o) for o in stale}
        for out in outcomes:
            label = delivery_outcome(out)
            if label is None:
                continue
            code = status_class(out.status if label not in ("placed", "cancelled") else 200)
            self._child(self.delivery_attempts, out.job.factory, label, code).inc()
            if label == "placed" and id(out) not in ignored:
                self._child(self.orders_placed, out.job.factory).inc()

    def pushes_recorded(self, outcomes: Sequence[PushOutcome], stale: Sequence[PushOutcome]) -> None:
        """Count tracking push attempts whose outcomes were just committed (see `deliveries_recorded`)."""
        ignored = {id(o) for o in stale}
        for out in outcomes:
            label = push_outcome(out)
            if label is None:
                continue
            code = status_class(out.status if label != "pushed" else 200)
            self._child(self.push_attempts, out.job.storefront, label, code).inc()
            if label == "pushed" and id(out) not in ignored:
                self._child(self.orders_pushed, out.job.storefront).inc()

    def request_timer(self, role: str, peer: str) -> ClientMiddlewareType:
        """An aiohttp client middleware observing each request's latency into
        `relay_http_request_duration_seconds` under `role` (storefront or factory) and `peer` (its
        configured name): from the request leaving the session (connection and egress check included) to
        its response's status and headers (the body is read after, not timed), or to its failure (`status_class` none); when aiohttp resends an idempotent
        request on a fresh connection (the peer had closed a kept-alive one), each attempt is observed.
        The session's outermost middleware; cheaper than a `TraceConfig`, whose signals cost a coroutine
        each per request (issue 15)."""
        # status -> the histogram's child of its class (`labels` looks it up; statuses are few)
        series: dict[int | None, Histogram] = {}

        async def timer(request: aiohttp.ClientRequest, handler: ClientHandlerType) -> aiohttp.ClientResponse:
            started = time.monotonic()
            status: int | None = None  # stays None when the handler raises: no HTTP answer
            try:
                response = await handler(request)
                status = response.status
                return response
            finally:
                seconds = time.monotonic() - started
                child = series.get(status)
                if child is None:
                    child = series[status] = self.http_latency.labels(role, peer, status_class(status))
                child.observe(seconds)

        return timer

    def exposition(self, stats: Stats, status: StatusReport, counters: Iterable[CounterSample] = ()) -> bytes:
        """The Prometheus text exposition, with the store's gauges from `stats` and `status` (read by the
        caller just before: the store is async, collectors are not)."""
        self.gauges.update(stats, status, list(counters))
        return generate_latest(self.registry)


class StoreGauges(Collector):
    """Gauges from the store's last `stats()` / `status()` read, and in-process counters kept elsewhere,
    yielded at scrape time (`Metrics.exposition` sets them right before generating)."""

    def __init__(self) -> None:
        self._stats: Stats | None = None
        self._status: StatusReport | None = None
        self._counters: list[CounterSample] = []

    def update(self, stats: Stats, status: StatusReport, counters: list[CounterSample]) -> None:
        """What the next `collect()` reports."""
        self._stats, self._status, self._counters = stats, status, counters

    def describe(self) -> list[Any]:
        """Nothing up front: the families depend on the store (so registering never collects)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The gauge and counter families (none before the first `update`)."""
        stats, status = self._stats, self._status
        if stats is not None and status is not None:
            yield from self._gauges(stats, status)
        yield from _counter_families(self._counters)

    def _gauges(self, stats: Stats, status: StatusReport) -> Iterator[Any]:
        yield _by_label(
            "relay_orders", "Orders per state (every state)", "state", OrderState, status.orders_by_state
        )
        yield _by_label(
            "relay_orders_needing_attention",
            "Orders flagged for a person, per reason (every reason)",
            "reason",
            AttentionReason,
            stats.attention,
        )
        yield _by_label(
            "relay_factory_orders",
            "Factory orders per state",
            "state",
            FactoryOrderState,
            status.factory_orders_by_state,
        )
        yield _by_label(
            "relay_storefront_pushes", "Tracking pushes per state", "state", PushState, status.pushes_by_state
        )
        quarantined = GaugeMetricFamily(
            "relay_quarantined_records", "Storefront records that could not be read"
        )
        quarantined.add_metric([], status.quarantined)
        yield quarantined
        oldest = GaugeMetricFamily(
            "relay_oldest_pending_age_seconds",
            "Age of the oldest work relay owes (an order to route, a message to a factory, a tracking push); 0 when none",
        )
        oldest.add_metric([], status.oldest_pending_age_s or 0.0)
        yield oldest
        polled = GaugeMetricFamily(
            "relay_storefront_last_poll_success_timestamp_seconds",
            "When each storefront was last polled successfully (epoch seconds)",
            labels=["storefront"],
        )
        for sf in status.storefronts:
            if sf.last_poll_ok_at is not None:
                polled.add_metric([sf.name], sf.last_poll_ok_at)
        yield polled
        circuit = GaugeMetricFamily(
            "relay_factory_circuit_state",
            "Each factory's circuit: 1 for its current state (closed, open, disabled), 0 for the others",
            labels=["factory", "state"],
        )
        for fs in status.factories:
            current = "disabled" if fs.disabled_at is not None else "open" if fs.failing_since else "closed"
            for state in ("closed", "open", "disabled"):
                circuit.add_metric([fs.name, state], 1.0 if state == current else 0.0)
        yield circuit


def _by_label(
    name: str, documentation: str, label: str, every: Iterable[str], values: Mapping[str, int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key in sorted({*(str(v) for v in every), *values}):
        family.add_metric([key], values.get(key, 0))
    return family


def _counter_families(samples: Iterable[CounterSample]) -> Iterator[CounterMetricFamily]:
    by_name: dict[str, list[CounterSample]] = {}
    for sample in samples:
        by_name.setdefault(sample.name, []).append(sample)
    for name, group in sorted(by_name.items()):
        labels = sorted({k for s in group for k in s.labels})
        family = CounterMetricFamily(name, f"{name} (in-process, since the process started)", labels=labels)
        for s in group:
            family.add_metric([s.labels.get(k, "") for k in labels], s.value)
        yield family
