"""`make bench`: the machine's limits, then the relay end to end on loopback, on a growing database.

    python -m bench --orders 5000 --concurrency 64 --scale 10000,100000,1000000
    python -m bench --storefront woocommerce,shopify --orders 2000 --scale ''
    python -m bench --database postgresql://postgres@127.0.0.1:5432/test --daemons 1,2,3 --scale ''

Per storefront path (`--storefront`: demo, woocommerce, shopify; the vendor fake runs in its own process
and the relay uses the real adapter) and per setting (a fresh database; on the demo path also one with
10k / 100k / 1M finished orders already stored), a new relay process runs two phases against the same
storefront and factory processes:

* throughput: N orders appear on the storefront at once; orders/s = N / (last tracking push - appearance),
  with the relay's CPU seconds and COMMITs over the phase;
* latency: M orders appear at a moderate fixed rate; added latency per order = factory receipt - first
  appearance in a poll response (p50/p95/p99), so the poll interval itself is not counted.

With `--database postgresql://...` each path also runs one setting per `--daemons` count after the SQLite
ones: N relay processes (each its own `instance_id` and inbound port, every one active) on a fresh schema
of that database, the factories' callbacks spread over them round-robin; CPU and COMMITs are summed over
the N processes.

Every order is checked afterwards: held once per idempotency key by its factory and its parcel's
tracking on the storefront exactly once. Each run also reports the storefront requests per order (as
the fake counted them, by method and route) and `ideal_fraction`: orders/s over the ideal orders/s of
that path, the raw POST/s measured in the same run over the HTTP exchanges the path needs per order
(`bench.report.EXCHANGES`).
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
from bench.relay_proc import Fleet, stat_cpu_s
from bench.report import exchanges_per_order
from bench.servers import FACTORIES, SKU_MAP, ServerProcess, order_lines
from relay.config import DaemonSettings
from relay.domain.models import factory_order_key
from relay.testing import postgres

RESULTS = Path(__file__).parent / "results"
STOREFRONTS = ("demo", "woocommerce", "shopify")
STOREFRONT_NAME = {"demo": "shop", "woocommerce": "woo", "shopify": "shopify"}
"""The `[storefronts.NAME]` of each path (distinct, so factory order keys never collide across paths;
`shop` is the name `bench/seed.py` stores finished orders under)."""
MAX_PAGE_SIZE = {"demo": 250, "woocommerce": 100, "shopify": 50}


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
        "--storefront",
        action="append",
        help="storefront path(s) to run, repeatable or comma-separated: demo, woocommerce, shopify "
        "(env BENCH_STOREFRONT; default all three). Scale settings run on the demo path only.",
    )
    p.add_argument(
        "--real-orders",
        type=int,
        default=int(env("BENCH_REAL_ORDERS", "2000")),
        help="orders per throughput phase on the woocommerce and shopify paths, at most --orders "
        "(env BENCH_REAL_ORDERS; default 2000: they run at a fraction of the demo path's rate)",
    )
    p.add_argument(
        "--real-rate",
        type=float,
        default=float(env("BENCH_REAL_RATE", "50")),
        help="orders/s arriving in the latency phase of the woocommerce and shopify paths (default 50; "
        "their latency phase lasts as long as the demo one: latency-orders / rate seconds)",
    )
    p.add_argument(
        "--latency-orders",
        type=int,
        default=int(env("BENCH_LATENCY_ORDERS", "1000")),
        help="orders in the latency phase (default 1000)",
    )
    p.add_argument(
        "--database",
        default=env("BENCH_DATABASE", ""),
        help="a postgresql:// URL: also run every path on PostgreSQL, one setting per --daemons count, each "
        "on a fresh schema there (env BENCH_DATABASE; default none: SQLite only)",
    )
    p.add_argument(
        "--daemons",
        default=env("BENCH_DAEMONS", "1"),
        help="relay daemons per PostgreSQL setting, comma-separated (env BENCH_DAEMONS; default 1)",
    )
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--poll-interval", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument(
        "--log-level", default=env("BENCH_LOG_LEVEL", "info"), choices=["debug", "info", "warning"]
    )
    p.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        default=env("BENCH_EVENT_LOOP", "auto"),
        help="the relay's `[daemon] event_loop` (env BENCH_EVENT_LOOP; default auto, as in production). "
        "A relay tree from before that setting runs on asyncio, or on uvloop when this is `uvloop`.",
    )
    p.add_argument("--workdir", default=env("BENCH_DIR"), help="where the databases go (default: a temp dir)")
    p.add_argument(
        "--keep-workdir", action="store_true", help="keep the databases and relay logs (the path is printed)"
    )
    p.add_argument("--label", default=env("BENCH_LABEL", ""), help="name of the result files")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--skip-limits", action="store_true")
    p.add_argument(
        "--profile",
        metavar="PATH",
        help="record the relay process with py-spy during each throughput phase (collapsed stacks, "
        "PATH-<setting>.txt; needs `pip install py-spy`)",
    )
    args = p.parse_args(argv)
    chosen = args.storefront or [env("BENCH_STOREFRONT", ",".join(STOREFRONTS))]
    args.storefront = [k.strip() for text in chosen for k in text.split(",") if k.strip()]
    unknown = sorted(set(args.storefront) - set(STOREFRONTS))
    if unknown or not args.storefront:
        p.error(f"--storefront: {', '.join(unknown) or 'none given'}; choose from {', '.join(STOREFRONTS)}")
    try:
        args.daemons = [int(n) for n in str(args.daemons).split(",") if n.strip()]
    except ValueError:
        p.error(f"--daemons: {args.daemons!r} is not a comma-separated list of counts")
    if not args.daemons or min(args.daemons) < 1:
        p.error("--daemons: at least one count, each 1 or more")
    if args.database and not args.database.startswith("postgresql://"):
        p.error("--database: a postgresql:// URL (SQLite runs anyway, in the work directory)")
    return args


def process_cpu_s(*pids: int | None) -> float | None:
    """User + system CPU seconds of processes `pids` (Linux `/proc/<pid>/stat`), or None elsewhere."""
    total = 0.0
    for pid in pids:
        try:
            total += stat_cpu_s(f"/proc/{pid}/stat")
        except (OSError, IndexError):
            return None
    return total


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
    args: argparse.Namespace,
    database: str,
    storefront: dict[str, Any],
    factories: dict[str, Any],
    instance_id: str = "bench",
) -> dict[str, Any]:
    """The relay's config: the daemon's own settings, bench overrides named in bench/README.md."""
    adapter = storefront["adapter"]
    return {
        "daemon": {
            "database": database,
            "instance_id": instance_id,
            "shutdown_grace_s": 10,
            "batch_size": args.batch_size,
            "log_format": "json",
            "log_level": args.log_level,
            **({"event_loop": args.event_loop} if "event_loop" in DaemonSettings.model_fields else {}),
        },
        "inbound": {"host": "127.0.0.1", "port": 0},
        "egress": {"allow_plain_http": True, "allow_private_addresses": True},
        "storefronts": {
            STOREFRONT_NAME[adapter]: {
                "adapter": adapter,
                **storefront["options"],
                "page_size": min(args.page_size, MAX_PAGE_SIZE[adapter]),
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

    @property
    def kind(self) -> str:
        return str(self.storefront.info["adapter"])

    async def get(self, url: str) -> Any:
        async with self.session.get(url) as resp:
            return await resp.json()

    async def post(self, url: str, body: Any) -> Any:
        async with self.session.post(url, json=body) as resp:
            return await resp.json()

    async def phase(self, relay: Fleet, count: int, rate: float, timeout: float) -> dict[str, Any]:
        control = self.storefront.info["control"]
        status = await self.get(f"{control}/_bench/status")
        target = status["fulfilled"] + count
        start = status
        before = relay.mark()
        fakes_before = self.fakes_cpu_s()
        seeded = await self.post(f"{control}/_bench/seed", {"count": count, "rate": rate})
        deadline = time.monotonic() + timeout
        while status["fulfilled"] < target and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            status = await self.get(f"{control}/_bench/status")
        after = relay.mark()
        fakes_after = self.fakes_cpu_s()
        report = await self.get(
            f"{control}/_bench/report?first={seeded['first']}&since={start['requests']}"
            f"&since_operations={start['operations']}"
        )
        factory_report = await self.get(f"{self.factories.info['control']}/_bench/report")
        figures = self.figures(count, rate, seeded, before, after, report, factory_report)
        figures["fakes_cpu_ms_per_order"] = (
            (fakes_after - fakes_before) / max(figures["completed"], 1) * 1000
            if fakes_before is not None and fakes_after is not None
            else None
        )
        figures["poll_pages"] = status["pages"] - start["pages"]
        figures["storefront_requests"] = status["requests"] - start["requests"]
        figures["storefront_requests_per_order"] = figures["storefront_requests"] / max(
            figures["completed"], 1
        )
        figures["storefront_requests_by_route"] = report["requests"]
        if report.get("operations"):
            figures["storefront_operations"] = report["operations"]
        return figures

    def fakes_cpu_s(self) -> float | None:
        """CPU seconds the storefront and factory fakes' processes used so far (Linux `/proc`; else None):
        on one machine they share the cores with the relay."""
        return process_cpu_s(self.storefront.process.pid, self.factories.process.pid)

    def figures(
        self,
        count: int,
        rate: float,
        seeded: dict[str, Any],
        before: dict[str, Any],
        after: dict[str, Any],
        report: dict[str, Any],
        factory_report: dict[str, Any],
    ) -> dict[str, Any]:
        received: dict[str, float] = {}
        deliveries: dict[str, int] = {}
        for f in factory_report.values():
            received.update(f["received_at"])
            deliveries.update(f["deliveries"])
        storefront = STOREFRONT_NAME[self.kind]
        added, end_to_end, problems = [], [], []
        last_push = 0.0
        done = 0
        for ext_id, (served, fulfilled, n_fulfilments, n_tracking) in report["orders"].items():
            keys = [factory_order_key(storefront, ext_id, f) for f in FACTORIES]
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
            "cpu_ms_per_order": cpu / max(done, 1) * 1000,
            "cpu_ms_per_order_by_thread": {
                name: (spent - before["cpu_s_by_thread"].get(name, 0.0)) / max(done, 1) * 1000
                for name, spent in after["cpu_s_by_thread"].items()
            },
            "commits": after["commits"] - before["commits"],
            "commits_per_order": (after["commits"] - before["commits"]) / max(done, 1),
            "statements_per_order": (
                (after["statements"] - before["statements"]) / max(done, 1)
                if after["statements"] is not None
                else None  # PostgreSQL: not counted
            ),
            "reads_per_order": (
                (after["reads"] - before["reads"]) / max(done, 1) if after.get("reads") is not None else None
            ),
            "rss_mib_after": after["rss_kib"] / 1024,
            "redeliveries": sum(deliveries.get(k, 1) - 1 for k in deliveries),
            "exactly_once": not problems and done == count,
            "problems": problems[:10],
        }

    async def setting(
        self, name: str, stored: int, database: str, log_path: Path, daemons: int = 1
    ) -> dict[str, Any]:
        """One relay fleet (`daemons` processes on `database`) through the throughput and latency phases."""
        a = self.args
        configs = [
            relay_config(
                a,
                database,
                self.storefront.info,
                self.factories.info["factories"],
                instance_id="bench" if daemons == 1 else f"bench-{i}",
            )
            for i in range(daemons)
        ]
        relay = Fleet(configs, log_path=str(log_path), log_level=a.log_level, uvloop=a.event_loop == "uvloop")
        rate = a.rate if self.kind == "demo" else a.real_rate
        orders = a.orders if self.kind == "demo" else min(a.orders, a.real_orders)
        latency_orders = round(a.latency_orders * rate / a.rate) if a.rate else a.latency_orders
        try:
            await self.post(
                f"{self.factories.info['control']}/_bench/callbacks",
                {
                    n: [f"{url}/v1/factories/{n}/events" for url in relay.ready["inbound_urls"]]
                    for n in FACTORIES
                },
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
                        f"{a.profile}-{self.kind}-{name}.txt",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
            throughput = await self.phase(relay, orders, 0, timeout=max(120, orders / 10))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            latency = (
                await self.phase(relay, latency_orders, rate, timeout=latency_orders / rate + 60)
                if latency_orders
                else None
            )
        finally:
            final = relay.stop()
        return {
            "setting": name,
            "database": database.split(":", 1)[0],
            "daemons": daemons,
            "stored_orders": stored,
            "throughput": throughput,
            "latency": latency,
            "relay_startup_s": relay.ready["startup_s"],
            "event_loop": relay.ready.get("loop"),
            "peak_rss_mib": final["hwm_kib"] / 1024,
            "rss_mib_end": final["rss_kib"] / 1024,
        }

    async def path(self, kind: str, work: Path, raw_post_s: float | None) -> dict[str, Any]:
        """One storefront path: its fake in its own process, a fresh database (and, on the demo path, the
        scale settings), each setting a new relay process; then, with `--database`, one setting per
        `--daemons` count on a fresh PostgreSQL schema."""
        a = self.args
        page_size = min(a.page_size, MAX_PAGE_SIZE[kind])
        self.storefront = ServerProcess("storefront", adapter=kind, page_size=page_size, id_start=1001)
        exchanges = exchanges_per_order(kind, page_size)
        ideal = raw_post_s / exchanges if raw_post_s else None
        run: dict[str, Any] = {
            "storefront": kind,
            "page_size": page_size,
            "exchanges_per_order": exchanges,
            "ideal_orders_per_s": ideal,
            "settings": [],
        }
        try:
            db = work / f"relay-{kind}.db"
            scales = _scales(a.scale) if kind == "demo" else []
            for name, stored in [("fresh", 0)] + [(_short(n), n) for n in scales]:
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
                row = await self.setting(name, stored, f"sqlite:///{db}", work / f"relay-{kind}.log")
                row["seeding"] = seeding
                self.add(run, row, ideal)
            for daemons in a.daemons if a.database else []:
                schema, url = postgres.fresh_schema(a.database)
                try:
                    log = work / f"relay-{kind}-pg{daemons}.log"
                    row = await self.setting(f"pg x{daemons}", 0, url, log, daemons=daemons)
                finally:
                    postgres.drop_schema(a.database, schema)
                row["seeding"] = None
                self.add(run, row, ideal)
        finally:
            self.storefront.stop()
        run["ideal_fraction"] = run["settings"][0]["throughput"]["ideal_fraction"]
        return run

    def add(self, run: dict[str, Any], row: dict[str, Any], ideal: float | None) -> None:
        t = row["throughput"]
        t["ideal_fraction"] = t["orders_per_s"] / ideal if ideal else None
        run["settings"].append(row)
        print(
            f"  {run['storefront']} {row['setting']}: {t['orders_per_s']:.0f} orders/s, "
            f"{t['storefront_requests_per_order']:.2f} storefront requests/order",
            file=sys.stderr,
        )

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
            "runs": [],
        }
        started = time.monotonic()
        try:
            async with aiohttp.ClientSession() as self.session:
                if not a.skip_limits:
                    result["limits"] = await self.limits(work)
                raw = result["limits"]["post_c"]["per_s"] if "limits" in result else None
                self.factories = ServerProcess("factories")
                try:
                    for kind in a.storefront:
                        result["runs"].append(await self.path(kind, work, raw))
                finally:
                    self.factories.stop()
        finally:
            result["total_s"] = time.monotonic() - started
            if a.keep_workdir:
                print(f"  databases and relay logs kept in {work}", file=sys.stderr)
            else:
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
        for run in result["runs"]
        for s in run["settings"]
    )
    if not ok:
        print("FAILED: an exactly-once check did not hold (see problems in the JSON)")
    return 0 if ok else 1
