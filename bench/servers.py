"""The servers the benchmark talks to, each run in its own process so it does not share the relay's CPU.

* `storefront`: a storefront fake with two records: the wall time each order first appears in a poll
  response, and the wall time of its first fulfilment. `adapter="demo"` is the demo fake with an O(log n)
  listing (orders are kept sorted); `woocommerce` / `shopify` are the vendor fakes found through the
  `relay.fakes` entry points (FakeWooCommerce, FakeShopify), subclassed here only to stamp those two
  times and, for Shopify, to find a fulfillment order by id in O(1) and to never throttle (the leaky
  bucket is not what the bench measures). A control app on its own port (`/_bench/seed`, `/status`,
  `/report`) seeds orders (all at once or at a fixed rate) and reports, including every request the
  fake received (`requests`, the `FakeStorefront` protocol's record), counted by method and route.
* `factories`: one fake factory per name (same process, one port each) that records the wall time of the
  first receipt per idempotency key, and ships every order at once through relay's callback endpoint;
  with several relay daemons, through each one's in turn (round-robin per callback, as a load balancer in
  front of them would spread them).
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
import re
import time
from collections import Counter
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

import orjson
from aiohttp import web

from adapters.demo.fake import FakeDemoStorefront
from adapters.webhook.fake import FakeFactory
from relay.registry import Registry
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
        self.pages = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/orders", self._list)
        app.router.add_post("/api/orders/{id}/fulfillments", self._fulfil)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def bench_add(self, lines: list[SeedLine]) -> str:
        last = self._keys[-1][0] if self._keys else 0.0
        order_id = self.add_order(lines, updated_at=max(time.time(), last + 1e-6))
        row = self._orders[order_id]
        self._keys.append((row.updated_at, int(row.id)))
        self._rows.append(row)
        return order_id

    async def _list(self, request: web.Request) -> web.Response:
        self._requests.append((request.method, request.path))
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
            self.fulfilled_at.setdefault(request.match_info["id"], time.time())
        return resp


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class _Stamps:
    """What the vendor-fake subclasses add: first-served and first-fulfilled wall times, listing pages."""

    first_served: dict[str, float]
    fulfilled_at: dict[str, float]
    pages: int

    def _stamps(self) -> None:
        self.first_served, self.fulfilled_at, self.pages = {}, {}, 0

    def _served(self, ids: list[str]) -> None:
        self.pages += 1
        now = time.time()
        for order_id in ids:
            self.first_served.setdefault(order_id, now)

    def bench_add(self, lines: list[SeedLine]) -> str:
        return self.add_order(lines)  # type: ignore[attr-defined,no-any-return]


class _WooStamps(_Stamps):
    """FakeWooCommerce: a listing page is a JSON array of orders; every fulfilment goes through `_record`
    (a Shipment Tracking item or a tracking note)."""

    async def _list_orders(self, request: web.Request) -> web.Response:
        resp: web.Response = await super()._list_orders(request)  # type: ignore[misc]
        if resp.status == 200 and resp.text:
            self._served([str(o["id"]) for o in orjson.loads(resp.text)])
        return resp

    def _record(self, order: Any, *args: Any) -> None:
        super()._record(order, *args)  # type: ignore[misc]
        self.fulfilled_at.setdefault(str(order.doc["id"]), time.time())


class _ShopifyStamps(_Stamps):
    """FakeShopify: listing nodes carry the order gid; `fulfillmentCreate` names a fulfillment order,
    looked up here in a dict (the fake scans every order) to stamp its order."""

    _by_fulfillment_order: dict[str, tuple[Any, Any]]

    def _stamps(self) -> None:
        super()._stamps()
        self._by_fulfillment_order = {}

    def bench_add(self, lines: list[SeedLine]) -> str:
        order_id = super().bench_add(lines)
        order = self._order(order_id)  # type: ignore[attr-defined]
        for fo in order.fulfillment_orders:
            self._by_fulfillment_order[f"gid://shopify/FulfillmentOrder/{fo.number}"] = (order, fo)
        return order_id

    def _find_fulfillment_order(self, fulfillment_order_id: str) -> tuple[Any, Any] | None:
        return self._by_fulfillment_order.get(fulfillment_order_id)

    def _resolve_orders(self, root: Any) -> dict[str, Any]:
        answer: dict[str, Any] = super()._resolve_orders(root)  # type: ignore[misc]
        self._served([node["id"] for node in answer["nodes"]])
        return answer

    def _resolve_fulfillmentCreate(self, root: Any) -> dict[str, Any]:
        answer: dict[str, Any] = super()._resolve_fulfillmentCreate(root)  # type: ignore[misc]
        if answer.get("fulfillment"):
            groups = (root.args.get("fulfillment") or {}).get("lineItemsByFulfillmentOrder") or []
            found = self._by_fulfillment_order.get(str(groups[0].get("fulfillmentOrderId")))
            if found is not None:
                self.fulfilled_at.setdefault(f"gid://shopify/Order/{found[0].number}", time.time())
        return answer


STOREFRONT_OPTIONS: dict[str, dict[str, Any]] = {
    "woocommerce": {},
    # Throttling is the shop's policy, not relay's cost: a bucket that never runs dry.
    "shopify": {"bucket_size": 1e12, "restore_rate": 1e12},
}
"""Constructor options of the vendor fakes in the bench, besides `page_size`."""


def vendor_storefront(adapter: str, page_size: int) -> Any:
    """The `relay.fakes` entry point `adapter`, subclassed with the bench's stamps, constructed."""
    base = Registry().fake(adapter)
    mixin = {"woocommerce": _WooStamps, "shopify": _ShopifyStamps}[adapter]
    cls = type(f"Bench{base.__name__}", (mixin, base), {})
    fake = cls(page_size=page_size, **STOREFRONT_OPTIONS[adapter])
    fake._stamps()
    return fake


