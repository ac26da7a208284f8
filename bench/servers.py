"""The servers the benchmark talks to, each run in its own process so it does not share the relay's CPU.

* `storefront`: the demo storefront fake, with an O(log n) listing (orders are kept sorted) and two
  records: the wall time each order first appears in a poll response, and the wall time of its first
  fulfilment. Control routes under `/_bench/` seed orders (all at once or at a fixed rate) and report.
* `factories`: one fake factory per name (same process, one port each) that records the wall time of the
  first receipt per idempotency key, and ships every order at once through relay's callback endpoint.
* `echo`: a trivial aiohttp POST server for the raw round-trip limit.

A process is started with `start(kind, **options)`; it answers its URLs over a pipe and runs until
`stop()`. Same machine, so the wall clocks of all processes agree.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import itertools
import json
import multiprocessing as mp
import random
import time
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from adapters.demo.fake import FakeDemoStorefront
from adapters.webhook.fake import FakeFactory
from relay.testing.vendor import SeedLine

SKU_MAP = {"TEE-RED-M": "acme", "TEE-BLU-L": "acme", "MUG-WHT": "bolt", "CAP-BLK": "bolt"}
FACTORIES = ("acme", "bolt")
_SKUS_OF = {f: sorted(s for s, g in SKU_MAP.items() if g == f) for f in FACTORIES}


def order_lines(n: int, rng: random.Random) -> list[SeedLine]:
    """Order n goes to one factory (alternating), with one or two lines: one factory order, one parcel."""
    skus = _SKUS_OF[FACTORIES[n % len(FACTORIES)]]
    picked = rng.sample(skus, rng.randint(1, len(skus)))
    return [SeedLine(sku, quantity=rng.randint(1, 3)) for sku in picked]


class BenchStorefront(FakeDemoStorefront):
    """The demo storefront with a sorted index and first-served / fulfilled wall times per order."""

    def __init__(self, *, page_size: int, id_start: int) -> None:
        super().__init__(page_size=page_size)
        self._ids = itertools.count(id_start)
        self._keys: list[tuple[float, int]] = []  # (updated_at, id), ascending: orders are only appended
        self._rows: list[Any] = []
        self.first_served: dict[str, float] = {}
        self.fulfilled_at: dict[str, float] = {}
        self.fulfilments = 0
        self.pages = 0
        self._rng = random.Random(7)
        self._feeder: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/orders", self._list)
        app.router.add_post("/api/orders/{id}/fulfillments", self._fulfil)
        app.router.add_post("/_bench/seed", self._seed)
        app.router.add_get("/_bench/status", self._status)
        app.router.add_get("/_bench/report", self._report)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def add(self) -> None:
        last = self._keys[-1][0] if self._keys else 0.0
        order_id = self.add_order(
            order_lines(len(self._rows), self._rng), updated_at=max(time.time(), last + 1e-6)
        )
        row = self._orders[order_id]
        self._keys.append((row.updated_at, int(row.id)))
        self._rows.append(row)

    async def _list(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "invalid token"}, status=401)
        self.pages += 1
        limit = min(int(request.query.get("limit", self.page_size)), 250)
        start = 0
        if since := request.query.get("updated_since"):
            start = bisect.bisect_left(self._keys, (_ts(since), -1))
        if "cursor" in request.query:
            after = json.loads(base64.urlsafe_b64decode(request.query["cursor"]))
            start = max(start, bisect.bisect_right(self._keys, (after[0], after[1])))
        page = self._rows[start : start + limit]
        next_cursor = None
        if start + limit < len(self._rows):
            last = page[-1]
            next_cursor = base64.urlsafe_b64encode(
                json.dumps([last.updated_at, int(last.id)]).encode()
            ).decode()
        body = json.dumps({"orders": [o.to_json() for o in page], "next_cursor": next_cursor})
        now = time.time()
        for o in page:
            self.first_served.setdefault(o.id, now)
        return web.Response(text=body, content_type="application/json")

    async def _fulfil(self, request: web.Request) -> web.Response:
        resp = await super()._fulfil(request)
        if resp.status == 201:
            self.fulfilments += 1
            self.fulfilled_at.setdefault(request.match_info["id"], time.time())
        return resp

    async def _seed(self, request: web.Request) -> web.Response:
        spec = await request.json()
        count, rate = int(spec["count"]), float(spec.get("rate") or 0)
        first, at = len(self._rows), time.time()
        if rate <= 0:
            for _ in range(count):
                self.add()
        else:
            self._feeder = asyncio.create_task(self._feed(count, rate))
        return web.json_response({"first": first, "count": count, "at": at})

    async def _feed(self, count: int, rate: float) -> None:
        started, added = time.monotonic(), 0
        while added < count:
            due = min(count, int((time.monotonic() - started) * rate) + 1)
            while added < due:
                self.add()
                added += 1
            await asyncio.sleep(max(0.0, started + added / rate - time.monotonic()))

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "orders": len(self._rows),
                "fulfilled": len(self.fulfilled_at),
                "fulfilments": self.fulfilments,
                "pages": self.pages,
            }
        )

    async def _report(self, request: web.Request) -> web.Response:
        first = int(request.query.get("first", 0))
        rows = self._rows[first:]
        per_order = {
            o.id: [
                self.first_served.get(o.id),
                self.fulfilled_at.get(o.id),
                len(o.fulfilments),
                len({f["tracking_number"] for f in o.fulfilments.values()}),
            ]
            for o in rows
        }
        return web.json_response({"orders": per_order, "pages": self.pages})


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class BenchFactory(FakeFactory):
    """A fake factory that records when each idempotency key first arrived."""

    def __init__(self, name: str) -> None:
        super().__init__(name, ship_after_s=0.0)
        self.received_at: dict[str, float] = {}

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        now = time.time()
        resp = await super()._receive(request)
        if resp.status < 300:
            self.received_at.setdefault(request.headers.get("webhook-id", ""), now)
        return resp


async def _control_app(factories: dict[str, BenchFactory]) -> tuple[web.AppRunner, str]:
    async def set_callbacks(request: web.Request) -> web.Response:
        for name, url in (await request.json()).items():
            factories[name].callback_url = url
        return web.json_response({})

    async def report(request: web.Request) -> web.Response:
        return web.json_response(
            {
                name: {
                    "received_at": f.received_at,
                    "deliveries": dict(f.deliveries),
                    "held": len(f.orders),
                    "callbacks": {str(k): v for k, v in f.callbacks_sent.items()},
                    "rejected_signatures": f.rejected_signatures,
                }
                for name, f in factories.items()
            }
        )

    app = web.Application()
    app.router.add_post("/_bench/callbacks", set_callbacks)
    app.router.add_get("/_bench/report", report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _echo_app() -> tuple[web.AppRunner, str]:
    counter = itertools.count(1)

    async def handle(request: web.Request) -> web.Response:
        await request.json()
        return web.Response(
            text=json.dumps({"ok": True, "id": next(counter)}), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


async def _serve(kind: str, conn: Connection, options: dict[str, Any]) -> None:
    closers: list[Any] = []
    if kind == "storefront":
        sf = BenchStorefront(page_size=options["page_size"], id_start=options["id_start"])
        await sf.start()
        closers.append(sf.close)
        conn.send({"url": sf.url, "token": sf.token})
    elif kind == "factories":
        factories = {name: BenchFactory(name) for name in FACTORIES}
        for f in factories.values():
            await f.start()
            closers.append(f.close)
        runner, control = await _control_app(factories)
        closers.append(runner.cleanup)
        conn.send(
            {
                "control": control,
                "factories": {
                    n: {
                        "url": f.url,
                        "signing_secret": f.signing_secret,
                        "callback_secret": f.callback_secret,
                    }
                    for n, f in factories.items()
                },
            }
        )
    elif kind == "echo":
        runner, url = await _echo_app()
        closers.append(runner.cleanup)
        conn.send({"url": url})
    else:
        raise ValueError(kind)
    await asyncio.to_thread(conn.recv)  # any message means stop
    for close in reversed(closers):
        await close()


def _main(kind: str, conn: Connection, options: dict[str, Any]) -> None:
    asyncio.run(_serve(kind, conn, options))


class ServerProcess:
    """A server in its own (spawned) process. `info` is what it answered at start-up."""

    def __init__(self, kind: str, **options: Any) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_main, args=(kind, child, options), name=f"bench-{kind}", daemon=True
        )
        self.process.start()
        if not self._conn.poll(30):
            raise RuntimeError(f"{kind} server did not start")
        self.info: dict[str, Any] = self._conn.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            self._conn.send("stop")
            self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
