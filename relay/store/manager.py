"""`RelayStore`: the `Store` protocol over any connector. Each public method is one transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import TypeVar

from relay.domain.models import FactoryOrderNotice, Malformed, Order, Shipment
from relay.exceptions import DatabaseNeedsMigration, UnsupportedDatabaseVersion
from relay.faults import crash_point
from relay.store.changes import EventTap
from relay.store.connector import Connector, DaemonLock, Transaction
from relay.store.records import (
    BackupResult,
    DeliveryClaim,
    DeliveryJob,
    DeliveryOutcome,
    FactoryStatus,
    IngestResult,
    OrderNote,
    OrderQuery,
    OrderSummary,
    OrderView,
    PollerLease,
    PushJob,
    PushOutcome,
    RouteHook,
    RouteJob,
    RoutePlan,
    RoutingSnapshot,
    ShipmentResult,
    SkuDiff,
    SkuRecord,
    StateChange,
    Stats,
    StatusReport,
)
from relay.store.transitions import catalogue as catalogue_tx
from relay.store.transitions import factories as factories_tx
from relay.store.transitions import operators as operators_tx
from relay.store.transitions import orders as orders_tx
from relay.store.transitions import outbox as outbox_tx
from relay.store.transitions import pollers as pollers_tx
from relay.store.transitions import repairs as repairs_tx
from relay.store.transitions import reports as reports_tx
from relay.store.transitions import retention as retention_tx
from relay.store.transitions import watchdog as watchdog_tx
from relay.store.transitions.retention import PruneReport
from relay.store.transitions.shipments import ShipmentGroupCommit

T = TypeVar("T")


class RelayStore:
    """The implementation of `relay.store.Store`: one transaction per method, transitions shared by every
    backend, the backend's specifics in `connector`."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._shipments = ShipmentGroupCommit(self._write)
        self._observer: Callable[[list[StateChange], list[OrderNote]], None] | None = None

    def observe(self, listener: Callable[[list[StateChange], list[OrderNote]], None] | None) -> None:
        """See `Store.observe`."""
        self._observer = listener

    async def on_wakeup(self, callback: Callable[[set[str]], None]) -> None:
        """See `Store.on_wakeup`."""
        await self.connector.on_wakeup(callback)

    async def notify(self, topics: Collection[str]) -> None:
        """See `Store.notify`."""
        await self.connector.notify(topics)

    async def _write(self, fn: Callable[[Transaction], Awaitable[T]], *, urgent: bool = False) -> T:
        """`fn` as one write transaction (`Connector.run_write`; `urgent` for the writes on an order's way
        to its factory: ingest, routing, delivery claims). The `mid_transaction` crash point sits after its
        work, before COMMIT. With an observer, the state changes it made are handed over after the COMMIT
        (`changes`), on the caller's loop."""
        observer = self._observer
        if observer is None:
            return await self.connector.run_write(lambda tx: _unit(tx, fn), urgent=urgent)
        result, changes, notes = await self.connector.run_write(
            lambda tx: _observed_unit(tx, fn), urgent=urgent
        )
        if changes or notes:
            observer(changes, notes)
        return result

    async def _read(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """`fn` on the connector's reads (`Connector.run_read`)."""
        return await self.connector.run_read(fn)

    # --- lifecycle and schema ------------------------------------------------------------------------

    async def open(self) -> None:
        """See `Store.open`."""
        await self.connector.open()

    async def close(self) -> None:
        """See `Store.close`."""
        await self.connector.close()

    async def ping(self) -> None:
        """See `Store.ping`."""
        await self._read(lambda tx: tx.fetch("ping"))

    async def schema_version(self) -> int:
        """See `Store.schema_version`."""
        return await self._read(self._version)

    @staticmethod
    async def _version(tx: Transaction) -> int:
        if not await tx.fetch("schema_version_table_exists"):
            return 0
        row = await tx.fetch_one("schema_version")
        return int(row["version"] or 0) if row else 0

    async def check_schema(self) -> int:
        """See `Store.check_schema`."""
        current = await self._read(self._version)
        latest = self.connector.migrations[-1].version
        if current > latest:
            raise UnsupportedDatabaseVersion(
                f"database schema version {current} is newer than this relay ({latest}); upgrade relay"
            )
        if current < latest:
            raise DatabaseNeedsMigration(
                f"database schema version {current} is older than this relay ({latest}); run `relay migrate`"
            )
        return current

    async def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction. Refuse a database newer than the code."""
        migrations = self.connector.migrations
        latest = migrations[-1].version
        await self._write(lambda tx: tx.execute("create_schema_version"))

        async def step(tx: Transaction) -> int | None:
            """Apply the next pending migration; None when there was one, else the current version."""
            current = await self._version(tx)
            if current > latest:
                raise UnsupportedDatabaseVersion(
                    f"database schema version {current} is newer than this relay ({latest}); upgrade relay"
                )
            pending = [m for m in migrations if m.version > current]
            if not pending:
                return current
            for statement in pending[0].statements:
                await tx.execute_statement(statement)
                crash_point("during_migration")
            await tx.execute("record_schema_version", version=pending[0].version, applied_at=time.time())
            return None

        while (current := await self._write(step)) is None:
            pass
        return current

    # --- poll and route ------------------------------------------------------------------------------

    async def get_cursor(self, storefront: str) -> datetime | None:
        """See `Store.get_cursor`."""
        return await self._read(lambda tx: orders_tx.get_cursor(tx, storefront))

    async def ingest(
        self,
        storefront: str,
        orders: Sequence[Order],
        malformed: Sequence[Malformed],
        cursor: datetime | None,
        now: float,
        *,
        fence: PollerLease | None = None,
        route: RouteHook | None = None,
        claim: DeliveryClaim | None = None,
    ) -> IngestResult:
        """See `Store.ingest`."""

        async def unit(tx: Transaction) -> IngestResult:
            if fence is not None:
                await pollers_tx.fence(tx, fence, now)
            result = await orders_tx.ingest(tx, storefront, orders, malformed, cursor, now=now, route=route)
            if claim is None or not result.routed:
                return result
            factories = {fo.factory for plan in result.routed for fo in plan.factory_orders}
            return replace(result, claimed=tuple(await outbox_tx.claim_at_ingest(tx, claim, factories, now)))

        return await self._write(unit, urgent=True)

    async def acquire_poller_lease(
        self, name: str, owner: str, lease_s: float, now: float
    ) -> PollerLease | None:
        """See `Store.acquire_poller_lease`. A read first: a standby's pass finds it held and writes nothing."""
        held = await self._read(lambda tx: pollers_tx.holder(tx, name))
        if held is not None and held[0] not in (None, owner) and held[1] > now:
            return None
        return await self._write(lambda tx: pollers_tx.acquire(tx, name, owner, lease_s, now))

    async def release_poller_lease(self, lease: PollerLease) -> None:
        """See `Store.release_poller_lease`."""
        await self._write(lambda tx: pollers_tx.release(tx, lease))

    async def claim_orders_to_route(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[RouteJob]:
        """See `Store.claim_orders_to_route`."""
        return await self._write(
            lambda tx: orders_tx.claim_orders_to_route(tx, owner, now, lease_s=lease_s, limit=limit),
            urgent=True,
        )

    async def apply_routing(self, plans: Sequence[RoutePlan], now: float) -> int:
        """See `Store.apply_routing`."""
        return await self._write(lambda tx: orders_tx.apply_routing(tx, plans, now), urgent=True)

    # --- outbox --------------------------------------------------------------------------------------

    async def claim_deliveries(
        self, owner: str, factories: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[DeliveryJob]:
        """See `Store.claim_deliveries`."""
        return await self._write(
            lambda tx: outbox_tx.claim_deliveries(tx, owner, factories, now, lease_s=lease_s, limit=limit),
            urgent=True,
        )

    async def record_deliveries(
        self, outcomes: Sequence[DeliveryOutcome], now: float
    ) -> list[DeliveryOutcome]:
        """See `Store.record_deliveries`."""
        if not outcomes:
            return []
        return await self._write(lambda tx: outbox_tx.record_deliveries(tx, outcomes, now))

    async def confirm_deliveries(
        self, jobs: Sequence[DeliveryJob], now: float, lease_s: float, need_s: float
    ) -> list[DeliveryJob]:
        """See `Store.confirm_deliveries`."""
        if not jobs:
            return []
        ok, renew = await self._read(lambda tx: outbox_tx.still_held_deliveries(tx, jobs, now, need_s))
        if renew:
            short = [j for j in jobs if (j.kind, j.id) in renew]
            ok |= await self._write(lambda tx: outbox_tx.renew_deliveries(tx, short, now, lease_s))
        return [j for j in jobs if (j.kind, j.id) in ok]

    async def record_shipment(
        self, factory: str, message_id: str, shipment: Shipment, now: float
    ) -> ShipmentResult:
        """See `Store.record_shipment` (group-committed)."""
        return await self._shipments.record(factory, message_id, shipment, now)

    async def claim_pushes(
        self, owner: str, storefronts: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[PushJob]:
        """See `Store.claim_pushes`."""
        return await self._write(
            lambda tx: outbox_tx.claim_pushes(tx, owner, storefronts, now, lease_s=lease_s, limit=limit)
        )

    async def record_pushes(self, outcomes: Sequence[PushOutcome], now: float) -> list[PushOutcome]:
        """See `Store.record_pushes`."""
        if not outcomes:
            return []
        return await self._write(lambda tx: outbox_tx.record_pushes(tx, outcomes, now))

    async def confirm_pushes(
        self, jobs: Sequence[PushJob], now: float, lease_s: float, need_s: float
    ) -> list[PushJob]:
        """See `Store.confirm_pushes`."""
        if not jobs:
            return []
        ok, renew = await self._read(lambda tx: outbox_tx.still_held_pushes(tx, jobs, now, need_s))
        if renew:
            short = [j for j in jobs if j.id in renew]
            ok |= await self._write(lambda tx: outbox_tx.renew_pushes(tx, short, now, lease_s))
        return [j for j in jobs if j.id in ok]

    async def release_leases(self, owner: str) -> None:
        """See `Store.release_leases`."""
        await self._write(lambda tx: outbox_tx.release_leases(tx, owner))

    async def release_all_leases(self) -> int:
        """See `Store.release_all_leases`."""
        return await self._write(outbox_tx.release_all_leases)

    def daemon_lock(self) -> DaemonLock:
        """See `Store.daemon_lock`."""
        return self.connector.daemon_lock()

    async def backup(
        self, path: str, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> BackupResult:
        """See `Store.backup`."""
        return await self.connector.backup(path, force=force, progress=progress)

    async def next_due(self) -> float | None:
        """See `Store.next_due`."""
        return await self._read(outbox_tx.next_due)

    async def next_delivery_due(self, excluding: Sequence[str] = ()) -> float | None:
        """See `Store.next_delivery_due`."""
        return await self._read(lambda tx: outbox_tx.next_delivery_due(tx, excluding))

    async def next_push_due(self) -> float | None:
        """See `Store.next_push_due`."""
        return await self._read(outbox_tx.next_push_due)

    # --- factories -----------------------------------------------------------------------------------

    async def disable_factory(self, name: str, reason: str, now: float) -> bool:
        """See `Store.disable_factory`."""
        return await self._write(lambda tx: factories_tx.disable_factory(tx, name, reason, now))

    async def enable_factory(self, name: str, now: float) -> bool:
        """See `Store.enable_factory`."""
        return await self._write(lambda tx: factories_tx.enable_factory(tx, name, now))

    async def list_factories(self) -> list[FactoryStatus]:
        """See `Store.list_factories`."""
        return await self._read(factories_tx.list_factories)

    async def record_factory_health(
        self,
        name: str,
        failing_since: float | None,
        next_probe_at: float | None,
        last_error: str | None,
        now: float,
    ) -> None:
        """See `Store.record_factory_health`."""
        await self._write(
            lambda tx: factories_tx.record_factory_health(
                tx, name, failing_since, next_probe_at, last_error, now=now
            )
        )

    async def record_poll(self, storefront: str, ok: bool, error: str | None, now: float) -> None:
        """See `Store.record_poll`."""
        await self._write(lambda tx: factories_tx.record_poll(tx, storefront, ok, error, now))

    async def get_factory_cursor(self, factory: str) -> str | None:
        """See `Store.get_factory_cursor`."""
        return await self._read(lambda tx: factories_tx.get_factory_cursor(tx, factory))

    async def set_factory_cursor(
        self, factory: str, cursor: str, now: float, *, fence: PollerLease | None = None
    ) -> None:
        """See `Store.set_factory_cursor`."""

        async def unit(tx: Transaction) -> None:
            if fence is not None:
                await pollers_tx.fence(tx, fence, now)
            await factories_tx.set_factory_cursor(tx, factory, cursor, now)

        await self._write(unit)

    async def apply_factory_notices(
        self,
        factory: str,
        notices: Sequence[FactoryOrderNotice],
        now: float,
        *,
        fence: PollerLease | None = None,
    ) -> int:
        """See `Store.apply_factory_notices`."""
        if not notices:
            return 0

        async def unit(tx: Transaction) -> int:
            if fence is not None:
                await pollers_tx.fence(tx, fence, now)
            return await factories_tx.apply_factory_notices(tx, factory, notices, now)

        return await self._write(unit)

    # --- the SKU catalogue ----------------------------------------------------------------------------

    async def list_skus(self) -> list[SkuRecord]:
        """See `Store.list_skus`."""
        return await self._read(catalogue_tx.list_skus)

    async def routing_snapshot(self) -> RoutingSnapshot:
        """See `Store.routing_snapshot`."""
        return await self._read(orders_tx.routing_snapshot)

    async def orders_routed_since(self, since: float) -> dict[str, int]:
        """See `Store.orders_routed_since`."""
        return await self._read(lambda tx: catalogue_tx.orders_routed_since(tx, since))

    async def watch_tracking(
        self, rules: Mapping[str, tuple[float | None, float | None]], now: float
    ) -> tuple[int, int]:
        """See `Store.watch_tracking`."""
        return await self._write(lambda tx: watchdog_tx.watch_tracking(tx, rules, now))

    async def import_skus(self, rows: Sequence[SkuRecord], now: float, dry_run: bool = False) -> SkuDiff:
        """See `Store.import_skus`."""
        if dry_run:
            return await self._read(lambda tx: catalogue_tx.import_skus(tx, rows, now, dry_run=True))
        return await self._write(lambda tx: catalogue_tx.import_skus(tx, rows, now, dry_run=False))

    async def seed_skus_from_config(self, mapping: Mapping[str, str], now: float) -> SkuDiff:
        """See `Store.seed_skus_from_config`."""
        return await self._write(lambda tx: catalogue_tx.seed_from_config(tx, mapping, now))

    async def reroute_unavailable(self, unavailable: Mapping[str, str], now: float) -> int:
        """See `Store.reroute_unavailable`. A read first: most passes find nothing to move."""
        if not await self._read(lambda tx: catalogue_tx.any_to_reroute(tx, unavailable)):
            return 0
        return await self._write(lambda tx: catalogue_tx.reroute_unavailable(tx, unavailable, now))

    # --- operators -----------------------------------------------------------------------------------

    async def retry_order(self, order_id: int, now: float) -> list[str]:
        """See `Store.retry_order`."""
        return await self._write(lambda tx: repairs_tx.retry_order(tx, order_id, now))

    async def hold_order(self, order_id: int, reason: str, now: float) -> list[str]:
        """See `Store.hold_order`."""
        return await self._write(lambda tx: operators_tx.hold_order(tx, order_id, reason, now))

    async def release_order(self, order_id: int, now: float) -> list[str]:
        """See `Store.release_order`."""
        return await self._write(lambda tx: operators_tx.release_order(tx, order_id, now))

    async def cancel_order(self, order_id: int, now: float) -> list[str]:
        """See `Store.cancel_order`."""
        return await self._write(lambda tx: operators_tx.cancel_order(tx, order_id, now))

    async def retry_all_dead(self, now: float) -> list[int]:
        """See `Store.retry_all_dead`."""
        return await self._write(lambda tx: operators_tx.retry_all_dead(tx, now))

    async def replay_order(self, order_id: int, now: float) -> list[str]:
        """See `Store.replay_order`."""
        return await self._write(lambda tx: repairs_tx.replay_order(tx, order_id, now))

    async def find_order(self, order_id: int) -> OrderView | None:
        """See `Store.find_order`."""
        return await self._read(lambda tx: reports_tx.find_order(tx, order_id))

    async def find_order_id(self, storefront: str, external_id: str) -> int | None:
        """See `Store.find_order_id`."""
        return await self._read(lambda tx: reports_tx.find_order_id(tx, storefront, external_id))

    async def list_orders(self, query: OrderQuery, limit: int) -> list[OrderSummary]:
        """See `Store.list_orders`."""
        return await self._read(lambda tx: reports_tx.list_orders(tx, query, limit))

    async def resolve_order(self, ref: str) -> list[int]:
        """See `Store.resolve_order`."""
        return await self._read(lambda tx: reports_tx.resolve_order(tx, ref))

    async def status(self, now: float, *, hours: float = 6.0, limit: int = 50) -> StatusReport:
        """See `Store.status`."""
        return await self._read(lambda tx: reports_tx.status(tx, now, hours=hours, limit=limit))

    async def stats(self) -> Stats:
        """See `Store.stats`."""
        return await self._read(reports_tx.stats)

    # --- retention -------------------------------------------------------------------------------------

    async def prune(
        self, *, inbound_before: float, history_before: float, batch_size: int, dry_run: bool = False
    ) -> PruneReport:
        """See `Store.prune`. Each batch is its own short write transaction."""
        if dry_run:
            return await self._prune_counts(inbound_before, history_before, batch_size)
        report = PruneReport()
        while True:
            deleted = await self._write(
                lambda tx: retention_tx.prune_inbound_messages(tx, inbound_before, batch_size)
            )
            report += PruneReport(inbound_messages=deleted)
            await asyncio.sleep(0)  # let the daemon's other writers in between batches
            if deleted < batch_size:
                break
        for state in retention_tx.FINAL_STATES:
            after = retention_tx.SCAN_START
            while True:
                last, pruned = await self._write(
                    partial(_prune_batch, state=state, before=history_before, after=after, size=batch_size)
                )
                report += pruned
                await asyncio.sleep(0)
                if last is None:
                    break
                after = last
        return report

    async def _prune_counts(
        self, inbound_before: float, history_before: float, batch_size: int
    ) -> PruneReport:

        async def counts(tx: Transaction) -> PruneReport:
            report = PruneReport(
                inbound_messages=await retention_tx.count_inbound_messages(tx, inbound_before)
            )
            for state in retention_tx.FINAL_STATES:
                after = retention_tx.SCAN_START
                while True:
                    last, ids = await retention_tx.final_orders(tx, state, history_before, after, batch_size)
                    if ids:
                        report += await retention_tx.history_of(tx, ids)
                    if last is None:
                        break
                    after = last
            return report

        return await self._read(counts)


async def _unit(tx: Transaction, fn: Callable[[Transaction], Awaitable[T]]) -> T:
    result = await fn(tx)
    crash_point("mid_transaction")
    return result


async def _observed_unit(
    tx: Transaction, fn: Callable[[Transaction], Awaitable[T]]
) -> tuple[T, list[StateChange], list[OrderNote]]:
    tap = EventTap(tx)
    result = await fn(tap)
    changes, notes = await tap.resolve()
    crash_point("mid_transaction")
    return result, changes, notes


async def _prune_batch(
    tx: Transaction, *, state: str, before: float, after: retention_tx.PruneKey, size: int
) -> tuple[retention_tx.PruneKey | None, PruneReport]:
    """One batch of finished orders in `state` (after `after`) pruned: (where the scan stands, what went)."""
    last, ids = await retention_tx.final_orders(tx, state, before, after, size)
    return last, (await retention_tx.prune_orders(tx, ids) if ids else PruneReport())
