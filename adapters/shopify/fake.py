"""FakeShopify: an in-process emulation of the Shopify Admin GraphQL API, for tests and `relay demo`.

It serves `POST /admin/api/{version}/graphql.json` on 127.0.0.1 and answers, as documented by Shopify:

* `orders(first, after, query, sortKey, reverse)` with the `updated_at:>=...` search syntax, cursor
  pagination (`edges`/`nodes`, `pageInfo.hasNextPage/endCursor`) and nested `lineItems(first, after)`;
* `order(id)` with `lineItems`, `fulfillmentOrders` and `fulfillments`;
* `fulfillmentCreate(fulfillment: FulfillmentInput!)` with `userErrors` for invalid requests;
* the calculated-cost leaky bucket: `extensions.cost` on every answer, `THROTTLED` errors (HTTP 200)
  when the bucket lacks the requested cost, `MAX_COST_EXCEEDED` above 1000 points;
* `X-Shopify-Access-Token` checks with Shopify's 401 body.

It implements `relay.testing.vendor.FakeStorefront`. Whole order nodes are returned whatever the
selection set (clients ignore extra keys); costs follow Shopify's rules closely but not exactly.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from importlib import resources
from typing import Any

from aiohttp import web

from adapters.shopify.adapter import API_VERSION
from relay.testing.vendor import RecordedFulfilment, SeedLine

DEFAULT_TOKEN = "shpat_fake00000000000000000000000000"  # noqa: S105 (the fake's own token)
LOCATION_ID = "gid://shopify/Location/70000000001"
FORBIDDEN_BODY = {"errors": "[API] This action requires merchant approval for read_orders scope."}


def _fixture(name: str) -> Any:
    """A JSON fixture shipped in `adapters/shopify/fixtures/`."""
    return json.loads((resources.files("adapters.shopify") / "fixtures" / name).read_text("utf-8"))


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def _display_fulfillment_status(order: _Order) -> str:
    """`Order.displayFulfillmentStatus`: FULFILLED once every fulfillment order is closed by fulfilments
    (Shopify closes one whose lines are all fulfilled), PARTIALLY_FULFILLED before, UNFULFILLED without a
    live fulfilment. GUESS: a cancelled order with some fulfilments shows PARTIALLY_FULFILLED."""
    if not any(f.status == "SUCCESS" for f in order.fulfillments):
        return "UNFULFILLED"
    closed = all(fo.status == "CLOSED" for fo in order.fulfillment_orders)
    return "FULFILLED" if closed and order.cancelled_at is None else "PARTIALLY_FULFILLED"


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _uncursor(cursor: str) -> list[Any]:
    value: list[Any] = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    return value


# --- a small GraphQL reader: enough to find fields, arguments and nested `first:` values ---------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\.\.\.|\$?[A-Za-z_]\w*|-?\d+(?:\.\d+)?|[{}()\[\]:!=@,]')


@dataclass
class Field:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    children: list[Field] = field(default_factory=list)

    def child(self, name: str) -> Field | None:
        """The first descendant field called `name` (depth-first)."""
        for sub in self.children:
            if sub.name == name:
                return sub
            found = sub.child(name)
            if found is not None:
                return found
        return None


def parse_operation(document: str, variables: dict[str, Any]) -> tuple[str, list[Field]]:
    """Return ("query" | "mutation", root fields) of the first operation, with variables resolved."""
    tokens = [t for t in _TOKEN.findall(re.sub(r"#[^\n]*", "", document)) if t != ","]
    kind = tokens[0] if tokens and tokens[0] in ("query", "mutation") else "query"
    depth, i = 0, 0
    while i < len(tokens) and not (tokens[i] == "{" and depth == 0):
        depth += {"(": 1, ")": -1}.get(tokens[i], 0)
        i += 1
    fields, _ = _selection(tokens, i + 1, variables)
    return kind, fields


def _selection(tokens: list[str], i: int, variables: dict[str, Any]) -> tuple[list[Field], int]:
    fields: list[Field] = []
    while i < len(tokens) and tokens[i] != "}":
        name = tokens[i]
        i += 1
        if i < len(tokens) and tokens[i] == ":":  # alias: keep the real field name
            name, i = tokens[i + 1], i + 2
        node = Field(name)
        if i < len(tokens) and tokens[i] == "(":
            node.args, i = _arguments(tokens, i + 1, variables)
        if i < len(tokens) and tokens[i] == "{":
            node.children, i = _selection(tokens, i + 1, variables)
        fields.append(node)
    return fields, i + 1


def _arguments(tokens: list[str], i: int, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
    args: dict[str, Any] = {}
    while tokens[i] != ")":
        name, value, i = tokens[i], tokens[i + 2], i + 3
        if value in ("{", "["):  # inline input objects are not needed by any client we serve
            depth = 1
            while depth:
                depth += {"{": 1, "[": 1, "}": -1, "]": -1}.get(tokens[i], 0)
                i += 1
            continue
        args[name] = _literal(value, variables)
    return args, i + 1


def _literal(token: str, variables: dict[str, Any]) -> Any:
    if token.startswith("$"):
        return variables.get(token[1:])
    if token.startswith('"'):
        return json.loads(token)
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    return {"true": True, "false": False, "null": None}.get(token, token)


def requested_cost(node: Field) -> int:
    """Shopify's static cost of a field: scalars 0, objects 1 (each `node` of a connection is one),
    connections 2 + first x node cost (`edges` itself costs nothing beyond its node)."""
    if not node.children:
        return 0
    first = node.args.get("first")
    if isinstance(first, int):
        wrapped = [sub for sub in node.children if sub.name in ("edges", "nodes")]
        if not wrapped:  # a plain list of objects
            return 2 + first * (1 + sum(requested_cost(sub) for sub in node.children))
        rest = sum(requested_cost(sub) for sub in node.children if sub not in wrapped)
        return 2 + first * sum(requested_cost(sub) for sub in wrapped) + rest
    inner = sum(requested_cost(sub) for sub in node.children)
    return inner if node.name == "edges" else 1 + inner


class QueryError(Exception):
    """A resolver's refusal, reported in the answer's `errors` (as Shopify does for bad arguments)."""


# --- the emulated shop --------------------------------------------------------------------------


@dataclass
class _Line:
    number: int
    sku: str | None
    title: str
    quantity: int | None
    unit_price: Decimal
    properties: dict[str, str]
    variant: int
    current: int | None = None
    """`currentQuantity`: the quantity after order edits (None: never edited, same as `quantity`)."""


@dataclass
class _FulfillmentOrderLine:
    number: int
    line: _Line
    remaining: int


@dataclass
class _FulfillmentOrder:
    number: int
    status: str
    lines: list[_FulfillmentOrderLine]


@dataclass
class _Fulfillment:
    number: int
    status: str
    company: str | None
    tracking_number: str | None
    url: str | None
    notify_customer: bool
    items: list[tuple[_Line, int]]


@dataclass
class _Order:
    number: int
    name: str
    created: int
    updated: int
    currency: str
    financial_status: str
    test: bool
    lines: list[_Line]
    fulfillment_orders: list[_FulfillmentOrder]
    cancelled_at: int | None = None
    fulfillments: list[_Fulfillment] = field(default_factory=list)
    email: str = "buyer@example.com"
    tags: tuple[str, ...] = ()


class FakeShopify:
    """A running fake shop. `await start()`, seed with `add_order`, point the adapter at `adapter_options()`.

    `bucket_size`/`restore_rate` set the leaky bucket (points, points per second) and `clock` its time
    source, so a test can make throttling real by advancing the clock from the adapter's sleep.
    """

    adapter = "shopify"

    def __init__(
        self,
        *,
        page_size: int = 3,
        api_version: str = API_VERSION,
        access_token: str = DEFAULT_TOKEN,
        bucket_size: float = 2000.0,
        restore_rate: float = 100.0,
        max_query_cost: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        actual_cost_ratio: float = 0.1,
    ) -> None:
        self.page_size = page_size
        self.api_version = api_version
        self.access_token = access_token
        self.bucket_size = bucket_size
        self.restore_rate = restore_rate
        self.max_query_cost = max_query_cost
        self.actual_cost_ratio = actual_cost_ratio
        """Share of the requested cost a query actually uses (the rest is refunded, as Shopify does)."""
        self.throttled = 0
        """How many `THROTTLED` answers (or 429s) were given."""
        self._clock = clock
        self._available = bucket_size
        self._refilled_at = clock()
        self._orders: dict[int, _Order] = {}
        self._ids = iter(range(1, 10**9))
        self._failures: deque[tuple[int, float | None, bool]] = deque()
        self._fulfillment_rejections: deque[str] = deque()
        self._hangs = 0
        self._rejected: int | None = None
        self._requests: list[tuple[str, str]] = []
        self.operations: list[tuple[str, dict[str, Any]]] = []
        """(root field, variables) of every GraphQL operation that reached the resolvers."""
        self.costs: list[tuple[list[str], int]] = []
        """(root fields, requested cost) of every GraphQL document received, refused ones included."""
        self._template = _fixture("order.json")
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/admin/api/{version}/graphql.json", self._graphql)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        self._closing.set()  # releases hung requests so shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def adapter_options(self) -> dict[str, Any]:
        return {
            "shop_url": self.url,
            "access_token": self.access_token,
            "api_version": self.api_version,
            "page_size": self.page_size,
        }

    # --- seeding and inspection (relay.testing.vendor.FakeStorefront) ------------------------------

    def _next(self) -> int:
        return next(self._ids)

    def add_order(
        self,
        lines: list[SeedLine],
        *,
        paid: bool = True,
        test: bool = False,
        currency: str = "USD",
        updated_at: float | None = None,
    ) -> str:
        """Create an order with one open fulfillment order holding all its lines; return its gid."""
        when = int(time.time() if updated_at is None else updated_at)
        number = 5_550_000_000 + self._next()
        made = [
            _Line(
                number=13_370_000_000 + self._next(),
                sku=seed.sku,
                title=f"Item {seed.sku or 'custom'}",
                quantity=seed.quantity,
                unit_price=Decimal(seed.unit_price),
                properties=dict(seed.properties),
                variant=42_000_000_000 + self._next(),
            )
            for seed in lines
        ]
        fulfillment_order = _FulfillmentOrder(
            number=6_660_000_000 + self._next(),
            status="OPEN",
            lines=[_FulfillmentOrderLine(7_770_000_000 + self._next(), ln, ln.quantity or 0) for ln in made],
        )
        self._orders[number] = _Order(
            number=number,
            name=f"#{1000 + len(self._orders) + 1}",
            created=when,
            updated=when,
            currency=currency,
            financial_status="PAID" if paid else "PENDING",
            test=test,
            lines=made,
            fulfillment_orders=[fulfillment_order],
        )
        return gid("Order", number)

    def add_malformed_order(self) -> str:
        """An order whose only line item has `quantity: null` (no valid relay order can be made)."""
        order_id = self.add_order([SeedLine(sku="BROKEN-1")])
        self._order(order_id).lines[0].quantity = None
        return order_id

    def _order(self, order_id: str) -> _Order:
        return self._orders[int(order_id.rsplit("/", 1)[-1])]

    def line_ids(self, order_id: str) -> list[str]:
        return [gid("LineItem", line.number) for line in self._order(order_id).lines]

    def touch(self, order_id: str, *, updated_at: float | None = None) -> None:
        order = self._order(order_id)
        order.updated = (
            int(updated_at) if updated_at is not None else max(int(time.time()), order.updated + 1)
        )

    def mark_paid(self, order_id: str) -> None:
        self._order(order_id).financial_status = "PAID"
        self.touch(order_id)

    def cancel(self, order_id: str) -> None:
        order = self._order(order_id)
        order.cancelled_at = int(time.time())
        for fulfillment_order in order.fulfillment_orders:
            fulfillment_order.status = "CLOSED"
        self.touch(order_id)

    def edit_line(self, order_id: str, index: int, quantity: int) -> None:
        """Edit the order as the admin's "Edit order" does: the line's `currentQuantity` becomes
        `quantity` (0 removes it), `quantity` stays as ordered, its open fulfillment-order line shrinks."""
        order = self._order(order_id)
        line = order.lines[index]
        before = line.quantity if line.current is None else line.current
        line.current = quantity
        for fulfillment_order in order.fulfillment_orders:
            for item in fulfillment_order.lines:
                if item.line is line:
                    item.remaining = max(0, item.remaining - (before or 0) + quantity)
        self.touch(order_id)

    def fulfilments(self, order_id: str) -> list[RecordedFulfilment]:
        return [
            RecordedFulfilment(
                order_id=order_id,
                carrier=f.company or "",
                tracking_number=f.tracking_number or "",
                line_ids=tuple(gid("LineItem", line.number) for line, _ in f.items),
                quantities=tuple(quantity for _, quantity in f.items),
            )
            for f in self._order(order_id).fulfillments
            if f.status == "SUCCESS"
        ]

    def notified(self, order_id: str) -> list[bool]:
        """`notifyCustomer` of each fulfilment of the order, in creation order."""
        return [f.notify_customer for f in self._order(order_id).fulfillments]

    def fail_next(
        self, status: int, *, times: int = 1, retry_after: float | None = None, plain_http: bool = False
    ) -> None:
        """Answer the next `times` requests with `status` (and Retry-After when given).

        429 is answered as Shopify throttles GraphQL: HTTP 200, `THROTTLED`, a bucket `retry_after`
        seconds short of the query's cost. With `plain_http` the same body comes as an HTTP 429 with
        a Retry-After header (when given).
        """
        self._failures.extend([(status, retry_after, plain_http)] * times)

    def reject_next_fulfillment(self, message: str) -> None:
        """Make the next `fulfillmentCreate` fail with this `userErrors` message."""
        self._fulfillment_rejections.append(message)

    def hang_next(self, *, times: int = 1) -> None:
        self._hangs += times

    def reject_credentials(self, status: int = 401) -> None:
        self._rejected = status

    def set_bucket(self, available: float) -> None:
        """Set the points currently available in the leaky bucket."""
        self._available, self._refilled_at = available, self._clock()

    @property
    def requests(self) -> list[tuple[str, str]]:
        return list(self._requests)

    # --- HTTP ------------------------------------------------------------------------------------

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        self._requests.append((request.method, request.path))
        if self._hangs:
            self._hangs -= 1
            await self._closing.wait()
            return web.Response(status=503)
        try:
            payload = await request.json()
            query, variables = str(payload["query"]), dict(payload.get("variables") or {})
            kind, roots = parse_operation(query, variables)
        except (ValueError, KeyError, TypeError, IndexError):
            return web.json_response(
                {"errors": {"query": "Required parameter missing or invalid"}}, status=400
            )
        cost = 10 * len(roots) if kind == "mutation" else sum(requested_cost(r) for r in roots)
        self.costs.append(([root.name for root in roots], cost))
        refusal = self._refusal(request, cost)
        if refusal is not None:
            return refusal
        self._available -= cost
        data: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for root in roots:
            resolver = getattr(self, f"_resolve_{root.name}", None)
            if resolver is None:
                errors.append({"message": f"Field '{root.name}' doesn't exist on type 'QueryRoot'"})
                continue
            self.operations.append((root.name, variables))
            try:
                data[root.name] = resolver(root)
            except QueryError as exc:
                data[root.name] = None
                errors.append({"message": str(exc), "path": [root.name]})
        actual = min(cost, max(1, int(cost * self.actual_cost_ratio)))  # usually far less than requested
        self._available = min(self.bucket_size, self._available + cost - actual)
        body: dict[str, Any] = {"data": data, "extensions": {"cost": self._cost(cost, actual)}}
        if errors:
            body["errors"] = errors
        return web.json_response(body)

    def _refusal(self, request: web.Request, cost: int) -> web.Response | None:
        """The answer for a request that must not run: injected failure, bad token, cost cap, throttle."""
        if self._failures:
            return self._failure(*self._failures.popleft(), cost)
        if self._rejected is not None or request.headers.get("X-Shopify-Access-Token") != self.access_token:
            status = self._rejected or 401
            body = _fixture("invalid_token.json") if status == 401 else FORBIDDEN_BODY
            return web.json_response(body, status=status)
        if cost > self.max_query_cost:
            body = _fixture("max_cost_exceeded.json")
            error = body["errors"][0]
            error["message"] = re.sub(r"Query cost is \d+", f"Query cost is {cost}", error["message"])
            error["extensions"].update(cost=cost, maxCost=self.max_query_cost)
            return web.json_response(body)
        self._refill()
        if self._available + 1e-6 < cost:  # the refill is float arithmetic: ignore rounding dust
            return web.json_response(self._throttled(cost, self._available, self.restore_rate))
        return None

    def _refill(self) -> None:
        now = self._clock()
        self._available = min(
            self.bucket_size, self._available + (now - self._refilled_at) * self.restore_rate
        )
        self._refilled_at = now

    def _cost(
        self, requested: int, actual: int | None, available: float | None = None, rate: float | None = None
    ) -> dict[str, Any]:
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": self.bucket_size,
                "currentlyAvailable": round(self._available if available is None else available, 3),
                "restoreRate": self.restore_rate if rate is None else rate,
            },
        }

    def _throttled(self, cost: int, available: float, rate: float) -> dict[str, Any]:
        self.throttled += 1
        body: dict[str, Any] = _fixture("throttled.json")
        body["extensions"]["cost"] = self._cost(cost, None, available, rate)
        return body

    def _failure(self, status: int, retry_after: float | None, plain_http: bool, cost: int) -> web.Response:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        if status == 429:
            wait = cost / self.restore_rate if retry_after is None else retry_after
            rate = self.restore_rate
            available = cost - wait * rate
            if available < 0:  # the bucket cannot be that short for so cheap a query: slow the refill
                available, rate = 0.0, cost / wait
            body = self._throttled(cost, available, rate)
            return (
                web.json_response(body, status=429, headers=headers)
                if plain_http
                else web.json_response(body)
            )
        if status == 401:
            return web.json_response(_fixture("invalid_token.json"), status=status, headers=headers)
        if status == 403:
            return web.json_response(FORBIDDEN_BODY, status=status, headers=headers)
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        return web.json_response({"errors": f"{status} {reason}"}, status=status, headers=headers)

    # --- resolvers ---------------------------------------------------------------------------------

    def _resolve_orders(self, root: Field) -> dict[str, Any]:
        first = int(root.args.get("first") or 0)
        if not 1 <= first <= 250:
            raise QueryError("first must be between 1 and 250")
        orders = [o for o in self._orders.values() if _matches(o, root.args.get("query"))]
        by_update = root.args.get("sortKey") == "UPDATED_AT"

        def key(order: _Order) -> list[int]:
            return [order.updated, order.number] if by_update else [order.number]

        reverse = bool(root.args.get("reverse"))
        orders.sort(key=key, reverse=reverse)
        if root.args.get("after"):
            mark = _uncursor(root.args["after"])
            orders = [o for o in orders if (key(o) < mark if reverse else key(o) > mark)]
        page, more = orders[:first], len(orders) > first
        lines = root.child("lineItems")
        nodes = [self._order_node(o, lines) for o in page]
        return {
            "edges": [{"cursor": _cursor(*key(o)), "node": n} for o, n in zip(page, nodes, strict=True)],
            "nodes": nodes,
            "pageInfo": {
                "hasNextPage": more,
                "hasPreviousPage": bool(root.args.get("after")),
                "startCursor": _cursor(*key(page[0])) if page else None,
                "endCursor": _cursor(*key(page[-1])) if page else None,
            },
        }

    def _resolve_order(self, root: Field) -> dict[str, Any] | None:
        try:
            order = self._order(str(root.args.get("id")))
        except (KeyError, ValueError):
            return None
        return self._order_node(order, root.child("lineItems"))

    def _order_node(self, order: _Order, lines_field: Field | None) -> dict[str, Any]:
        node: dict[str, Any] = copy.deepcopy(self._template)
        line_template = node["lineItems"]["edges"][0]["node"]
        owed = [
            ((ln.quantity if ln.current is None else ln.current) or 0, ln.unit_price) for ln in order.lines
        ]
        total = sum((quantity * price for quantity, price in owed), Decimal("0"))
        node.update(
            id=gid("Order", order.number),
            name=order.name,
            createdAt=_iso(order.created),
            updatedAt=_iso(order.updated),
            currencyCode=order.currency,
            email=order.email,
            test=order.test,
            tags=list(order.tags),
            cancelledAt=None if order.cancelled_at is None else _iso(order.cancelled_at),
            displayFinancialStatus=order.financial_status,
            displayFulfillmentStatus=_display_fulfillment_status(order),
            totalPriceSet={"shopMoney": {"amount": f"{total:.2f}", "currencyCode": order.currency}},
            lineItems=self._line_connection(order, line_template, lines_field),
            fulfillmentOrders=self._fulfillment_orders(order),
            fulfillments=[self._fulfillment_node(f) for f in order.fulfillments],
        )
        return node

    def _line_connection(
        self, order: _Order, template: dict[str, Any], lines_field: Field | None
    ) -> dict[str, Any]:
        args = lines_field.args if lines_field is not None else {}
        start = _uncursor(args["after"])[0] + 1 if args.get("after") else 0
        first = int(args.get("first") or 250)
        chosen = list(enumerate(order.lines))[start : start + first]
        edges = []
        for index, line in chosen:
            node = copy.deepcopy(template)
            money = {"amount": f"{line.unit_price:.2f}", "currencyCode": order.currency}
            node.update(
                id=gid("LineItem", line.number),
                sku=line.sku,
                title=line.title,
                quantity=line.quantity,
                currentQuantity=line.quantity if line.current is None else line.current,
                variant={"id": gid("ProductVariant", line.variant)},
                originalUnitPriceSet={"shopMoney": money},
                customAttributes=[{"key": k, "value": v} for k, v in line.properties.items()],
            )
            edges.append({"cursor": _cursor(index), "node": node})
        return {
            "edges": edges,
            "nodes": [e["node"] for e in edges],
            "pageInfo": {
                "hasNextPage": start + first < len(order.lines),
                "endCursor": edges[-1]["cursor"] if edges else None,
            },
        }

    def _fulfillment_orders(self, order: _Order) -> dict[str, Any]:
        nodes = [
            {
                "id": gid("FulfillmentOrder", fo.number),
                "status": fo.status,
                "assignedLocation": {"name": "Dropship warehouse", "location": {"id": LOCATION_ID}},
                "lineItems": {
                    "edges": [
                        {
                            "node": {
                                "id": gid("FulfillmentOrderLineItem", item.number),
                                "remainingQuantity": item.remaining,
                                "totalQuantity": item.line.quantity,
                                "lineItem": {"id": gid("LineItem", item.line.number)},
                            }
                        }
                        for item in fo.lines
                    ]
                },
            }
            for fo in order.fulfillment_orders
        ]
        return {"edges": [{"node": n} for n in nodes], "nodes": nodes}

    def _fulfillment_node(self, fulfillment: _Fulfillment) -> dict[str, Any]:
        return {
            "id": gid("Fulfillment", fulfillment.number),
            "status": fulfillment.status,
            "trackingInfo": [
                {
                    "company": fulfillment.company,
                    "number": fulfillment.tracking_number,
                    "url": fulfillment.url,
                }
            ],
            "fulfillmentLineItems": {
                "edges": [
                    {"node": {"quantity": quantity, "lineItem": {"id": gid("LineItem", line.number)}}}
                    for line, quantity in fulfillment.items
                ]
            },
        }

    def _resolve_fulfillmentCreate(self, root: Field) -> dict[str, Any]:
        spec = root.args.get("fulfillment") or {}
        errors: list[dict[str, Any]] = []
        items: list[tuple[_FulfillmentOrderLine, int]] = []
        owners: set[int] = set()
        groups = spec.get("lineItemsByFulfillmentOrder") or []
        if not groups:
            errors.append(
                _user_error("lineItemsByFulfillmentOrder", "Line items by fulfillment order is required.")
            )
        for index, group in enumerate(groups):
            where = f"lineItemsByFulfillmentOrder.{index}"
            found = self._find_fulfillment_order(str(group.get("fulfillmentOrderId")))
            if found is None:
                errors.append(_user_error(where, "Fulfillment order does not exist."))
                continue
            order, fulfillment_order = found
            owners.add(order.number)
            if fulfillment_order.status not in ("OPEN", "IN_PROGRESS"):
                status = fulfillment_order.status.lower()
                message = (
                    f"Fulfillment order {fulfillment_order.number} has an unfulfillable status= {status}."
                )
                errors.append(_user_error(where, message))
                continue
            chosen, problems = _chosen_items(fulfillment_order, group.get("fulfillmentOrderLineItems"))
            items += chosen
            errors += [_user_error(where, problem) for problem in problems]
        if len(owners) > 1:
            errors.append(
                _user_error(
                    "lineItemsByFulfillmentOrder", "Fulfillment orders must belong to the same order."
                )
            )
        if self._fulfillment_rejections:
            errors.append(_user_error("trackingInfo", self._fulfillment_rejections.popleft()))
        if errors or not items:
            user_errors = errors or [_user_error("fulfillment", "Nothing to fulfill.")]
            return {"fulfillment": None, "userErrors": user_errors}
        order = self._orders[owners.pop()]
        tracking = spec.get("trackingInfo") or {}
        fulfillment = _Fulfillment(
            number=8_880_000_000 + self._next(),
            status="SUCCESS",
            company=tracking.get("company"),
            tracking_number=tracking.get("number") or next(iter(tracking.get("numbers") or []), None),
            url=tracking.get("url"),
            notify_customer=bool(spec.get("notifyCustomer", False)),
            items=[(item.line, quantity) for item, quantity in items],
        )
        for item, quantity in items:
            item.remaining -= quantity
        for fulfillment_order in order.fulfillment_orders:
            if fulfillment_order.status in ("OPEN", "IN_PROGRESS"):
                done = all(item.remaining == 0 for item in fulfillment_order.lines)
                fulfillment_order.status = "CLOSED" if done else "IN_PROGRESS"
        order.fulfillments.append(fulfillment)
        self.touch(gid("Order", order.number))
        return {"fulfillment": self._fulfillment_node(fulfillment), "userErrors": []}

    def _find_fulfillment_order(self, fulfillment_order_id: str) -> tuple[_Order, _FulfillmentOrder] | None:
        for order in self._orders.values():
            for fulfillment_order in order.fulfillment_orders:
                if gid("FulfillmentOrder", fulfillment_order.number) == fulfillment_order_id:
                    return order, fulfillment_order
        return None


def _chosen_items(
    fulfillment_order: _FulfillmentOrder, wanted: list[dict[str, Any]] | None
) -> tuple[list[tuple[_FulfillmentOrderLine, int]], list[str]]:
    """The (item, quantity) pairs a request names (all remaining when it names none), and problems."""
    if not wanted:
        return [(item, item.remaining) for item in fulfillment_order.lines if item.remaining], []
    by_id = {gid("FulfillmentOrderLineItem", item.number): item for item in fulfillment_order.lines}
    chosen, problems = [], []
    for request in wanted:
        item, quantity = by_id.get(str(request.get("id"))), request.get("quantity")
        if item is None:
            problems.append("Fulfillment order line item does not exist.")
        elif not isinstance(quantity, int) or not 0 < quantity <= item.remaining:
            problems.append("Invalid fulfillment order line item quantity requested.")
        else:
            chosen.append((item, quantity))
    return chosen, problems


def _user_error(path: str, message: str) -> dict[str, Any]:
    return {"field": ["fulfillment", *path.split(".")], "message": message}


_UPDATED_AT = re.compile(r"updated_at:(<=|>=|<|>)?\s*(?:'([^']*)'|\"([^\"]*)\"|(\S+))")


def _matches(order: _Order, search: Any) -> bool:
    """Apply the `updated_at` terms of a Shopify search query (other terms are ignored)."""
    for op, single, double, bare in _UPDATED_AT.findall(str(search or "")):
        text = single or double or bare
        moment = datetime.fromisoformat(text if "T" in text else f"{text}T00:00:00+00:00")
        bound = int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
        if not {
            "": order.updated == bound,
            ">=": order.updated >= bound,
            ">": order.updated > bound,
            "<=": order.updated <= bound,
            "<": order.updated < bound,
        }[op]:
            return False
    return True
