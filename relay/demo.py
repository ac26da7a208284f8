"""`relay demo`: the whole loop on loopback, with an exactly-once check at the end.

Starts a fake storefront (the built-in demo API, or the Shopify / WooCommerce emulators) and two fake
factories (`bolt` may use another factory adapter's fake, e.g. `--factory alibaba1688`; fakes that are
polled for parcels ship whatever they hold every few tenths of a second), seeds N orders (some split across both factories, some shipped in two parcels), runs the
daemon on a fresh SQLite database until every order is completed, then checks what the fakes recorded:
each expected factory order held exactly once by its idempotency key, and each parcel's tracking on the
storefront exactly once. Exit status 0 only if all of that holds.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.app import App
from relay.config import parse_settings
from relay.domain.models import factory_order_key
from relay.registry import FACTORIES, FAKES, STOREFRONTS, Registry
from relay.store import Stats
from relay.testing.vendor import FakeFactoryServer, FakeShipmentListing, FakeStorefront, SeedLine

SKU_MAP = {
    "TEE-RED-M": "acme",
    "TEE-BLU-L": "acme",
    "HOODIE-GRY-XL": "acme",
    "MUG-WHT": "bolt",
    "CAP-BLK": "bolt",
}


DEMO_FAKE_OPTIONS: dict[str, dict[str, Any]] = {
    "demo": {"page_size": 100},
    "shopify": {"page_size": 25, "bucket_size": 20000.0, "restore_rate": 1000.0},  # a Plus-plan budget
    "woocommerce": {"page_size": 100},
}
"""Constructor arguments for the fakes `relay demo` knows how to tune; any other fake gets none."""


def make_fake_storefront(adapter: str, registry: Registry | None = None) -> FakeStorefront:
    """The fake server for a storefront adapter name (from the `relay.fakes` entry points)."""
    registry = registry or Registry()
    if adapter not in registry.names(STOREFRONTS) or adapter not in registry.names(FAKES):
        choices = ", ".join(n for n in registry.names(STOREFRONTS) if n in registry.names(FAKES))
        raise SystemExit(f"relay demo: no fake storefront for {adapter!r}; choose {choices}")
    fake: FakeStorefront = registry.fake(adapter)(**DEMO_FAKE_OPTIONS.get(adapter, {}))
    return fake


def make_fake_factory(
    name: str, registry: Registry, adapter: str = "webhook", **options: Any
) -> FakeFactoryServer:
    """A fake factory for a factory adapter (`webhook` by default; from the `relay.fakes` entry points)."""
    if adapter not in registry.names(FACTORIES) or adapter not in registry.names(FAKES):
        choices = ", ".join(n for n in registry.names(FACTORIES) if n in registry.names(FAKES))
        raise SystemExit(f"relay demo: no fake factory for {adapter!r}; choose {choices}")
    fake: FakeFactoryServer = registry.fake(adapter)(name, **options)
    return fake


async def _ship_polled(factories: dict[str, Any]) -> None:
    """Fakes that are polled for parcels (`FakeShipmentListing`) do not ship by themselves: ship for them."""
    while True:
        for f in factories.values():
            if isinstance(f, FakeShipmentListing):
                await f.ship_all()
        await asyncio.sleep(0.3)


def seed_orders(fake: FakeStorefront, count: int, rng: random.Random) -> dict[str, list[str]]:
    """Create `count` paid orders; return each order's storefront id -> SKUs."""
    skus = sorted(SKU_MAP)
    seeded = {}
    for _ in range(count):
        lines = [
            SeedLine(
                sku,
                quantity=rng.randint(1, 3),
                properties={"engraving": "For Ada"} if sku == "MUG-WHT" else {},
            )
            for sku in rng.sample(skus, rng.randint(1, 3))
        ]
        seeded[fake.add_order(lines)] = [line.sku for line in lines if line.sku]
    return seeded


def demo_settings(fake: FakeStorefront, factories: dict[str, Any], database: str, registry: Registry) -> Any:
    return parse_settings(
        {
            "daemon": {"database": database, "instance_id": "demo", "shutdown_grace_s": 5, "batch_size": 200},
            "inbound": {"host": "127.0.0.1", "port": 0},
            "admin": {"listen": "127.0.0.1:0", "status_page": True},  # /metrics and /status while it runs
            "egress": {"allow_plain_http": True, "allow_private_addresses": True},
            "storefronts": {
                "shop": {
                    "adapter": fake.adapter,
                    "poll_interval_s": 0.5,
                    "cursor_overlap_s": 5,
                    **fake.adapter_options(),
                }
            },
            "factories": {name: {**f.factory_config(), "concurrency": 16} for name, f in factories.items()},
            "routing": {"skus": SKU_MAP},
        },
        registry,
    )


