"""SQLite store on aiosqlite: one writer connection, WAL, synchronous=FULL, every write BEGIN IMMEDIATE.

Each aiosqlite call is a thread hop (~100 µs), so methods take batches, use `executemany`, and resolve
ids inside SQL (subselects, `json_each`) rather than round-tripping them through Python.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Any

import aiosqlite

from relay.domain.models import (
    CANCEL_TRANSITIONS,
    FACTORY_ORDER_TRANSITIONS,
    ORDER_TRANSITIONS,
    PUSH_TRANSITIONS,
    AttentionReason,
    CancelState,
    FactoryOrder,
    FactoryOrderState,
    Malformed,
    Order,
    OrderState,
    PushState,
    Shipment,
    ShipmentPush,
    check_transition,
    derive_order_state,
    shipment_push_key,
)
from relay.exceptions import IllegalTransition, StoreError, StoreUnavailable, UnsupportedDatabaseVersion
from relay.faults import crash_point
from relay.store import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    DeliveryJob,
    DeliveryOutcome,
    IngestResult,
    OrderView,
    PushJob,
    PushOutcome,
    RouteJob,
    RoutePlan,
    ShipmentResult,
    ShipmentVerdict,
)

# SQLite result codes that mean "not now" rather than "bug": the caller answers 503 / retries later.
_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
)
_DERIVED_STATES = frozenset(
    {
        OrderState.ROUTED,
        OrderState.PLACED,
        OrderState.PARTIALLY_SHIPPED,
        OrderState.SHIPPED,
        OrderState.COMPLETED,
        OrderState.FAILED,
    }
)


def _load_queries() -> dict[str, str]:
    text = resources.files("relay.store").joinpath("sql/queries.sql").read_text(encoding="utf-8")
    queries: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("-- name:"):
            name = line.removeprefix("-- name:").strip()
            queries[name] = ""
        elif name and not line.startswith("--"):
            queries[name] += line + "\n"
    return {k: v.strip() for k, v in queries.items()}


def _load_migrations() -> list[tuple[int, str]]:
    folder = resources.files("relay.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _statements(script: str) -> Iterable[str]:
    """Split a migration script into complete statements (so they run inside our transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise StoreError(f"incomplete statement in migration: {buf.strip()[:80]}")


Q = _load_queries()
MIGRATIONS = _load_migrations()
LATEST_VERSION = MIGRATIONS[-1][0]


def _iso(value: datetime) -> str:
    return value.isoformat()


def _event(
    order_id: int, at: float, kind: str, src: Any = None, dst: Any = None, **detail: Any
) -> tuple[Any, ...]:
    return (order_id, at, kind, src, dst, json.dumps(detail, default=str) if detail else None)


class SQLiteStore:
    """The SQLite implementation of `relay.store.Store`."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._shipments: list[tuple[str, str, Shipment, float, asyncio.Future[ShipmentResult]]] = []
        self._shipment_writer: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
            self._db = db
            await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            await self.close()
            raise self._translate(exc) from exc

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    @staticmethod
    def _translate(exc: sqlite3.Error) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(_UNAVAILABLE) or "disk" in str(exc) or "locked" in str(exc):
            return StoreUnavailable(f"database unavailable: {exc}")
        return StoreError(f"database error: {exc}")

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The connection, for at most busy_timeout of waiting: when another process holds the database
        long enough that work queues up here, callers get StoreUnavailable (503) instead of waiting out
        one busy_timeout per queued write."""
        try:
            async with asyncio.timeout(self._busy_timeout_ms / 1000):
                await self._lock.acquire()
        except TimeoutError:
            raise StoreUnavailable("database unavailable: the writer is busy") from None
        try:
            yield
        finally:
            self._lock.release()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        async with self._locked():
            db = self.db
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            try:
                yield db
                crash_point("mid_transaction")
                await db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    try:
                        await db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from exc
                raise

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._locked():
            try:
                yield self.db
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    async def _fetchall(self, db: aiosqlite.Connection, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await db.execute_fetchall(Q[query], params))

    async def ping(self) -> None:
        async with self._read() as db:
            await db.execute_fetchall("SELECT 1")

    # --- migrations ----------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self._read() as db:
            return await self._version(db)

    @staticmethod
    async def _version(db: aiosqlite.Connection) -> int:
        rows = list(await db.execute_fetchall("SELECT name FROM sqlite_master WHERE name = 'schema_version'"))
        if not rows:
            return 0
        rows = list(await db.execute_fetchall("SELECT MAX(version) FROM schema_version"))
        return int(rows[0][0] or 0)

    async def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction. Refuse a database newer than the code."""
        async with self._write() as db:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL)"
            )
        while True:
            async with self._write() as db:
                current = await self._version(db)
                if current > LATEST_VERSION:
                    raise UnsupportedDatabaseVersion(
                        f"database schema version {current} is newer than this relay ({LATEST_VERSION}); upgrade relay"
                    )
                pending = [(v, script) for v, script in MIGRATIONS if v > current]
                if not pending:
                    return current
                version, script = pending[0]
                for statement in _statements(script):
                    await db.execute(statement)
                    crash_point("during_migration")
                await db.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time())
                )

    # --- poll: cursors and ingest ------------------------------------------------------------------

    async def get_cursor(self, storefront: str) -> datetime | None:
        async with self._read() as db:
            rows = await self._fetchall(db, "get_cursor", (storefront,))
        return datetime.fromisoformat(rows[0][0]) if rows else None

    async def ingest(
        self,
        storefront: str,
        orders: Sequence[Order],
        malformed: Sequence[Malformed],
        cursor: datetime | None,
        now: float,
    ) -> IngestResult:
        """Record one page: new orders, changes to known ones, quarantined records, and the cursor."""
        latest: dict[str, Order] = {}
        for order in orders:  # a page may repeat an order that changed mid-listing: keep the newest
            seen = latest.get(order.external_id)
            if seen is None or order.updated_at >= seen.updated_at:
                latest[order.external_id] = order
        new = updated = requeued = cancelled = 0
        async with self._write() as db:
            existing = {
                row[1]: row
                for row in await self._fetchall(
                    db, "orders_by_external_ids", (storefront, json.dumps(list(latest)))
                )
            }
            inserts, lines, new_events, events = [], [], [], []
            for ext_id, order in latest.items():
                payload = order.model_dump_json()
                row = existing.get(ext_id)
                if row is None:
                    new += 1
                    inserts.append(
                        (storefront, ext_id, order.number, _iso(order.updated_at), payload, now, now)
                    )
                    lines.extend(
                        (storefront, ext_id, line.line_id, line.sku, line.quantity) for line in order.lines
                    )
                    new_events.append((storefront, ext_id, now, "received", None, "received", None))
                    continue
                order_id, _, state, stored_iso, stored_payload, _ = row
                if datetime.fromisoformat(stored_iso) >= order.updated_at:
                    continue
                updated += 1
                state = OrderState(state)
                before = Order.model_validate_json(stored_payload)
                await db.execute(
                    Q["update_order_payload"], (payload, order.number, _iso(order.updated_at), now, order_id)
                )
                if state in (OrderState.RECEIVED, OrderState.HELD):
                    # Not routed yet: take the new lines and let the router decide again.
                    await db.execute(Q["replace_order_lines_delete"], (order_id,))
                    await db.executemany(
                        Q["insert_order_line_by_id"],
                        [(order_id, ln.line_id, ln.sku, ln.quantity) for ln in order.lines],
                    )
                    if state is OrderState.HELD:
                        requeued += 1
                        await self._set_order_state(db, order_id, state, OrderState.RECEIVED, now)
                        events.append(
                            _event(
                                order_id,
                                now,
                                "requeued",
                                state,
                                OrderState.RECEIVED,
                                cause="storefront_updated",
                            )
                        )
                elif (
                    order.cancelled
                    and not before.cancelled
                    and state not in (OrderState.CANCELLED, OrderState.COMPLETED)
                ):
                    cancelled += 1
                    events.append(
                        _event(order_id, now, "cancel_requested", state, state, cause="storefront_cancelled")
                    )
                    await self._cancel_factory_orders(db, order_id, now, events)
            if inserts:
                await db.executemany(Q["insert_order"], inserts)
                await db.executemany(Q["insert_order_line"], lines)
                await db.executemany(
                    Q["insert_event_by_external_id"],
                    [(sf, ext, at, kind, src, dst, det) for sf, ext, at, kind, src, dst, det in new_events],
                )
            if malformed:
                await db.executemany(
                    Q["quarantine"],
                    [
                        (
                            storefront,
                            m.external_id or "",
                            m.reason,
                            json.dumps(m.raw, default=str)[:65536],
                            now,
                            now,
                        )
                        for m in malformed
                    ],
                )
            if events:
                await db.executemany(Q["insert_event"], events)
            if cursor is not None:
                await db.execute(Q["set_cursor"], (storefront, _iso(cursor), now))
        return IngestResult(new, updated, requeued, cancelled, len(malformed))

    async def _cancel_factory_orders(
        self, db: aiosqlite.Connection, order_id: int, now: float, events: list[tuple[Any, ...]]
    ) -> None:
        """Cancel `order_id` at its factories.

        A factory order not yet placed is cancelled here and never sent. The factory is told
        (an `order.cancelled` row in the outbox) when it holds the order, or may: placed, or an
        earlier attempt's answer was lost, or an attempt is in flight right now (the message then
        waits for that attempt to finish). Shipped factory orders are left alone.
        """
        notices = []
        for fo_id, factory, key, fo_state, attempts, lease_expires_at in await self._fetchall(
            db, "factory_orders_to_cancel", (order_id,)
        ):
            state = FactoryOrderState(fo_state)
            if state in (FactoryOrderState.PENDING, FactoryOrderState.DEAD):
                check_transition(
                    FACTORY_ORDER_TRANSITIONS,
                    state,
                    FactoryOrderState.CANCELLED,
                    subject=f"factory order {fo_id}",
                )
                await db.execute(
                    Q["cancel_factory_order_locally"], ("cancelled on the storefront", now, fo_id)
                )
                in_flight = lease_expires_at is not None and lease_expires_at > now
                if not (attempts or in_flight):
                    continue
            elif state is not FactoryOrderState.PLACED:
                continue
            notices.append((fo_id, order_id, factory, f"{key}.cancel", now, now, now, now))
            events.append(_event(order_id, now, "cancel_queued", None, None, factory=factory))
        if notices:
            await db.executemany(Q["insert_cancellation"], notices)
        await self._refresh_orders(db, [order_id], now, events, cause="cancelled")

    # --- route -------------------------------------------------------------------------------------

    async def claim_orders_to_route(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[RouteJob]:
        async with self._write() as db:
            rows = await self._fetchall(db, "claim_orders_to_route", (owner, now + lease_s, now, limit))
        return [RouteJob(row[0], row[1], Order.model_validate_json(row[2])) for row in rows]

    async def apply_routing(self, plans: Sequence[RoutePlan], now: float) -> int:
        """Write routing decisions. Plans for orders that changed state since the claim are skipped."""
        applied = 0
        async with self._write() as db:
            states = {
                row[0]: OrderState(row[1])
                for row in await self._fetchall(
                    db, "order_states", (json.dumps([p.order_id for p in plans]),)
                )
            }
            fo_rows, assign, events, updates = [], [], [], []
            for plan in plans:
                current = states.get(plan.order_id)
                if current is not OrderState.RECEIVED:
                    continue
                applied += 1
                if plan.cancel:
                    target, reason = OrderState.CANCELLED, None
                elif plan.hold is not None:
                    target, reason = OrderState.HELD, plan.hold
                else:
                    target, reason = OrderState.ROUTED, None
                check_transition(ORDER_TRANSITIONS, current, target, subject=f"order {plan.order_id}")
                updates.append((target, reason, plan.detail if reason else None, now, plan.order_id))
                detail: dict[str, Any] = {}
                if reason:
                    detail = {"reason": reason.value, "detail": plan.detail}
                for fo in plan.factory_orders:
                    fo_rows.append((plan.order_id, fo.factory, fo.key, fo.model_dump_json(), now, now, now))
                    assign.extend((fo.key, plan.order_id, line.line_id) for line in fo.lines)
                if plan.factory_orders:
                    detail = {"factories": {fo.factory: fo.key for fo in plan.factory_orders}}
                events.append(_event(plan.order_id, now, target.value, current, target, **detail))
            if fo_rows:
                await db.executemany(Q["insert_factory_order"], fo_rows)
                await db.executemany(Q["assign_line"], assign)
            if updates:
                await db.executemany(Q["set_order_state"], updates)
                await db.executemany(Q["insert_event"], events)
        return applied

    # --- forward -----------------------------------------------------------------------------------

    async def claim_deliveries(
        self, owner: str, factories: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[DeliveryJob]:
        """Claim due messages to enabled factories: cancellations first, then orders."""
        names = json.dumps(list(factories))
        async with self._write() as db:
            cancels = await self._fetchall(
                db, "claim_cancellations", (owner, now + lease_s, now, names, limit)
            )
            rows = []
            if len(cancels) < limit:
                rows = await self._fetchall(
                    db, "claim_deliveries", (owner, now + lease_s, now, now, names, limit - len(cancels))
                )
        return [
            DeliveryJob(
                id=r[0],
                order_id=r[1],
                factory=r[2],
                key=r[3],
                attempts=r[4],
                order=FactoryOrder.model_validate_json(r[6]),
                kind=ORDER_CANCELLED,
                requested_at=r[5],
            )
            for r in cancels
        ] + [
            DeliveryJob(
                id=r[0],
                order_id=r[1],
                factory=r[2],
                key=r[3],
                attempts=r[4],
                order=FactoryOrder.model_validate_json(r[5]),
            )
            for r in rows
        ]

    async def record_deliveries(self, outcomes: Sequence[DeliveryOutcome], now: float) -> None:
        """Group-commit delivery outcomes. An outcome for a row that moved on meanwhile, or an unattempted
        one, only frees its lease."""
        if not outcomes:
            return
        async with self._write() as db:
            events: list[tuple[Any, ...]] = []
            touched: list[int] = []
            creates = [o for o in outcomes if o.job.kind == ORDER_CREATED]
            cancels = [o for o in outcomes if o.job.kind == ORDER_CANCELLED]
            if creates:
                await self._record_creates(db, creates, now, events, touched)
            if cancels:
                await self._record_cancels(db, cancels, now, events, touched)
            await self._refresh_orders(db, touched, now, events, cause="delivery")
            await db.executemany(Q["insert_event"], events)

    async def _record_creates(
        self,
        db: aiosqlite.Connection,
        outcomes: Sequence[DeliveryOutcome],
        now: float,
        events: list[tuple[Any, ...]],
        touched: list[int],
    ) -> None:
        rows = {
            r[0]: r
            for r in await self._fetchall(
                db, "factory_orders_by_ids", (json.dumps([o.job.id for o in outcomes]),)
            )
        }
        updates, releases = [], []
        for out in outcomes:
            fo_id, order_id, state, attempts, factory = rows[out.job.id]
            current = FactoryOrderState(state)
            attempt = attempts + 1
            if current is not FactoryOrderState.PENDING or not out.attempted:
                releases.append((fo_id,))
                continue
            check_transition(FACTORY_ORDER_TRANSITIONS, current, out.state, subject=f"factory order {fo_id}")
            due = out.next_attempt_at if out.state is FactoryOrderState.PENDING else None
            reason = out.reason.value if out.reason else None
            updates.append((out.state, attempt, due, out.error, reason, out.reference, now, fo_id))
            touched.append(order_id)
            if out.state is FactoryOrderState.PLACED:
                events.append(
                    _event(
                        order_id,
                        now,
                        "factory_accepted",
                        None,
                        None,
                        factory=factory,
                        attempt=attempt,
                        reference=out.reference,
                    )
                )
            elif out.state is FactoryOrderState.DEAD:
                events.append(
                    _event(
                        order_id,
                        now,
                        "dead_lettered",
                        None,
                        None,
                        factory=factory,
                        attempt=attempt,
                        reason=reason,
                        error=out.error,
                    )
                )
            else:
                events.append(
                    _event(
                        order_id,
                        now,
                        "delivery_failed",
                        None,
                        None,
                        factory=factory,
                        attempt=attempt,
                        error=out.error,
                        next_attempt_at=due,
                    )
                )
        await db.executemany(Q["update_factory_order"], updates)
        await db.executemany(Q["release_factory_order_lease"], releases)

    async def _record_cancels(
        self,
        db: aiosqlite.Connection,
        outcomes: Sequence[DeliveryOutcome],
        now: float,
        events: list[tuple[Any, ...]],
        touched: list[int],
    ) -> None:
        """Outcomes of `order.cancelled` messages. DONE cancels a placed factory order; REFUSED (the
        factory already shipped) leaves it, so its parcels keep flowing back."""
        rows = {
            r[0]: r
            for r in await self._fetchall(
                db, "cancellations_by_ids", (json.dumps([o.job.id for o in outcomes]),)
            )
        }
        for out in outcomes:
            c_id, order_id, fo_id, state, attempts, factory, fo_state = rows[out.job.id]
            current = CancelState(state)
            if current is not CancelState.PENDING or not out.attempted:
                await db.execute(Q["release_cancellation_lease"], (c_id,))
                continue
            target = CancelState(out.state)
            check_transition(CANCEL_TRANSITIONS, current, target, subject=f"cancellation {c_id}")
            attempt = attempts + 1
            due = out.next_attempt_at if target is CancelState.PENDING else None
            await db.execute(Q["update_cancellation"], (target, attempt, due, out.error, now, c_id))
            kind = {
                CancelState.DONE: "factory_cancelled",
                CancelState.REFUSED: "cancel_refused_already_shipped",
                CancelState.DEAD: "cancel_dead_lettered",
            }.get(target, "cancel_failed")
            events.append(
                _event(
                    order_id,
                    now,
                    kind,
                    None,
                    None,
                    factory=factory,
                    attempt=attempt,
                    error=out.error,
                    next_attempt_at=due,
                )
            )
            if target is CancelState.DEAD:
                # Never silent: the customer cancelled, the factory may still ship. A person must follow up.
                await db.execute(
                    Q["flag_order"],
                    (AttentionReason.CANCEL_REJECTED, f"{factory}: {out.error}", now, order_id),
                )
            if target is CancelState.DONE and FactoryOrderState(fo_state) is FactoryOrderState.PLACED:
                check_transition(
                    FACTORY_ORDER_TRANSITIONS,
                    FactoryOrderState.PLACED,
                    FactoryOrderState.CANCELLED,
                    subject=f"factory order {fo_id}",
                )
                await db.execute(Q["cancel_factory_order_locally"], ("cancelled at the factory", now, fo_id))
                touched.append(order_id)

    # --- inbound shipments -------------------------------------------------------------------------

    async def record_shipment(
        self, factory: str, message_id: str, shipment: Shipment, now: float
    ) -> ShipmentResult:
        """Record one parcel from `factory` and queue its tracking push, or change nothing at all.

        Group-committed: callbacks that arrive while a transaction is running share the next one, each
        recorded in arrival order exactly as alone; every caller returns only after that COMMIT. If a
        shared transaction fails, each of its callbacks is retried alone, so one bad parcel cannot fail
        the others.
        """
        waiter: asyncio.Future[ShipmentResult] = asyncio.get_running_loop().create_future()
        self._shipments.append((factory, message_id, shipment, now, waiter))
        if self._shipment_writer is None or self._shipment_writer.done():
            self._shipment_writer = asyncio.create_task(self._write_shipments())
        return await waiter

    async def _write_shipments(self) -> None:
        batch: list[tuple[str, str, Shipment, float, asyncio.Future[ShipmentResult]]] = []
        try:
            while self._shipments:
                batch, self._shipments = self._shipments, []
                if len(batch) > 1 and await self._shipments_in_one_transaction(batch):
                    continue
                for item in batch:
                    await self._shipments_in_one_transaction([item])
        finally:
            for *_, waiter in batch:  # only if cancelled mid-batch: callers answer 5xx, factories retry
                if not waiter.done():
                    waiter.cancel()

    async def _shipments_in_one_transaction(
        self, group: list[tuple[str, str, Shipment, float, asyncio.Future[ShipmentResult]]]
    ) -> bool:
        """Record `group` in one transaction and answer its callers. False (nobody answered) if it failed
        and holds several callbacks; a lone callback gets the error itself."""
        try:
            async with self._write() as db:
                results = [await self._record_one_shipment(db, *item[:4]) for item in group]
        except Exception as exc:
            if len(group) > 1:
                return False
            if not group[0][4].done():
                group[0][4].set_exception(exc)
            return True
        for item, result in zip(group, results, strict=True):
            if not item[4].done():
                item[4].set_result(result)
        return True

    async def _record_one_shipment(
        self, db: aiosqlite.Connection, factory: str, message_id: str, shipment: Shipment, now: float
    ) -> ShipmentResult:
        """`record_shipment`'s work inside the caller's transaction."""
        found = await self._fetchall(db, "factory_order_for_shipment", (shipment.factory_order_key,))
        if not found or found[0][2] != factory:
            return ShipmentResult(ShipmentVerdict.UNKNOWN_ORDER, detail="no such order for this factory")
        fo_id, order_id, _, fo_state, storefront, external_id, number = found[0]
        if await self._fetchall(db, "message_seen", (factory, message_id)):
            return ShipmentResult(ShipmentVerdict.DUPLICATE, order_id, "message already processed")
        if await self._fetchall(db, "shipment_exists", (fo_id, shipment.shipment_id)):
            return ShipmentResult(ShipmentVerdict.DUPLICATE, order_id, "parcel already recorded")
        lines = {r[0]: r for r in await self._fetchall(db, "lines_of_order", (order_id,))}
        problems = []
        wanted: dict[str, int] = defaultdict(int)
        for ln in shipment.lines:
            wanted[ln.line_id] += ln.quantity
        for line_id, qty in wanted.items():
            row = lines.get(line_id)
            if row is None or row[3] != fo_id:
                problems.append(f"line {line_id!r} is not part of this factory order")
            elif row[2] + qty > row[1]:
                problems.append(f"line {line_id!r}: {row[2] + qty} shipped exceeds {row[1]} ordered")
        if problems:
            return ShipmentResult(ShipmentVerdict.INVALID_LINES, order_id, "; ".join(problems))
        current = FactoryOrderState(fo_state)
        if current is FactoryOrderState.CANCELLED:
            # The factory shipped before it saw our cancellation: the parcel is real, keep it flowing.
            current = FactoryOrderState.PLACED
        fo_left = sum(r[1] - r[2] - wanted.get(lid, 0) for lid, r in lines.items() if r[3] == fo_id)
        order_left = sum(r[1] - r[2] - wanted.get(lid, 0) for lid, r in lines.items())
        target = FactoryOrderState.SHIPPED if fo_left <= 0 else FactoryOrderState.PARTIALLY_SHIPPED
        check_transition(FACTORY_ORDER_TRANSITIONS, current, target, subject=f"factory order {fo_id}")
        lines_json = json.dumps([ln.model_dump() for ln in shipment.lines])
        cur = await db.execute(
            Q["insert_shipment"],
            (
                fo_id,
                order_id,
                shipment.shipment_id,
                shipment.carrier,
                shipment.tracking_number,
                shipment.tracking_url,
                lines_json,
                now,
            ),
        )
        shipment_row = cur.lastrowid
        await db.executemany(Q["add_shipped_quantity"], [(q, order_id, lid) for lid, q in wanted.items()])
        push = ShipmentPush(
            key=shipment_push_key(shipment.factory_order_key, shipment.shipment_id),
            storefront=storefront,
            order_id=external_id,
            order_number=number,
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
            tracking_url=shipment.tracking_url,
            lines=shipment.lines,
            order_fully_shipped=order_left <= 0,
        )
        await db.execute(
            Q["insert_push"],
            (shipment_row, order_id, storefront, push.key, push.model_dump_json(), now, now, now),
        )
        await db.execute(Q["set_factory_order_shipped"], (target, now, fo_id))
        # Only an accepted message is remembered: a rejected one may be corrected and sent again.
        await db.execute(Q["remember_message"], (factory, message_id, now))
        events = [
            _event(
                order_id,
                now,
                "shipment_received",
                None,
                None,
                factory=factory,
                shipment_id=shipment.shipment_id,
                carrier=shipment.carrier,
                tracking_number=shipment.tracking_number,
                message_id=message_id,
            )
        ]
        await self._refresh_orders(db, [order_id], now, events, cause="shipment")
        await db.executemany(Q["insert_event"], events)
        return ShipmentResult(ShipmentVerdict.ACCEPTED, order_id)

    # --- ship: storefront pushes -------------------------------------------------------------------

    async def claim_pushes(
        self, owner: str, storefronts: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[PushJob]:
        async with self._write() as db:
            rows = await self._fetchall(
                db, "claim_pushes", (owner, now + lease_s, now, now, json.dumps(list(storefronts)), limit)
            )
        return [
            PushJob(
                id=r[0],
                order_id=r[1],
                storefront=r[2],
                key=r[3],
                attempts=r[4],
                push=ShipmentPush.model_validate_json(r[5]),
            )
            for r in rows
        ]

    async def record_pushes(self, outcomes: Sequence[PushOutcome], now: float) -> None:
        if not outcomes:
            return
        async with self._write() as db:
            rows = {
                r[0]: r
                for r in await self._fetchall(
                    db, "pushes_by_ids", (json.dumps([o.job.id for o in outcomes]),)
                )
            }
            updates, events, touched = [], [], []
            for out in outcomes:
                push_id, order_id, state, attempts = rows[out.job.id]
                current = PushState(state)
                if current is not PushState.PENDING:
                    updates.append((current, attempts, None, None, None, None, now, push_id))
                    continue
                check_transition(PUSH_TRANSITIONS, current, out.state, subject=f"push {push_id}")
                attempt = attempts + 1
                due = out.next_attempt_at if out.state is PushState.PENDING else None
                reason = AttentionReason.PUSH_REJECTED.value if out.state is PushState.DEAD else None
                updates.append((out.state, attempt, due, out.error, reason, out.reference, now, push_id))
                touched.append(order_id)
                kind = {PushState.DONE: "tracking_pushed", PushState.DEAD: "push_dead_lettered"}.get(
                    out.state, "push_failed"
                )
                events.append(
                    _event(
                        order_id,
                        now,
                        kind,
                        None,
                        None,
                        tracking_number=out.job.push.tracking_number,
                        attempt=attempt,
                        error=out.error,
                        reference=out.reference,
                        next_attempt_at=due,
                    )
                )
            await db.executemany(Q["update_push"], updates)
            await self._refresh_orders(db, touched, now, events, cause="push")
            await db.executemany(Q["insert_event"], events)

    # --- derived order state -----------------------------------------------------------------------

    async def _refresh_orders(
        self,
        db: aiosqlite.Connection,
        order_ids: Sequence[int],
        now: float,
        events: list[tuple[Any, ...]],
        *,
        cause: str,
    ) -> None:
        """Recompute the state of routed orders from their parts and write any change with its event."""
        ids = sorted(set(order_ids))
        if not ids:
            return
        arg = (json.dumps(ids),)
        states = {r[0]: OrderState(r[1]) for r in await self._fetchall(db, "order_states", arg)}
        fos: dict[int, list[tuple[FactoryOrderState, str | None]]] = defaultdict(list)
        for order_id, _, state, reason in await self._fetchall(db, "factory_orders_of_orders", arg):
            fos[order_id].append((FactoryOrderState(state), reason))
        totals = {r[0]: (r[1], r[2]) for r in await self._fetchall(db, "line_totals_of_orders", arg)}
        pushes: dict[int, list[tuple[PushState, str | None]]] = defaultdict(list)
        for order_id, state, reason in await self._fetchall(db, "push_states_of_orders", arg):
            pushes[order_id].append((PushState(state), reason))
        updates = []
        for order_id in ids:
            current = states[order_id]
            if current not in _DERIVED_STATES:
                if not (cause == "cancelled" and current in (OrderState.RECEIVED, OrderState.HELD)):
                    continue
            total, shipped = totals.get(order_id, (0, 0))
            target = derive_order_state(
                [s for s, _ in fos[order_id]], total, shipped, [s for s, _ in pushes[order_id]]
            )
            if cause == "cancelled" and current in (OrderState.RECEIVED, OrderState.HELD):
                target = OrderState.CANCELLED
            if target is current:
                continue
            check_transition(ORDER_TRANSITIONS, current, target, subject=f"order {order_id}")
            reason = None
            if target is OrderState.FAILED:
                reasons = [r for _, r in fos[order_id] + pushes[order_id] if r]
                reason = reasons[0] if reasons else None
            updates.append((target, reason, None, now, order_id))
            events.append(_event(order_id, now, target.value, current, target, cause=cause, reason=reason))
        if updates:
            await db.executemany(Q["set_order_state"], updates)

    async def _set_order_state(
        self,
        db: aiosqlite.Connection,
        order_id: int,
        current: OrderState,
        target: OrderState,
        now: float,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        check_transition(ORDER_TRANSITIONS, current, target, subject=f"order {order_id}")
        await db.execute(Q["set_order_state"], (target, reason, detail, now, order_id))

    # --- housekeeping ------------------------------------------------------------------------------

    async def release_leases(self, owner: str) -> None:
        """Free every lease held by `owner` (used at start-up: a previous incarnation died holding them)."""
        async with self._write() as db:
            for query in (
                "release_order_leases",
                "release_delivery_leases",
                "release_cancellation_leases",
                "release_push_leases",
            ):
                await db.execute(Q[query], (owner,))

    async def next_due(self) -> float | None:
        async with self._read() as db:
            rows = await self._fetchall(db, "next_due")
        return rows[0][0] if rows else None

    async def next_delivery_due(self, excluding: Sequence[str] = ()) -> float | None:
        async with self._read() as db:
            rows = await self._fetchall(db, "next_delivery_due", (json.dumps(list(excluding)),))
        return rows[0][0] if rows else None

    async def next_push_due(self) -> float | None:
        async with self._read() as db:
            rows = await self._fetchall(db, "next_push_due")
        return rows[0][0] if rows else None

    # --- factories ---------------------------------------------------------------------------------

    async def disable_factory(self, name: str, reason: str, now: float) -> bool:
        async with self._write() as db:
            cur = await db.execute(Q["disable_factory"], (name, now, reason, now))
        return bool(cur.rowcount)

    async def enable_factory(self, name: str, now: float) -> bool:
        async with self._write() as db:
            cur = await db.execute(Q["enable_factory"], (now, name))
        return bool(cur.rowcount)

    async def list_factories(self) -> list[dict[str, Any]]:
        async with self._read() as db:
            rows = await self._fetchall(db, "list_factories")
            counts = await self._fetchall(db, "factory_order_counts")
        found: dict[str, dict[str, Any]] = {
            r[0]: {
                "name": r[0],
                "disabled_at": r[1],
                "disabled_reason": r[2],
                "shipment_cursor": r[3],
                "orders": {},
            }
            for r in rows
        }
        for factory, state, count in counts:
            found.setdefault(
                factory,
                {
                    "name": factory,
                    "disabled_at": None,
                    "disabled_reason": None,
                    "shipment_cursor": None,
                    "orders": {},
                },
            )["orders"][state] = count
        return [found[name] for name in sorted(found)]

    async def get_factory_cursor(self, factory: str) -> str | None:
        async with self._read() as db:
            rows = await self._fetchall(db, "get_factory_cursor", (factory,))
        return rows[0][0] if rows else None

    async def set_factory_cursor(self, factory: str, cursor: str, now: float) -> None:
        async with self._write() as db:
            await db.execute(Q["set_factory_cursor"], (factory, cursor, now))

    # --- operator commands -------------------------------------------------------------------------

    async def retry_order(self, order_id: int, now: float) -> list[str]:
        """Put a held order back to routing and dead letters back in the outbox. Returns what changed."""
        changed: list[str] = []
        async with self._write() as db:
            rows = await self._fetchall(db, "order_states", (json.dumps([order_id]),))
            if not rows:
                raise IllegalTransition(f"order {order_id} does not exist")
            state = OrderState(rows[0][1])
            events: list[tuple[Any, ...]] = []
            if state is OrderState.HELD:
                await db.execute(Q["replace_order_lines_delete"], (order_id,))
                order = Order.model_validate_json((await self._fetchall(db, "find_order", (order_id,)))[0][7])
                await db.executemany(
                    Q["insert_order_line_by_id"],
                    [(order_id, ln.line_id, ln.sku, ln.quantity) for ln in order.lines],
                )
                await self._set_order_state(db, order_id, state, OrderState.RECEIVED, now)
                events.append(_event(order_id, now, "operator_retry", state, OrderState.RECEIVED))
                changed.append("order requeued for routing")
            for fo_id, factory, _, fo_state, *_ in await self._fetchall(
                db, "factory_orders_of_order", (order_id,)
            ):
                if fo_state == FactoryOrderState.DEAD:
                    await db.execute(Q["requeue_dead_factory_order"], (now, now, fo_id))
                    events.append(_event(order_id, now, "operator_retry", None, None, factory=factory))
                    changed.append(f"factory order for {factory} requeued")
            cur = await db.execute(Q["requeue_dead_pushes"], (now, now, order_id))
            if cur.rowcount:
                changed.append(f"{cur.rowcount} tracking push(es) requeued")
                events.append(_event(order_id, now, "operator_retry", None, None, pushes=cur.rowcount))
            if state is not OrderState.HELD:
                await self._refresh_orders(db, [order_id], now, events, cause="operator_retry")
            if not changed:
                raise IllegalTransition(f"order {order_id} is {state.value}: nothing to retry")
            await db.executemany(Q["insert_event"], events)
        return changed

    async def replay_order(self, order_id: int, now: float) -> list[str]:
        """Send placed-but-unshipped factory orders again with the same idempotency key."""
        changed: list[str] = []
        async with self._write() as db:
            events: list[tuple[Any, ...]] = []
            for fo_id, factory, _, fo_state, *_ in await self._fetchall(
                db, "factory_orders_of_order", (order_id,)
            ):
                if fo_state == FactoryOrderState.PLACED:
                    check_transition(
                        FACTORY_ORDER_TRANSITIONS,
                        FactoryOrderState.PLACED,
                        FactoryOrderState.PENDING,
                        subject=f"factory order {fo_id}",
                    )
                    await db.execute(Q["replay_factory_order"], (now, now, fo_id))
                    events.append(_event(order_id, now, "operator_replay", None, None, factory=factory))
                    changed.append(f"factory order for {factory} will be re-sent with the same key")
            if not changed:
                raise IllegalTransition(f"order {order_id} has no placed, unshipped factory order to replay")
            await self._refresh_orders(db, [order_id], now, events, cause="operator_replay")
            await db.executemany(Q["insert_event"], events)
        return changed

    async def find_order_id(self, storefront: str, external_id: str) -> int | None:
        async with self._read() as db:
            rows = await self._fetchall(db, "find_order_by_external", (storefront, external_id))
        return rows[0][0] if rows else None

    async def find_order(self, order_id: int) -> OrderView | None:
        async with self._read() as db:
            rows = await self._fetchall(db, "find_order", (order_id,))
            if not rows:
                return None
            fos = await self._fetchall(db, "factory_orders_of_order", (order_id,))
            ships = await self._fetchall(db, "shipments_of_order", (order_id,))
            events = await self._fetchall(db, "events_of_order", (order_id,))
        r = rows[0]
        cols = ("id", "storefront", "external_id", "number", "state", "attention_reason", "attention_detail")
        order = dict(zip(cols, r[:7], strict=True)) | {"created_at": r[8], "updated_at": r[9]}
        order["payload"] = json.loads(r[7])
        fo_cols = (
            "id",
            "factory",
            "key",
            "state",
            "attempts",
            "next_attempt_at",
            "last_error",
            "dead_reason",
            "reference",
            "cancel_state",
        )
        ship_cols = (
            "id",
            "factory",
            "shipment_id",
            "carrier",
            "tracking_number",
            "tracking_url",
            "lines",
            "received_at",
            "push_state",
            "push_attempts",
            "push_error",
            "push_reference",
        )
        return OrderView(
            order=order,
            factory_orders=[dict(zip(fo_cols, f, strict=True)) for f in fos],
            shipments=[dict(zip(ship_cols, s, strict=True)) | {"lines": json.loads(s[6])} for s in ships],
            events=[
                {"at": e[0], "kind": e[1], "from": e[2], "to": e[3], **(json.loads(e[4]) if e[4] else {})}
                for e in events
            ],
        )

    async def list_orders(self, state: str | None, limit: int) -> list[dict[str, Any]]:
        async with self._read() as db:
            rows = await self._fetchall(db, "list_orders", (state, state, limit))
        cols = (
            "id",
            "storefront",
            "external_id",
            "number",
            "state",
            "attention_reason",
            "attention_detail",
            "updated_at",
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    async def stats(self) -> dict[str, Any]:
        """Counts per order state (with attention reasons), per outbox state, and quarantined records."""
        async with self._read() as db:
            orders = await self._fetchall(db, "order_counts")
            outbox = await self._fetchall(db, "outbox_counts")
            quarantined = (await self._fetchall(db, "quarantine_count"))[0][0]
        by_state: dict[str, int] = defaultdict(int)
        attention: dict[str, int] = defaultdict(int)
        for state, reason, count in orders:
            by_state[state] += count
            if reason:
                attention[reason] += count
        boxes: dict[str, dict[str, int]] = defaultdict(dict)
        for table, state, count in outbox:
            boxes[table][state] = count
        return {
            "orders": dict(by_state),
            "attention": dict(attention),
            "factory_orders": boxes.get("factory_orders", {}),
            "storefront_pushes": boxes.get("storefront_pushes", {}),
            "quarantined": quarantined,
        }
