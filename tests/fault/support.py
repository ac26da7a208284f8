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
import itertools
import os
import random
import re
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters.alibaba1688.adapter import parse_trailer
from adapters.alibaba1688.fake import Fake1688Gateway
from adapters.webhook.fake import FakeFactory
from relay.domain.models import factory_order_key
from relay.registry import Registry
from relay.testing.faultproxy import Balancer, FaultProxy, Toxic
from relay.testing.harness import merge, to_toml
from relay.testing.vendor import SeedLine

RELAY = str(Path(sys.executable).with_name("relay"))
SKUS = {"TEE-RED-M": "acme", "TEE-BLU-L": "acme", "MUG-WHT": "bolt", "CAP-BLK": "bolt"}
ALI = "ali"
ALI_SKUS = {"HOODIE-GRY-XL": ALI, "POSTER-A2": ALI}
"""SKUs a 1688 factory (`World(alibaba1688=True)`) makes: its fake maps them to 1688 offers."""
FAST_RETRY = [0, 0.2, 0.5] + [1.0] * 60  # never dead-letters within a test, never waits long
FRESH_S = 0.5  # a relay process sends nothing this soon after it was spawned (imports, store, loops)


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
    """One relay process. Output is appended to the world's log file. `slot` is the daemon instance it
    runs as (`World(daemons=N)`: its own config, `instance_id` and inbound port); `started_at` and
    `ended_at` (monotonic, the exit seen by a watcher task) bound its life."""

    def __init__(
        self, proc: asyncio.subprocess.Process, crash_at: str | None, *, slot: int = 0, port: int = 0
    ) -> None:
        self.proc = proc
        self.crash_at = crash_at
        self.killed_by_us = False
        self.slot = slot
        self.port = port
        self.started_at = time.monotonic()
        self.ended_at: float | None = None
        self.killed_at: float | None = None  # when `kill` sent SIGKILL: it does nothing after that
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        await self.proc.wait()
        self.ended_at = time.monotonic()

    def alive_at(self, t: float) -> bool:
        return self.started_at <= t and (self.ended_at is None or t <= self.ended_at)

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
            self.killed_at = time.monotonic()
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
class Hit:
    """One request a fake received: the daemon slot it came through (None: a port of no slot), what it was
    (`list`, `push`, `look` on a storefront; `deliver` at a factory), when it was handled (monotonic)."""

    slot: int | None
    kind: str
    start: float
    end: float


async def add_site(runner: web.AppRunner) -> int:
    """Listen on one more loopback port with an aiohttp runner's application; the port."""
    before = set(runner.addresses)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    (address,) = set(runner.addresses) - before
    return int(address[1])


class _Slots:
    """Per-slot ports on a fake (`listen`) and a record of the requests by the slot they came through
    (`hits`). Listing requests take `list_delay_s` longer (a real shop's listing is not instant): without
    poller leases, daemons polling side by side then overlap at the storefront."""

    _runner: web.AppRunner | None
    url: str
    list_delay_s = 0.0

    def _slots_init(self) -> None:
        self.hits: list[Hit] = []
        self.slot_ports: dict[int, int] = {}

    async def listen(self, slots: int) -> list[int]:
        """One port per slot (slot 0: the port the fake already serves); their numbers."""
        assert self._runner is not None
        ports = [int(self.url.split(":")[2].split("/")[0])]
        ports += [await add_site(self._runner) for _ in range(slots - 1)]
        self.slot_ports = {port: i for i, port in enumerate(ports)}
        return ports

    async def _timed(self, request: web.Request, kind: str, handler: Any) -> Any:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        slot = self.slot_ports.get(sockname[1]) if sockname else None
        start = time.monotonic()
        try:
            if kind == "list" and self.list_delay_s:
                await asyncio.sleep(self.list_delay_s)
            return await handler(request)
        finally:
            self.hits.append(Hit(slot, kind, start, time.monotonic()))


class _DemoSlots(_Slots):
    async def _list(self, request: web.Request) -> Any:
        return await self._timed(request, "list", super()._list)  # type: ignore[misc]

    async def _fulfil(self, request: web.Request) -> Any:
        return await self._timed(request, "push", super()._fulfil)  # type: ignore[misc]