@dataclass(frozen=True, slots=True)
class FactoryTally:
    """What one fake factory holds at the end of a demo."""

    name: str
    held: int
    expected: int
    deliveries: int


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What `relay demo` found at the end: orders per state, what each fake recorded, the problems."""

    orders: int
    states: dict[str, int]
    attention: dict[str, int]
    factories: tuple[FactoryTally, ...]
    fulfilments: int
    parcels_expected: int
    elapsed_s: float
    problems: tuple[str, ...]
    storefront_requests: int = 0
    """Requests the fake storefront received (listing pages and tracking pushes alike)."""

    HEADERS = ("", "got", "expected")

    def rows(self) -> list[tuple[str, str, str]]:
        """The summary table: one row per check, with what was found and what was expected."""
        rows = [("orders completed", str(self.states.get("completed", 0)), str(self.orders))]
        rows += [(f"orders {s}", str(n), "0") for s, n in sorted(self.states.items()) if s != "completed"]
        rows += [(f"needing attention: {r}", str(n), "0") for r, n in sorted(self.attention.items())]
        for f in self.factories:
            rows.append((f"factory {f.name}: orders held", str(f.held), str(f.expected)))
            rows.append((f"factory {f.name}: deliveries", str(f.deliveries), "-"))
        rows.append(("storefront fulfilments", str(self.fulfilments), str(self.parcels_expected)))
        per_order = self.storefront_requests / self.orders if self.orders else 0.0
        rows.append(("storefront requests", f"{self.storefront_requests} ({per_order:.2f}/order)", "-"))
        return rows

    def verdict(self) -> list[str]:
        """The closing lines: the time it took, then OK, or FAILED and each problem."""
        rate = self.orders / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [f"elapsed {self.elapsed_s:.1f} s ({rate:.1f} orders/s end to end)"]
        if self.problems:
            return [*lines, "FAILED:", *(f"  - {p}" for p in self.problems)]
        return [
            *lines,
            f"OK: every order reached its factory exactly once and got tracking back ({self.orders} orders)",
        ]

    def text(self) -> str:
        """The summary as plain text: the table's columns aligned, then the verdict."""
        table = [self.HEADERS, *self.rows()]
        widths = [max(len(row[i]) for row in table) for i in range(len(self.HEADERS))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table]
        return "\n".join(["", "summary", *lines, *self.verdict()])


Progress = Callable[[Mapping[str, int]], None]
"""Called with the orders per state whenever they change while the demo runs."""


