"""WooCommerce storefront adapter: REST API v3 orders in, tracking out (order note or Shipment Tracking).

Listing is keyset-paged on the modification time: each request asks for `orderby=modified&order=asc`
after the newest modification already read (less one second, since WordPress compares whole seconds).
When a whole page shares one second, that second is listed on its own by a stable key: `orderby=id`
inside the closed window `modified_after`/`modified_before` around it, by `offset`, each page overlapping
the rows read by one and stepping back while that row shows rows left the window (orders modified
meanwhile move to a later second, where the keyset finds them). Plain `page=N` paging skips a record
whenever an order read on an earlier page is modified during the scan and moves to the end; this way
cannot, whatever the listing's length.
Records read twice are dropped by (id, date_modified_gmt).
"""

from __future__ import annotations

import email.utils
import html
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, Literal, TypeVar

import aiohttp
import orjson
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState

from adapters.woocommerce.client import WooCommerceClient, WooCommerceError
from adapters.woocommerce.completions import Completions
from relay.config import Secret
from relay.contracts import AdapterContext, OrderPage
from relay.domain.models import Address, Malformed, Order, OrderLine, PushReceipt, ShipmentPush
from relay.exceptions import AdapterError, ResponseTooLarge, RetriableAdapterError, Throttled
from relay.faults import crash_point
from relay.outbound.retries import attempt_then_retry, in_call_retries
from relay.outbound.session import error_for_status

T = TypeVar("T")

ATTEMPTS = 4
MAX_IN_CALL_WAIT_S = 30.0
GROW_AFTER_S = 3600.0
"""A page shrunk for the response cap is doubled again (up to `page_size`) this long after the last
shrink: the big orders that needed it have usually been read by then."""
OPEN_SECOND_WAITS = 3
"""How often to wait a second for the store's clock to leave a second listed by id (then list anyway)."""
GMT_FORMAT = "%Y-%m-%dT%H:%M:%S"
USER_AGENT = "relay-woocommerce/0.1"

PAID_STATUSES = frozenset({"processing", "completed"})
UNPAID_STATUSES = frozenset({"pending", "on-hold", "failed", "checkout-draft"})
CANCELLED_STATUSES = frozenset({"cancelled", "refunded", "trash"})
LEAVE_ALONE_STATUSES = frozenset({"completed", "failed"}) | CANCELLED_STATUSES
ORDER_FIELDS = ",".join(
    (
        "id",
        "number",
        "status",
        "currency",
        "total",
        "date_created_gmt",
        "date_modified_gmt",
        "date_paid_gmt",
        "billing",
        "shipping",
        "line_items",
        "meta_data",
    )
)
"""Top-level fields relay maps from a listed order (`_fields`, WordPress's global parameter)."""
REMEMBERED_ORDERS = 20_000
"""Orders whose status and item names the adapter keeps from its listings (the newest listed), so a push
needs no read of the order: about 200 bytes each."""
MAPPED_ORDERS = 500
"""Orders whose last mapped version the adapter keeps with the record's JSON (the newest mapped): a record
listed again unchanged (every poll lists its cursor's second again, a sweep the last minutes) is not
mapped again. About 12 KB of memory each (the `Order` and the JSON)."""
PUSH_ORDER_FIELDS = "id,status,line_items"
"""What a push reads of an order: its status (to complete it or not) and its items' names (for a note)."""


class WooCommerceOptions(BaseModel):
    """`[storefronts.NAME]` keys for `adapter = "woocommerce"`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store_url: AnyHttpUrl
    """Site root, e.g. https://shop.example.com (the API is at {store_url}/wp-json/)."""
    consumer_key: Secret
    consumer_secret: Secret
    tracking: Literal["shipment_tracking", "note"] = "note"
    """`shipment_tracking` needs the Shipment Tracking extension; `note` works on any store."""
    page_size: int = Field(default=100, ge=1, le=100)
    notify_customer: bool = True
    """Tracking notes are customer notes (WooCommerce emails them) unless false."""
    query_string_auth: bool = False
    """Send the key as `?consumer_key=&consumer_secret=` for hosts that strip the Authorization header."""
    test_order_meta: dict[str, str] = Field(default_factory=lambda: {"_wcpay_mode": "test"})
    """Order meta (key: value) marking a test order; WooCommerce has no test flag, WooPayments sets this."""


