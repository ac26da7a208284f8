"""The application shell: `async with App(settings) as app: await app.run()`.

Opening builds everything in dependency order (store, adapters, loops, inbound server) and registers a
close hook for each; closing runs the hooks in reverse order, logging a failing hook and running the rest.
`run()` starts one poller per storefront, the router, the forwarder, one shipment poller per factory
that is polled rather than calling back, and the shipper. On SIGTERM/SIGINT
(or `stop()`) pollers and the router stop at once (their work is transactional), while in-flight
deliveries and pushes are drained for up to `daemon.shutdown_grace_s` before being cancelled; a
cancelled send is simply resent later with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog
from aiohttp import web

from relay.config import Settings
from relay.contracts import AdapterContext, FactoryAdapter, ShipmentSource, StorefrontAdapter
from relay.domain.retry import RetryPolicy
from relay.inbound import InboundServer
from relay.loops.base import Loop
from relay.loops.forwarder import Forwarder
from relay.loops.order_poller import OrderPoller
from relay.loops.outbox import run_until_idle
from relay.loops.router import Router
from relay.loops.shipment_poller import ShipmentPoller
from relay.loops.shipper import Shipper
from relay.outbound.session import new_session
from relay.registry import FACTORIES, STOREFRONTS, Registry
from relay.store import Store, open_store


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
    ) -> None:
        self.settings = settings
        self.registry = registry or Registry()
        self.clock = clock
        self.sleep = sleep
        self.install_signal_handlers = install_signal_handlers
        self.log = structlog.get_logger("relay")
        self.owner = settings.daemon.instance_id
        self._closers: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self._stopping = asyncio.Event()
        self.store: Store
        self.storefronts: dict[str, StorefrontAdapter] = {}
        self.factories: dict[str, FactoryAdapter] = {}
        self.pollers: list[OrderPoller] = []
        self.factory_pollers: list[ShipmentPoller] = []
        self.inbound_url: str | None = None

    # --- open / close --------------------------------------------------------------------------------

    def on_close(self, name: str, hook: Callable[[], Awaitable[Any]]) -> None:
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
        version = await self.store.migrate()
        await self.store.release_leases(self.owner)
        self.log.info("store_opened", database=s.daemon.database, schema_version=version, instance=self.owner)

        context = AdapterContext(
            new_session=functools.partial(new_session, s.egress),
            clock=self.clock,
            sleep=self.sleep,
            log=self.log,
        )
        for name, sf in s.storefronts.items():
            cls = self.registry.load(STOREFRONTS, sf.adapter)
            adapter = cls(name, sf.options, replace(context, log=self.log.bind(storefront=name)))
            self.storefronts[name] = adapter
            self.on_close(f"storefront {name}", adapter.aclose)
        for name, fs in s.factories.items():
            cls = self.registry.load(FACTORIES, fs.adapter)
            adapter = cls(name, fs.options, replace(context, log=self.log.bind(factory=name)))
            self.factories[name] = adapter
            self.on_close(f"factory {name}", adapter.aclose)
        for row in await self.store.list_factories():
            if row["disabled_at"] is not None and row["name"] in self.factories:
                self.log.warning(
                    "factory_disabled",
                    factory=row["name"],
                    reason=row["disabled_reason"],
                    hint=f"relay factories enable {row['name']}",
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
            clock=self.clock,
            log=self.log.bind(loop="shipper"),
        )
        self.forwarder = Forwarder(
            self.store,
            self.factories,
            {n: self._policy(fs.retry) for n, fs in s.factories.items()},
            owner=self.owner,
            lease_s=d.lease_s,
            batch_size=d.batch_size,
            concurrency={n: fs.concurrency for n, fs in s.factories.items()},
            clock=self.clock,
            log=self.log.bind(loop="forwarder"),
        )
        self.router = Router(
            self.store,
            s.sku_map,
            {n: sf.test_tags for n, sf in s.storefronts.items()},
            owner=self.owner,
            lease_s=d.lease_s,
            batch_size=d.batch_size,
            clock=self.clock,
            log=self.log.bind(loop="router"),
            on_routed=self.forwarder.wake,
        )
        self.pollers = [
            OrderPoller(
                self.store,
                self.storefronts[name],
                interval=sf.poll_interval_s,
                overlap_s=sf.cursor_overlap_s,
                clock=self.clock,
                log=self.log.bind(loop="poller"),
                on_orders=self.router.wake,
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
                on_shipments=self.shipper.wake,
            )
            for name, adapter in self.factories.items()
            if isinstance(adapter, ShipmentSource)
        ]
        if s.inbound.enabled:
            await self._start_inbound()

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
        )
        runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=s.daemon.shutdown_grace_s)
        await runner.setup()
        self.on_close("inbound server", runner.cleanup)
        await web.TCPSite(runner, s.inbound.host, s.inbound.port).start()
        host, port = runner.addresses[0][:2]
        self.inbound_url = f"http://{host}:{port}"
        self.log.info("inbound_listening", url=self.inbound_url)

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
        loops: list[Loop] = [*self.pollers, self.router, self.forwarder, *self.factory_pollers, self.shipper]
        failing = {
            f"{loop.name}:{getattr(getattr(loop, 'adapter', None), 'name', '')}".rstrip(
                ":"
            ): loop.health.last_error
            for loop in loops
            if loop.health.failing_since is not None
        }
        return {"failing": failing}

    def stop(self) -> None:
        """Stop taking new work; `run()` then drains in-flight sends and returns."""
        if not self._stopping.is_set():
            self.log.info("stopping", grace_s=self.settings.daemon.shutdown_grace_s)
        self._stopping.set()

    async def run_once(self) -> None:
        """One full pass: poll every storefront, route, deliver what is due, poll polled factories for
        shipments, push what is due."""
        for poller in self.pollers:
            await poller.safe_pass()
        while await self.router.safe_pass():
            pass
        await run_until_idle(self.forwarder)
        for poller in self.factory_pollers:
            await poller.safe_pass()
        await run_until_idle(self.shipper)

    async def run(self, *, once: bool = False) -> None:
        if once:
            await self.run_once()
            return
        restore = self._install_signals() if self.install_signal_handlers else (lambda: None)
        try:
            await self._run_forever()
        finally:
            restore()

    async def _run_forever(self) -> None:
        stopping = self._stopping
        quick = [
            asyncio.create_task(loop.run(stopping), name=f"{loop.name}")
            for loop in [*self.pollers, self.router, *self.factory_pollers]
        ]
        draining = [
            asyncio.create_task(loop.run(stopping), name=loop.name) for loop in (self.forwarder, self.shipper)
        ]
        self.log.info("relay_started", storefronts=list(self.storefronts), factories=list(self.factories))
        everything = quick + draining
        stop_waiter = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait([*everything, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_waiter and task.exception():
                self.log.error("loop_crashed", loop=task.get_name(), error=repr(task.exception()))
        stopping.set()
        for task in quick:
            task.cancel()
        await asyncio.gather(*quick, return_exceptions=True)
        _, pending = await asyncio.wait(draining, timeout=self.settings.daemon.shutdown_grace_s or None)
        if pending:
            self.log.warning("grace_period_over", cancelled=len(pending))
            for loop in (self.forwarder, self.shipper):
                await loop.abort()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        stop_waiter.cancel()
        self.log.info("relay_stopped")

    def _install_signals(self) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)

        def restore() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return restore