async def run_demo(
    count: int,
    *,
    storefront: str = "demo",
    factory: str = "webhook",
    give_up_after_s: float = 120.0,
    database: str | None = None,
    registry: Registry | None = None,
    out: Any = None,
    progress: Progress | None = None,
    summary: Callable[[DemoSummary], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the demo; 0 if every order reached its factory exactly once and got its tracking back.

    Lines go to `out` (stdout by default): the progress as one line per change unless `progress` is
    given, the summary as `DemoSummary.text()` unless `summary` is given. Once `stop` is set (`relay demo`
    sets it on Ctrl-C / SIGTERM) it shuts the daemon and the fakes down as at the end, removes its
    temporary directory and raises `DemoStopped`.
    """
    out = out or sys.stdout
    registry = registry or Registry()
    fake = make_fake_storefront(storefront, registry)
    factories: dict[str, Any] = {  # the webhook adapter's FakeFactory: split_parcels, orders, deliveries
        "acme": make_fake_factory("acme", registry, split_parcels=True),
        "bolt": make_fake_factory("bolt", registry, factory),
    }
    tmp = tempfile.TemporaryDirectory(prefix="relay-demo-")  # after the checks above: always cleaned up
    db_path = database or str(Path(tmp.name) / "relay.db")
    started = time.monotonic()
    try:
        await fake.start()
        for f in factories.values():
            await f.start()
        seeded = seed_orders(fake, count, random.Random(7))
        print(
            f"relay demo: {count} orders on a fake {storefront} storefront, factories acme and bolt ({factory}), "
            f"database {db_path}",
            file=out,
        )
        url = db_path if "://" in db_path else f"sqlite:///{db_path}"  # a postgresql:// URL is used as is
        settings = demo_settings(fake, factories, url, registry)
        async with App(settings, registry=registry, install_signal_handlers=False) as app:
            for name, f in factories.items():
                f.callback_url = app.callback_url(name)
            print(
                f"metrics: {app.admin_url}/metrics  status page: {app.admin_url}/status", file=out, flush=True
            )
            runner = asyncio.create_task(app.run())
            shipper = asyncio.create_task(_ship_polled(factories))
            try:
                stats = await _wait_until_done(
                    app, count, started + give_up_after_s, progress or _lines(out), stop or asyncio.Event()
                )
            finally:
                shipper.cancel()
                app.stop()
                await asyncio.gather(shipper, runner, return_exceptions=True)
        result = _summarize(stats, seeded, fake, factories, elapsed=time.monotonic() - started)
        if summary:
            summary(result)
        else:
            print(result.text(), file=out)
        return 1 if result.problems else 0
    finally:
        for f in factories.values():
            await f.close()
        await fake.close()
        tmp.cleanup()


def _lines(out: Any) -> Progress:
    """Progress as plain lines: the orders per state, one line per change."""

    def show(orders: Mapping[str, int]) -> None:
        print("  " + "  ".join(f"{state}={n}" for state, n in sorted(orders.items())), file=out, flush=True)

    return show


class DemoStopped(Exception):
    """The demo was asked to stop before it finished; it shut down cleanly."""


async def _wait_until_done(
    app: App, count: int, deadline: float, progress: Progress, stop: asyncio.Event
) -> Stats:
    last: dict[str, int] = {}  # nothing to show before the first order is in
    while True:
        if stop.is_set():
            raise DemoStopped
        stats = await app.store.stats()
        orders = {state: n for state, n in stats.orders.items() if n}
        if orders != last:
            progress(orders)
            last = orders
        if orders.get("completed", 0) >= count or time.monotonic() > deadline:
            return stats
        if sum(n for s, n in orders.items() if s in ("held", "failed", "cancelled")):
            return stats
        await asyncio.sleep(0.25)


def _summarize(
    stats: Stats,
    seeded: dict[str, list[str]],
    fake: FakeStorefront,
    factories: dict[str, Any],
    *,
    elapsed: float,
) -> DemoSummary:
    problems = []
    expected: dict[str, set[str]] = {name: set() for name in factories}
    parcels_expected = 0
    for order_id, skus in seeded.items():
        for factory in sorted({SKU_MAP[s] for s in skus}):
            expected[factory].add(factory_order_key("shop", order_id, factory))
            n_lines = sum(1 for s in skus if SKU_MAP[s] == factory)
            parcels_expected += 2 if factories[factory].split_parcels and n_lines > 1 else 1
    for name, f in factories.items():
        keys = f.held_keys()
        held = set(keys)
        if len(keys) != len(held):
            problems.append(f"factory {name}: {len(keys) - len(held)} duplicate orders under one key")
        if held != expected[name]:
            problems.append(
                f"factory {name}: missing {len(expected[name] - held)}, unexpected {len(held - expected[name])}"
            )
    fulfilments: Counter[int] = Counter()
    for order_id in seeded:
        recorded = fake.fulfilments(order_id)
        numbers = [r.tracking_number for r in recorded]
        if len(numbers) != len(set(numbers)):
            problems.append(f"order {order_id}: duplicate fulfilment on the storefront")
        fulfilments[len(recorded)] += 1
    total_fulfilments = sum(k * v for k, v in fulfilments.items())
    if total_fulfilments != parcels_expected:
        problems.append(f"storefront holds {total_fulfilments} fulfilments, expected {parcels_expected}")
    return DemoSummary(
        orders=len(seeded),
        states={state: n for state, n in sorted(stats.orders.items()) if n},
        attention=dict(stats.attention),
        factories=tuple(
            FactoryTally(name, len(f.held_keys()), len(expected[name]), sum(f.deliveries.values()))
            for name, f in factories.items()
        ),
        fulfilments=total_fulfilments,
        parcels_expected=parcels_expected,
        elapsed_s=elapsed,
        problems=tuple(problems),
        storefront_requests=len(fake.requests),
    )
