"""`make bench`: the machine's limits, then the relay end to end on loopback, on a growing database.

    python -m bench --orders 5000 --concurrency 64 --scale 10000,100000,1000000

Per setting (a fresh database, then one with 10k / 100k / 1M finished orders already stored), a new relay
process runs two phases against the same storefront and factory processes:

* throughput: N orders appear on the storefront at once; orders/s = N / (last tracking push - appearance),
  with the relay's CPU seconds and COMMITs over the phase;
* latency: M orders appear at a moderate fixed rate; added latency per order = factory receipt - first
  appearance in a poll response (p50/p95/p99), so the poll interval itself is not counted.

Every order is checked afterwards: held once per idempotency key by its factory and its parcel's
tracking on the storefront exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import limits, seed
from bench.relay_proc import RelayProcess
from bench.servers import FACTORIES, SKU_MAP, ServerProcess, order_lines
from relay.domain.models import factory_order_key

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--orders",
        type=int,
        default=int(env("BENCH_ORDERS", "5000")),
        help="orders per throughput phase (env BENCH_ORDERS; default 5000)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=int(env("BENCH_CONCURRENCY", "64")),
        help="deliveries in flight per factory, and requests in flight for the raw limit "
        "(env BENCH_CONCURRENCY; default 64)",
    )
    p.add_argument(
        "--scale",
        default=env("BENCH_SCALE", "10000,100000,1000000"),
        help="finished orders already stored, comma-separated; '' for none (env BENCH_SCALE)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=float(env("BENCH_RATE", "200")),
        help="orders/s arriving in the latency phase (env BENCH_RATE; default 200)",
    )
    p.add_argument(
        "--latency-orders",
        type=int,
        default=int(env("BENCH_LATENCY_ORDERS", "1000")),
        help="orders in the latency phase (default 1000)",
    )
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--poll-interval", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument(
        "--log-level", default=env("BENCH_LOG_LEVEL", "info"), choices=["debug", "info", "warning"]
    )
    p.add_argument(
        "--uvloop",
        action="store_true",
        default=env("BENCH_UVLOOP") == "1",
        help="run the relay process on uvloop (env BENCH_UVLOOP=1)",
    )
    p.add_argument("--workdir", default=env("BENCH_DIR"), help="where the databases go (default: a temp dir)")
    p.add_argument("--label", default=env("BENCH_LABEL", ""), help="name of the result files")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--skip-limits", action="store_true")
    p.add_argument(
        "--profile",
        metavar="PATH",
        help="record the relay process with py-spy during each throughput phase (collapsed stacks, "
        "PATH-<setting>.txt; needs `pip install py-spy`)",
    )
    return p.parse_args(argv)


def order_body_size() -> int:
    """Bytes of a typical bench factory order as the webhook adapter sends it."""
    import random

    from adapters.demo.adapter import to_order
    from adapters.demo.fake import FakeDemoStorefront
    from adapters.webhook.adapter import order_created_body
    from relay.domain.routing import plan_route
    from relay.store import RouteJob

    fake = FakeDemoStorefront()
    oid = fake.add_order(order_lines(0, random.Random(1)))
    order = to_order(json.loads(json.dumps(fake._orders[oid].to_json())))
    plan = plan_route(RouteJob(1, "shop", order), SKU_MAP, now=time.time())
    return len(order_created_body(plan.factory_orders[0]))


def relay_config(
    args: argparse.Namespace, db: Path, storefront: dict[str, Any], factories: dict[str, Any]
) -> dict[str, Any]:
    return {
        "daemon": {
            "database": f"sqlite:///{db}",
            "instance_id": "bench",
            "shutdown_grace_s": 10,
            "batch_size": args.batch_size,
            "log_format": "json",
            "log_level": args.log_level,
        },
        "inbound": {"host": "127.0.0.1", "port": 0},
        "egress": {"allow_plain_http": True, "allow_private_addresses": True},
        "storefronts": {
            "shop": {
                "adapter": "demo",
                "url": storefront["url"],
                "token": storefront["token"],
                "page_size": args.page_size,
                "poll_interval_s": args.poll_interval,
                "cursor_overlap_s": 0,
            }
        },
        "factories": {
            name: {
                "adapter": "webhook",
                "url": f["url"],
                "signing_secret": f["signing_secret"],
                "callback_secrets": [f["callback_secret"]],
                "concurrency": args.concurrency,
            }
            for name, f in factories.items()
        },
        "routing": {"skus": SKU_MAP},
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.session: aiohttp.ClientSession
        self.storefront: ServerProcess
        self.factories: ServerProcess

    async def get(self, url: str) -> Any:
        async with self.session.get(url) as resp:
            return await resp.json()

    async def post(self, url: str, body: Any) -> Any:
        async with self.session.post(url, json=body) as resp:
            return await resp.json()

    async def phase(self, relay: RelayProcess, count: int, rate: float, timeout: float) -> dict[str, Any]:
        sf = self.storefront.info["url"]
        status = await self.get(f"{sf}/_bench/status")
        target = status["fulfilled"] + count
        before = relay.mark()
        seeded = await self.post(f"{sf}/_bench/seed", {"count": count, "rate": rate})
        deadline = time.monotonic() + timeout
        while status["fulfilled"] < target and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            status = await self.get(f"{sf}/_bench/status")
        after = relay.mark()
        report = await self.get(f"{sf}/_bench/report?first={seeded['first']}")
        factory_report = await self.get(f"{self.factories.info['control']}/_bench/report")
        return self.figures(count, rate, seeded, before, after, report, factory_report, status["pages"])

    def figures(
        self,
        count: int,
        rate: float,
        seeded: dict[str, Any],
        before: dict[str, Any],
        after: dict[str, Any],
        report: dict[str, Any],
        factory_report: dict[str, Any],
        pages: int,
    ) -> dict[str, Any]:
        received: dict[str, float] = {}
        deliveries: dict[str, int] = {}
        for f in factory_report.values():
            received.update(f["received_at"])
            deliveries.update(f["deliveries"])
        added, end_to_end, problems = [], [], []
        last_push = 0.0
        done = 0
        for ext_id, (served, fulfilled, n_fulfilments, n_tracking) in report["orders"].items():
            keys = [factory_order_key("shop", ext_id, f) for f in FACTORIES]
            got = [received[k] for k in keys if k in received]
            if len(got) != 1:
                problems.append(f"order {ext_id}: held by {len(got)} factories")
            if n_fulfilments != 1 or n_tracking != 1:
                problems.append(f"order {ext_id}: {n_fulfilments} fulfilments, {n_tracking} tracking numbers")
            if fulfilled is not None:
                done += 1
                last_push = max(last_push, fulfilled)
            if served is not None and got:
                added.append((got[0] - served) * 1000)
                if fulfilled is not None:
                    end_to_end.append((fulfilled - served) * 1000)
        elapsed = (last_push - seeded["at"]) if last_push else float("nan")
        cpu = after["cpu_s"] - before["cpu_s"]
        return {
            "orders": count,
            "completed": done,
            "arrival_rate": rate or None,
            "elapsed_s": elapsed,
            "orders_per_s": done / elapsed if last_push else 0.0,
            "added_latency_ms": {q: percentile(added, q) for q in (50, 95, 99)},
            "end_to_end_latency_ms": {q: percentile(end_to_end, q) for q in (50, 95, 99)},
            "cpu_s": cpu,
            "cpu_s_per_1000": cpu / max(done, 1) * 1000,
            "commits": after["commits"] - before["commits"],
            "commits_per_order": (after["commits"] - before["commits"]) / max(done, 1),
            "statements_per_order": (after["statements"] - before["statements"]) / max(done, 1),
            "rss_mib_after": after["rss_kib"] / 1024,
            "poll_pages_total": pages,
            "redeliveries": sum(deliveries.get(k, 1) - 1 for k in deliveries),
            "exactly_once": not problems and done == count,
            "problems": problems[:10],
        }

    async def setting(self, name: str, stored: int, db: Path, log_path: Path) -> dict[str, Any]:
        a = self.args
        config = relay_config(a, db, self.storefront.info, self.factories.info["factories"])
        relay = RelayProcess(config, log_path=str(log_path), log_level=a.log_level, uvloop=a.uvloop)
        try:
            await self.post(
                f"{self.factories.info['control']}/_bench/callbacks",
                {n: f"{relay.ready['inbound_url']}/v1/factories/{n}/events" for n in FACTORIES},
            )
            await asyncio.sleep(0.3)
            spy = None
            if a.profile:
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "-p",
                        str(relay.pid),
                        "-r",
                        "250",
                        "--format",
                        "raw",
                        "-o",
                        f"{a.profile}-{name}.txt",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
            throughput = await self.phase(relay, a.orders, 0, timeout=max(120, a.orders / 20))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            latency = (
                await self.phase(relay, a.latency_orders, a.rate, timeout=a.latency_orders / a.rate + 60)
                if a.latency_orders
                else None
            )
        finally:
            final = relay.stop()
        return {
            "setting": name,
            "stored_orders": stored,
            "throughput": throughput,
            "latency": latency,
            "relay_startup_s": relay.ready["startup_s"],
            "peak_rss_mib": final["hwm_kib"] / 1024,
            "rss_mib_end": final["rss_kib"] / 1024,
        }

    async def run(self) -> dict[str, Any]:
        a = self.args
        work = Path(tempfile.mkdtemp(prefix="relay-bench-", dir=a.workdir))
        result: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "label": a.label,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "args": {k: v for k, v in vars(a).items()},
            "workdir": str(work),
        }
        started = time.monotonic()
        try:
            async with aiohttp.ClientSession() as self.session:
                if not a.skip_limits:
                    result["limits"] = await self.limits(work)
                self.storefront = ServerProcess("storefront", page_size=a.page_size, id_start=1001)
                self.factories = ServerProcess("factories")
                try:
                    db = work / "relay.db"
                    settings = [("fresh", 0)] + [(_short(n), n) for n in _scales(a.scale)]
                    result["settings"] = []
                    for name, stored in settings:
                        seeding = None
                        if stored:
                            seeding = await asyncio.to_thread(seed.seed, db, stored)
                            print(
                                f"  seeded to {stored} orders in {seeding['seconds']:.1f} s "
                                f"({seeding['db_mib']:.0f} MiB)",
                                file=sys.stderr,
                            )
                        else:
                            await seed.migrate(db)
                        row = await self.setting(name, stored, db, work / "relay.log")
                        row["seeding"] = seeding
                        result["settings"].append(row)
                        print(f"  {name}: {row['throughput']['orders_per_s']:.0f} orders/s", file=sys.stderr)
                finally:
                    self.storefront.stop()
                    self.factories.stop()
        finally:
            result["total_s"] = time.monotonic() - started
            shutil.rmtree(work, ignore_errors=True)
        return result

    async def limits(self, work: Path) -> dict[str, Any]:
        a = self.args
        size = order_body_size()
        body = json.dumps({"pad": "x" * max(0, size - 11)}).encode()
        echo = ServerProcess("echo")
        try:
            seq = await limits.raw_post(echo.info["url"], body, 1, seconds=2.0)
            par = await limits.raw_post(echo.info["url"], body, a.concurrency, seconds=3.0)
        finally:
            echo.stop()
        sq = await asyncio.to_thread(limits.sqlite_commits, work / "limit.db")
        aq = await limits.aiosqlite_commits(work / "limit.db")
        return {"body_bytes": len(body), "post_1": seq, "post_c": par, "sqlite3": sq, "aiosqlite": aq}


def _scales(text: str) -> list[int]:
    return [int(float(x)) for x in text.replace("_", "").split(",") if x.strip()]


def _short(n: int) -> str:
    return (
        f"{n // 1_000_000}M"
        if n >= 1_000_000 and n % 1_000_000 == 0
        else (f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n))
    )


def main(argv: list[str] | None = None) -> int:
    from bench.report import chart, table

    args = parse_args(argv)
    result = asyncio.run(Bench(args).run())
    RESULTS.mkdir(exist_ok=True)
    stem = args.label or time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(table(result))
    print(f"results: {RESULTS / (stem + '.json')}")
    if not args.no_chart:
        png = chart(result, RESULTS / f"{stem}.png")
        print(f"chart:   {png}" if png else "chart:   skipped (pip install -e '.[bench]' for matplotlib)")
    ok = all(
        s["throughput"]["exactly_once"] and (s["latency"] is None or s["latency"]["exactly_once"])
        for s in result["settings"]
    )
    if not ok:
        print("FAILED: an exactly-once check did not hold (see problems in the JSON)")
    return 0 if ok else 1
