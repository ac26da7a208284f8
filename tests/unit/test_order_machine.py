"""Stateful property test: random interleavings of polls (late and reordered), routing, deliveries
(placed, retried, dead-lettered, lost in a crash), shipment callbacks (duplicated, replayed under a new
message id, for unknown orders, over-shipping), tracking pushes, cancellations, clock jumps and
restarts, against the real SQLite store. Invariants are checked after every step.

This module runs a few examples in the default suite; tests/fault/test_order_machine_heavy.py runs
many more (RELAY_FAULT_EXAMPLES).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from relay.domain.models import (
    CANCEL_TRANSITIONS,
    FACTORY_ORDER_TRANSITIONS,
    ORDER_TRANSITIONS,
    PUSH_TRANSITIONS,
    AttentionReason,
    CancelState,
    FactoryOrderState,
    Order,
    OrderLine,
    OrderState,
    PushState,
    Shipment,
    ShipmentLine,
    derive_order_state,
    factory_order_key,
)
from relay.domain.routing import plan_route
from relay.store import ORDER_CANCELLED, DeliveryOutcome, PushOutcome, ShipmentVerdict, open_store
from relay.store.sqlite import QUERIES

SKU_MAP = {"A": "acme", "B": "bolt", "C": "acme"}
FACTORIES = ["acme", "bolt"]
OWNER = "machine"
LEASE_S = 30.0
DERIVED = {"routed", "placed", "partially_shipped", "shipped", "completed", "failed"}


class OrderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-machine-"))
        self.path = self.dir / "relay.db"
        self.now = 1_700_000_000.0
        self.versions: dict[str, list[Order]] = {}  # storefront order id -> every version, oldest first
        self.ingested_max: dict[str, datetime] = {}
        self.factory_holds: set[str] = set()  # keys some factory holds (placed, or sent before a crash)
        self.callbacks: list[tuple[str, str, Shipment]] = []  # every callback sent, for replays
        self.processed: set[tuple[str, str]] = set()  # (factory, message id) relay has remembered
        self.accepted_parcels: set[tuple[str, str]] = set()  # (factory order key, shipment id)
        self.events_seen: list[tuple] = []
        self.messages = 0
        self.store = open_store(f"sqlite:///{self.path}")
        self.run(self.store.open())
        self.run(self.store.migrate())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def q(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    # --- storefront side ---------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.q("SELECT COUNT(*) FROM orders") == [(0,)]

    @rule(
        skus=st.lists(st.sampled_from(["A", "B", "C", "Z"]), min_size=1, max_size=3, unique=True),
        qty=st.integers(1, 3),
        paid=st.booleans(),
    )
    def new_order(self, skus: list[str], qty: int, paid: bool) -> None:
        ext = str(1000 + len(self.versions))
        self.now += 1
        when = datetime.fromtimestamp(self.now, UTC)
        order = Order(
            external_id=ext,
            number=f"#{ext}",
            created_at=when,
            updated_at=when,
            currency="USD",
            paid=paid,
            lines=tuple(
                OrderLine(line_id=f"{ext}-{i}", sku=sku, quantity=qty, unit_price=Decimal("1"))
                for i, sku in enumerate(skus)
            ),
        )
        self.versions[ext] = [order]

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), change=st.sampled_from(["cancel", "pay", "fix_sku"]))
    def storefront_update(self, data: st.DataObject, change: str) -> None:
        ext = data.draw(st.sampled_from(sorted(self.versions)))
        last = self.versions[ext][-1]
        self.now += 1
        update: dict = {"updated_at": datetime.fromtimestamp(self.now, UTC)}
        if change == "cancel":
            update["cancelled"] = True
        elif change == "pay":
            update["paid"] = True
        else:
            update["lines"] = tuple(
                ln.model_copy(update={"sku": "A" if ln.sku == "Z" else ln.sku}) for ln in last.lines
            )
        self.versions[ext].append(last.model_copy(update=update))

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), stale=st.booleans())
    def poll(self, data: st.DataObject, stale: bool) -> None:
        """One listing page: the newest versions, or (late/reordered) any older version of some orders."""
        exts = data.draw(st.lists(st.sampled_from(sorted(self.versions)), min_size=1, max_size=6))
        page = [data.draw(st.sampled_from(self.versions[e])) if stale else self.versions[e][-1] for e in exts]
        self.run(self.store.ingest("shop", page, [], None, self.now))
        for order in page:
            seen = self.ingested_max.get(order.external_id)
            if seen is None or order.updated_at > seen:
                self.ingested_max[order.external_id] = order.updated_at

    # --- relay's loops -----------------------------------------------------------------------------

    @rule()
    def route(self) -> None:
        jobs = self.run(self.store.claim_orders_to_route(OWNER, self.now, LEASE_S, 50))
        plans = [plan_route(job, SKU_MAP, now=self.now) for job in jobs]
        self.run(self.store.apply_routing(plans, self.now))

    @rule(
        outcomes=st.lists(st.sampled_from(["placed", "retry", "rejected", "crash"]), min_size=1, max_size=4)
    )
    def deliver(self, outcomes: list[str]) -> None:
        jobs = self.run(self.store.claim_deliveries(OWNER, FACTORIES, self.now, LEASE_S, len(outcomes)))
        results = []
        for job, what in zip(jobs, outcomes, strict=False):
            assert job.order.key == factory_order_key("shop", job.order.order_id, job.factory)
            if job.kind == ORDER_CANCELLED:
                assert job.key == f"{job.order.key}.cancel"
                if what in ("placed", "crash"):
                    self.factory_holds.discard(job.order.key)  # the factory cancelled it: it never ships
                state = {
                    "placed": CancelState.DONE,
                    "retry": CancelState.PENDING,
                    "rejected": CancelState.DEAD,
                }
                if what in state:
                    results.append(
                        DeliveryOutcome(
                            job,
                            state[what],
                            error=None if what == "placed" else "HTTP 4xx",
                            next_attempt_at=self.now + 5 if what == "retry" else None,
                        )
                    )
                continue
            assert job.key == job.order.key
            if what in ("placed", "crash"):
                self.factory_holds.add(job.key)  # the factory got it; a crash loses only our answer
            if what == "placed":
                results.append(DeliveryOutcome(job, FactoryOrderState.PLACED, reference="R"))
            elif what == "retry":
                results.append(
                    DeliveryOutcome(
                        job, FactoryOrderState.PENDING, next_attempt_at=self.now + 5, error="HTTP 503"
                    )
                )
            elif what == "rejected":
                results.append(
                    DeliveryOutcome(
                        job, FactoryOrderState.DEAD, error="HTTP 400", reason=AttentionReason.FACTORY_REJECTED
                    )
                )
        self.run(self.store.record_deliveries(results, self.now))

    def _send(self, factory: str, message_id: str, shipment: Shipment) -> None:
        key = shipment.factory_order_key
        rows = self.q("SELECT f.id, f.factory FROM factory_orders f WHERE f.key = ?", (key,))
        lines = {
            r[0]: (r[1], r[2], r[3])
            for r in self.q(
                "SELECT l.line_id, l.quantity, l.shipped_quantity, l.factory_order_id FROM order_lines l "
                "JOIN factory_orders f ON f.order_id = l.order_id WHERE f.key = ?",
                (key,),
            )
        }
        if not rows or rows[0][1] != factory:
            expected = ShipmentVerdict.UNKNOWN_ORDER
        elif (factory, message_id) in self.processed or (key, shipment.shipment_id) in self.accepted_parcels:
            expected = ShipmentVerdict.DUPLICATE
        else:
            wanted: dict[str, int] = defaultdict(int)
            for ln in shipment.lines:
                wanted[ln.line_id] += ln.quantity
            ok = all(
                lid in lines and lines[lid][2] == rows[0][0] and lines[lid][1] + q <= lines[lid][0]
                for lid, q in wanted.items()
            )
            expected = ShipmentVerdict.ACCEPTED if ok else ShipmentVerdict.INVALID_LINES
        before = self.q("SELECT COUNT(*) FROM shipments")[0][0]
        result = self.run(self.store.record_shipment(factory, message_id, shipment, self.now))
        after = self.q("SELECT COUNT(*) FROM shipments")[0][0]
        assert result.verdict is expected, (result, expected, message_id)
        assert after == before + (result.verdict is ShipmentVerdict.ACCEPTED), (
            "a callback had the wrong effect"
        )
        if result.verdict is ShipmentVerdict.ACCEPTED:  # only an accepted message is remembered
            self.processed.add((factory, message_id))
            self.accepted_parcels.add((key, shipment.shipment_id))
        self.callbacks.append((factory, message_id, shipment))

    @precondition(lambda self: self.factory_holds)
    @rule(data=st.data(), overship=st.booleans(), split=st.booleans())
    def ship(self, data: st.DataObject, overship: bool, split: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.factory_holds)))
        factory = self.q("SELECT factory FROM factory_orders WHERE key = ?", (key,))[0][0]
        lines = self.q(
            "SELECT l.line_id, l.quantity - l.shipped_quantity FROM order_lines l "
            "JOIN factory_orders f ON f.id = l.factory_order_id WHERE f.key = ?",
            (key,),
        )
        ship_lines = []
        for line_id, left in lines:
            qty = left + 1 if overship else (max(1, left // 2) if split else left)
            if qty > 0:
                ship_lines.append(ShipmentLine(line_id=line_id, quantity=qty))
        if not ship_lines:
            return
        self.messages += 1
        shipment = Shipment(
            factory_order_key=key,
            shipment_id=f"P{self.messages}",
            carrier="SF",
            tracking_number=f"T{self.messages}",
            lines=tuple(ship_lines),
        )
        self._send(factory, f"m{self.messages}", shipment)

    @precondition(lambda self: self.callbacks)
    @rule(data=st.data(), new_id=st.booleans(), wrong_factory=st.booleans())
    def replay_callback(self, data: st.DataObject, new_id: bool, wrong_factory: bool) -> None:
        """A duplicate or late callback: the same message again, or the same parcel under a new id."""
        factory, message_id, shipment = data.draw(st.sampled_from(self.callbacks))
        if wrong_factory:
            factory = "bolt" if factory == "acme" else "acme"
        if new_id:
            self.messages += 1
            message_id = f"m{self.messages}"
        self._send(factory, message_id, shipment)

    @rule()
    def callback_for_unknown_order(self) -> None:
        self.messages += 1
        shipment = Shipment(
            factory_order_key="no-such-key",
            shipment_id="P0",
            carrier="SF",
            tracking_number="T0",
            lines=(ShipmentLine(line_id="x", quantity=1),),
        )
        self._send("acme", f"m{self.messages}", shipment)

    @rule(outcomes=st.lists(st.sampled_from(["done", "retry", "dead", "crash"]), min_size=1, max_size=4))
    def push(self, outcomes: list[str]) -> None:
        jobs = self.run(self.store.claim_pushes(OWNER, ["shop"], self.now, LEASE_S, len(outcomes)))
        results = []
        for job, what in zip(jobs, outcomes, strict=False):
            if what == "done":
                results.append(PushOutcome(job, PushState.DONE, reference="F1"))
            elif what == "retry":
                results.append(
                    PushOutcome(job, PushState.PENDING, next_attempt_at=self.now + 5, error="HTTP 500")
                )
            elif what == "dead":
                results.append(PushOutcome(job, PushState.DEAD, error="HTTP 422"))
        self.run(self.store.record_pushes(results, self.now))

    @precondition(lambda self: self.versions)
    @rule()
    def daemon_pass(self) -> None:
        """What one healthy daemon pass does: poll everything, route, place what is due, push what is due."""
        page = [v[-1] for v in self.versions.values()]
        self.run(self.store.ingest("shop", page, [], None, self.now))
        for order in page:
            seen = self.ingested_max.get(order.external_id)
            if seen is None or order.updated_at > seen:
                self.ingested_max[order.external_id] = order.updated_at
        self.route()
        self.deliver(["placed"] * 50)
        self.push(["done"] * 50)

    @rule(seconds=st.sampled_from([1.0, 6.0, LEASE_S + 1]))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def restart(self) -> None:
        self.run(self.store.close())
        self.store = open_store(f"sqlite:///{self.path}")
        self.run(self.store.open())
        self.run(self.store.migrate())
        self.run(self.store.release_leases(OWNER))

    # --- invariants ----------------------------------------------------------------------------------

    @invariant()
    def one_factory_order_per_order_and_factory(self) -> None:
        assert (
            self.q(
                "SELECT order_id, factory FROM factory_orders GROUP BY order_id, factory HAVING COUNT(*) > 1"
            )
            == []
        )
        for key, factory, ext in self.q(
            "SELECT f.key, f.factory, o.external_id FROM factory_orders f JOIN orders o ON o.id = f.order_id"
        ):
            assert key == factory_order_key("shop", ext, factory)

    @invariant()
    def order_state_is_derived_from_its_parts(self) -> None:
        for order_id, state in self.q("SELECT id, state FROM orders"):
            fos = [
                FactoryOrderState(s)
                for (s,) in self.q("SELECT state FROM factory_orders WHERE order_id = ?", (order_id,))
            ]
            if state not in DERIVED:
                if not fos:
                    assert state in ("received", "held", "cancelled"), state
                continue
            # the store's own definition
            totals = self.q(QUERIES["line_totals_of_orders"], {"order_ids": f"[{order_id}]"})
            total, shipped = totals[0][1:] if totals else (0, 0)
            pushes = [
                PushState(s)
                for (s,) in self.q("SELECT state FROM storefront_pushes WHERE order_id = ?", (order_id,))
            ]
            assert OrderState(state) is derive_order_state(fos, total or 0, shipped or 0, pushes), order_id

    @invariant()
    def shipped_never_exceeds_ordered(self) -> None:
        assert self.q("SELECT * FROM order_lines WHERE shipped_quantity > quantity") == []
        per_line: dict[tuple[str, str], int] = defaultdict(int)
        for key, lines in self.q(
            "SELECT f.key, s.lines FROM shipments s JOIN factory_orders f ON f.id = s.factory_order_id"
        ):
            import json

            for ln in json.loads(lines):
                per_line[(key, ln["line_id"])] += ln["quantity"]
        for key, line_id, shipped in self.q(
            "SELECT f.key, l.line_id, l.shipped_quantity FROM order_lines l "
            "JOIN factory_orders f ON f.id = l.factory_order_id"
        ):
            assert per_line.get((key, line_id), 0) == shipped, (key, line_id)

    @invariant()
    def every_accepted_message_has_exactly_its_effect(self) -> None:
        parcels = set(
            self.q(
                "SELECT f.key, s.shipment_id FROM shipments s JOIN factory_orders f "
                "ON f.id = s.factory_order_id"
            )
        )
        assert parcels == self.accepted_parcels
        assert set(self.q("SELECT factory, message_id FROM inbound_messages")) == self.processed
        assert self.q("SELECT COUNT(*) FROM storefront_pushes")[0][0] == len(parcels)

    @invariant()
    def outbox_rows_are_due_exactly_while_owed(self) -> None:
        for table in ("factory_orders", "storefront_pushes", "factory_cancellations"):
            assert self.q(f"SELECT id FROM {table} WHERE state = 'pending' AND next_attempt_at IS NULL") == []
            assert (
                self.q(f"SELECT id FROM {table} WHERE state != 'pending' AND next_attempt_at IS NOT NULL")
                == []
            )

    @invariant()
    def history_is_append_only_and_ends_in_the_current_state(self) -> None:
        events = self.q(
            "SELECT id, order_id, at, kind, from_state, to_state, detail FROM order_events ORDER BY id"
        )
        assert events[: len(self.events_seen)] == self.events_seen, "an event was changed or removed"
        self.events_seen = events
        last: dict[int, str] = {}
        for _, order_id, _, _, _, to_state, _ in events:
            if to_state is not None:
                last[order_id] = to_state
        for order_id, state in self.q("SELECT id, state FROM orders"):
            assert last.get(order_id) == state, (order_id, state, last.get(order_id))

    @invariant()
    def stored_payload_is_the_newest_version_seen(self) -> None:
        for ext, iso in self.q("SELECT external_id, source_updated_iso FROM orders"):
            assert datetime.fromisoformat(iso) == self.ingested_max[ext]


MACHINE_SETTINGS = settings(
    max_examples=12,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestOrderMachine = OrderMachine.TestCase
TestOrderMachine.settings = MACHINE_SETTINGS


# Every legal move, as reviewed. The machine above explores these tables; this snapshot makes any change
# to them (a transition or a state added or removed) a deliberate, reviewed edit here too.
TRANSITIONS_SNAPSHOT: dict[str, dict[str, set[str]]] = {
    "order": {
        "received": {"routed", "held", "cancelled"},
        "held": {"received", "routed", "cancelled"},
        "routed": {"placed", "partially_shipped", "shipped", "failed", "cancelled"},
        "placed": {"partially_shipped", "shipped", "failed", "cancelled", "routed"},
        "partially_shipped": {"shipped", "completed", "failed"},
        "shipped": {"completed", "failed"},
        "failed": {"routed", "placed", "partially_shipped", "shipped", "completed", "held", "cancelled"},
        "completed": set(),
        "cancelled": set(),
    },
    "factory_order": {
        "pending": {"placed", "partially_shipped", "shipped", "dead", "cancelled"},
        "placed": {"partially_shipped", "shipped", "cancelled", "pending"},
        "partially_shipped": {"shipped"},
        "shipped": set(),
        "dead": {"pending", "partially_shipped", "shipped", "cancelled"},
        "cancelled": set(),
    },
    "push": {
        "pending": {"done", "dead"},
        "dead": {"pending"},
        "done": set(),
    },
    "cancel": {
        "pending": {"done", "refused", "dead"},
        "done": set(),
        "refused": set(),
        "dead": set(),
    },
}


def test_transition_tables_match_the_snapshot_exactly():
    tables = {
        "order": (OrderState, ORDER_TRANSITIONS),
        "factory_order": (FactoryOrderState, FACTORY_ORDER_TRANSITIONS),
        "push": (PushState, PUSH_TRANSITIONS),
        "cancel": (CancelState, CANCEL_TRANSITIONS),
    }
    for name, (states, table) in tables.items():
        assert set(table) == set(states), f"{name}: every state has a row"
    actual = {
        name: {state.value: {target.value for target in targets} for state, targets in table.items()}
        for name, (_, table) in tables.items()
    }
    assert actual == TRANSITIONS_SNAPSHOT