class WooCommerceStorefront:
    """A WooCommerce store reached through its REST API with a consumer key and secret."""

    Options: ClassVar[type[WooCommerceOptions]] = WooCommerceOptions
    is_sorted: ClassVar[bool] = True

    def __init__(self, name: str, options: WooCommerceOptions, context: AdapterContext) -> None:
        self.name = name
        self._options = options
        self._context = context
        self._log = context.log.bind(adapter="woocommerce", storefront=name)
        self._session: aiohttp.ClientSession | None = None
        self._client: WooCommerceClient | None = None
        self.per_page = options.page_size
        """Orders per listing page now: halved when a page exceeds the response cap, grown back later."""
        self._shrunk_at = 0.0
        self._not_before = 0.0
        """The store (or its host) asked for no requests before this clock reading (429 Retry-After);
        the poller and the shipper share this adapter instance, so both respect it."""
        self._listed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """Order id -> `{"status", "line_items": [{"id", "name"}]}` as last listed (the poller and the
        shipper share this instance): a push's note names the items and its completion checks the status
        without reading the order. Bounded (`REMEMBERED_ORDERS`); a push for an order not in it reads it."""
        self._mapped_orders: OrderedDict[str, tuple[bytes, Order]] = OrderedDict()
        """Order id -> (the listing record as JSON, its `Order`) as last mapped: see `_map`. Bounded
        (`MAPPED_ORDERS`)."""
        self._completions = Completions(self._api)
        """Completes orders with their last parcel: those that come together, in one batch request."""

    # --- listing ----------------------------------------------------------------------------------

    async def fetch_orders(self, since: datetime | None) -> AsyncIterator[OrderPage]:
        """Yield pages of orders modified at or after `since`, oldest modification first."""
        floor = None if since is None else _whole_second(since)
        after = None if floor is None else floor - timedelta(seconds=1)
        seen: set[tuple[str, str]] = set()
        while True:
            params = {"orderby": "modified", "order": "asc", "page": "1"}
            if after is not None:
                params["modified_after"] = _gmt_param(after)
            response, per_page = await self._list(params)
            records = _records(response)
            batch = self._fresh(records, seen, floor)
            if batch:
                yield batch
            if _last_page(response.headers, 1, len(records), per_page):
                return
            newest = _newest_modification(records)
            if newest is None:
                raise RetriableAdapterError("a full listing page carries no date_modified_gmt to page by")
            if after is None or newest - timedelta(seconds=1) > after:
                after = newest - timedelta(seconds=1)
                continue
            # A whole page in one second: list that second by id, then go on after it.
            async for batch in self._one_second(newest, seen, floor):
                yield batch
            after = newest

    async def _one_second(
        self, second: datetime, seen: set[tuple[str, str]], floor: datetime | None
    ) -> AsyncIterator[list[Order | Malformed]]:
        """Every order modified in `second`, by a stable key: `orderby=id` inside the closed window
        (`modified_after` = second - 1 s, `modified_before` = second + 1 s, both exclusive).

        Once the store's clock has left that second, nothing can enter the window, and an order modified
        meanwhile leaves it (for a later second, where the keyset listing finds it): the rows only shrink,
        so a row not read yet can only shift towards the start. Paging is by `offset`, each page starting
        one row before the rows already read: a page whose first row was read already proves that no
        unread row is before it (ids ascend), and its rows are taken. Otherwise rows before it left since
        the last page: the offset steps back by as many as `X-WP-Total` shows left, and further (doubling)
        while rows keep leaving faster; offset 0 always holds. Rows read twice are dropped by id.
        """
        base = {
            "orderby": "id",
            "order": "asc",
            "modified_after": _gmt_param(second - timedelta(seconds=1)),
            "modified_before": _gmt_param(second + timedelta(seconds=1)),
        }
        position = 0  # rows of the window (as of `total`) with ids up to `last_id`, as far as known
        total: int | None = None
        last_id = -1
        back = 0  # rows to step back beyond the one-row overlap: doubles while a gap stays possible
        waits = 0
        while True:
            offset = max(0, position - 1 - back)
            response, per_page = await self._list({**base, "offset": str(offset)})
            if waits < OPEN_SECOND_WAITS and not self._has_passed(second, response.headers):
                waits += 1  # the store may still stamp orders with this second: let it pass
                await self._context.sleep(1.0)
                continue
            records = _records(response)
            now_total = _int_header(response.headers, "X-WP-Total")
            if total is not None and now_total is not None and now_total < total:
                position, total = max(0, position - (total - now_total)), now_total
            if offset > 0 and not (records and _id_of(records[0]) <= last_id):
                back = max(1, 2 * back)  # an unread row may have shifted before the page: step back
                continue
            back = 0
            fresh = [r for r in records if _id_of(r) > last_id or _id_of(r) < 0]
            batch = self._fresh(fresh, seen, floor)
            if batch:
                yield batch
            if records:
                last_id = max(last_id, *(_id_of(r) for r in records))
            position, total = offset + len(records), now_total
            if len(records) < per_page or (total is not None and position >= total):
                return

    def _fresh(
        self, records: list[Any], seen: set[tuple[str, str]], floor: datetime | None
    ) -> list[Order | Malformed]:
        """The records not yet yielded in this scan (by id and modification), mapped."""
        batch: list[Order | Malformed] = []
        for raw in records:
            key = _seen_key(raw)
            if key in seen:
                continue
            seen.add(key)
            self._remember(raw)
            item = self._map(raw)
            if floor is not None and isinstance(item, Order) and item.updated_at < floor:
                continue
            batch.append(item)
        return batch

    def _map(self, raw: Any) -> Order | Malformed:
        """`_to_record`, or the `Order` mapped from the same record before: the record serialises to the same
        JSON text (orjson: the same keys, values and types, `1` and `1.0` apart), and the mapping depends on
        nothing else (the options are frozen), so the answer is the same. A record the serialiser refuses
        (numbers read by the standard parser: `Decimal`, integers past 64 bits) is mapped every time."""
        try:
            order_id, text = str(raw["id"]), orjson.dumps(raw)
        except (KeyError, TypeError):  # not an object with an id; or orjson.JSONEncodeError (a TypeError)
            return _to_record(raw, self._options.test_order_meta)
        known = self._mapped_orders.get(order_id)
        if known is not None and known[0] == text:
            self._mapped_orders.move_to_end(order_id)
            return known[1]
        item = _to_record(raw, self._options.test_order_meta)
        if isinstance(item, Order):
            self._mapped_orders[order_id] = (text, item)
            self._mapped_orders.move_to_end(order_id)
            if len(self._mapped_orders) > MAPPED_ORDERS:
                self._mapped_orders.popitem(last=False)
        else:
            self._mapped_orders.pop(order_id, None)
        return item

    def _remember(self, raw: Any) -> None:
        """Keep a listed order's status and item names for pushes (see `_listed`)."""
        if not isinstance(raw, dict) or raw.get("id") is None:
            return
        items = raw.get("line_items")
        order_id = str(raw["id"])
        self._listed[order_id] = {
            "status": raw.get("status"),
            "line_items": [
                {"id": item.get("id"), "name": item.get("name")}
                for item in (items if isinstance(items, list) else [])
                if isinstance(item, dict)
            ],
        }
        self._listed.move_to_end(order_id)
        if len(self._listed) > REMEMBERED_ORDERS:
            self._listed.popitem(last=False)

    def _has_passed(self, second: datetime, headers: Mapping[str, str]) -> bool:
        """Whether the store's clock (its `Date` header; else relay's) is past `second`."""
        try:
            now = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
        except (KeyError, TypeError, ValueError, IndexError):
            now = self._context.clock()
        return now >= second.timestamp() + 1

    async def _list(self, params: Mapping[str, str]) -> tuple[Any, int]:
        """One listing request at the current page size (halved while the answer exceeds the response
        cap, doubled again `GROW_AFTER_S` after the last shrink). Returns the response and its `per_page`."""
        if (
            self.per_page < self._options.page_size
            and self._context.clock() - self._shrunk_at >= GROW_AFTER_S
        ):
            self.per_page = min(self._options.page_size, self.per_page * 2)
            self._shrunk_at = self._context.clock()
            self._log.info("woocommerce_page_grown", per_page=self.per_page)
        while True:
            per_page = self.per_page
            query = {
                "status": "any",
                "dates_are_gmt": "true",
                **params,
                "per_page": str(per_page),
                "_fields": ORDER_FIELDS,
            }
            try:
                response = await self._call(partial(self._api().list_orders, query))
            except ResponseTooLarge:
                if per_page <= 1:
                    raise
                self.per_page, self._shrunk_at = max(1, per_page // 2), self._context.clock()
                self._log.warning("woocommerce_page_shrunk", per_page=self.per_page, was=per_page)
                continue
            return response, per_page

    # --- tracking ---------------------------------------------------------------------------------

    async def push_shipment(self, push: ShipmentPush) -> PushReceipt:
        """Add the parcel's tracking (a Shipment Tracking item or an order note); complete the order with
        its last parcel.

        A first attempt (`push.prior_attempt_unknown` False) writes at once: one POST, plus the completion of
        the order with its last parcel (WooCommerce has no request doing both; completions that come
        together share one batch request: `Completions`). The note's item
        names and the status that decides the completion come from the order as last listed; only an order
        this process has not listed is read first (`_fields` = status and items). A retry after an
        unknown outcome reads the order afresh and looks first (the order's tracking items or notes), and
        writes only what is missing.
        Within the call, once a write was sent every in-call retry looks too, and a written parcel is not
        written again when only the completion failed.
        """
        maybe_written = False  # a write of this call may have reached the store
        reference: str | None = None

        async def attempt() -> str:
            nonlocal maybe_written, reference
            look = push.prior_attempt_unknown or maybe_written
            order = None if look else self._listed.get(push.order_id)
            if order is None and (self._options.tracking == "note" or push.order_fully_shipped):
                order = await self._order_for_push(push.order_id)
            if reference is None:
                if look:
                    reference = await self._existing_tracking(push)
                if reference is None:
                    written_before, maybe_written = maybe_written, True
                    try:
                        reference = await self._write_tracking(push, order)
                    except WooCommerceError as exc:
                        if 400 <= exc.status < 500:  # refused (a 429 too): this write did nothing
                            maybe_written = written_before
                        raise
                    crash_point("after_storefront_write")
            if push.order_fully_shipped:
                await self._complete(push.order_id, order or {})
            return reference

        try:
            return PushReceipt(reference=await self._call(attempt))
        except Throttled as exc:
            if not maybe_written:
                raise
            # The parcel may be on the order now: the next attempt must look, so this one counts.
            raise RetriableAdapterError(
                f"{exc} (after a tracking write)",
                status=exc.status,
                body=exc.body,
                retry_after=exc.retry_after,
            ) from exc

    async def _order_for_push(self, order_id: str) -> dict[str, Any]:
        """The order's status and line items (for a note's item names and the completion check)."""
        order = (await self._api().get_order(order_id, {"_fields": PUSH_ORDER_FIELDS})).data
        if not isinstance(order, dict):
            raise RetriableAdapterError("order is not a JSON object")
        return order

    async def _existing_tracking(self, push: ShipmentPush) -> str | None:
        """The parcel's tracking item (by number) or note (by `Ref: key`) already on the order, if any."""
        api = self._api()
        if self._options.tracking == "shipment_tracking":
            items = (await api.list_trackings(push.order_id)).data
            for item in items if isinstance(items, list) else []:
                if (
                    isinstance(item, dict)
                    and str(item.get("tracking_number", "")).strip() == push.tracking_number.strip()
                ):
                    self._log.info("tracking_already_present", order_id=push.order_id, push_key=push.key)
                    return f"tracking:{item.get('tracking_id')}"
            return None
        notes = (await api.list_notes(push.order_id, {"_fields": "id,note"})).data
        for note in notes if isinstance(notes, list) else []:
            if isinstance(note, dict) and push.key in str(note.get("note", "")):
                self._log.info("tracking_already_present", order_id=push.order_id, push_key=push.key)
                return f"note:{note.get('id')}"
        return None

    async def _write_tracking(self, push: ShipmentPush, order: dict[str, Any] | None) -> str:
        api = self._api()
        if self._options.tracking == "shipment_tracking":
            body = {"tracking_number": push.tracking_number, "date_shipped": self._today()}
            if push.tracking_url:
                body |= {"custom_tracking_provider": push.carrier, "custom_tracking_link": push.tracking_url}
            else:
                body["tracking_provider"] = push.carrier
            created = (await api.create_tracking(push.order_id, body)).data
            return f"tracking:{created.get('tracking_id') if isinstance(created, dict) else None}"
        customer_note = self._options.notify_customer and push.notify_customer
        note = tracking_note(push, order or {})
        created = (await api.create_note(push.order_id, note, customer_note=customer_note)).data
        return f"note:{created.get('id') if isinstance(created, dict) else None}"

    async def _complete(self, order_id: str, order: dict[str, Any]) -> None:
        """Mark the order completed, unless its status (as last listed, or read) says to leave it alone."""
        status = order.get("status")
        if status in LEAVE_ALONE_STATUSES:
            if status != "completed":
                self._log.warning("order_not_completed", order_id=order_id, status=status)
            return
        await self._completions.complete(order_id)

    def _today(self) -> str:
        return datetime.fromtimestamp(self._context.clock(), UTC).strftime("%Y-%m-%d")

    # --- plumbing ---------------------------------------------------------------------------------

    def _api(self) -> WooCommerceClient:
        if self._client is None:
            self._session = self._context.new_session(
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"}
            )
            self._client = WooCommerceClient(
                self._session,
                str(self._options.store_url),
                self._options.consumer_key.get_secret_value(),
                self._options.consumer_secret.get_secret_value(),
                query_string_auth=self._options.query_string_auth,
            )
        return self._client

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation`, retrying retriable failures in-call (bounded; Retry-After honoured).

        A `Retry-After` the store sent to either loop holds back the other too (one adapter instance serves
        the poller and the shipper): the call waits for it first, or raises `Throttled` when that is longer
        than an in-call wait.
        """
        wait = self._not_before - self._context.clock()
        if wait > MAX_IN_CALL_WAIT_S:
            raise Throttled(
                f"the store asked for no requests for {wait:.0f} s (Retry-After)", retry_after=wait
            )
        if wait > 0:
            await self._context.sleep(wait)
        result = await attempt_then_retry(partial(self._mapped, operation), self._retrying)
        self._not_before = 0.0
        return result

    def _retrying(self) -> AsyncRetrying:
        """relay's one in-call retry policy, with this adapter's attempts and retry log."""
        return in_call_retries(
            self._context.sleep,
            attempts=ATTEMPTS,
            max_wait_s=MAX_IN_CALL_WAIT_S,
            before_sleep=self._log_retry,
        )

    async def _mapped(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Translate client and transport failures into relay's error tree."""
        try:
            return await operation()
        except WooCommerceError as exc:
            error = _adapter_error(exc)
            if isinstance(error, Throttled) and error.retry_after is not None:
                self._not_before = max(self._not_before, self._context.clock() + error.retry_after)
            raise error from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            # aiohttp messages may quote the URL, which holds the secret under query_string_auth.
            message = str(exc).replace(self._options.consumer_secret.get_secret_value(), "***")
            raise RetriableAdapterError(f"{type(exc).__name__}: {message}") from None

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self._log.warning("woocommerce_retry", attempt=state.attempt_number, error=str(exc))

    async def aclose(self) -> None:
        """Stop the completions, close the HTTP session (idempotent)."""
        await self._completions.aclose()
        session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()


def tracking_note(push: ShipmentPush, order: dict[str, Any]) -> str:
    """The order note for one parcel: carrier, tracking, the parcel's items, and the push key as `Ref:`."""
    names = {
        str(item.get("id")): html.unescape(_text(item.get("name")))
        for item in order.get("line_items") or []
        if isinstance(item, dict)
    }
    lines = [f"Shipped via {push.carrier}", f"Tracking number: {push.tracking_number}"]
    if push.tracking_url:
        lines.append(f"Track your parcel: {push.tracking_url}")
    lines.append("Items:")
    lines += [
        f"- {line.quantity} x {names.get(line.line_id) or 'item'} (item #{line.line_id})"
        for line in push.lines
    ]
    lines.append(f"Ref: {push.key}")
    return "\n".join(lines)


# --- errors ---------------------------------------------------------------------------------------


def _adapter_error(exc: WooCommerceError) -> AdapterError:
    if 200 <= exc.status < 300:
        return RetriableAdapterError(f"HTTP {exc.status}: body is not JSON", status=exc.status, body=exc.body)
    err = error_for_status(exc.status, exc.body, exc.headers)
    if exc.status == 429 and err.retry_after is not None:
        # The host's rate limit with its schedule: not a failed attempt (the shipper waits for it).
        return Throttled(f"{err}: throttled", status=429, body=err.body, retry_after=err.retry_after)
    detail = f" ({exc.code}: {exc.message})" if exc.code else ""
    if exc.code == "rest_no_route":
        detail += '; check store_url and pretty permalinks, and for tracking = "shipment_tracking" that the '
        detail += "Shipment Tracking extension is active"
    return type(err)(f"{err}{detail}", status=err.status, body=err.body, retry_after=err.retry_after)


# --- paging helpers -------------------------------------------------------------------------------


def _whole_second(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def _last_page(headers: Mapping[str, str], page: int, count: int, page_size: int) -> bool:
    if count == 0:
        return True
    try:
        total_pages = int(headers["X-WP-TotalPages"])
    except (KeyError, ValueError):
        return count < page_size
    return page >= total_pages


def _gmt_param(value: datetime) -> str:
    return value.astimezone(UTC).strftime(GMT_FORMAT)


def _records(response: Any) -> list[Any]:
    records = response.data
    if not isinstance(records, list):
        raise RetriableAdapterError("order listing is not a JSON array")
    return records


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _id_of(raw: Any) -> int:
    """A listing record's numeric id (-1 when it has none)."""
    try:
        return int(raw["id"])
    except (KeyError, TypeError, ValueError):
        return -1


def _seen_key(raw: Any) -> tuple[str, str]:
    if isinstance(raw, dict):
        return str(raw.get("id")), str(raw.get("date_modified_gmt"))
    return "", repr(raw)


def _newest_modification(records: list[Any]) -> datetime | None:
    newest = None
    for raw in records:
        try:
            stamp = _gmt(raw["date_modified_gmt"])
        except (KeyError, TypeError, ValueError):
            continue
        newest = stamp if newest is None else max(newest, stamp)
    return newest


# --- mapping --------------------------------------------------------------------------------------


MAPPING_ERRORS = (KeyError, TypeError, ValueError, ArithmeticError, AttributeError)
"""What a record that does not map raises (pydantic's `ValidationError` is a `ValueError`)."""


def _to_record(raw: Any, test_meta: Mapping[str, str]) -> Order | Malformed:
    """One listing record as an `Order`, or `Malformed` when it does not map."""
    try:
        return _to_order(raw, test_meta)
    except MAPPING_ERRORS as exc:
        external_id = str(raw["id"]) if isinstance(raw, dict) and raw.get("id") is not None else None
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        return Malformed(external_id=external_id, reason=reason, raw=_jsonable(raw))


def _to_order(raw: dict[str, Any], test_meta: Mapping[str, str]) -> Order:
    """The record's `Order`, validated in one pass (pydantic-core, models nested as dicts).

    A record that fails is built again model by model (the address, each line in turn, the order), the way
    it was first written, so it fails with the same error as ever: the first failing model's, or the first
    field read that fails, whichever comes first in that order.
    """
    status = str(raw.get("status") or "")
    if status in PAID_STATUSES:
        paid = True
    elif status in UNPAID_STATUSES:
        paid = False
    else:
        paid = raw.get("date_paid_gmt") is not None
    billing = raw.get("billing") or {}
    created = _gmt(raw["date_created_gmt"])
    order: dict[str, Any] = {
        "external_id": str(raw["id"]),
        "number": _text(raw.get("number")) or str(raw["id"]),
        "created_at": created,
        "updated_at": _gmt(raw["date_modified_gmt"]) if raw.get("date_modified_gmt") else created,
        "currency": raw["currency"],
        "total": None if raw.get("total") is None else _decimal(raw["total"]),
        "email": _text(billing.get("email")),
        "paid": paid,
        "test": any(
            isinstance(meta, dict) and test_meta.get(str(meta.get("key"))) == meta.get("value")
            for meta in raw.get("meta_data") or []
        ),
        "cancelled": status in CANCELLED_STATUSES,
        "fulfilled": status == "completed",
    }
    address = _address(raw.get("shipping") or {}, billing)
    lines: list[dict[str, Any]] = []
    try:
        for item in raw["line_items"]:
            lines.append(_line(item))
    except MAPPING_ERRORS:
        _models(address, lines)  # built one by one, the address or an earlier line failed first: its error
        raise
    order["shipping_address"], order["lines"] = address, lines
    try:
        # `Order.model_validate` without its wrapper: the order, its address and its lines in one call.
        validated: Order = Order.__pydantic_validator__.validate_python(order)
    except ValidationError:
        order["shipping_address"], order["lines"] = _models(address, lines)
        return Order(**order)
    return validated


def _models(address: dict[str, str], lines: list[dict[str, Any]]) -> tuple[Address, tuple[OrderLine, ...]]:
    """The address and lines built model by model, in the order the mapping reads them."""
    return Address(**address), tuple(OrderLine(**line) for line in lines)


def _address(shipping: dict[str, Any], billing: dict[str, Any]) -> dict[str, str]:
    """`Address` fields."""
    name = " ".join(p for p in (_text(shipping.get("first_name")), _text(shipping.get("last_name"))) if p)
    return {
        "name": name,
        "company": _text(shipping.get("company")),
        "line1": _text(shipping.get("address_1")),
        "line2": _text(shipping.get("address_2")),
        "city": _text(shipping.get("city")),
        "region": _text(shipping.get("state")),
        "postal_code": _text(shipping.get("postcode")),
        "country_code": _text(shipping.get("country")),
        "phone": _text(shipping.get("phone")) or _text(billing.get("phone")),
    }


def _line(item: dict[str, Any]) -> dict[str, Any]:
    """`OrderLine` fields."""
    quantity = item["quantity"]
    price = item.get("price")
    unit_price = _decimal(price) if price is not None else _decimal(item["subtotal"]) / Decimal(quantity)
    variant = item.get("variation_id") or item.get("product_id")
    properties = {
        meta["key"]: meta["value"]
        for meta in item.get("meta_data") or []
        if isinstance(meta, dict)
        and isinstance(meta.get("key"), str)
        and not meta["key"].startswith("_")
        and isinstance(meta.get("value"), str)
    }
    return {
        "line_id": str(item["id"]),
        "sku": _text(item.get("sku")) or None,
        "variant_id": str(variant) if variant else None,
        "title": html.unescape(_text(item.get("name"))),
        "quantity": quantity,
        "unit_price": unit_price,
        "properties": properties,
    }


def _gmt(value: Any) -> datetime:
    """A WooCommerce `*_gmt` timestamp (naive, in GMT) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:  # `parsed.replace(tzinfo=UTC)`, which costs four times this on Python 3.11
        return datetime.combine(parsed.date(), parsed.time(), UTC)
    return parsed.astimezone(UTC)


def _decimal(value: Any) -> Decimal:
    """Money from WooCommerce JSON: strings ("29.35") or numbers as the client parsed them (int, Decimal,
    or a float that holds the number sent exactly: `repr` gives it back; see `adapters.woocommerce.client`)."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"not an amount: {value!r}")
    if isinstance(value, float):
        if 0 < abs(value) < sys.float_info.min:  # subnormal: the float may have lost digits
            raise ValueError(f"not an amount: {value!r}")
        value = repr(value)
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return amount


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _jsonable(value: Any) -> Any:
    """A copy safe for JSON (Decimals from the parser become numbers again) for the quarantine."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
