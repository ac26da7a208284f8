"""The store: the only code that reads or writes the database.

Every public method is one transaction. Loops hand the store whole batches (a page of orders, a
group of delivery outcomes) so one commit covers many state changes. Work is claimed under a lease
(owner + expiry, fenced by a token per claim), never by holding a lock across network calls, so several
daemons can share one PostgreSQL database, all of them active; each storefront and polled factory is
polled by one of them at a time, under a poller lease whose token fences the poller's writes (ADR 14).

Layout (ADR 0007): `Store` below is the contract; `manager.RelayStore` implements it once over a
`connector.Connector`; the transitions themselves live in `transitions/`; a backend is a connector plus
its SQL (`sqlite/`, `postgres/`). `open_store(url)` picks the backend from the URL scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from relay.domain.models import FactoryOrderNotice, Malformed, Order, Shipment
from relay.exceptions import ConfigurationError
from relay.store import sqlite
from relay.store.connector import Connector, DaemonLock
from relay.store.manager import RelayStore
from relay.store.records import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    AttentionItem,
    BackupResult,
    DeadLetter,
    DeliveryClaim,
    DeliveryJob,
    DeliveryOutcome,
    FactoryOrderRecord,
    FactoryStatus,
    IngestResult,
    OrderEvent,
    OrderNote,
    OrderQuery,
    OrderRecord,
    OrderSummary,
    OrderView,
    PollerLease,
    PushJob,
    PushOutcome,
    RouteHook,
    RouteJob,
    RoutePlan,
    RoutingSnapshot,
    ShipmentRecord,
    ShipmentResult,
    ShipmentVerdict,
    SkuDiff,
    SkuRecord,
    StateChange,
    Stats,
    StatusReport,
    StorefrontStatus,
)
from relay.store.transitions.retention import PruneReport

__all__ = [
    "BACKENDS",
    "ORDER_CANCELLED",
    "ORDER_CREATED",
    "AttentionItem",
    "BackupResult",
    "DaemonLock",
    "DeadLetter",
    "DeliveryClaim",
    "DeliveryJob",
    "DeliveryOutcome",
    "FactoryOrderRecord",
    "FactoryStatus",
    "IngestResult",
    "OrderEvent",
    "OrderNote",
    "OrderQuery",
    "OrderRecord",
    "OrderSummary",
    "OrderView",
    "PollerLease",
    "PruneReport",
    "PushJob",
    "PushOutcome",
    "RouteHook",
    "RouteJob",
    "RoutePlan",
    "RoutingSnapshot",
    "ShipmentRecord",
    "ShipmentResult",
    "ShipmentVerdict",
    "SkuDiff",
    "SkuRecord",
    "StateChange",
    "Stats",
    "StatusReport",
    "Store",
    "StorefrontStatus",
    "open_store",
]


class Store(Protocol):
    """The storage interface the loops, the inbound server and the CLI use.

    Unless a method says otherwise: it runs as exactly one transaction (reads as one read context), a
    state change and its history event are written together, a database that is busy, locked, full or
    unreadable raises `StoreUnavailable` (retry later) and any other database failure `StoreError`.
    `now` is the caller's clock in epoch seconds.
    """

    # --- lifecycle and schema ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to the database. Raises `StoreUnavailable` when it cannot be opened."""
        ...

    async def close(self) -> None:
        """Disconnect. Safe to call when not open."""
        ...

    async def migrate(self) -> int:
        """Apply pending schema migrations, each in its own transaction; return the schema version.

        Raises `UnsupportedDatabaseVersion` for a database newer than this code, changing nothing.
        """
        ...

    async def schema_version(self) -> int:
        """The database's schema version (0 when it was never migrated). Read only."""
        ...

    async def check_schema(self) -> int:
        """The schema version, if it is exactly this code's. Read only (for read-only commands, which never
        migrate): raises `DatabaseNeedsMigration` ("run `relay migrate`") for an older database and
        `UnsupportedDatabaseVersion` for a newer one."""
        ...

    async def ping(self) -> None:
        """Run a trivial query; raises `StoreUnavailable` when the database cannot answer."""
        ...

    def observe(self, listener: Callable[[list[StateChange], list[OrderNote]], None] | None) -> None:
        """Call `listener` after every COMMIT that changed order states or recorded an acceptance, parcel or
        push no state change carried, with those changes and notes (from their history events; one batched
        lookup per transaction, never a read per order). Not a transaction;
        None stops it. The listener runs in the committing task: it must be quick and must not raise."""
        ...

    async def on_wakeup(self, callback: Callable[[set[str]], None]) -> None:
        """Hand `callback` the wake-up topics (`relay.store.wakeups`) of the transactions OTHER daemons on
        this database commit, until closed (`*` when some may have been missed); returns once listening.
        For a daemon's App only. SQLite: nothing (one daemon per file). Not a transaction; quick, no raise."""
        ...

    async def notify(self, topics: Collection[str]) -> None:
        """Send wake-up `topics` to the other daemons now, writing nothing (a push message asks for a poll).
        SQLite: nothing."""
        ...

    # --- poll: cursors and ingest --------------------------------------------------------------------

    async def get_cursor(self, storefront: str) -> datetime | None:
        """The newest storefront `updated_at` whose page is committed, or None before the first page."""
        ...

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
        """Record one page in one transaction: new orders, changes to known ones (an unrouted order takes
        its new lines, a held one goes back to routing, a storefront cancellation cancels its factory
        orders), quarantined records, and the cursor (which only moves forward). Returns the counts.

        `fence`: the poller's lease. If another owner took it since (its token moved), raises `LeaseLost`
        and changes nothing; otherwise the lease is renewed to `now + fence.lease_s` in the same
        transaction.

        `route`: routing at ingest (`RouteHook`). The page's new received orders are planned by it and
        their plans applied as `apply_routing` would, in the same transaction, so a new order is stored
        already routed (or held); what it does not plan stays received for the router. The applied plans
        are in the result's `routed`.

        `claim`: with orders routed at ingest, claim due deliveries to their factories for the forwarder in
        the same transaction (`DeliveryClaim`, as `claim_deliveries` would), returned in `claimed`."""
        ...

    # --- poller leases (ADR 14) ----------------------------------------------------------------------

    async def acquire_poller_lease(
        self, name: str, owner: str, lease_s: float, now: float
    ) -> PollerLease | None:
        """Take lease `name` (`storefront:<name>`, `factory:<name>`) for `owner` until `now + lease_s`
        when it is free, expired (by `now`, relay's clock) or already `owner`'s (then renewed, same token;
        a new owner adds 1 to the token). None, writing nothing, when another owner holds it live."""
        ...

    async def release_poller_lease(self, lease: PollerLease) -> None:
        """Free `lease` (another daemon may take it at once), if it is still this one: a lease taken over
        since is left to its new owner."""
        ...

    # --- route ---------------------------------------------------------------------------------------

    async def claim_orders_to_route(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[RouteJob]:
        """Lease up to `limit` received orders to `owner` for `lease_s` seconds, oldest first."""
        ...

    async def apply_routing(self, plans: Sequence[RoutePlan], now: float) -> int:
        """Write routing decisions (factory orders, holds, cancellations) in one transaction; return how
        many were applied. A plan for an order no longer `received` is skipped."""
        ...

    # --- forward: messages to factories --------------------------------------------------------------

    async def claim_deliveries(
        self, owner: str, factories: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[DeliveryJob]:
        """Lease up to `limit` due messages to the enabled `factories`: cancellations first, then orders.
        A cancellation waits while its factory order's own delivery is leased (in flight)."""
        ...

    async def record_deliveries(
        self, outcomes: Sequence[DeliveryOutcome], now: float
    ) -> list[DeliveryOutcome]:
        """Group-commit delivery outcomes and the order states they imply. An outcome for a row that moved
        on meanwhile, or one not attempted, only frees its lease. Fencing (ADR 11): an outcome whose job's
        `lease_token` is no longer the row's (the row was claimed again since) changes nothing; those are
        returned, for the caller to log. Raises `IllegalTransition` (changing nothing) for an outcome the
        state machine forbids."""
        ...

    async def confirm_deliveries(
        self, jobs: Sequence[DeliveryJob], now: float, lease_s: float, need_s: float
    ) -> list[DeliveryJob]:
        """The check just before sending: the `jobs` whose row is still pending and still leased under the
        job's token (not cancelled, not placed, not claimed by anyone since). A read; only a job with less
        than `need_s` seconds of lease left (or none) is renewed to `now + lease_s`, in one write under the
        same condition, so a storefront cancellation from then on sees the send as in flight."""
        ...

    # --- inbound shipments ---------------------------------------------------------------------------

    async def record_shipment(
        self, factory: str, message_id: str, shipment: Shipment, now: float
    ) -> ShipmentResult:
        """Record one parcel from `factory` and queue its tracking push, or change nothing at all.

        Returns ACCEPTED, or DUPLICATE / UNKNOWN_ORDER / INVALID_LINES with nothing written. Group
        commit: callbacks arriving while a transaction runs share the next one, each recorded exactly as
        if alone, and every caller returns only after that COMMIT; if a shared transaction fails, each of
        its callbacks is retried alone, so one bad parcel cannot fail the others.
        """
        ...

    # --- ship: tracking pushes to storefronts --------------------------------------------------------

    async def claim_pushes(
        self, owner: str, storefronts: Sequence[str], now: float, lease_s: float, limit: int
    ) -> list[PushJob]:
        """Lease up to `limit` due tracking pushes to `storefronts`, earliest due first."""
        ...

    async def record_pushes(self, outcomes: Sequence[PushOutcome], now: float) -> list[PushOutcome]:
        """Group-commit push outcomes and the order states they imply. An outcome for a push that is no
        longer pending only frees its lease; a stale one (fencing, as in `record_deliveries`) changes
        nothing and is returned."""
        ...

    async def confirm_pushes(
        self, jobs: Sequence[PushJob], now: float, lease_s: float, need_s: float
    ) -> list[PushJob]:
        """The pre-send check for pushes, as `confirm_deliveries`."""
        ...

    # --- housekeeping --------------------------------------------------------------------------------

    async def release_leases(self, owner: str) -> None:
        """Free every lease held by `owner` (a process's own leases: owners are per incarnation), outbox
        claims and poller leases alike."""
        ...

    async def release_all_leases(self) -> int:
        """Free every lease (outbox claims and poller leases), whoever holds it; how many. Only for the
        holder of an exclusive `daemon_lock()` (SQLite), at start-up: no other daemon can be alive, so every
        lease is orphaned (ADR 11, ADR 14)."""
        ...

    def daemon_lock(self) -> DaemonLock:
        """The backend's daemon lock (not taken yet): exclusive on SQLite (one daemon per file), shared on
        PostgreSQL (every daemon active; `DaemonLock.exclusive`)."""
        ...

    async def backup(
        self, path: str, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> BackupResult:
        """Copy the database to the file `path`, consistent while the daemon runs and without blocking
        its writes (SQLite: the online backup API on a connection of its own, one read snapshot, copied in
        steps). The copy goes to `path.tmp`, is fsynced and renamed into place, then opened again and
        checked (`integrity_check`). An existing `path` raises `FileExistsError` unless `force`; a missing
        database raises `DatabaseMissing`. `progress(done, total)` (pages) is called after each step, from
        another thread. Changes nothing in the database; works on a store opened read-only. Restore: stop
        the daemon, copy the file back over the database. PostgreSQL: raises `StoreError` naming pg_dump
        (the server's own tools back it up)."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest outbox message (to an enabled factory, or to a storefront) is due; None when
        nothing is owed. Read only."""
        ...

    async def next_delivery_due(self, excluding: Sequence[str] = ()) -> float | None:
        """Earliest message owed to an enabled factory, ignoring the factories in `excluding`; None when
        nothing is owed. Read only."""
        ...

    async def next_push_due(self) -> float | None:
        """Earliest tracking push owed; None when nothing is owed. Read only."""
        ...

    # --- factories -----------------------------------------------------------------------------------

    async def disable_factory(self, name: str, reason: str, now: float) -> bool:
        """Pause deliveries to `name`; False if it was already disabled (the first reason is kept)."""
        ...

    async def enable_factory(self, name: str, now: float) -> bool:
        """Resume deliveries to `name`; False if it was not disabled."""
        ...

    async def list_factories(self) -> list[FactoryStatus]:
        """Every factory the database knows, by name: disabled state and reason, shipment cursor, order
        counts per state. Read only."""
        ...

    async def record_factory_health(
        self,
        name: str,
        failing_since: float | None,
        next_probe_at: float | None,
        last_error: str | None,
        now: float,
    ) -> None:
        """Store the forwarder's circuit for factory `name` as `status()` shows it: failing since when, no
        probe before when, the last error (scrubbed, truncated). All None: healthy. Called on the circuit's
        transitions only (opened, a probe failed, recovered), never per order."""
        ...

    async def record_poll(self, storefront: str, ok: bool, error: str | None, now: float) -> None:
        """Store the outcome of one poll pass of `storefront`: `ok` sets the last successful poll's time;
        otherwise the last failure's time and `error` (scrubbed, truncated). Once per pass at most."""
        ...

    async def get_factory_cursor(self, factory: str) -> str | None:
        """The opaque cursor of `factory`'s shipment listing, or None before its first page. Read only."""
        ...

    async def set_factory_cursor(
        self, factory: str, cursor: str, now: float, *, fence: PollerLease | None = None
    ) -> None:
        """Store `factory`'s shipment-listing cursor (after that page's shipments are recorded). `fence`:
        as `ingest`'s (`LeaseLost`, nothing changed, when the poller's lease was taken over)."""
        ...

    async def apply_factory_notices(
        self,
        factory: str,
        notices: Sequence[FactoryOrderNotice],
        now: float,
        *,
        fence: PollerLease | None = None,
    ) -> int:
        """Record what a polled factory reported about its orders besides parcels, in one transaction with
        an order event per change: `awaiting_payment` / `payment_expired` are kept on the placed factory
        order and flag its order (not sticky: cleared once it is paid, ships or is cancelled), a notice
        without a reason (paid) clears them, any other reason (`duplicate_at_factory`) flags the order.
        Notices for unknown factory orders, or that change nothing, are skipped. Returns how many applied.
        `fence`: as `ingest`'s."""
        ...

    # --- the SKU catalogue (relay.store.transitions.catalogue) ---------------------------------------

    async def list_skus(self) -> list[SkuRecord]:
        """Every catalogue row, by storefront, SKU, priority and factory. Read only."""
        ...

    async def routing_snapshot(self) -> RoutingSnapshot:
        """The catalogue's version number and the disabled factories: one tiny read, every routing pass."""
        ...

    async def orders_routed_since(self, since: float) -> dict[str, int]:
        """How many orders of each storefront were routed to a factory at or after `since` (a storefront's
        `max_orders_per_hour`). Read only."""
        ...

    async def watch_tracking(
        self, rules: Mapping[str, tuple[float | None, float | None]], now: float
    ) -> tuple[int, int]:
        """The tracking watchdog's pass (`transitions.watchdog`): flag orders whose factory order of a factory
        in `rules` (name -> (seconds placed without a parcel, seconds since the last parcel with lines still
        to ship)) is overdue `no_tracking` / `tracking_stalled`, clear those flags whose cause is gone; an
        event per change. Returns (flagged, cleared)."""
        ...

    async def import_skus(self, rows: Sequence[SkuRecord], now: float, dry_run: bool = False) -> SkuDiff:
        """Make the catalogue equal to `rows` (added, changed, removed), all in one transaction; every row
        becomes `import`-owned. `dry_run` only computes the diff. Raises ValueError (changing nothing) for two
        rows with one (storefront, sku, factory)."""
        ...

    async def seed_skus_from_config(self, mapping: Mapping[str, str], now: float) -> SkuDiff:
        """Apply the config's `routing.skus` as a seed: adds SKUs the catalogue lacks, keeps config-seeded
        rows equal to the config, never touches imported rows (see `transitions.catalogue`)."""
        ...

    async def reroute_unavailable(self, unavailable: Mapping[str, str], now: float) -> int:
        """Move never-sent factory orders of `unavailable` factories (name -> why) and of disabled ones to
        their next factory by catalogue priority (a `fallback` event each); how many moved."""
        ...

    # --- operators -----------------------------------------------------------------------------------

    async def retry_order(self, order_id: int, now: float) -> list[str]:
        """Put a held order back to routing and its dead letters back in the outbox (attempts reset).
        Returns what changed; raises `IllegalTransition` (changing nothing) when the order does not
        exist or there is nothing to retry."""
        ...

    async def hold_order(self, order_id: int, reason: str, now: float) -> list[str]:
        """Hold an order no factory has yet, with a person's `reason` (`operator_hold`): `received`, `routed`
        with every factory order still unsent (those are dropped; release plans it again) or already `held`.
        Nothing is sent for it until `release_order`; storefront edits keep it held. Returns what changed;
        raises `IllegalTransition` (changing nothing) for any other state, an unknown order or an empty
        reason."""
        ...

    async def release_order(self, order_id: int, now: float) -> list[str]:
        """Send a held order (held by a person or by routing) back to `received`: the router plans it again
        on its next pass, with the routing it reads then; the guards that wait for a person's approval let
        this version through once. Returns what changed; raises `IllegalTransition` unless the order is
        held."""
        ...

    async def cancel_order(self, order_id: int, now: float) -> list[str]:
        """Cancel an order on a person's word, exactly as a storefront cancellation: not sent anywhere yet, it
        is cancelled; a factory that has (or may have) it gets an `order.cancelled` for the unshipped lines
        and the order follows the answers. The storefront is not told. Returns what changed; raises
        `IllegalTransition` for a finished order or when nothing is left to cancel."""
        ...

    async def retry_all_dead(self, now: float) -> list[int]:
        """`retry_order` for every order with a dead-lettered delivery or tracking push (held orders
        aside), in one transaction. Returns the orders retried, ascending."""
        ...

    async def replay_order(self, order_id: int, now: float) -> list[str]:
        """Send placed-but-unshipped factory orders again with the same idempotency key. Returns what
        changed; raises `IllegalTransition` (changing nothing) when there is nothing to replay."""
        ...

    async def find_order(self, order_id: int) -> OrderView | None:
        """Everything known about one order (factory orders, parcels and pushes, history), or None.
        Read only."""
        ...

    async def find_order_id(self, storefront: str, external_id: str) -> int | None:
        """Relay's id for a storefront's order, or None. Read only."""
        ...

    async def list_orders(self, query: OrderQuery, limit: int) -> list[OrderSummary]:
        """The newest `limit` orders matching every filter of `query` (state, storefront, factory, attention
        reason, changed since), through an index. An unknown state or reason raises `ValueError` naming the
        valid ones. Read only."""
        ...

    async def resolve_order(self, ref: str) -> list[int]:
        """Relay's ids for an operator's reference, ascending: `storefront:external_id`; `#1042` (the shop's
        order number, with or without `#`: several storefronts may share one); digits (relay's id, plus any
        order numbered so). Empty when nothing matches; several when ambiguous. Read only."""
        ...

    async def status(self, now: float, *, hours: float = 6.0, limit: int = 50) -> StatusReport:
        """Everything `relay status` and the status page show (see `StatusReport`): storefront polls,
        factory circuits, counts per state (every state, zeros included), the newest `limit` orders needing
        a person and dead letters, the oldest owed work's age, and orders placed / tracking pushed per minute
        over the last `hours`. Every query is indexed and bounded. Read only."""
        ...

    async def stats(self) -> Stats:
        """Counts per order state (with attention reasons), per outbox state, and quarantined records.
        Read only."""
        ...

    async def prune(
        self, *, inbound_before: float, history_before: float, batch_size: int, dry_run: bool = False
    ) -> PruneReport:
        """Retention (see `relay.store.transitions.retention`): delete inbound message ids received before
        `inbound_before`, and the events, parcels and tracking pushes of orders final since before
        `history_before`. Several transactions, each one batch of at most `batch_size` ids or orders;
        non-final orders are never touched. `dry_run` counts instead, in one read."""
        ...


class ConnectorFactory(Protocol):
    """Makes a backend's connector from a database URL (read-only: see `open_store`)."""

    def __call__(self, url: str, *, read_only: bool = False) -> Connector: ...


def _postgres(url: str, *, read_only: bool = False) -> Connector:
    """The PostgreSQL connector, imported on use: its driver is the optional `relay[postgres]`."""
    try:
        from relay.store import postgres  # noqa: PLC0415 (optional dependency)
    except ImportError as exc:
        raise ConfigurationError(
            [("daemon.database", f"a postgresql:// database needs `pip install 'relay[postgres]'` ({exc})")]
        ) from exc
    return postgres.connector_from_url(url, read_only=read_only)


BACKENDS: dict[str, ConnectorFactory] = {"sqlite": sqlite.connector_from_url, "postgresql": _postgres}
"""URL scheme -> the function that makes that backend's connector from the URL. A backend whose driver is
an optional dependency registers a function that imports it on use."""

SUPPORTED_URLS = "sqlite:///PATH or postgresql://USER@HOST:PORT/DBNAME"
"""What `daemon.database` may be, for error messages."""


def open_store(url: str, *, read_only: bool = False) -> Store:
    """Create (not yet open) the store for a database URL; the scheme picks the backend from `BACKENDS`.

    Raises `ConfigurationError` naming `daemon.database` for an unknown scheme or a malformed URL.
    `read_only`: for commands that only look (`relay status`, `orders`, `show`): `open()` never creates the
    database (a missing file raises `DatabaseMissing`), nothing migrates it, and every write method raises
    `ReadOnlyStore`, changing nothing. Check the schema with `check_schema()`.
    """
    scheme, sep, _ = url.partition("://")
    backend = BACKENDS.get(scheme) if sep else None
    if backend is None:
        raise ConfigurationError(
            [("daemon.database", f"unsupported database URL {url!r}; use {SUPPORTED_URLS}")]
        )
    return RelayStore(backend(url, read_only=read_only))
