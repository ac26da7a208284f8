"""Shopify storefront adapter: Admin GraphQL orders in, fulfilments with tracking out.

Maps Shopify's data and errors to relay's models and error tree; all HTTP lives in `client.py`.
See README.md for scopes, configuration and how pushing tracking is made idempotent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
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
from relay.exceptions import AdapterError, AuthError, FatalAdapterError, RetriableAdapterError
from relay.outbound.retries import in_call_retries, parse_retry_after
from relay.outbound.session import error_for_status

API_VERSION = "2026-10"
"""Pinned Admin API version: the newest stable release on 2026-11-25, supported until at least 2027-10."""

MAX_QUERY_COST = 1000
"""Shopify refuses any single query whose requested cost exceeds this (`MAX_COST_EXCEEDED`)."""

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
      id sku title quantity
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
query RelayOrderFulfillments($id: ID!) {
  order(id: $id) {
    id
    fulfillments(first: 20) {
      id status
      trackingInfo(first: 5) { company number url }
      fulfillmentLineItems(first: 20) { edges { node { quantity lineItem { id } } } }
    }
  }
}
"""

FULFILLMENT_ORDERS_QUERY = """
query RelayFulfillmentOrders($id: ID!) {
  order(id: $id) {
    id
    fulfillmentOrders(first: 5) {
      edges {
        node {
          id status
          assignedLocation { location { id } }
          lineItems(first: 50) { edges { node { id remainingQuantity lineItem { id } } } }
        }
      }
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


def lines_per_order(page_size: int) -> int:
    """How many line items to fetch per order so a listing page stays under `MAX_QUERY_COST`.

    By Shopify's documented cost rules (objects 1, connections 2 + n x node cost) an orders page
    costs about 3 + page_size x (7 + 5 x lines); longer orders are completed with `ORDER_LINES_QUERY`.
    """
    return max(1, min(50, (MAX_QUERY_COST - 3 - 7 * page_size) // (5 * page_size)))


class ShopifyOptions(BaseModel):
    """`[storefronts.NAME]` keys for `adapter = "shopify"`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shop_url: AnyHttpUrl = Field(description="https://{shop}.myshopify.com")
    access_token: Secret = Field(description="Admin API access token (shpat_...)")
    api_version: str = Field(default=API_VERSION, pattern=r"^\d{4}-(01|04|07|10)$")
    page_size: int = Field(
        default=25, ge=1, le=50, description="orders per request; more would break the 1000-point query cap"
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


def _line(raw: Mapping[str, Any]) -> OrderLine:
    variant = raw.get("variant") or {}
    return OrderLine(
        line_id=raw["id"],
        sku=raw.get("sku") or None,
        variant_id=variant.get("id"),
        title=_text(raw.get("title")),
        quantity=raw["quantity"],
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
        tags=tuple(node.get("tags") or ()),
        shipping_address=_address(node.get("shippingAddress")),
        lines=tuple(_line(line) for line in _edges(node.get("lineItems"))),
    )


def relay_error(exc: ShopifyError) -> AdapterError:  # noqa: PLR0911 (one return per error kind)
    """Translate a client exception into relay's error tree."""
    if isinstance(exc, ShopifyHTTPError):
        if 200 <= exc.status < 300:
            return RetriableAdapterError(
                f"HTTP {exc.status}: not a GraphQL answer", status=exc.status, body=exc.body
            )
        error = error_for_status(exc.status, exc.body, exc.headers)
        if exc.status == 429 and error.retry_after is None and exc.cost:
            error.retry_after = throttle_wait(exc.cost)
        return error
    if isinstance(exc, ShopifyThrottled):
        wait = max(exc.wait_s, parse_retry_after(exc.retry_after) or 0.0)
        return RetriableAdapterError(f"throttled: {exc}", retry_after=wait)
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


def _attempts(exc: BaseException) -> int:
    """Throttles are waited out more patiently than outages."""
    return THROTTLE_ATTEMPTS if _is_throttle(exc) else TRANSIENT_ATTEMPTS


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
        self.page_size = options.page_size
        self.lines_per_order = lines_per_order(options.page_size)

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
        self, query: str, variables: Mapping[str, Any], *, retry_transient: bool = True
    ) -> dict[str, Any]:
        """Run one document, retrying throttles (and, if asked, transient failures) in-call."""
        retryable: Callable[[BaseException], bool] = (
            (lambda e: _is_throttle(e) or _is_transient(e)) if retry_transient else _is_throttle
        )
        data: dict[str, Any] = await self._retrying(retryable)(self._api().execute, query, variables)
        return data

    def _retrying(self, retry_on: Callable[[BaseException], bool]) -> AsyncRetrying:
        """relay's one in-call retry policy, with Shopify's throttle (cost bucket) as the wait hint."""
        return in_call_retries(
            self._context.sleep,
            attempts=_attempts,
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
            try:
                connection = (await self._execute(ORDERS_QUERY, variables))["orders"]
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
        """Halve the page (then the nested line items) after a MAX_COST_EXCEEDED; False at the minimum."""
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
            variables = {"id": order_id, "first": 50, "after": page_info["endCursor"]}
            try:
                order = (await self._execute(ORDER_LINES_QUERY, variables))["order"]
            except ShopifyError as exc:
                raise relay_error(exc) from exc
            if order is None:
                raise KeyError(f"order {order_id} vanished while reading its line items")
            edges.extend(order["lineItems"]["edges"])
            page_info = order["lineItems"]["pageInfo"]
        return {"edges": edges, "pageInfo": page_info}

    async def push_shipment(self, push: ShipmentPush) -> PushReceipt:
        """Create one fulfilment with the parcel's tracking and lines, unless it already exists.

        Transient failures retry the whole check-then-create, so a lost answer to `fulfillmentCreate`
        is found by the check instead of fulfilling twice.
        """
        try:
            receipt: PushReceipt = await self._retrying(_is_transient)(self._push_once, push)
        except ShopifyError as exc:
            raise relay_error(exc) from exc
        return receipt

    async def _push_once(self, push: ShipmentPush) -> PushReceipt:
        order = (await self._execute(FULFILLMENTS_QUERY, {"id": push.order_id}, retry_transient=False))[
            "order"
        ]
        if order is None:
            raise FatalAdapterError(f"order {push.order_id} not found in Shopify")
        existing = _same_parcel(order.get("fulfillments") or [], push)
        if existing is not None:
            self._log.info("shopify_push_already_done", order_id=push.order_id, fulfillment=existing)
            return PushReceipt(reference=existing)
        order = (await self._execute(FULFILLMENT_ORDERS_QUERY, {"id": push.order_id}, retry_transient=False))[
            "order"
        ]
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
        result = (
            await self._execute(FULFILLMENT_CREATE, {"fulfillment": fulfillment}, retry_transient=False)
        )["fulfillmentCreate"]
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
