"""Shopify storefront adapter: Admin GraphQL orders in, fulfilments with tracking out.

Maps Shopify's data and errors to relay's models and error tree; all HTTP lives in `client.py`.
See README.md for scopes, configuration and how pushing tracking is made idempotent.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, ClassVar

import aiohttp
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState

from adapters.shopify.client import (
    ShopifyClient,
    ShopifyConnectionError,
    ShopifyError,
    ShopifyGraphQLError,
    ShopifyHTTPError,
    ShopifyThrottled,
    throttle_wait,
)
from relay.config import Secret
from relay.contracts import AdapterContext, OrderPage
from relay.domain.models import Address, Malformed, Order, OrderLine, PushReceipt, ShipmentPush
from relay.exceptions import AdapterError, AuthError, FatalAdapterError, RetriableAdapterError, Throttled
from relay.faults import crash_point
from relay.outbound.retries import attempt_then_retry, in_call_retries, parse_retry_after
from relay.outbound.session import error_for_status

API_VERSION = "2026-10"
"""Pinned Admin API version: the newest stable release on 2026-11-25, supported until at least 2027-10."""

MAX_QUERY_COST = 1000
"""Shopify refuses any single query whose requested cost exceeds this (`MAX_COST_EXCEEDED`)."""

QUERY_COST_TARGET = 250
"""What one query may request, by Shopify's documented cost model (objects 1, connections 2 + first x
node cost, mutations 10): a quarter of the 1000-point bucket, so the poller's page and the shipper's
push queries fit in the bucket together and a healthy shop is rarely throttled. Shopify charges the
requested cost up front and refunds what was not read."""

ORDER_LINES_FIRST = 45
"""Line items per follow-up `ORDER_LINES_QUERY` (4 + 5 x 45 = 229 points)."""
FULFILLMENTS_SHAPES = ((5, 3, 15), (16, 3, 20))
"""(fulfillments, trackingInfo, fulfillmentLineItems) of `FULFILLMENTS_QUERY`: 198 points; the larger
shape (787) only when the first answer was cut short."""
FULFILLMENT_ORDERS_SHAPES = ((5, 20), (5, 90))
"""(fulfillmentOrders, lineItems) of `FULFILLMENT_ORDERS_QUERY`: 234 points; the larger shape (934)
only when the first answer was cut short."""
MUTATION_COST = 10

THROTTLE_ATTEMPTS = 6
TRANSIENT_ATTEMPTS = 3
MAX_IN_CALL_WAIT_S = 60.0
"""Longer waits are not slept in-call: the error goes to the core with `retry_after` set."""
TRANSIENT_HTTP = frozenset({408, 425, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset({"INTERNAL_SERVER_ERROR"})
PAID_STATUSES = frozenset({"PAID", "PARTIALLY_REFUNDED"})
OPEN_FULFILLMENT_ORDER = frozenset({"OPEN", "IN_PROGRESS"})
DEAD_FULFILLMENT = frozenset({"CANCELLED", "ERROR", "FAILURE"})

_LINE_FIELDS = """
      id sku title quantity currentQuantity
      variant { id }
      originalUnitPriceSet { shopMoney { amount currencyCode } }
      customAttributes { key value }"""

ORDERS_QUERY = f"""
query RelayOrders($first: Int!, $after: String, $query: String, $lineFirst: Int!) {{
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    edges {{
      cursor
      node {{
        id name createdAt updatedAt currencyCode email test tags cancelledAt displayFinancialStatus
        displayFulfillmentStatus
        totalPriceSet {{ shopMoney {{ amount currencyCode }} }}
        shippingAddress {{
          name company address1 address2 city province provinceCode zip countryCodeV2 phone
        }}
        lineItems(first: $lineFirst) {{
          edges {{ node {{{_LINE_FIELDS}
          }} }}
          pageInfo {{ hasNextPage endCursor }}
        }}
      }}
    }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""

ORDER_LINES_QUERY = f"""
query RelayOrderLines($id: ID!, $first: Int!, $after: String) {{
  order(id: $id) {{
    id
    lineItems(first: $first, after: $after) {{
      edges {{ node {{{_LINE_FIELDS}
      }} }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}
"""

FULFILLMENTS_QUERY = """
query RelayOrderFulfillments($id: ID!, $first: Int!, $trackingFirst: Int!, $lineFirst: Int!) {
  order(id: $id) {
    id
    fulfillments(first: $first) {
      id status
      trackingInfo(first: $trackingFirst) { company number url }
      fulfillmentLineItems(first: $lineFirst) {
        edges { node { quantity lineItem { id } } }
        pageInfo { hasNextPage }
      }
    }
  }
}
"""

FULFILLMENT_ORDERS_QUERY = """
query RelayFulfillmentOrders($id: ID!, $first: Int!, $lineFirst: Int!) {
  order(id: $id) {
    id
    fulfillmentOrders(first: $first) {
      edges {
        node {
          id status
          assignedLocation { location { id } }
          lineItems(first: $lineFirst) {
            edges { node { id remainingQuantity lineItem { id } } }
            pageInfo { hasNextPage }
          }
        }
      }
      pageInfo { hasNextPage }
    }
  }
}
"""

FULFILLMENT_CREATE = """
mutation RelayFulfillmentCreate($fulfillment: FulfillmentInput!) {
  fulfillmentCreate(fulfillment: $fulfillment) {
    fulfillment { id status }
    userErrors { field message }
  }
}
"""


# --- requested query cost, by Shopify's documented model -------------------------------------------
# Scalars and enums 0, objects 1, a connection 2 + first x (cost of one node), a mutation 10.


def orders_query_cost(first: int, lines: int) -> int:
    """`ORDERS_QUERY`: 2 + first x (order 1, totalPriceSet 2, shippingAddress 1, lineItems 2 + lines x
    (line 1, variant 1, originalUnitPriceSet 2, customAttributes 1) + pageInfo 1) + pageInfo 1."""
    return 3 + first * (7 + 5 * lines)


def order_lines_query_cost(first: int) -> int:
    """`ORDER_LINES_QUERY`: order 1 + lineItems 2 + first x 5 + pageInfo 1."""
    return 4 + 5 * first


def fulfillments_query_cost(first: int, tracking: int, lines: int) -> int:
    """`FULFILLMENTS_QUERY`: order 1 + fulfillments 2 + first x (fulfilment 1, trackingInfo 2 + tracking,
    fulfillmentLineItems 2 + lines x (node 1, lineItem 1) + pageInfo 1)."""
    return 3 + first * (6 + tracking + 2 * lines)


def fulfillment_orders_query_cost(first: int, lines: int) -> int:
    """`FULFILLMENT_ORDERS_QUERY`: order 1 + fulfillmentOrders 2 + first x (node 1, assignedLocation 1,
    location 1, lineItems 2 + lines x (node 1, lineItem 1) + pageInfo 1) + pageInfo 1."""
    return 4 + first * (6 + 2 * lines)


def listing_shape(page_size: int, target: int = QUERY_COST_TARGET) -> tuple[int, int]:
    """(orders per page, line items per order) for a listing page requesting at most `target` points:
    the configured page (fewer orders if even one line each would not fit), then as many lines as fit
    (1..50); longer orders are completed with `ORDER_LINES_QUERY`."""
    first = max(1, min(page_size, (target - 3) // 12))
    return first, max(1, min(50, (target - 3 - 7 * first) // (5 * first)))


def lines_per_order(page_size: int) -> int:
    """Line items fetched per order on a listing page of `page_size` orders (see `listing_shape`)."""
    return max(1, min(50, (QUERY_COST_TARGET - 3 - 7 * page_size) // (5 * page_size)))


class ShopifyOptions(BaseModel):
    """`[storefronts.NAME]` keys for `adapter = "shopify"`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shop_url: AnyHttpUrl = Field(description="https://{shop}.myshopify.com")
    access_token: Secret = Field(description="Admin API access token (shpat_...)")
    api_version: str = Field(default=API_VERSION, pattern=r"^\d{4}-(01|04|07|10)$")
    page_size: int = Field(
        default=10,
        ge=1,
        le=50,
        description="orders per request (at most what fits in a 250-point query: 20 with one line each)",
    )
    notify_customer: bool = Field(default=True, description="let Shopify e-mail the tracking to the buyer")
    location_id: str | None = Field(
        default=None, description="only fulfil fulfillment orders assigned to this location gid"
    )


def _edges(connection: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [edge["node"] for edge in (connection or {}).get("edges") or []]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _address(raw: Mapping[str, Any] | None) -> Address:
    if not raw:
        return Address()
    return Address(
        name=_text(raw.get("name")),
        company=_text(raw.get("company")),
        line1=_text(raw.get("address1")),
        line2=_text(raw.get("address2")),
        city=_text(raw.get("city")),
        region=_text(raw.get("provinceCode") or raw.get("province")),
        postal_code=_text(raw.get("zip")),
        country_code=_text(raw.get("countryCodeV2")),
        phone=_text(raw.get("phone")),
    )


def _current_quantity(raw: Mapping[str, Any]) -> Any:
    """What the buyer still gets: `currentQuantity` (the quantity after order edits and removals);
    `quantity` is the quantity originally ordered. Older answers without it fall back to `quantity`."""
    current = raw.get("currentQuantity")
    return raw["quantity"] if current is None else current


def _line(raw: Mapping[str, Any]) -> OrderLine:
    variant = raw.get("variant") or {}
    return OrderLine(
        line_id=raw["id"],
        sku=raw.get("sku") or None,
        variant_id=variant.get("id"),
        title=_text(raw.get("title")),
        quantity=_current_quantity(raw),
        unit_price=Decimal(str(raw["originalUnitPriceSet"]["shopMoney"]["amount"])),
        properties={_text(a["key"]): _text(a.get("value")) for a in raw.get("customAttributes") or []},
    )


def _timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def order_from_node(node: Mapping[str, Any]) -> Order:
    """Map one Shopify `Order` node (as selected by `ORDERS_QUERY`) to a relay `Order`.

    Raises `KeyError`, `TypeError`, `ValueError`, `InvalidOperation` or `ValidationError` when the node
    does not make a valid order.
    """
    total = (node.get("totalPriceSet") or {}).get("shopMoney") or {}
    return Order(
        external_id=node["id"],
        number=_text(node.get("name")),
        created_at=_timestamp(node["createdAt"]),
        updated_at=_timestamp(node["updatedAt"]),
        currency=node["currencyCode"],
        total=Decimal(str(total["amount"])) if total.get("amount") is not None else None,
        email=_text(node.get("email")),
        paid=node.get("displayFinancialStatus") in PAID_STATUSES,
        test=bool(node.get("test")),
        cancelled=node.get("cancelledAt") is not None,
        fulfilled=node.get("displayFulfillmentStatus") == "FULFILLED",
        tags=tuple(node.get("tags") or ()),
        shipping_address=_address(node.get("shippingAddress")),
        lines=tuple(
            _line(line) for line in _edges(node.get("lineItems")) if _current_quantity(line) != 0
        ),  # a line removed by an order edit has currentQuantity 0: nothing of it is owed
    )


def relay_error(exc: ShopifyError) -> AdapterError:  # noqa: PLR0911 (one return per error kind)
    """Translate a client exception into relay's error tree."""
    if isinstance(exc, ShopifyHTTPError):
        if 200 <= exc.status < 300:
            return RetriableAdapterError(
                f"HTTP {exc.status}: not a GraphQL answer", status=exc.status, body=exc.body
            )
        if exc.status == 429:
            return Throttled("HTTP 429: throttled", status=429, body=exc.body, retry_after=_wait_hint(exc))
        return error_for_status(exc.status, exc.body, exc.headers)
    if isinstance(exc, ShopifyThrottled):
        return Throttled(f"throttled: {exc}", retry_after=_wait_hint(exc))
    if isinstance(exc, OverBudget):
        return RetriableAdapterError(f"query too costly for the shop: {exc}")
    if isinstance(exc, ShopifyGraphQLError):
        if "ACCESS_DENIED" in exc.codes:
            return AuthError(f"access denied (check the app's scopes): {exc}")
        if exc.codes & TRANSIENT_CODES:
            return RetriableAdapterError(f"Shopify error: {exc}")
        return FatalAdapterError(f"GraphQL error: {exc}")
    return RetriableAdapterError(f"Shopify unreachable: {exc}")


def _is_throttle(exc: BaseException) -> bool:
    return isinstance(exc, ShopifyThrottled) or (isinstance(exc, ShopifyHTTPError) and exc.status == 429)


def _is_transient(exc: BaseException) -> bool:
    return (
        isinstance(exc, ShopifyConnectionError)
        or (isinstance(exc, ShopifyHTTPError) and exc.status in TRANSIENT_HTTP)
        or (isinstance(exc, ShopifyGraphQLError) and bool(exc.codes & TRANSIENT_CODES))
    )


def _wait_hint(exc: BaseException) -> float | None:
    """Throttled: until the bucket refills (or Retry-After, if longer). Otherwise no hint: the shared
    backoff applies."""
    if isinstance(exc, ShopifyThrottled):
        return max(exc.wait_s, parse_retry_after(exc.retry_after) or 0.0)
    if isinstance(exc, ShopifyHTTPError) and exc.status == 429:
        retry_after = parse_retry_after(exc.headers.get("Retry-After"))
        if retry_after is not None:
            return retry_after
        return throttle_wait(exc.cost) if exc.cost else 2.0
    return None


LISTING_LEAVES = 0.5
"""Share of the shop's cost bucket a listing query leaves untouched for tracking pushes (the poller and
the shipper share one bucket; pushes must never wait behind polls)."""


class OverBudget(ShopifyError):
    """The query requests more points than the shop's bucket can ever hold: it would be throttled
    forever. The caller shrinks it."""


class CostBudget:
    """The shop's leaky bucket as relay last saw it, shared by everything that calls the shop.

    One adapter instance serves the poller and the shipper, so both draw on this one budget: before a
    query is sent, `take` waits (through the injected sleep) until the bucket holds its requested cost,
    and reserves it, so concurrent callers queue behind each other instead of all being throttled. The
    state comes from `extensions.cost.throttleStatus` on every answer; a throttled answer also announces
    how long to wait, and the next `take` waits at least that long.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.level: float | None = None
        """Points available at `at` (negative: reserved by requests in flight)."""
        self.at = 0.0
        self.rate: float | None = None
        self.maximum: float | None = None
        self._announced = (0.0, 0.0)
        """(seconds, clock reading): the wait the last throttled answer announced, and when."""

    def wait_for(self, cost: float) -> float:
        """Seconds until the bucket holds `cost` points (rounded up to the millisecond)."""
        seconds, since = self._announced
        wait = seconds - max(0.0, self._clock() - since)
        if self.level is not None and self.rate:
            refilled = self.level + (self._clock() - self.at) * self.rate
            if self.maximum is not None:
                refilled = min(self.maximum, refilled)
            wait = max(wait, (cost - refilled) / self.rate)
        return math.ceil(round(max(0.0, wait) * 1000, 6)) / 1000

    def reserve(self, cost: float, wait: float) -> None:
        """Take `cost` points for a request sent after `wait` seconds."""
        self._announced = (0.0, 0.0)
        if self.level is None or not self.rate:
            return
        now = self._clock()
        refilled = self.level + (now - self.at) * self.rate
        if self.maximum is not None:
            refilled = min(self.maximum, refilled)
        self.level, self.at = refilled + wait * self.rate - cost, now

    def observe(self, cost: Mapping[str, Any]) -> None:
        """Adopt the bucket state an answer reports."""
        status = cost.get("throttleStatus") or {}
        try:
            level, rate = float(status["currentlyAvailable"]), float(status["restoreRate"])
        except (KeyError, TypeError, ValueError):
            return
        if not (math.isfinite(level) and math.isfinite(rate)) or rate <= 0:
            return
        self.level, self.rate, self.at = level, rate, self._clock()
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.maximum = float(status["maximumAvailable"])

    def throttled(self, exc: ShopifyError, requested: float) -> float:
        """Adopt a throttled answer's state; return the wait it announces. Raise `OverBudget` when the
        query costs more than the bucket can hold."""
        self.observe(getattr(exc, "cost", None) or {})
        if self.maximum is not None and requested > self.maximum:
            raise OverBudget(f"query requests {requested:g} points, the bucket holds {self.maximum:g}")
        # At least one point's refill: an answer rounded to "0 s" must not be retried at once.
        wait = max(_wait_hint(exc) or 0.0, 1.0 / self.rate if self.rate else 1.0)
        self._announced = (wait, self._clock())
        return wait


class ShopifyStorefront:
    """Reads orders from a Shopify shop and writes tracking back as fulfilments (Admin GraphQL API)."""

    Options: ClassVar[type[BaseModel]] = ShopifyOptions
    is_sorted: ClassVar[bool] = True

    def __init__(self, name: str, options: ShopifyOptions, context: AdapterContext) -> None:
        self.name = name
        self._options = options
        self._context = context
        self._log = context.log.bind(storefront=name, adapter="shopify")
        self._session: aiohttp.ClientSession | None = None
        self._client: ShopifyClient | None = None
        self.page_size, self.lines_per_order = listing_shape(options.page_size)
        self.budget = CostBudget(context.clock)
        self._pushing = 0  # tracking pushes under way: listings leave them part of the bucket
        """The shop's cost bucket, shared by the poller and the shipper (both use this instance)."""

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The adapter's HTTP session, once a request has been made (closed by `aclose`)."""
        return self._session

    def _api(self) -> ShopifyClient:
        if self._client is None:
            self._session = self._context.new_session()
            self._client = ShopifyClient(
                self._session,
                str(self._options.shop_url),
                self._options.api_version,
                self._options.access_token.get_secret_value(),
            )
        return self._client

    async def _execute(
        self,
        query: str,
        variables: Mapping[str, Any],
        *,
        cost: int,
        retry_transient: bool = True,
        leave: float = 0.0,
    ) -> dict[str, Any]:
        """Run one document within the shop's cost budget (`cost`: its requested points).

        `leave` is a share of the bucket (0..1) the call must leave for others while tracking pushes are
        under way: the poller's listing queries leave `LISTING_LEAVES` of it to them, so however often it
        polls it cannot starve the shipper (tracking reaches the shop first; a poll comes a little later).

        Waits for the bucket before sending, and after a throttled answer for the capacity it announces,
        up to `THROTTLE_ATTEMPTS` answers and `MAX_IN_CALL_WAIT_S` per wait; beyond that the error goes to
        the core as `Throttled` (see `relay_error`). Transient failures are retried in-call if asked.
        """
        throttles = 0
        while True:
            if self.budget.maximum is not None and cost > self.budget.maximum:
                raise OverBudget(f"query requests {cost} points, the bucket holds {self.budget.maximum:g}")
            kept = 0.0
            if (
                leave and self._pushing and self.budget.maximum is not None
            ):  # pushes waiting: let them go first
                kept = max(0.0, min(leave * self.budget.maximum, self.budget.maximum - cost))
            wait = self.budget.wait_for(cost + kept)
            if wait > MAX_IN_CALL_WAIT_S:
                raise Throttled(f"throttled: the shop's cost bucket needs {wait:g} s", retry_after=wait)
            self.budget.reserve(cost, wait)
            if wait > 0:
                self._log.info("shopify_throttled", attempt=throttles + 1, wait_s=wait, cost=cost)
                await self._context.sleep(wait)
            try:
                if retry_transient:
                    data: dict[str, Any] = await attempt_then_retry(
                        partial(self._api().execute, query, variables), partial(self._retrying, _is_transient)
                    )
                else:
                    data = await self._api().execute(query, variables)
            except ShopifyError as exc:
                if not _is_throttle(exc):
                    raise
                throttles += 1
                announced = self.budget.throttled(exc, cost)
                if throttles >= THROTTLE_ATTEMPTS or announced > MAX_IN_CALL_WAIT_S:
                    raise
                continue
            self.budget.observe(self._api().last_cost)
            return data

    def _retrying(self, retry_on: Callable[[BaseException], bool]) -> AsyncRetrying:
        """relay's one in-call retry policy, with Shopify's throttle (cost bucket) as the wait hint."""
        return in_call_retries(
            self._context.sleep,
            attempts=TRANSIENT_ATTEMPTS,
            max_wait_s=MAX_IN_CALL_WAIT_S,
            retry_on=retry_on,
            wait_hint=_wait_hint,
            before_sleep=self._log_retry,
        )

    def _log_retry(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else None
        event = "shopify_throttled" if exc is not None and _is_throttle(exc) else "shopify_retry"
        self._log.info(event, attempt=retry_state.attempt_number, wait_s=wait, error=str(exc))

    async def fetch_orders(self, since: datetime | None) -> AsyncIterator[OrderPage]:
        """Yield pages of orders updated at or after `since`, oldest first (sortKey UPDATED_AT)."""
        search = None
        if since is not None:
            moment = since if since.tzinfo else since.replace(tzinfo=UTC)
            search = f"updated_at:>='{moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'"
        after: str | None = None
        while True:
            variables = {
                "first": self.page_size,
                "after": after,
                "query": search,
                "lineFirst": self.lines_per_order,
            }
            cost = orders_query_cost(self.page_size, self.lines_per_order)
            try:
                connection = (await self._execute(ORDERS_QUERY, variables, cost=cost, leave=LISTING_LEAVES))[
                    "orders"
                ]
            except OverBudget as exc:
                if self._shrink_page():
                    continue
                raise relay_error(exc) from exc
            except ShopifyGraphQLError as exc:
                if "MAX_COST_EXCEEDED" in exc.codes and self._shrink_page():
                    continue
                raise relay_error(exc) from exc
            except ShopifyError as exc:
                raise relay_error(exc) from exc
            page = [await self._page_item(node) for node in _edges(connection)]
            if page:
                yield page
            page_info = connection.get("pageInfo") or {}
            if not page_info.get("hasNextPage"):
                return
            after = page_info["endCursor"]

    def _shrink_page(self) -> bool:
        """Halve the page (then the nested line items) after MAX_COST_EXCEEDED, or a cost the bucket can
        never hold; False at the minimum."""
        if self.page_size > 1:
            self.page_size //= 2
        elif self.lines_per_order > 1:
            self.lines_per_order //= 2
        else:
            return False
        self._log.warning("shopify_page_shrunk", page_size=self.page_size, lines=self.lines_per_order)
        return True

    async def _page_item(self, node: dict[str, Any]) -> Order | Malformed:
        external_id = node.get("id") if isinstance(node.get("id"), str) else None
        try:
            lines = node.get("lineItems") or {}
            if (lines.get("pageInfo") or {}).get("hasNextPage") and external_id:
                node = {**node, "lineItems": await self._all_lines(external_id, lines)}
            return order_from_node(node)
        except (KeyError, TypeError, ValueError, InvalidOperation, ValidationError) as exc:
            self._log.warning("shopify_order_malformed", order_id=external_id, error=str(exc)[:500])
            return Malformed(external_id=external_id, reason=f"{type(exc).__name__}: {exc}"[:2000], raw=node)

    async def _all_lines(self, order_id: str, first_page: dict[str, Any]) -> dict[str, Any]:
        """Complete an order's line items when the listing only carried the first few."""
        edges = list(first_page.get("edges") or [])
        page_info = first_page["pageInfo"]
        while page_info.get("hasNextPage"):
            variables = {"id": order_id, "first": ORDER_LINES_FIRST, "after": page_info["endCursor"]}
            try:
                cost = order_lines_query_cost(ORDER_LINES_FIRST)
                order = (await self._execute(ORDER_LINES_QUERY, variables, cost=cost, leave=LISTING_LEAVES))[
                    "order"
                ]
            except ShopifyError as exc:
                raise relay_error(exc) from exc
            if order is None:
                raise KeyError(f"order {order_id} vanished while reading its line items")
            edges.extend(order["lineItems"]["edges"])
            page_info = order["lineItems"]["pageInfo"]
        return {"edges": edges, "pageInfo": page_info}

    async def push_shipment(self, push: ShipmentPush) -> PushReceipt:
        """Create one fulfilment with the parcel's tracking and lines, unless it already exists.

        A first attempt (`push.prior_attempt_unknown` False) reads the order's fulfillment orders and
        creates the fulfilment: two requests. A retry after an unknown outcome reads the order's
        fulfilments first and creates nothing when the parcel is there. Shopify closes a fulfillment order
        whose lines are all fulfilled, and the order is fulfilled when all are: the last parcel completes
        the order in the same mutation. Transient failures retry the whole push in-call; once the mutation
        was sent, those retries look first, so a lost answer does not fulfil twice.
        """
        self._pushing += 1
        sent = [False]  # the mutation went out in this call: its outcome may be unknown
        try:
            receipt: PushReceipt = await attempt_then_retry(
                partial(self._push_once, push, sent), partial(self._retrying, _is_transient)
            )
        except ShopifyError as exc:
            error = relay_error(exc)
            if isinstance(error, Throttled) and sent[0]:
                # The parcel may be fulfilled now: the next attempt must look, so this one counts.
                error = RetriableAdapterError(
                    f"{error} (after a fulfilmentCreate)", retry_after=error.retry_after
                )
            raise error from exc
        except Throttled as exc:
            if not sent[0]:
                raise
            raise RetriableAdapterError(
                f"{exc} (after a fulfilmentCreate)", retry_after=exc.retry_after
            ) from exc
        finally:
            self._pushing -= 1
        return receipt

    async def _read_order(
        self, query: str, order_id: str, shapes: tuple[tuple[int, ...], ...], names: tuple[str, ...]
    ) -> dict[str, Any] | None:
        """`order(id:)` through `query`, sized by the first of `shapes`; the larger shape only when the
        answer was cut short (`hasNextPage`, or as many items as asked)."""
        cost_of = fulfillments_query_cost if query is FULFILLMENTS_QUERY else fulfillment_orders_query_cost
        order: dict[str, Any] | None = None
        for shape in shapes:
            variables = {"id": order_id, **dict(zip(names, shape, strict=True))}
            try:
                answer = await self._execute(query, variables, cost=cost_of(*shape), retry_transient=False)
            except OverBudget as exc:
                if order is not None:
                    return order  # the larger shape does not fit this shop: keep what was read
                raise relay_error(exc) from exc
            order = answer["order"]
            if order is None or not _cut_short(order, shape[0]):
                return order
        return order

    async def _push_once(self, push: ShipmentPush, sent: list[bool]) -> PushReceipt:
        if push.prior_attempt_unknown or sent[0]:
            order = await self._read_order(
                FULFILLMENTS_QUERY,
                push.order_id,
                FULFILLMENTS_SHAPES,
                ("first", "trackingFirst", "lineFirst"),
            )
            if order is None:
                raise FatalAdapterError(f"order {push.order_id} not found in Shopify")
            existing = _same_parcel(order.get("fulfillments") or [], push)
            if existing is not None:
                self._log.info("shopify_push_already_done", order_id=push.order_id, fulfillment=existing)
                return PushReceipt(reference=existing)
        order = await self._read_order(
            FULFILLMENT_ORDERS_QUERY, push.order_id, FULFILLMENT_ORDERS_SHAPES, ("first", "lineFirst")
        )
        if order is None:
            raise FatalAdapterError(f"order {push.order_id} not found in Shopify")
        tracking = {"company": push.carrier, "number": push.tracking_number}
        if push.tracking_url:
            tracking["url"] = push.tracking_url
        fulfillment = {
            "lineItemsByFulfillmentOrder": _allocate(order, push, self._options.location_id),
            "trackingInfo": tracking,
            "notifyCustomer": push.notify_customer and self._options.notify_customer,
        }
        sent_before, sent[0] = sent[0], True
        try:
            result = (
                await self._execute(
                    FULFILLMENT_CREATE,
                    {"fulfillment": fulfillment},
                    cost=MUTATION_COST,
                    retry_transient=False,
                )
            )["fulfillmentCreate"]
        except (ShopifyThrottled, Throttled, OverBudget):
            sent[0] = sent_before  # throttled: Shopify did not run the mutation
            raise
        except ShopifyHTTPError as exc:
            if 400 <= exc.status < 500:  # refused before it ran (a 429 too)
                sent[0] = sent_before
            raise
        crash_point("after_storefront_write")
        if result.get("userErrors"):
            messages = "; ".join(_text(e.get("message")) for e in result["userErrors"])
            raise FatalAdapterError(f"fulfillmentCreate rejected: {messages}")
        reference = (result.get("fulfillment") or {}).get("id")
        self._log.info("shopify_fulfillment_created", order_id=push.order_id, fulfillment=reference)
        return PushReceipt(reference=reference)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


def _cut_short(order: Mapping[str, Any], first: int) -> bool:
    """Whether an `order` answer holds fewer fulfilments / fulfillment orders or their items than exist."""
    fulfillments = order.get("fulfillments")
    if isinstance(fulfillments, list):
        return len(fulfillments) >= first or any(
            ((f.get("fulfillmentLineItems") or {}).get("pageInfo") or {}).get("hasNextPage")
            for f in fulfillments
        )
    connection = order.get("fulfillmentOrders") or {}
    return bool((connection.get("pageInfo") or {}).get("hasNextPage")) or any(
        ((node.get("lineItems") or {}).get("pageInfo") or {}).get("hasNextPage")
        for node in _edges(connection)
    )


def _same_parcel(fulfillments: list[dict[str, Any]], push: ShipmentPush) -> str | None:
    """The id of a live fulfilment carrying this parcel's tracking number and all its lines, if any."""
    wanted = {line.line_id for line in push.lines}
    for fulfillment in fulfillments:
        if fulfillment.get("status") in DEAD_FULFILLMENT:
            continue
        numbers = {_text(t.get("number")) for t in fulfillment.get("trackingInfo") or []}
        lines = {node["lineItem"]["id"] for node in _edges(fulfillment.get("fulfillmentLineItems"))}
        if push.tracking_number in numbers and wanted <= lines:
            return str(fulfillment["id"])
    return None


def _allocate(order: Mapping[str, Any], push: ShipmentPush, location_id: str | None) -> list[dict[str, Any]]:
    """Spread the parcel's line quantities over the order's open fulfillment-order line items."""
    needed: dict[str, int] = {}
    for line in push.lines:
        needed[line.line_id] = needed.get(line.line_id, 0) + line.quantity
    chosen: dict[str, list[dict[str, Any]]] = {}
    locations: set[str] = set()
    for fulfillment_order in _edges(order.get("fulfillmentOrders")):
        location = ((fulfillment_order.get("assignedLocation") or {}).get("location") or {}).get("id")
        if fulfillment_order.get("status") not in OPEN_FULFILLMENT_ORDER:
            continue
        if location_id is not None and location != location_id:
            continue
        for item in _edges(fulfillment_order.get("lineItems")):
            line_id = item["lineItem"]["id"]
            take = min(needed.get(line_id, 0), int(item.get("remainingQuantity") or 0))
            if take > 0:
                needed[line_id] -= take
                chosen.setdefault(fulfillment_order["id"], []).append({"id": item["id"], "quantity": take})
                locations.add(_text(location))
    short = sorted(line_id for line_id, quantity in needed.items() if quantity > 0)
    if short:
        raise FatalAdapterError(
            f"order {push.order_id}: nothing open to fulfil for line(s) {', '.join(short)} "
            "(already fulfilled, removed, or at another location)"
        )
    if len(locations) > 1:
        raise FatalAdapterError(
            f"order {push.order_id}: the parcel's lines are assigned to different locations; "
            "set location_id or fulfil them separately"
        )
    return [
        {"fulfillmentOrderId": fo_id, "fulfillmentOrderLineItems": items} for fo_id, items in chosen.items()
    ]
