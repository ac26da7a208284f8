"""The fault suite's world: fake storefront and factories in the test process, the daemon as a real
subprocess (`relay -c relay.toml run`), optional fault proxies in between, and the exactly-once oracle.

The oracle reads the fakes' records and the daemon's database (read-only sqlite3 connection):

* no order missing: every seeded storefront order is in the database and `completed`;
* each factory holds each (order, factory) exactly once, under the stable key (duplicates are counted
  by the storefront order id in the payload, so a regenerated key is caught too);
* every order's tracking is on the storefront exactly once per parcel;
* every callback the daemon answered with 2xx is in the `shipments` table.

With cancellations and edits in the workload (`World.cancel_order`, `World.edit_order`) it also checks,
from the fakes' truth: a cancelled order's factory either cancelled it, or had shipped it all, or the order
is flagged; a factory holds the order's current quantities, or the order is flagged; and no order is left
in a non-final state (not completed, not cancelled) without an attention reason.

With a 1688 factory (`World(alibaba1688=True)`: SKUs `ALI_SKUS`, the fake gateway `world.ali`) the same
checks read the fake's record of the 1688 orders it created: each `outOrderId` held once (a second order
under it, closed or not, is a duplicate; an order under a key relay never derived is one too), the
parcels' waybill numbers on the storefront once each.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.alibaba1688.adapter import parse_trailer
from adapters.alibaba1688.fake import Fake1688Gateway
from adapters.webhook.fake import FakeFactory
from relay.domain.models import factory_order_key
from relay.registry import Registry
from relay.testing.faultproxy import FaultProxy
from relay.testing.harness import merge, to_toml
from relay.testing.vendor import SeedLine

RELAY = str(Path(sys.executable).with_name("relay"))
SKUS = {"TEE-RED-M": "acme", "TEE-BLU-L": "acme", "MUG-WHT": "bolt", "CAP-BLK": "bolt"}
ALI = "ali"
ALI_SKUS = {"HOODIE-GRY-XL": ALI, "POSTER-A2": ALI}
"""SKUs a 1688 factory (`World(alibaba1688=True)`) makes: its fake maps them to 1688 offers."""
FAST_RETRY = [0, 0.2, 0.5] + [1.0] * 60  # never dead-letters within a test, never waits long


def free_port() -> int:
    """A free port below the kernel's ephemeral range: the daemon rebinds it after every kill, and a
    port from the ephemeral range can meanwhile be taken by any outgoing connection on the machine."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(10_000, max(10_001, low - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Daemon:
    """One relay process. Output is appended to the world's log file."""

    def __init__(self, proc: asyncio.subprocess.Process, crash_at: str | None) -> None:
        self.proc = proc
        self.crash_at = crash_at
        self.killed_by_us = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    async def wait(self, timeout: float | None = None) -> int | None:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None

    async def kill(self) -> int:
        if self.alive():
            self.killed_by_us = True
            self.proc.send_signal(signal.SIGKILL)
        return await self.proc.wait()

    def term(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)


