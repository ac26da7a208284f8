"""The application shell: `async with App(settings) as app: await app.run()`.

Opening builds everything in dependency order (store, adapters, loops, inbound server) and registers a
close hook for each; closing runs the hooks in reverse order, logging a failing hook and running the rest.
`run()` starts one poller per storefront, the router, the forwarder, one shipment poller per factory
that is polled rather than calling back, and the shipper, under a `relay.supervisor.Supervisor`. On
SIGTERM/SIGINT (or `stop()`), a crashed loop, or cancellation of `run()`, pollers and the router stop at
once (their work is transactional), while in-flight deliveries and pushes are drained for up to
`daemon.shutdown_grace_s` before being cancelled; a cancelled send is simply resent later with the same
idempotency key. Then `run()` returns (stop), raises `LoopCrashed` (crash) or re-raises the cancellation,
with no task left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import structlog
from aiohttp import web

from relay.config import Settings, parse_money, split_listen
from relay.contracts import (
    AdapterContext,
    FactoryAdapter,
    PushReceiver,
    ShipmentSource,
    StorefrontAdapter,
)
from relay.domain.retry import RetryPolicy
from relay.domain.routing import Guards, StorefrontGuards
from relay.exceptions import ConfigurationError, StoreError
from relay.inbound import InboundServer
from relay.inbound.limits import ConnectionGuard, GuardedSite
from relay.inbound.ops import OpsEndpoints
from relay.inbound.server import AdminServer
from relay.loops.base import Loop
from relay.loops.forwarder import Forwarder
from relay.loops.order_poller import OrderPoller
from relay.loops.outbox import run_until_idle
from relay.loops.pruner import Pruner
from relay.loops.router import Router
from relay.loops.shipment_poller import ShipmentPoller
from relay.loops.shipper import Shipper
from relay.loops.watchdog import TrackingWatchdog
from relay.observability.logs import log_state_changes
from relay.observability.metrics import CounterSample, Metrics
from relay.observability.status_page import StatusPage
from relay.outbound.session import new_session
from relay.registry import FACTORIES, STOREFRONTS, Registry
from relay.store import IngestResult, OrderNote, SkuDiff, StateChange, Store, open_store, wakeups
from relay.supervisor import LoopCrashed, Supervisor
from relay.systemd import Notifier

__all__ = ["App", "LoopCrashed"]


class App:
    """Owns the store, adapters, loops and inbound server of one relay process."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        install_signal_handlers: bool = True,
        exclusive: bool = False,
        notifier: Notifier | None = None,
        reload_sku_map: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        # SIGHUP re-reads the config's `routing.skus` with this (`relay run` passes one) and re-seeds the
        # catalogue; without it SIGHUP re-applies the seed the daemon started with.
        self.reload_sku_map = reload_sku_map or (lambda: settings.sku_map)
        self._reseeding: set[asyncio.Task[Any]] = set()
        self._notifying: set[asyncio.Task[Any]] = set()  # wake-ups sent to the other daemons
        self.registry = registry or Registry()
        self.clock = clock
        self.sleep = sleep
        self.install_signal_handlers = install_signal_handlers
        self.log = structlog.get_logger("relay")
        # Leases are owned per process incarnation (ADR 11): a restarted or second process never takes
        # another one's leases for its own. `exclusive`: this process holds the database's exclusive daemon
        # lock (SQLite's), so no other daemon is alive; on PostgreSQL every daemon works (ADR 14).
        self.owner = f"{settings.daemon.instance_id}/{os.getpid()}-{secrets.token_hex(4)}"
        self.exclusive = exclusive
        # systemd's READY/WATCHDOG/STOPPING (`relay run` passes one from the environment; else a no-op).
        self.notifier = notifier or Notifier()
        self._closers: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self._stopping = asyncio.Event()
        self._running = False
        self.store: Store
        self.storefronts: dict[str, StorefrontAdapter] = {}
        self.factories: dict[str, FactoryAdapter] = {}
        self.pollers: list[OrderPoller] = []
        self.factory_pollers: list[ShipmentPoller] = []
        self.pruners: list[Pruner] = []
        self.watchdogs: list[TrackingWatchdog] = []
        self.inbound_url: str | None = None
        self.inbound_guard: ConnectionGuard | None = None
        self.admin_url: str | None = None
        # Prometheus metrics of this App (its own registry: several Apps in one process do not clash).
        self.metrics = Metrics(process=True)
        self._supervisor_now: Supervisor | None = None

    # --- open / close --------------------------------------------------------------------------------

    def on_close(self, name: str, hook: Callable[[], Awaitable[Any]]) -> None:
        """Register `hook` to run on close (hooks run in reverse order of registration)."""
        self._closers.append((name, hook))

    async def __aenter__(self) -> App:
        try:
            await self._open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _open(self) -> None:
        s = self.settings
        self.store = open_store(s.daemon.database)
        await self.store.open()
        self.on_close("store", self.store.close)
        self.on_close("wake-up sends", self._cancel_notifying)  # runs before the store closes
        self.store.observe(self._state_changed)
        version = await self.store.migrate()
        if self.exclusive:
            # The exclusive daemon lock is ours: no other daemon is alive, every lease left (outbox claims,
            # poller leases) is orphaned by a crash.
            freed = await self.store.release_all_leases()
            if freed:
                self.log.info("orphaned_leases_released", count=freed)
        self.on_close("leases", functools.partial(self.store.release_leases, self.owner))
        seeded = await self.store.seed_skus_from_config(s.sku_map, self.clock())
        if not seeded.empty:
            self.log.info(
                "catalogue_seeded",
                added=len(seeded.added),
                changed=len(seeded.changed),
                removed=len(seeded.removed),
            )
        self.log.info("store_opened", database=s.daemon.database, schema_version=version, instance=self.owner)

        context = AdapterContext(
            new_session=functools.partial(new_session, s.egress),
            clock=self.clock,
            sleep=self.sleep,
            log=self.log,
        )
        for name, sf in s.storefronts.items():
            cls = self.registry.load(STOREFRONTS, sf.adapter)
            adapter = cls(name, sf.options, self._context(context, "storefront", name))
            self.storefronts[name] = adapter
            self.on_close(f"storefront {name}", adapter.aclose)
        for name, fs in s.factories.items():
            cls = self.registry.load(FACTORIES, fs.adapter)
            adapter = cls(name, fs.options, self._context(context, "factory", name))
            self.factories[name] = adapter
            self.on_close(f"factory {name}", adapter.aclose)
        for status in await self.store.list_factories():
            if status.disabled_at is not None and status.name in self.factories:
                self.log.warning(
                    "factory_disabled",
                    factory=status.name,
                    reason=status.disabled_reason,
                    hint=f"relay factories enable {status.name}",
                )

        d = s.daemon
        self.shipper = Shipper(
            self.store,
            self.storefronts,
            {n: self._policy(sf.retry) for n, sf in s.storefronts.items()},
            owner=self.owner,
            lease_s=d.lease_s,
            batch_size=d.batch_size,
            concurrency={n: 8 for n in s.storefronts},
            send_budget_s={n: self._send_budget(sf.options) for n, sf in s.storefronts.items()},
            clock=self.clock,
            log=self.log.bind(loop="shipper"),
            metrics=self.metrics,
        )
        self.forwarder = Forwarder(
            self.store,
            self.factories,
            {n: self._policy(fs.retry) for n, fs in s.factories.items()},
            owner=self.owner,
            lease_s=d.lease_s,
            batch_size=d.batch_size,
            concurrency={n: fs.concurrency for n, fs in s.factories.items()},
            send_budget_s={n: self._send_budget(fs.options) for n, fs in s.factories.items()},
            fallback_after_s={
                n: fs.fallback_after_s for n, fs in s.factories.items() if fs.fallback_after_s is not None
            },
            clock=self.clock,
            log=self.log.bind(loop="forwarder"),
            metrics=self.metrics,
        )
        self.router = Router(
            self.store,
            {n: sf.test_tags for n, sf in s.storefronts.items()},
            owner=self.owner,
            lease_s=d.lease_s,
            batch_size=d.batch_size,
            clock=self.clock,
            log=self.log.bind(loop="router"),
            on_routed=self.forwarder.wake,
            guards=self._guards(),
        )
        self.pollers = [
            OrderPoller(
                self.store,
                self.storefronts[name],
                interval=sf.poll_interval_s,
                overlap_s=sf.cursor_overlap_s,
                start_from=sf.start_from,
                clock=self.clock,
                log=self.log.bind(loop="poller"),
                owner=self.owner,
                lease_s=d.poller_lease_s,
                on_orders=self.router.wake,
                route=self.router.plan_at_ingest,
                claim=self.forwarder.claim_at_ingest,
                release=self.forwarder.release_claim,
                on_routed=self._routed_at_ingest,
            )
            for name, sf in s.storefronts.items()
        ]
        self.factory_pollers = [
            ShipmentPoller(
                self.store,
                name,
                adapter,
                interval=s.factories[name].shipment_poll_interval_s,
                clock=self.clock,
                log=self.log.bind(loop="factory_poller"),
                owner=self.owner,
                lease_s=d.poller_lease_s,
                on_shipments=self.shipper.wake,
            )
            for name, adapter in self.factories.items()
            if isinstance(adapter, ShipmentSource)
        ]
        self.pruners = (
            [Pruner(self.store, s.retention, clock=self.clock, log=self.log.bind(loop="pruner"))]
            if s.retention.enabled
            else []
        )  # retention: one pass at start, then every retention.interval_s (not part of run --once)
        rules = {
            name: (
                f.no_tracking_after_days * 86400 if f.no_tracking_after_days else None,
                f.tracking_stalled_after_days * 86400 if f.tracking_stalled_after_days else None,
            )
            for name, f in s.factories.items()
            if f.no_tracking_after_days or f.tracking_stalled_after_days
        }
        self.watchdogs = (
            [TrackingWatchdog(self.store, rules, clock=self.clock, log=self.log.bind(loop="watchdog"))]
            if rules
            else []
        )  # the tracking watchdog: factories with a no_tracking / tracking_stalled threshold only
        # Work another daemon on the database committed wakes the loops here that do it (PostgreSQL).
        await self.store.on_wakeup(self.wake_for)
        self.metrics.prepare(self.storefronts, self.factories)
        if s.inbound.enabled:
            await self._start_inbound()
        if s.admin.listen:
            await self._start_admin()

    def _context(self, base: AdapterContext, role: str, name: str) -> AdapterContext:
        """`base` for one adapter: its log bound to its name, its sessions timed per peer (`/metrics`)."""

        def session(**kwargs: Any) -> Any:
            timers = [self.metrics.request_timer(role, name), *kwargs.pop("middlewares", ())]
            return new_session(self.settings.egress, middlewares=timers, **kwargs)

        return replace(base, new_session=session, log=self.log.bind(**{role: name}))

    def _state_changed(self, changes: list[StateChange], notes: list[OrderNote]) -> None:
        """The store committed order state changes (and notes): one log line each, and the counters
        (`/metrics`)."""
        try:
            log_state_changes(self.log, changes, notes)
            self.metrics.state_changes(changes)
        except Exception:
            self.log.exception("state_change_observer_failed")

    def _guards(self) -> Guards:
        """The routing guards from the config: per storefront, shipping per factory, exchange rates."""
        s = self.settings
        return Guards(
            storefronts={
                name: StorefrontGuards(
                    auto_place=sf.auto_place,
                    max_order_value=sf.max_order_value,
                    max_orders_per_hour=sf.max_orders_per_hour,
                    min_margin=sf.min_margin,
                    min_margin_percent=sf.min_margin_percent,
                )
                for name, sf in s.storefronts.items()
            },
            shipping={n: parse_money(f.shipping_cost) for n, f in s.factories.items() if f.shipping_cost},
            rates=s.routing.rates,
        )

    def _send_budget(self, options: Any) -> float:
        """The longest one send to a destination may take: its adapter's `timeout_s` option if it has one,
        else the egress total timeout. Bounds what is claimed per lease (`relay.loops.outbox`)."""
        return float(getattr(options, "timeout_s", None) or self.settings.egress.total_timeout_s)

    def _policy(self, retry: Any) -> RetryPolicy:
        return RetryPolicy(schedule=retry.schedule_s, jitter=retry.jitter, clock=self.clock)

    async def _start_inbound(self) -> None:
        s = self.settings
        server = InboundServer(
            self.store,
            {n: [sec.get_secret_value() for sec in fs.callback_secrets] for n, fs in s.factories.items()},
            clock=self.clock,
            tolerance_s=s.inbound.timestamp_tolerance_s,
            max_body_bytes=s.inbound.max_body_bytes,
            log=self.log.bind(component="inbound"),
            on_shipment=self.shipper.wake,
            stats=self.health,
            readiness=self.readiness,
            push_receivers={n: a for n, a in self.factories.items() if isinstance(a, PushReceiver)},
            on_push=self.wake_shipment_poller,
        )
        # aiohttp's keepalive_timeout bounds kept-alive connections (idle, or waiting for a whole request
        # head); the guard bounds a new connection's first head and the number of open connections.
        runner = web.AppRunner(
            server.app,
            access_log=None,
            shutdown_timeout=s.daemon.shutdown_grace_s,
            keepalive_timeout=s.inbound.header_timeout_s,
        )
        await runner.setup()
        self.on_close("inbound server", runner.cleanup)
        self.inbound_guard = ConnectionGuard(
            max_connections=s.inbound.max_connections,
            header_timeout_s=s.inbound.header_timeout_s,
            log=self.log.bind(component="inbound"),
        )
        await GuardedSite(runner, s.inbound.host, s.inbound.port, guard=self.inbound_guard).start()
        host, port = runner.addresses[0][:2]
        self.inbound_url = f"http://{host}:{port}"
        self.log.info("inbound_listening", url=self.inbound_url)

    async def _start_admin(self) -> None:
        """The admin listener (`[admin] listen`): `/metrics`, `/healthz`, detailed `/readyz`, status page."""
        s = self.settings
        ops = OpsEndpoints(
            self.store,
            stats=self.health,
            readiness=self.readiness,
            metrics=self.metrics,
            counters=self.counters,
            clock=self.clock,
            detailed=True,
            log=self.log.bind(component="admin"),
        )
        page = StatusPage(self.store, clock=self.clock, log=ops.log) if s.admin.status_page else None
        runner = web.AppRunner(AdminServer(ops, page).app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self.on_close("admin listener", runner.cleanup)
        host, port = split_listen(s.admin.listen)
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.admin_url = f"http://{shown}:{bound_port}"
        self.log.info("admin_listening", url=self.admin_url, status_page=s.admin.status_page)

    def wake_shipment_poller(self, factory: str) -> None:
        """Poll `factory` for shipments now (a push message said something changed there): this daemon's
        poller, and through the store every other daemon's (the one holding the factory's poller lease
        polls)."""
        for poller in self.factory_pollers:
            if poller.factory == factory:
                poller.wake()
        task = asyncio.get_running_loop().create_task(
            self._notify({wakeups.poll(factory)}), name="relay:notify"
        )
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def _cancel_notifying(self) -> None:
        """Cancel the wake-ups still being sent (hints only), so none reaches a closed store."""
        tasks = list(self._notifying)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _notify(self, topics: set[str]) -> None:
        try:
            await self.store.notify(topics)
        except StoreError as exc:  # a hint only: the other daemons' timers still run
            self.log.warning("wakeup_not_sent", topics=sorted(topics), error=str(exc))

    def _routed_at_ingest(self, result: IngestResult) -> None:
        """A poll's orders routed (and their deliveries claimed) in its ingest: the router logs them, the
        forwarder sends what was claimed and looks for the rest."""
        self.router.routed(result.routed, wake=False)
        self.forwarder.placed_at_ingest(result.claimed, result.routed)

    def wake_for(self, topics: set[str]) -> None:
        """Another daemon on the database committed work (`relay.store.wakeups` topics): wake the loops
        here that do it; `*` wakes them all. A woken loop reads the store, so a spurious wake costs a pass."""
        every = wakeups.ALL in topics
        if every or wakeups.ROUTE in topics:
            self.router.wake()
        factories = wakeups.names(topics, "forward")
        if factories is None or not factories.isdisjoint(self.factories):
            self.forwarder.wake()
        storefronts = wakeups.names(topics, "ship")
        if storefronts is None or not storefronts.isdisjoint(self.storefronts):
            self.shipper.wake()
        polled = wakeups.names(topics, "poll")
        for poller in self.factory_pollers:
            if polled is None or poller.factory in polled:
                poller.wake()

    def push_url(self, factory: str) -> str:
        """Where `factory`'s platform pushes messages (adapters that take them; see `PushReceiver`)."""
        return f"{self.inbound_url}/v1/factories/{factory}/push"

    def callback_url(self, factory: str) -> str:
        """Where `factory` reports shipments (valid once the inbound server is listening)."""
        return f"{self.inbound_url}/v1/factories/{factory}/events"

    async def aclose(self) -> None:
        """Run close hooks in reverse order; a failing hook is logged and the rest still run."""
        while self._closers:
            name, hook = self._closers.pop()
            try:
                await hook()
            except Exception:
                self.log.exception("close_failed", resource=name)

    # --- run -----------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Every failing loop (`poller:shop`, `forwarder`, …) and every factory whose circuit is open
        (`factory:NAME`) with its last error, for logs and the CLI.
        `/healthz` shows only the names: an error may quote a URL or a credential."""
        failing = {
            loop.label: loop.health.last_error
            for loop in self._loops()
            if loop.health.failing_since is not None
        }
        failing.update(self.forwarder.failing_circuits())
        return {"failing": failing}

    def readiness(self) -> dict[str, bool]:
        """`/readyz`'s checks besides the store: the loops run (under `run()`), and no stop has begun."""
        supervisor = self._supervisor_now
        return {
            "loops_running": supervisor is not None and supervisor.alive(),
            "draining": self._stopping.is_set(),
        }

    def counters(self) -> list[CounterSample]:
        """In-process counters for `/metrics` (they restart from 0 with the process)."""
        samples = [
            CounterSample("relay_future_timestamps_total", {"storefront": p.adapter.name}, p.future_stamps)
            for p in self.pollers
        ]
        if self.inbound_guard is not None:
            samples += [
                CounterSample("relay_inbound_connections_refused_total", {}, self.inbound_guard.refused),
                CounterSample("relay_inbound_header_timeouts_total", {}, self.inbound_guard.timed_out),
            ]
        return samples

    def _loops(self) -> list[Loop]:
        return [
            *self.pollers,
            self.router,
            self.forwarder,
            *self.factory_pollers,
            self.shipper,
            *self.pruners,
            *self.watchdogs,
        ]

    def _failure_counts(self) -> dict[str, int]:
        """Failures counted so far per component: each loop, and each factory's circuit (`factory:NAME`)."""
        counts = {loop.label: loop.health.failures for loop in self._loops()}
        counts.update({f"factory:{n}": c.health.failures for n, c in self.forwarder.circuits.items()})
        return counts

    def stop(self) -> None:
        """Stop taking new work; `run()` then drains in-flight sends and returns."""
        if not self._stopping.is_set():
            self.log.info("stopping", grace_s=self.settings.daemon.shutdown_grace_s)
            self.notifier.notify("STOPPING=1", "STATUS=stopping: draining in-flight sends")
        self._stopping.set()

    async def run_once(self) -> list[str]:
        """One full pass: poll every storefront, route, deliver what is due, poll polled factories for
        shipments, push what is due, look for overdue tracking. Every step runs even when an earlier one
        failed.

        Returns the components that failed during the pass (`poller:shop`, `factory:acme`, …: a storefront
        or factory unreachable or refusing credentials, the store unavailable), empty if none did; their
        errors are logged when they happen.
        """
        before = self._failure_counts()
        await self._pass_once()
        after = self._failure_counts()
        return [name for name, n in after.items() if n > before.get(name, 0)]

    async def _pass_once(self) -> None:
        for poller in self.pollers:
            await poller.safe_pass()
        while await self.router.safe_pass():
            pass
        await run_until_idle(self.forwarder)
        for factory_poller in self.factory_pollers:
            await factory_poller.safe_pass()
        await run_until_idle(self.shipper)
        for watchdog in self.watchdogs:
            await watchdog.safe_pass()

    async def run(self, *, once: bool = False) -> None:
        """Run the loops until stopped (SIGTERM, SIGINT or `stop()`, also before `run()`), then drain.

        Raises `LoopCrashed` after the same orderly shutdown if a loop crashed. Cancelling the caller
        also stops and drains (bounded by `daemon.shutdown_grace_s`) before `CancelledError` goes on.
        Signal handlers are installed for the run and the previous ones restored after, however it ends.
        `once=True` does one `run_once()` pass instead. With a `notifier` (systemd): `READY=1` once the
        loops are started, `WATCHDOG=1` while they are alive, `STOPPING=1` when the stop begins.
        """
        if once:
            await self.run_once()
            return
        if self._running:
            raise RuntimeError("App.run() is already running")
        self._running = True
        try:
            with self._signal_handlers() if self.install_signal_handlers else contextlib.nullcontext():
                self.log.info(
                    "relay_started", storefronts=list(self.storefronts), factories=list(self.factories)
                )
                supervisor = self._supervisor_now = self._supervisor()
                watchdog = asyncio.create_task(
                    self.notifier.watchdog(supervisor.alive), name="relay:watchdog"
                )
                try:
                    await supervisor.run()
                finally:
                    watchdog.cancel()
                    await asyncio.wait([watchdog])
                    self._supervisor_now = None
                    self.log.info("relay_stopped")
        finally:
            self._running = False

    def _supervisor(self) -> Supervisor:
        return Supervisor(
            quick=[*self.pollers, self.router, *self.factory_pollers, *self.pruners, *self.watchdogs],
            draining=[self.forwarder, self.shipper],
            stopping=self._stopping,
            request_stop=self.stop,
            grace_s=self.settings.daemon.shutdown_grace_s,
            log=self.log,
            on_started=self._ready,
        )

    def _ready(self) -> None:
        """Every loop is started (and the store and inbound server were opened before): tell systemd."""
        self.notifier.notify(
            "READY=1",
            f"STATUS=running: {len(self.storefronts)} storefront(s), {len(self.factories)} factory(ies)"
            + (f", listening on {self.inbound_url}" if self.inbound_url else ""),
        )

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reseed_catalogue(), name="relay:reseed")
        self._reseeding.add(task)
        task.add_done_callback(self._reseeding.discard)

    async def reseed_catalogue(self) -> SkuDiff | None:
        """Apply the config's `routing.skus` to the SKU catalogue again (SIGHUP): re-read through
        `reload_sku_map`; a config that no longer validates is logged and changes nothing. The router
        picks the change up on its next pass."""
        try:
            mapping = self.reload_sku_map()
            diff = await self.store.seed_skus_from_config(mapping, self.clock())
        except (ConfigurationError, StoreError) as exc:
            self.log.error("catalogue_reseed_failed", error=str(exc))
            return None
        self.log.info(
            "catalogue_seeded", added=len(diff.added), changed=len(diff.changed), removed=len(diff.removed)
        )
        self.router.wake()
        return diff

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        """SIGTERM and SIGINT call `stop()` while inside, SIGHUP re-seeds the SKU catalogue; on exit the previous handlers are put back
        (asyncio's `remove_signal_handler` alone would leave SIG_DFL, losing e.g. `asyncio.run`'s own)."""
        loop = asyncio.get_running_loop()
        installed: list[tuple[signal.Signals, Any]] = []
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                previous = signal.getsignal(sig)
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._on_sighup if sig is signal.SIGHUP else self.stop)
                    installed.append((sig, previous))
            yield
        finally:
            for sig, previous in reversed(installed):
                loop.remove_signal_handler(sig)
                if previous is not None:
                    with contextlib.suppress(ValueError, TypeError, OSError):
                        signal.signal(sig, previous)