_ID = re.compile(r"/\d+(?=/|$)")


class StorefrontControl:
    """`/_bench/` routes for one storefront fake in this process: seed, status, report."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.ids: list[str] = []
        self._rng = random.Random(7)
        self._feeder: asyncio.Task[None] | None = None

    def add(self) -> None:
        self.ids.append(self.fake.bench_add(order_lines(len(self.ids), self._rng)))

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/_bench/seed", self._seed)
        app.router.add_get("/_bench/status", self._status)
        app.router.add_get("/_bench/report", self._report)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def _seed(self, request: web.Request) -> web.Response:
        spec = await request.json()
        count, rate = int(spec["count"]), float(spec.get("rate") or 0)
        first, at = len(self.ids), time.time()
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
                "orders": len(self.ids),
                "fulfilled": len(self.fake.fulfilled_at),
                "pages": self.fake.pages,
                "requests": len(self.fake.requests),
                "operations": len(getattr(self.fake, "operations", ())),
            }
        )

    async def _report(self, request: web.Request) -> web.Response:
        """Per order since `first`: first served, first fulfilled, fulfilments, distinct tracking
        numbers; and the requests received since request number `since`, by method and route."""
        first = int(request.query.get("first", 0))
        since = int(request.query.get("since", 0))
        since_operations = int(request.query.get("since_operations", 0))
        fake = self.fake
        per_order = {}
        for order_id in self.ids[first:]:
            held = fake.fulfilments(order_id)
            per_order[order_id] = [
                fake.first_served.get(order_id),
                fake.fulfilled_at.get(order_id),
                len(held),
                len({f.tracking_number for f in held}),
            ]
        routes = Counter(f"{method} {_ID.sub('/{id}', path)}" for method, path in fake.requests[since:])
        # GraphQL (Shopify): every request is one POST; its root fields say what it did.
        operations = Counter(name for name, _ in getattr(fake, "operations", ())[since_operations:])
        return web.json_response(
            {
                "orders": per_order,
                "pages": fake.pages,
                "requests": dict(routes),
                "operations": dict(operations),
            }
        )


class BenchFactory(FakeFactory):
    """A fake factory that records when each idempotency key first arrived, and sends its callbacks to
    `callback_urls` in turn."""

    def __init__(self, name: str) -> None:
        super().__init__(name, ship_after_s=0.0)
        self.received_at: dict[str, float] = {}
        self.callback_urls: itertools.cycle[str] | None = None

    async def send_event(self, event: dict[str, Any], message_id: str, *, attempts: int = 50) -> int:
        if self.callback_urls is not None:
            self.callback_url = next(self.callback_urls)  # read by each attempt: a retry may go elsewhere
        return await super().send_event(event, message_id, attempts=attempts)

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        now = time.time()
        resp = await super()._receive(request)
        if resp.status < 300:
            self.received_at.setdefault(request.headers.get("webhook-id", ""), now)
        return resp


async def _control_app(factories: dict[str, BenchFactory]) -> tuple[web.AppRunner, str]:
    async def set_callbacks(request: web.Request) -> web.Response:
        """{factory: [callback URL of each relay daemon]}: callbacks go to each in turn."""
        for name, urls in (await request.json()).items():
            factories[name].callback_url = urls[0]
            factories[name].callback_urls = itertools.cycle(urls)
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
        adapter = options.get("adapter", "demo")
        if adapter == "demo":
            sf = BenchStorefront(page_size=options["page_size"], id_start=options["id_start"])
        else:
            sf = vendor_storefront(adapter, options["page_size"])
        await sf.start()
        closers.append(sf.close)
        runner, control = await StorefrontControl(sf).start()
        closers.append(runner.cleanup)
        conn.send({"adapter": adapter, "options": sf.adapter_options(), "control": control})
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