@dataclass
class Verdict:
    orders: int = 0
    lost: int = 0
    duplicated: int = 0  # at a factory: an order held twice, or lines it does not make
    dup_tracking: int = 0  # on the storefront: a parcel's fulfilment or tracking note more than once
    stuck: int = 0  # orders left in a non-final state without an attention reason
    problems: list[str] = field(default_factory=list)

    def lose(self, text: str) -> None:
        self.lost += 1
        self.problems.append("LOST " + text)

    def dup(self, text: str) -> None:
        self.duplicated += 1
        self.problems.append("DUPLICATED " + text)

    def dup_push(self, text: str) -> None:
        self.dup_tracking += 1
        self.problems.append("DUPLICATED " + text)

    def stall(self, text: str) -> None:
        self.stuck += 1
        self.problems.append("STUCK " + text)

    def other(self, text: str) -> None:
        self.problems.append(text)

    def report(self, limit: int = 12) -> str:
        """The counts, then up to `limit` problems of each kind (duplicates first: they are rarer)."""
        head = (
            f"{self.orders} orders checked, {self.lost} lost, {self.duplicated} duplicated at a factory, "
            f"{self.dup_tracking} duplicate fulfilments, {self.stuck} stuck without a reason"
        )
        lines = [head]
        for prefix in ("DUPLICATED", "LOST", "STUCK", ""):
            group = [
                p
                for p in self.problems
                if p.startswith(prefix) and (prefix or not p.startswith(("DUPLICATED", "LOST", "STUCK")))
            ]
            lines += group[:limit] + (
                [f"... {len(group) - limit} more {prefix or 'other'}"] if len(group) > limit else []
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class HeldAt1688:
    """A 1688 order as the oracle compares it with the webhook fakes' held orders."""

    key: str
    cancelled: bool
    shipped: bool
    payload: dict[str, Any]


class World:
    """Fakes + config + database for one fault scenario.

    `storefront` names the storefront adapter whose fake serves the shop (`Registry().fake(name)`: demo,
    woocommerce, shopify); `ship_after_s` may give each factory its own delay."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        storefront: str = "demo",
        proxy_factories: bool = False,
        proxy_storefront: bool = False,
        ship_after_s: float | dict[str, float | None] | None = 0.0,
        split_parcels: bool = True,
        db_dir: Path | None = None,
        config: dict[str, Any] | None = None,
        alibaba1688: bool = False,
        database_url: str | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.db_path = (db_dir or tmp_path) / "relay.db"
        # A postgresql:// URL runs the daemons on PostgreSQL (issue 16); the oracle reads it the same way.
        self.database_url = database_url or f"sqlite:///{self.db_path}"
        self.config_path = tmp_path / "relay.toml"
        self.log_path = tmp_path / "daemon.log"
        self.storefront_kind = storefront
        self.storefront: Any = Registry().fake(storefront)(page_size=20)
        delays = (
            ship_after_s if isinstance(ship_after_s, dict) else dict.fromkeys(("acme", "bolt"), ship_after_s)
        )
        self.factories = {
            name: FakeFactory(name, ship_after_s=delays[name], split_parcels=split_parcels)
            for name in ("acme", "bolt")
        }
        for f in self.factories.values():
            f.callback_attempts = 100_000  # a real factory keeps retrying; so do ours, for the oracle
        # A 1688 seller (fake gateway; relay buys there, pays by protocol pay and polls the parcels back).
        # It ships paid orders, one parcel per line, and refuses cancels within a second of creation.
        self.ali = (
            Fake1688Gateway(
                ALI,
                protocol_pay=True,
                split_parcels=split_parcels,
                ship_paid_after_s=0.3,
                cancel_min_age_s=1.0,
                page_size=10,
            )
            if alibaba1688
            else None
        )
        self.skus = {**SKUS, **ALI_SKUS} if alibaba1688 else dict(SKUS)
        self.proxy_factories = proxy_factories
        self.proxy_storefront = proxy_storefront
        self.proxies: dict[str, FaultProxy] = {}
        self.port = free_port()
        self.extra = config or {}
        self.seeded: dict[str, list[SeedLine]] = {}
        self.cancelled: set[str] = set()  # orders the workload cancelled on the storefront
        self.edited: dict[str, list[int]] = {}  # order -> its lines' quantities after the workload's edits
        self.daemons: list[Daemon] = []

    async def __aenter__(self) -> World:
        await self.storefront.start()
        for name, f in self.factories.items():
            await f.start()
            f.callback_url = f"http://127.0.0.1:{self.port}/v1/factories/{name}/events"
            if self.proxy_factories:
                host, port = f.url.split("//")[1].split("/")[0].split(":")
                self.proxies[name] = FaultProxy(host, int(port))
                await self.proxies[name].start()
        if self.ali is not None:
            await self.ali.start()
            # 1688 pushes "paid" and "sent" to the daemon (when one is up), each message twice.
            self.ali.push_url = f"http://127.0.0.1:{self.port}/v1/factories/{ALI}/push"
            self.ali.push_repeats = 2
        if self.proxy_storefront:
            host, port = self.storefront.url.split("//")[1].split("/")[0].split(":")
            self.proxies["storefront"] = FaultProxy(host, int(port))
            await self.proxies["storefront"].start()
        self.write_config()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for d in self.daemons:
            if d.alive():
                await d.kill()
        for p in self.proxies.values():
            await p.close()
        for f in self.factories.values():
            await f.close()
        if self.ali is not None:
            await self.ali.close()
        await self.storefront.close()

    # --- config and daemon -----------------------------------------------------------------------

    def storefront_config(self) -> dict[str, Any]:
        core = {
            "poll_interval_s": 0.2,
            "cursor_overlap_s": 5.0,
            "start_from": "2000-01-01",  # the workload seeds orders before the first start
            "retry": {"schedule_s": FAST_RETRY, "jitter": 0.1},
        }
        if self.storefront_kind == "demo":
            sf_url = self.proxies["storefront"].url() if "storefront" in self.proxies else self.storefront.url
            return {"adapter": "demo", "url": sf_url, "token": self.storefront.token, "page_size": 20, **core}
        # A real shop is polled every few seconds at most: Shopify's cost bucket (the fake's: 2,000 points,
        # 100/s) is shared by the poller and the tracking pushes, and polling five times a second starves
        # the pushes.
        return {
            "adapter": self.storefront_kind,
            **self.storefront.adapter_options(),
            **core,
            "poll_interval_s": 1.0,
        }

    def config(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "daemon": {
                "database": self.database_url,
                "instance_id": "fault-suite",  # fixed: a restarted daemon frees its predecessor's leases
                "shutdown_grace_s": 5.0,
                "lease_s": 60.0,
                "batch_size": 50,
                "log_format": "json",
                "log_level": "warning",
            },
            "inbound": {"host": "127.0.0.1", "port": self.port},
            "egress": {
                "allow_plain_http": True,
                "allow_private_addresses": True,
                "total_timeout_s": 5.0,
                "connect_timeout_s": 2.0,
            },
            "storefronts": {"shop": self.storefront_config()},
            "factories": {
                name: {
                    **f.factory_config(self.proxies[name].url("/orders") if name in self.proxies else None),
                    "timeout_s": 2.0,
                    "retry": {"schedule_s": FAST_RETRY, "jitter": 0.1},
                }
                for name, f in self.factories.items()
            },
            "routing": {"skus": self.skus},
        }
        if self.ali is not None:
            base["factories"][ALI] = {
                **self.ali.factory_config(),
                "timeout_s": 3.0,  # a whole submit: lookup, create, re-read, protocol pay, re-read
                "request_timeout_s": 1.0,  # a create whose answer never comes times out after 1 s
                "shipment_poll_interval_s": 0.3,
                "retry": {"schedule_s": FAST_RETRY, "jitter": 0.1},
            }
        return merge(base, self.extra)

    def write_config(self, **extra: Any) -> None:
        if extra:
            self.extra = merge(self.extra, extra)
        self.config_path.write_text(to_toml(self.config()), encoding="utf-8")

    async def start(self, *args: str, crash_at: str | None = None, command: str = "run") -> Daemon:
        env = {k: v for k, v in os.environ.items() if k != "RELAY_CRASH_AT"}
        if crash_at:
            env["RELAY_CRASH_AT"] = crash_at
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(
                f"\n=== {time.strftime('%H:%M:%S')} relay {command} {' '.join(args)} crash_at={crash_at}\n"
            )
        log = self.log_path.open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                RELAY,
                "-c",
                str(self.config_path),
                command,
                *args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        daemon = Daemon(proc, crash_at)
        self.daemons.append(daemon)
        return daemon

    async def wait_ready(self, daemon: Daemon, timeout: float = 20.0) -> bool:
        """Wait until the daemon's inbound server answers (it is fully started, signal handlers in place)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and daemon.alive():
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return True
        return False

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    # --- orders --------------------------------------------------------------------------------------

    def add_order(self, rng: random.Random, skus: list[str] | None = None) -> str:
        skus = skus or rng.sample(list(self.skus), rng.randint(1, 3))
        lines = [SeedLine(sku, rng.randint(1, 3)) for sku in skus]
        oid = self.storefront.add_order(lines)
        self.seeded[oid] = lines
        return oid

    def expected_factories(self, oid: str) -> set[str]:
        return {self.skus[line.sku] for line in self.seeded[oid] if line.sku}

    def fulfilled_on_storefront(self, oid: str) -> bool:
        return bool(self.storefront.fulfilments(oid))

    def cancel_order(self, oid: str) -> None:
        """The customer cancels, at any time (the storefront refuses once it shows the order fulfilled)."""
        self.storefront.cancel(oid)
        self.cancelled.add(oid)

    def edit_order(self, rng: random.Random, oid: str) -> None:
        """The shop changes one line's quantity, as its admin's order editing does (woocommerce, shopify)."""
        quantities = self.edited.setdefault(oid, [line.quantity for line in self.seeded[oid]])
        index = rng.randrange(len(quantities))
        quantities[index] = rng.choice([q for q in (1, 2, 3, 4) if q != quantities[index]])
        self.storefront.edit_line(oid, index, quantities[index])

    # --- database --------------------------------------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.database_url.startswith("postgresql://"):
            import psycopg

            try:
                with psycopg.connect(self.database_url, autocommit=True) as conn:
                    return conn.execute(sql.replace("?", "%s"), params).fetchall()
            except psycopg.errors.UndefinedTable:
                return []  # not migrated yet
        if not self.db_path.exists():
            return []
        con = self.db()
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []  # not migrated yet
        finally:
            con.close()

    def order_states(self) -> dict[str, str]:
        return dict(self.query("SELECT external_id, state FROM orders WHERE storefront = 'shop'"))

    def order_rows(self) -> dict[str, tuple[str, str | None, int]]:
        """external id -> (state, attention reason, messages still owed for it: factory orders, cancellations,
        tracking pushes)."""
        rows = self.query(
            "SELECT o.external_id, o.state, o.attention_reason,"
            " (SELECT COUNT(*) FROM factory_orders f WHERE f.order_id = o.id AND f.next_attempt_at IS NOT NULL)"
            " + (SELECT COUNT(*) FROM factory_cancellations c WHERE c.order_id = o.id"
            "    AND c.next_attempt_at IS NOT NULL)"
            " + (SELECT COUNT(*) FROM storefront_pushes p WHERE p.order_id = o.id AND p.next_attempt_at IS NOT NULL)"
            " FROM orders o WHERE o.storefront = 'shop'"
        )
        return {ext: (state, reason, owed) for ext, state, reason, owed in rows}

    # --- convergence and the oracle -----------------------------------------------------------------

    def settled(self) -> bool:
        """Every order final (completed, cancelled) or flagged, nothing owed, the factories done."""
        rows = self.order_rows()
        for oid in self.seeded:
            state, reason, owed = rows.get(oid, ("missing", None, 0))
            if owed or (state not in ("completed", "cancelled") and reason is None):
                return False
        if any(f._tasks for f in self.factories.values()):  # callbacks still being delivered
            return False
        if self.ali is not None and not all(  # 1688 ships what was paid; unpaid orders wait for relay
            o.status == "cancel" or o.parcels or o.paid_at is None for o in self.ali.orders.values()
        ):
            return False
        return all(h.shipped or h.cancelled for f in self.factories.values() for h in f.orders.values())

    async def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled():
                return True
            await asyncio.sleep(0.2)
        return self.settled()

    def _check_factories(
        self, v: Verdict, oid: str, held_by: dict[tuple[str, str], list[Any]], reason: str | None
    ) -> None:
        """Each factory that makes part of `oid` holds it once under its key; a cancellation reached it
        (or it had shipped everything, or the order is flagged); it makes the current quantities (or the
        order is flagged)."""
        cancelled, edited = oid in self.cancelled, oid in self.edited
        for factory in sorted(self.expected_factories(oid)):
            held = held_by.get((oid, factory), [])
            if len(held) > 1:
                keys = [h.key for h in held]
                v.dup(f"order {oid}: factory {factory} holds it {len(held)} times (keys {keys})")
            elif held and held[0].key != factory_order_key("shop", oid, factory):
                v.other(f"order {oid}: factory {factory} holds it under an unexpected key {held[0].key}")
            elif not held and not cancelled:
                v.lose(f"order {oid}: factory {factory} never received it")
            if not held:
                continue
            if cancelled and not (held[0].cancelled or held[0].shipped) and reason is None:
                v.other(f"order {oid}: cancelled, factory {factory} still makes it, the order is not flagged")
            if held[0].cancelled and not cancelled:
                v.other(f"order {oid}: factory {factory} cancelled an order nobody cancelled")
            if edited and not cancelled and reason is None:
                ids = self.storefront.line_ids(oid)
                want = dict(zip(ids, self.edited[oid], strict=True))
                got = {ln["line_id"]: ln["quantity"] for ln in held[0].payload["lines"]}
                if any(want.get(line_id) != qty for line_id, qty in got.items()):
                    v.other(
                        f"order {oid}: factory {factory} makes {got}, the shop now says {want}; unflagged"
                    )

    def _held_at_1688(
        self,
        v: Verdict,
        ali: Fake1688Gateway,
        held_by: dict[tuple[str, str], list[Any]],
        parcels: dict[str, list[str]],
    ) -> None:
        """Every 1688 order, from the fake's record of what it created, under the storefront order its
        `outOrderId` belongs to (two under one `outOrderId` are a duplicate); one made under a key relay
        never derived is a duplicate too."""
        keys = {factory_order_key("shop", oid, ALI): oid for oid in self.seeded}
        for order in ali.orders.values():
            oid = keys.get(order.out_order_id)
            if oid is None:
                v.dup(f"1688 order {order.order_id} under an unexpected outOrderId {order.out_order_id!r}")
                continue
            refs = parse_trailer(order.message)[1]
            held_by[(oid, ALI)].append(
                HeldAt1688(
                    key=order.out_order_id,
                    cancelled=order.status == "cancel",
                    shipped=bool(order.parcels),
                    payload={
                        "order_id": oid,
                        "lines": [{"line_id": r.line_id, "quantity": r.quantity} for r in refs],
                    },
                )
            )
            parcels[oid] += [p.bill_no for p in order.parcels]

    def oracle(self) -> Verdict:
        v = Verdict(orders=len(self.seeded))
        rows = self.order_rows()
        held_by: dict[tuple[str, str], list[Any]] = defaultdict(list)
        parcels: dict[str, list[str]] = defaultdict(list)  # storefront order id -> tracking numbers shipped
        for name, f in self.factories.items():
            for held in f.orders.values():
                held_by[(held.payload["order_id"], name)].append(held)
                if held.shipped:
                    for n, _ in enumerate(f.parcels(held), 1):
                        parcels[held.payload["order_id"]].append(
                            f"SF{abs(hash((held.key, n))) % 10**12:012d}"
                        )
        if self.ali is not None:
            self._held_at_1688(v, self.ali, held_by, parcels)
        for oid in self.seeded:
            state, reason, _ = rows.get(oid, (None, None, 0))
            cancelled, edited = oid in self.cancelled, oid in self.edited
            if state is None:
                v.lose(f"order {oid}: not in the database")
            elif state not in ("completed", "cancelled") and reason is None:
                v.stall(f"order {oid}: state {state!r} without an attention reason")
            elif not (cancelled or edited) and state != "completed":
                v.lose(f"order {oid}: state {state!r} ({reason}), not completed")
            self._check_factories(v, oid, held_by, reason)
            for (held_oid, factory), _ in held_by.items():
                if held_oid == oid and factory not in self.expected_factories(oid):
                    v.dup(f"order {oid}: factory {factory} received lines it does not make")
            shipped = Counter(parcels.get(oid, []))
            on_storefront = Counter(f.tracking_number for f in self.storefront.fulfilments(oid))
            for tracking, n in on_storefront.items():
                if n > 1 or n > shipped.get(tracking, 0):
                    v.dup_push(f"order {oid}: tracking {tracking} is on the storefront {n} times")
            for tracking in shipped:
                if tracking not in on_storefront and reason is None:
                    v.lose(f"order {oid}: parcel {tracking} shipped but not on the storefront")
        recorded = {
            (factory, shipment_id)
            for factory, shipment_id in self.query(
                "SELECT f.factory, s.shipment_id FROM shipments s JOIN factory_orders f ON f.id = s.factory_order_id"
            )
        }
        for name, f in self.factories.items():
            for message_id in f.acked:
                if (name, message_id) not in recorded:
                    v.lose(f"callback {name}/{message_id} got 2xx but is not in the shipments table")
        integrity = (
            [] if self.database_url.startswith("postgresql://") else self.query("PRAGMA integrity_check")
        )
        if integrity and integrity[0][0] != "ok":
            v.other(f"integrity_check: {integrity}")
        stray = self.query(
            "SELECT COUNT(*) FROM factory_orders WHERE state = 'pending' AND next_attempt_at IS NULL"
        )
        if stray and stray[0][0]:
            v.other(f"{stray[0][0]} pending factory orders without next_attempt_at")
        return v
