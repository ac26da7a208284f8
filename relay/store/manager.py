"""`RelayStore`: the `Store` protocol over any connector. Each public method is one transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from relay.domain.models import FactoryOrderNotice, Malformed, Order, Shipment
from relay.exceptions import UnsupportedDatabaseVersion
from relay.faults import crash_point
from relay.store.connector import Connector, DaemonLock, Transaction
from relay.store.records import (
    DeliveryJob,
    DeliveryOutcome,
    FactoryStatus,
    IngestResult,
    OrderSummary,
    OrderView,
    PushJob,
    PushOutcome,
    RouteJob,
    RoutePlan,
    ShipmentResult,
    Stats,
)
from relay.store.transitions import factories as factories_tx
from relay.store.transitions import orders as orders_tx
from relay.store.transitions import outbox as outbox_tx
from relay.store.transitions import repairs as repairs_tx
from relay.store.transitions import reports as reports_tx
from relay.store.transitions import retention as retention_tx
from relay.store.transitions.retention import PruneReport
from relay.store.transitions.shipments import ShipmentGroupCommit


class RelayStore:
    """The implementation of `relay.store.Store`: one transaction per method, transitions shared by every
    backend, the backend's specifics in `connector`."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._shipments = ShipmentGroupCommit(self._write)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Transaction]:
        """One write transaction. The `mid_transaction` crash point sits after its work, before COMMIT."""
        async with self.connector.write() as tx:
            yield tx
            crash_point("mid_transaction")

    # --- lifecycle and schema ------------------------------------------------------------------------

    async def open(self) -> None:
        """See `Store.open`."""
        await self.connector.open()

    async def close(self) -> None:
        """See `Store.close`."""
        await self.connector.close()

    async def ping(self) -> None:
        """See `Store.ping`."""
        async with self.connector.read() as tx:
            await tx.fetch("ping")

    async def schema_version(self) -> int:
        """See `Store.schema_version`."""
        async with self.connector.read() as tx:
            return await self._version(tx)

    @staticmethod
    async def _version(tx: Transaction) -> int:
        if not await tx.fetch("schema_version_table_exists"):
            return 0
        row = await tx.fetch_one("schema_version")
        return int(row["version"] or 0) if row else 0

    async def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction. Refuse a database newer than the code."""
        migrations = self.connector.migrations
        latest = migrations[-1].version
        async with self._write() as tx:
            await tx.execute("create_schema_version")
        while True:
            async with self._write() as tx:
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

    # --- poll and route ------------------------------------------------------------------------------

    async def get_cursor(self, storefront: str) -> datetime | None:
        """See `Store.get_cursor`."""
        async with self.connector.read() as tx:
            return await orders_tx.get_cursor(tx, storefront)

    async def ingest(
        self,
        storefront: str,
        orders: Sequence[Order],
        malformed: Sequence[Malformed],
        cursor: datetime | None,
        now: float,
    ) -> IngestResult:
        """See `Store.ingest`."""
        async with self._write() as tx:
            return await orders_tx.ingest(tx, storefront, orders, malformed, cursor, now=now)

    async def claim_orders_to_route(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[RouteJob]:
        """See `Store.claim_orders_to_route`."""
        async with self._write() as tx:
            return await orders_tx.claim_orders_to_route(tx, owner, now, lease_s=lease_s, limit=limit)

    async def apply_routing(self, plans: Sequence[RoutePlan], now: float) -> int:
        """See `Store.apply_routing`."""
        async with self._write() as tx:
            return await orders_tx.apply_routing(tx, plans, now)

    # --- outbox --------------------------------------------------------------------------------------

    async def claim_deliveries(
        self, owner: str, factories: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[DeliveryJob]:
        """See `Store.claim_deliveries`."""
        async with self._write() as tx:
            return await outbox_tx.claim_deliveries(tx, owner, factories, now, lease_s=lease_s, limit=limit)

    async def record_deliveries(
        self, outcomes: Sequence[DeliveryOutcome], now: float
    ) -> list[DeliveryOutcome]:
        """See `Store.record_deliveries`."""
        if not outcomes:
            return []
        async with self._write() as tx:
            return await outbox_tx.record_deliveries(tx, outcomes, now)

    async def confirm_deliveries(
        self, jobs: Sequence[DeliveryJob], now: float, lease_s: float, need_s: float
    ) -> list[DeliveryJob]:
        """See `Store.confirm_deliveries`."""
        if not jobs:
            return []
        async with self.connector.read() as tx:
            ok, renew = await outbox_tx.still_held_deliveries(tx, jobs, now, need_s)
        if renew:
            async with self._write() as tx:
                ok |= await outbox_tx.renew_deliveries(
                    tx, [j for j in jobs if (j.kind, j.id) in renew], now, lease_s
                )
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
        async with self._write() as tx:
            return await outbox_tx.claim_pushes(tx, owner, storefronts, now, lease_s=lease_s, limit=limit)

    async def record_pushes(self, outcomes: Sequence[PushOutcome], now: float) -> list[PushOutcome]:
        """See `Store.record_pushes`."""
        if not outcomes:
            return []
        async with self._write() as tx:
            return await outbox_tx.record_pushes(tx, outcomes, now)

    async def confirm_pushes(
        self, jobs: Sequence[PushJob], now: float, lease_s: float, need_s: float
    ) -> list[PushJob]:
        """See `Store.confirm_pushes`."""
        if not jobs:
            return []
        async with self.connector.read() as tx:
            ok, renew = await outbox_tx.still_held_pushes(tx, jobs, now, need_s)
        if renew:
            async with self._write() as tx:
                ok |= await outbox_tx.renew_pushes(tx, [j for j in jobs if j.id in renew], now, lease_s)
        return [j for j in jobs if j.id in ok]

    async def release_leases(self, owner: str) -> None:
        """See `Store.release_leases`."""
        async with self._write() as tx:
            await outbox_tx.release_leases(tx, owner)

    async def release_all_leases(self) -> int:
        """See `Store.release_all_leases`."""
        async with self._write() as tx:
            return await outbox_tx.release_all_leases(tx)

    def daemon_lock(self) -> DaemonLock:
        """See `Store.daemon_lock`."""
        return self.connector.daemon_lock()

    async def next_due(self) -> float | None:
        """See `Store.next_due`."""
        async with self.connector.read() as tx:
            return await outbox_tx.next_due(tx)

    async def next_delivery_due(self, excluding: Sequence[str] = ()) -> float | None:
        """See `Store.next_delivery_due`."""
        async with self.connector.read() as tx:
            return await outbox_tx.next_delivery_due(tx, excluding)

    async def next_push_due(self) -> float | None:
        """See `Store.next_push_due`."""
        async with self.connector.read() as tx:
            return await outbox_tx.next_push_due(tx)

    # --- factories -----------------------------------------------------------------------------------

    async def disable_factory(self, name: str, reason: str, now: float) -> bool:
        """See `Store.disable_factory`."""
        async with self._write() as tx:
            return await factories_tx.disable_factory(tx, name, reason, now)

    async def enable_factory(self, name: str, now: float) -> bool:
        """See `Store.enable_factory`."""
        async with self._write() as tx:
            return await factories_tx.enable_factory(tx, name, now)

    async def list_factories(self) -> list[FactoryStatus]:
        """See `Store.list_factories`."""
        async with self.connector.read() as tx:
            return await factories_tx.list_factories(tx)

    async def get_factory_cursor(self, factory: str) -> str | None:
        """See `Store.get_factory_cursor`."""
        async with self.connector.read() as tx:
            return await factories_tx.get_factory_cursor(tx, factory)

    async def set_factory_cursor(self, factory: str, cursor: str, now: float) -> None:
        """See `Store.set_factory_cursor`."""
        async with self._write() as tx:
            await factories_tx.set_factory_cursor(tx, factory, cursor, now)

    async def apply_factory_notices(
        self, factory: str, notices: Sequence[FactoryOrderNotice], now: float
    ) -> int:
        """See `Store.apply_factory_notices`."""
        if not notices:
            return 0
        async with self._write() as tx:
            return await factories_tx.apply_factory_notices(tx, factory, notices, now)

    # --- operators -----------------------------------------------------------------------------------

    async def retry_order(self, order_id: int, now: float) -> list[str]:
        """See `Store.retry_order`."""
        async with self._write() as tx:
            return await repairs_tx.retry_order(tx, order_id, now)

    async def replay_order(self, order_id: int, now: float) -> list[str]:
        """See `Store.replay_order`."""
        async with self._write() as tx:
            return await repairs_tx.replay_order(tx, order_id, now)

    async def find_order(self, order_id: int) -> OrderView | None:
        """See `Store.find_order`."""
        async with self.connector.read() as tx:
            return await reports_tx.find_order(tx, order_id)

    async def find_order_id(self, storefront: str, external_id: str) -> int | None:
        """See `Store.find_order_id`."""
        async with self.connector.read() as tx:
            return await reports_tx.find_order_id(tx, storefront, external_id)

    async def list_orders(self, state: str | None, limit: int) -> list[OrderSummary]:
        """See `Store.list_orders`."""
        async with self.connector.read() as tx:
            return await reports_tx.list_orders(tx, state, limit)

    async def stats(self) -> Stats:
        """See `Store.stats`."""
        async with self.connector.read() as tx:
            return await reports_tx.stats(tx)

    # --- retention -------------------------------------------------------------------------------------

    async def prune(
        self, *, inbound_before: float, history_before: float, batch_size: int, dry_run: bool = False
    ) -> PruneReport:
        """See `Store.prune`. Each batch is its own short write transaction."""
        if dry_run:
            return await self._prune_counts(inbound_before, history_before, batch_size)
        report = PruneReport()
        while True:
            async with self._write() as tx:
                deleted = await retention_tx.prune_inbound_messages(tx, inbound_before, batch_size)
            report += PruneReport(inbound_messages=deleted)
            await asyncio.sleep(0)  # let the daemon's other writers in between batches
            if deleted < batch_size:
                break
        for state in retention_tx.FINAL_STATES:
            after = 0
            while True:
                async with self._write() as tx:
                    last, ids = await retention_tx.final_orders(tx, state, history_before, after, batch_size)
                    if ids:
                        report += await retention_tx.prune_orders(tx, ids)
                await asyncio.sleep(0)
                if last is None:
                    break
                after = last
        return report

    async def _prune_counts(
        self, inbound_before: float, history_before: float, batch_size: int
    ) -> PruneReport:
        async with self.connector.read() as tx:
            report = PruneReport(
                inbound_messages=await retention_tx.count_inbound_messages(tx, inbound_before)
            )
            for state in retention_tx.FINAL_STATES:
                after = 0
                while True:
                    last, ids = await retention_tx.final_orders(tx, state, history_before, after, batch_size)
                    if ids:
                        report += await retention_tx.history_of(tx, ids)
                    if last is None:
                        break
                    after = last
            return report