class _WooSlots(_Slots):
    async def _route(self, request: web.Request) -> Any:
        if request.method == "GET":
            kind = "list" if request.path.rstrip("/") == "/wp-json/wc/v3/orders" else "look"
        else:
            kind = "push"
        return await self._timed(request, kind, super()._route)  # type: ignore[misc]


class _ShopifySlots(_Slots):
    async def _graphql(self, request: web.Request) -> Any:
        try:
            query = str((await request.json())["query"])
        except (ValueError, KeyError, TypeError):
            query = ""
        if query.lstrip().startswith("mutation"):
            kind = "push"
        else:
            kind = "list" if re.search(r"\borders\s*\(", query) else "look"
        return await self._timed(request, kind, super()._graphql)  # type: ignore[misc]


SLOTTED = {"demo": _DemoSlots, "woocommerce": _WooSlots, "shopify": _ShopifySlots}


@dataclass
class Hold:
    """A message (`key`: its webhook-id) the factory keeps unanswered until `release`: `arrived` is set once
    it came in (through `slot`); released, it is refused with `status` without being acted on, or taken as
    usual (`status` None)."""

    key: str
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    slot: int | None = None
    status: int | None = None

    def release(self, status: int | None = None) -> None:
        self.status = status
        self.released.set()


class SlottedFactory(FakeFactory):
    """The webhook fake factory with per-slot ports (`listen`) and every order message it received
    (`order.created`, `order.cancelled`) recorded by the slot it came through (`hits`, kind `deliver`)."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self.hits: list[Hit] = []
        self.slot_ports: dict[int, int] = {}
        self.holds: list[Hold] = []

    def hold(self, key: str) -> Hold:
        """Hold the next delivery of message `key` that is not held yet (holds are used in order)."""
        held = Hold(key)
        self.holds.append(held)
        return held

    async def close(self) -> None:
        for held in self.holds:
            held.released.set()
        await super().close()

    async def listen(self, slots: int) -> list[int]:
        """One port per slot (slot 0: the fake's own); callbacks then open a new connection each, so a
        balancer in front of the daemons spreads them."""
        assert self._runner is not None and self._session is not None
        ports = [int(self.url.split(":")[2].split("/")[0])]
        ports += [await add_site(self._runner) for _ in range(slots - 1)]
        self.slot_ports = {port: i for i, port in enumerate(ports)}
        await self._session.close()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=aiohttp.ClientTimeout(total=10)
        )
        return ports

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        slot = self.slot_ports.get(sockname[1]) if sockname else None
        start = time.monotonic()
        try:
            key = request.headers.get("webhook-id")
            held = next((h for h in self.holds if h.key == key and not h.arrived.is_set()), None)
            if held is not None:
                held.slot = slot
                held.arrived.set()
                await held.released.wait()
                if held.status is not None:
                    return web.json_response({"error": "refused while held"}, status=held.status)
            return await super()._receive(request)
        finally:
            self.hits.append(Hit(slot, "deliver", start, time.monotonic()))


def overlapping(hits: list[Hit]) -> list[tuple[Hit, Hit]]:
    """Pairs of hits from two different slots whose handling overlapped in time."""
    ordered = sorted(hits, key=lambda h: h.start)
    pairs = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.start >= a.end:
                break
            if a.slot != b.slot:
                pairs.append((a, b))
    return pairs


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
    woocommerce, shopify); `ship_after_s` may give each factory its own delay.

    `daemons=N` (N > 1) prepares N daemon slots, as N hosts would run `relay run`: slot i has its own
    config file, `instance_id` (`fault-suite-i`) and inbound port, and reaches the storefront and each
    factory (through its own fault proxy, with `proxy_factories`) on ports of its own, so the fakes record
    which slot every request came through (`hits`; listings take `list_delay_s`, by default 50 ms with
    several slots, none with one). The factories' callbacks
    (and 1688's pushes) go through a round-robin `Balancer` in front of the slots' inbound ports."""

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
        daemons: int = 1,
        list_delay_s: float | None = None,
    ) -> None:
        if daemons > 1 and proxy_storefront:
            raise ValueError("a storefront proxy serves one daemon slot only")
        self.slots = daemons
        self.tmp_path = tmp_path
        self.db_path = (db_dir or tmp_path) / "relay.db"
        # A postgresql:// URL runs the daemons on PostgreSQL (issue 16); the oracle reads it the same way.
        self.database_url = database_url or f"sqlite:///{self.db_path}"
        self.config_path = tmp_path / "relay.toml"
        self.log_path = tmp_path / "daemon.log"
        self.storefront_kind = storefront
        base = Registry().fake(storefront)
        if list_delay_s is None:
            list_delay_s = 0.05 if daemons > 1 else 0.0
        slotted = type(f"Slotted{base.__name__}", (SLOTTED[storefront], base), {"list_delay_s": list_delay_s})
        self.storefront: Any = slotted(page_size=20)
        self.storefront._slots_init()
        delays = (
            ship_after_s if isinstance(ship_after_s, dict) else dict.fromkeys(("acme", "bolt"), ship_after_s)
        )
        self.factories = {
            name: SlottedFactory(name, ship_after_s=delays[name], split_parcels=split_parcels)
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
        # Per slot: the factories' fault proxies (slot 0's are `proxies`), storefront and factory URLs.
        self.slot_proxies: list[dict[str, FaultProxy]] = [self.proxies]
        self.slot_urls: list[dict[str, str]] = []
        self.balancer: Balancer | None = None
        self.ports = [free_port() for _ in range(daemons)]
        self.port = self.ports[0]
        self.extra = config or {}
        self.seeded: dict[str, list[SeedLine]] = {}
        self.cancelled: set[str] = set()  # orders the workload cancelled on the storefront
        self.edited: dict[str, list[int]] = {}  # order -> its lines' quantities after the workload's edits
        self.daemons: list[Daemon] = []

    async def __aenter__(self) -> World:
        await self.storefront.start()
        inbound = f"http://127.0.0.1:{self.port}"
        if self.slots > 1:
            self.balancer = Balancer([("127.0.0.1", port) for port in self.ports])
            await self.balancer.start()
            inbound = self.balancer.url()
            self.slot_urls = [
                {"storefront": f"http://127.0.0.1:{port}"}
                for port in await self.storefront.listen(self.slots)
            ]
            self.slot_proxies += [{} for _ in range(self.slots - 1)]
        for name, f in self.factories.items():
            await f.start()
            f.callback_url = f"{inbound}/v1/factories/{name}/events"
            ports = await f.listen(self.slots) if self.slots > 1 else [int(f.url.split(":")[2].split("/")[0])]
            for slot, port in enumerate(ports):
                url = f"http://127.0.0.1:{port}/orders"
                if self.proxy_factories:
                    proxy = self.slot_proxies[slot][name] = FaultProxy("127.0.0.1", port)
                    await proxy.start()
                    url = proxy.url("/orders")
                if self.slots > 1:
                    self.slot_urls[slot][name] = url
        if self.ali is not None:
            await self.ali.start()
            # 1688 pushes "paid" and "sent" to the daemon (when one is up), each message twice.
            self.ali.push_url = f"{inbound}/v1/factories/{ALI}/push"
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
        for proxies in self.slot_proxies:
            for p in proxies.values():
                await p.close()
        if self.balancer is not None:
            await self.balancer.close()
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

    def config(self, slot: int = 0) -> dict[str, Any]:
        """The config of daemon slot `slot` (one config for all when `daemons` is 1)."""
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
        config = merge(base, self.extra)
        if self.slots > 1:
            urls = self.slot_urls[slot]
            shop = config["storefronts"]["shop"]
            own = {k: urls["storefront"] for k, v in shop.items() if v == self.storefront.url}
            config = merge(
                config,
                {
                    "daemon": {"instance_id": f"fault-suite-{slot}"},
                    "inbound": {"port": self.ports[slot]},
                    "storefronts": {"shop": own},
                    "factories": {name: {"url": urls[name]} for name in self.factories},
                },
            )
        return config

    def config_path_of(self, slot: int) -> Path:
        return self.config_path if slot == 0 else self.tmp_path / f"relay-{slot}.toml"

    def write_config(self, **extra: Any) -> None:
        if extra:
            self.extra = merge(self.extra, extra)
        for slot in range(self.slots):
            self.config_path_of(slot).write_text(to_toml(self.config(slot)), encoding="utf-8")

    def set_toxic(self, factory: str, toxic: Toxic | None) -> None:
        """The default toxic of `factory`'s fault proxies, every slot's."""
        for proxies in self.slot_proxies:
            proxies[factory].default = toxic

    async def start(
        self, *args: str, crash_at: str | None = None, command: str = "run", slot: int = 0
    ) -> Daemon:
        env = {k: v for k, v in os.environ.items() if k != "RELAY_CRASH_AT"}
        if crash_at:
            env["RELAY_CRASH_AT"] = crash_at
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(
                f"\n=== {time.strftime('%H:%M:%S')} relay {command} {' '.join(args)} crash_at={crash_at}"
                f" slot={slot}\n"
            )
        log = self.log_path.open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                RELAY,
                "-c",
                str(self.config_path_of(slot)),
                command,
                *args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        daemon = Daemon(proc, crash_at, slot=slot, port=self.ports[slot])
        self.daemons.append(daemon)
        return daemon

    async def wait_ready(self, daemon: Daemon, timeout: float = 20.0) -> bool:
        """Wait until the daemon's inbound server answers (it is fully started, signal handlers in place)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and daemon.alive():
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
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

    # --- which daemon did what (`daemons=N`) ---------------------------------------------------------

    def process_of(self, hit: Hit) -> Daemon | None:
        """The daemon process of `hit`'s slot that sent it: the slot's last one started before it, None
        when that one started less than `FRESH_S` before it (the request may be a late one of the
        process before, killed with it written: no relay process sends anything that soon after spawn)."""
        started = [d for d in self.daemons if d.slot == hit.slot and d.started_at <= hit.start]
        if not started or (len(started) > 1 and hit.start - started[-1].started_at < FRESH_S):
            return None
        return started[-1]

    def sender_of(self, hit: Hit) -> Daemon | None:
        """The daemon process that sent `hit`: the slot's last one started before it, or the one before
        that when the last started less than `FRESH_S` before it (`process_of`)."""
        started = [d for d in self.daemons if d.slot == hit.slot and d.started_at <= hit.start]
        if len(started) > 1 and hit.start - started[-1].started_at < FRESH_S:
            return started[-2]
        return started[-1] if started else None

    def while_alive(self, hits: list[Hit]) -> list[Hit]:
        """`hits`, each ending no later than its sender's end (the SIGKILL `kill` sent, else its exit as the
        watcher saw it). A fake goes on handling a request whose
        sender was killed (a listing's delay runs out after a standby took the database over), but no
        process acts on that answer any more: the request no longer overlaps anything."""
        cut = []
        for hit in hits:
            sender = self.sender_of(hit)
            died = None if sender is None else min(sender.killed_at or sender.ended_at or hit.end, hit.end)
            cut.append(hit if died is None else replace(hit, end=max(hit.start, died)))
        return cut

    def co_active(self, hits: list[Hit]) -> int:
        """Pairs of daemon processes that were both alive while each of them made one of `hits` (use hits
        on direct connections: a fault proxy's latency can deliver a dead process's request much later).

        One active daemon at a time (a lock, standbys) makes this 0: the lock passes from one process
        to another only when its holder dies, so the process that worked first was dead when the other
        worked. Process lives are bounded by their start and their exit as seen by a watcher task."""
        by_process: dict[int, tuple[Daemon, list[float]]] = {}
        for hit in hits:
            daemon = self.process_of(hit)
            if daemon is not None:
                by_process.setdefault(id(daemon), (daemon, []))[1].append(hit.start)
        pairs = 0
        for (a, times_a), (b, times_b) in itertools.combinations(by_process.values(), 2):
            if a.slot == b.slot:
                continue
            low = max(a.started_at, b.started_at)
            high = min(a.ended_at or float("inf"), b.ended_at or float("inf"))
            if any(low <= t <= high for t in times_a) and any(low <= t <= high for t in times_b):
                pairs += 1
        return pairs

    def storefront_hits(self, kind: str) -> list[Hit]:
        return [h for h in self.storefront.hits if h.kind == kind]

    def factory_hits(self) -> list[Hit]:
        return [h for f in self.factories.values() for h in f.hits]

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
