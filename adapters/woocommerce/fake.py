"""FakeWooCommerce: an in-process WooCommerce REST API v3 (+ Shipment Tracking extension) for tests and demos.

Implements `relay.testing.vendor.FakeStorefront`. What it emulates, from the public docs and plugin code:

* `GET /wp-json/wc/v3/orders` with `page`, `offset` (overrides `page`), `per_page` (1..100, else 400
  `rest_invalid_param`), `orderby`
  (date, id, include, title, slug, modified), `order`, `status` (`any` = all but trash), `after`/`before`,
  `modified_after`/`modified_before` (exclusive, whole seconds; naive values are site-local time unless
  `dates_are_gmt=true`; the fake site runs at UTC+1 so a missing flag shows), `X-WP-Total`,
  `X-WP-TotalPages` and `Link` (prev/next) headers.
* `POST|PUT|PATCH /wp-json/wc/v3/orders/batch` (`WC_REST_Controller::batch_items`), for `update` only: at
  most 100 items in all (`create` + `update` + `delete`; else 413 `woocommerce_rest_request_entity_too_large`),
  each applied as `PUT orders/{id}`; the answer is `{"update": [...]}` in request order, the order or
  `{"id", "error": {"code", "message", "data"}}` per item. `create` and `delete` items get
  `{"id", "error"}` items saying the fake does not emulate them. Built with `batch=False`, the route
  answers 404 `rest_no_route`, as on a store whose REST routes a plugin trimmed.
* `GET|PUT|POST|PATCH /wp-json/wc/v3/orders/{id}`, `GET|POST /wp-json/wc/v3/orders/{id}/notes` (status
  changes add system notes, as WooCommerce does). Every save of the order (an update, a status change,
  a Shipment Tracking item, which is order meta) stamps `date_modified`, so the order moves to the end
  of a listing sorted by modification, as on a real store; adding a note does not touch the order.
* `GET|POST /wp-json/wc-shipment-tracking/v3/orders/{id}/shipment-trackings` (201 + `Location`), unless
  built with `shipment_tracking=False`: then those routes answer 404 `rest_no_route`.
* WordPress's global `_fields` parameter (comma-separated or `_fields[]=`) on every route: a successful
  answer keeps only those top-level fields (of each item, for a collection); errors are not filtered.
  Dotted sub-field paths (`billing.email`, WordPress 5.3+) are not emulated: they keep nothing.
* Consumer key/secret by HTTP Basic auth or `consumer_key`/`consumer_secret` query parameters; an unknown
  or missing key gets WooCommerce's 401 `woocommerce_rest_cannot_*`, a wrong secret 401
  `woocommerce_rest_authentication_error`.

A fulfilment is a Shipment Tracking item, or an order note with a `Tracking number: X` line (and
`Shipped via CARRIER`, and `- QTY x NAME (item #LINE_ID)` lines), which is what the adapter writes.
Tracking items say nothing about lines, so their recorded fulfilments carry no line ids. Seeded orders
are paid with WooPayments; `test=True` orders carry its `_wcpay_mode: test` meta.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web

from relay.testing.vendor import RecordedFulfilment, SeedLine

FIXTURES = Path(__file__).with_name("fixtures")
SITE_TZ = timezone(timedelta(hours=1))
LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S"
ORDER_STATUSES = (
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
    "trash",
    "checkout-draft",
)
STATUS_LABELS = {
    "pending": "Pending payment",
    "processing": "Processing",
    "on-hold": "On hold",
    "completed": "Completed",
    "cancelled": "Cancelled",
    "refunded": "Refunded",
    "failed": "Failed",
    "trash": "Trash",
    "checkout-draft": "Draft",
}
ORDERBY = ("date", "id", "include", "title", "slug", "modified")
DATE_PARAM = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}(:?\d{2})?)?$")
NGINX_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
CRITICAL_ERROR = {
    "code": "internal_server_error",
    "message": '<p>There has been a critical error on this website.</p><p><a href="https://wordpress.org/'
    'documentation/article/faq-troubleshooting/">Learn more about troubleshooting WordPress.</a></p>',
    "data": {"status": 500},
    "additional_errors": [],
}
INVALID_ID = ("woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
NO_ROUTE = ("rest_no_route", "No route was found matching the URL and request method.")
TRACKINGS = r"/wp-json/wc-shipment-tracking/v3/orders/(\d+)/shipment-trackings"
BATCH_LIMIT = 100
"""`woocommerce_rest_batch_items_limit`'s default: items per batch request, create + update + delete."""
ROUTES = (
    (r"/wp-json/wc/v3/orders", ("GET",), "_list_orders"),
    (r"/wp-json/wc/v3/orders/batch", ("POST", "PUT", "PATCH"), "_batch_orders"),
    (r"/wp-json/wc/v3/orders/(\d+)", ("GET",), "_get_order"),
    (r"/wp-json/wc/v3/orders/(\d+)", ("PUT", "POST", "PATCH"), "_update_order"),
    (r"/wp-json/wc/v3/orders/(\d+)/notes", ("GET",), "_list_notes"),
    (r"/wp-json/wc/v3/orders/(\d+)/notes", ("POST",), "_create_note"),
    (TRACKINGS, ("GET",), "_list_trackings"),
    (TRACKINGS, ("POST",), "_create_tracking"),
)
"""(path pattern, methods, handler method name): the emulated routes; anything else is `rest_no_route`."""


def load_fixture(name: str) -> Any:
    """A JSON fixture from `adapters/woocommerce/fixtures/`."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class WooError(Exception):
    """An error answered in WordPress's `{"code", "message", "data": {"status"}}` shape."""

    def __init__(self, status: int, code: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.data = status, code, message, data

    def response(self) -> web.Response:
        body = {"code": self.code, "message": self.message, "data": {"status": self.status, **self.data}}
        return _json(body, status=self.status)


@dataclass
class _Order:
    doc: dict[str, Any]
    created: float
    modified: float
    paid_at: float | None = None
    completed_at: float | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)
    trackings: list[dict[str, Any]] = field(default_factory=list)
    fulfilments: list[RecordedFulfilment] = field(default_factory=list)


class FakeWooCommerce:
    """A running fake WooCommerce store. Construct, `await start()`, use, `await close()`."""

    adapter = "woocommerce"

    def __init__(
        self,
        *,
        page_size: int = 10,
        tracking: str = "note",
        shipment_tracking: bool = True,
        batch: bool = True,
        consumer_key: str = "ck_4f1c2b7a9e8d3c6b5a4f3e2d1c0b9a8f7e6d5c4b",
        consumer_secret: str = "cs_9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b",  # noqa: S107 (a fake's key)
        meta_padding: int = 0,
    ) -> None:
        self.page_size = page_size
        self.tracking = tracking
        self.shipment_tracking = shipment_tracking
        self.batch = batch
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.meta_padding = meta_padding
        """Bytes of plugin meta (`_plugin_cache`) on every rendered order: real orders often carry
        10-20 KB, so a page of 100 can exceed relay's response cap."""
        self.url = ""
        self._template = load_fixture("order.json")
        self._orders: dict[int, _Order] = {}
        self._ids = iter(range(1001, 10**9))
        self._item_ids = iter(range(5001, 10**9))
        self._requests: list[tuple[str, str]] = []
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        """(method, path, query) of every request, for tests that check parameters."""
        self._faults: deque[tuple[int, float | None]] = deque()
        self._hangs = 0
        self._rejected: int | None = None
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._gate])
        app.router.add_route("*", "/{tail:.*}", self._route)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def adapter_options(self) -> dict[str, Any]:
        return {
            "store_url": self.url,
            "consumer_key": self.consumer_key,
            "consumer_secret": self.consumer_secret,
            "tracking": self.tracking,
            "page_size": self.page_size,
        }

    # --- seeding and inspection (FakeStorefront) --------------------------------------------------

    def add_order(
        self,
        lines: list[SeedLine],
        *,
        paid: bool = True,
        test: bool = False,
        currency: str = "USD",
        updated_at: float | None = None,
    ) -> str:
        """Create an order; `test` marks it as a WooPayments test-mode order. Return its id."""
        order_id = next(self._ids)
        now = time.time() if updated_at is None else updated_at
        doc = copy.deepcopy(self._template)
        items = [self._line_item(line) for line in lines]
        total = sum((Decimal(item["total"]) for item in items), Decimal("0"))
        doc.update(
            id=order_id,
            number=str(order_id),
            order_key=f"wc_order_{hashlib.md5(str(order_id).encode()).hexdigest()[:13]}",  # noqa: S324
            status="processing" if paid else "pending",
            currency=currency,
            total=f"{total:.2f}",
            shipping_total="0.00",
            shipping_lines=[],
            line_items=items,
            payment_method="woocommerce_payments",
            payment_method_title="Credit card / debit card",
            meta_data=[
                {"id": next(self._item_ids), "key": "_wcpay_mode", "value": "test" if test else "prod"}
            ],
            needs_payment=not paid,
            transaction_id=doc["transaction_id"] if paid else "",
        )
        self._orders[order_id] = _Order(doc, created=now, modified=now, paid_at=now if paid else None)
        return str(order_id)

    def add_document(self, doc: dict[str, Any]) -> str:
        """Store an order document as given (e.g. a fixture); its `*_gmt` dates set the timestamps."""
        doc = copy.deepcopy(doc)
        stamps = {
            name: None
            if doc.get(f"{name}_gmt") is None
            else datetime.fromisoformat(doc[f"{name}_gmt"]).replace(tzinfo=UTC).timestamp()
            for name in ("date_created", "date_modified", "date_paid", "date_completed")
        }
        created = stamps["date_created"] or time.time()
        self._orders[int(doc["id"])] = _Order(
            doc,
            created=created,
            modified=stamps["date_modified"] or created,
            paid_at=stamps["date_paid"],
            completed_at=stamps["date_completed"],
        )
        return str(doc["id"])

    def add_malformed_order(self) -> str:
        """An order whose only line item has no `quantity`."""
        order_id = self.add_order([SeedLine(sku="BROKEN-1")])
        del self._orders[int(order_id)].doc["line_items"][0]["quantity"]
        return order_id

    def line_ids(self, order_id: str) -> list[str]:
        return [str(item["id"]) for item in self._order(order_id).doc["line_items"]]

    def touch(self, order_id: str, *, updated_at: float | None = None) -> None:
        self._order(order_id).modified = time.time() if updated_at is None else updated_at

    def mark_paid(self, order_id: str) -> None:
        order = self._order(order_id)
        order.paid_at = time.time()
        order.doc["needs_payment"] = False
        self._set_status(order, "processing")

    def cancel(self, order_id: str) -> None:
        self._set_status(self._order(order_id), "cancelled")

    def edit_line(self, order_id: str, index: int, quantity: int) -> None:
        """Edit the order in the admin as a shop manager does: the line's `quantity` and its totals change,
        the order total follows, and saving stamps `date_modified` (whole seconds in the API, so an edit can
        share its second with the previous change)."""
        order = self._order(order_id)
        item = order.doc["line_items"][index]
        unit = Decimal(item["subtotal"]) / item["quantity"]
        item["quantity"] = quantity
        item["subtotal"] = item["total"] = f"{unit * quantity:.2f}"
        order.doc["total"] = f"{sum(Decimal(i['total']) for i in order.doc['line_items']):.2f}"
        order.modified = time.time()

    def set_status(self, order_id: str, status: str) -> None:
        """Move the order to any WooCommerce status, as the shop admin would."""
        self._set_status(self._order(order_id), status)

    def fulfilments(self, order_id: str) -> list[RecordedFulfilment]:
        return list(self._order(order_id).fulfilments)

    def notes(self, order_id: str) -> list[dict[str, Any]]:
        """Every note on the order, oldest first."""
        return copy.deepcopy(self._order(order_id).notes)

    def trackings(self, order_id: str) -> list[dict[str, Any]]:
        """Shipment Tracking items on the order, oldest first."""
        return copy.deepcopy(self._order(order_id).trackings)

    def status(self, order_id: str) -> str:
        return str(self._order(order_id).doc["status"])

    def fail_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        """The next `times` requests get `status` (429 and 502-504 as the host's nginx page)."""
        self._faults.extend([(status, retry_after)] * times)

    def hang_next(self, *, times: int = 1) -> None:
        self._hangs += times

    def reject_credentials(self, status: int = 401) -> None:
        self._rejected = status

    @property
    def requests(self) -> list[tuple[str, str]]:
        return list(self._requests)

    # --- HTTP -------------------------------------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Record, inject faults, authenticate, and turn `WooError` into WordPress's error shape."""
        self._requests.append((request.method, request.path))
        self.calls.append((request.method, request.path, dict(request.query)))
        if self._faults:
            return self._fault(*self._faults.popleft())
        if self._hangs:
            self._hangs -= 1
            await self._closing.wait()
            return web.Response(status=504)
        try:
            if self._rejected is not None:
                raise _permission_error(request, self._rejected)
            self._authenticate(request)
            response: web.StreamResponse = await handler(request)
        except WooError as exc:
            return exc.response()
        fields = _fields_param(request.query)
        if fields is not None and isinstance(response, web.Response) and response.text is not None:
            # WordPress's `_fields` (rest_filter_response_fields): every successful answer, each item of a
            # collection, keeps only the named top-level fields; errors are left whole.
            answer = response[_BODY] if _BODY in response else json.loads(response.text)
            body = _only_fields(answer, fields)
            return _json(body, status=response.status, headers=_kept_headers(response))
        return response

    def _fault(self, status: int, retry_after: float | None) -> web.Response:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        if status == 429 or 502 <= status <= 504:
            page = NGINX_PAGE.format(code=status, reason=_reason(status))
            return web.Response(status=status, text=page, content_type="text/html", headers=headers)
        if status == 500:
            return _json(CRITICAL_ERROR, status=500, headers=headers)
        body = {"code": "rest_error", "message": _reason(status), "data": {"status": status}}
        return _json(body, status=status, headers=headers)

    def _authenticate(self, request: web.Request) -> None:
        key, secret = request.query.get("consumer_key"), request.query.get("consumer_secret")
        if not (key and secret):
            key, secret = _basic_credentials(request.headers.get("Authorization", ""))
        if key != self.consumer_key:
            raise _permission_error(request, 401)
        if secret != self.consumer_secret:
            raise WooError(401, "woocommerce_rest_authentication_error", "Consumer secret is invalid.")

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        for pattern, methods, handler in ROUTES:
            if request.method in methods and (match := re.fullmatch(pattern, path)):
                if (pattern == TRACKINGS and not self.shipment_tracking) or (
                    handler == "_batch_orders" and not self.batch
                ):
                    break
                response: web.StreamResponse = await getattr(self, handler)(request, *match.groups())
                return response
        raise WooError(404, *NO_ROUTE)

    # --- orders -----------------------------------------------------------------------------------

    async def _list_orders(self, request: web.Request) -> web.Response:
        q = request.query
        per_page = _int_param(q, "per_page", 10, 1, 100)
        page = _int_param(q, "page", 1, 1, None)
        offset = _int_param(q, "offset", -1, 0, None) if "offset" in q else None
        order = _enum_param(q, "order", "desc", ("asc", "desc"))
        orderby = _enum_param(q, "orderby", "date", ORDERBY)
        statuses = {s for s in q.get("status", "any").split(",") if s}
        if statuses - {"any", *ORDER_STATUSES}:
            raise _invalid_param("status", f"status[0] is not one of any, {', '.join(ORDER_STATUSES)}.")
        gmt = q.get("dates_are_gmt", "false").lower() in ("1", "true")
        bounds = {
            name: _date_param(q, name, gmt)
            for name in ("after", "before", "modified_after", "modified_before")
        }

        def wanted(o: _Order) -> bool:
            status = o.doc["status"]
            if ("any" in statuses and status != "trash") or status in statuses:
                return _within(o.created, bounds["after"], bounds["before"]) and _within(
                    o.modified, bounds["modified_after"], bounds["modified_before"]
                )
            return False

        def sort_key(o: _Order) -> tuple[Any, int]:
            value = {"date": math.floor(o.created), "modified": math.floor(o.modified)}.get(
                orderby, o.doc["id"]
            )
            return value, o.doc["id"]

        found = sorted((o for o in self._orders.values() if wanted(o)), key=sort_key, reverse=order == "desc")
        total_pages = math.ceil(len(found) / per_page)
        start = (page - 1) * per_page if offset is None else offset  # WP_Query: offset overrides page
        chunk = found[start : start + per_page]
        headers = {"X-WP-Total": str(len(found)), "X-WP-TotalPages": str(total_pages)}
        links = []
        if page > 1:
            links.append(f'<{request.url.update_query(page=min(page - 1, max(total_pages, 1)))}>; rel="prev"')
        if total_pages > page:
            links.append(f'<{request.url.update_query(page=page + 1)}>; rel="next"')
        if links:
            headers["Link"] = ", ".join(links)
        return _json([self._render(o) for o in chunk], headers=headers)

    async def _get_order(self, request: web.Request, order_id: str) -> web.Response:
        return _json(self._render(self._existing(order_id, 404)))

    async def _update_order(self, request: web.Request, order_id: str) -> web.Response:
        return _json(self._update(order_id, await _body(request)))

    def _update(self, order_id: str, body: dict[str, Any]) -> dict[str, Any]:
        order = self._existing(order_id, 400)
        if "status" in body:
            if body["status"] not in ORDER_STATUSES:
                raise _invalid_param("status", f"status is not one of {', '.join(ORDER_STATUSES)}.")
            self._set_status(order, body["status"])
        order.modified = time.time()  # every save stamps date_modified, even with nothing changed
        return self._render(order)

    async def _batch_orders(self, request: web.Request) -> web.Response:
        body = await _body(request)
        groups = {name: body.get(name) or [] for name in ("create", "update", "delete")}
        if any(not isinstance(items, list) for items in groups.values()):
            raise _invalid_param("update", "update is not of type array.")
        if sum(len(items) for items in groups.values()) > BATCH_LIMIT:
            raise WooError(
                413,
                "woocommerce_rest_request_entity_too_large",
                f"Unable to accept more than {BATCH_LIMIT} items for this request.",
            )
        answer: dict[str, list[Any]] = {}
        for name, items in groups.items():
            for item in items:
                item_id = item.get("id") if isinstance(item, dict) else item
                try:
                    if name != "update":
                        raise WooError(400, "fake_not_emulated", f"The fake does not emulate batch {name}.")
                    if not isinstance(item, dict):
                        raise WooError(400, *INVALID_ID)
                    answer.setdefault(name, []).append(self._update(str(int(str(item_id))), item))
                except (WooError, TypeError, ValueError) as exc:
                    error = exc if isinstance(exc, WooError) else WooError(400, *INVALID_ID)
                    answer.setdefault(name, []).append(
                        {
                            "id": item_id,
                            "error": {
                                "code": error.code,
                                "message": error.message,
                                "data": {"status": error.status, **error.data},
                            },
                        }
                    )
        return _json(answer)

    def _set_status(self, order: _Order, status: str) -> None:
        old = order.doc["status"]
        if old == status:
            return
        order.doc["status"] = status
        order.modified = time.time()
        if status == "completed":
            order.completed_at = order.modified
        self._add_note(order, f"Order status changed from {STATUS_LABELS[old]} to {STATUS_LABELS[status]}.")

    # --- notes ------------------------------------------------------------------------------------

    async def _list_notes(self, request: web.Request, order_id: str) -> web.Response:
        order = self._existing(
            order_id, 404, code="woocommerce_rest_order_invalid_id", message="Invalid order ID."
        )
        kind = _enum_param(request.query, "type", "any", ("any", "customer", "internal"))
        notes = [
            n for n in reversed(order.notes) if kind == "any" or n["customer_note"] == (kind == "customer")
        ]
        return _json(notes)

    async def _create_note(self, request: web.Request, order_id: str) -> web.Response:
        order = self._existing(
            order_id, 404, code="woocommerce_rest_order_invalid_id", message="Invalid order ID."
        )
        body = await _body(request)
        if not isinstance(body.get("note"), str) or not body["note"]:
            raise WooError(400, "woocommerce_rest_invalid_order_note", "Order note is required.")
        note = self._add_note(order, body["note"], customer=bool(body.get("customer_note")), author="API")
        if found := re.search(r"^Tracking number: *(\S+)", note["note"], re.MULTILINE):
            carrier = re.search(r"^Shipped via *(.+)$", note["note"], re.MULTILINE)
            items = re.findall(r"^- (\d+) x .*\(item #(\d+)\)$", note["note"], re.MULTILINE)
            self._record(order, carrier[1].strip() if carrier else "", found[1], items)
        return _json(note, status=201)

    def _add_note(
        self, order: _Order, text: str, *, customer: bool = False, author: str = "system"
    ) -> dict[str, Any]:
        note_id = next(self._item_ids)
        now = time.time()
        base = f"{self.url}/wp-json/wc/v3/orders/{order.doc['id']}/notes"
        note = {
            "id": note_id,
            "author": author,
            "date_created": _local(now),
            "date_created_gmt": _gmt(now),
            "note": text,
            "customer_note": customer,
            "_links": {
                "self": [{"href": f"{base}/{note_id}"}],
                "collection": [{"href": base}],
                "up": [{"href": f"{self.url}/wp-json/wc/v3/orders/{order.doc['id']}"}],
            },
        }
        order.notes.append(note)
        return note

    # --- Shipment Tracking extension --------------------------------------------------------------

    async def _list_trackings(self, request: web.Request, order_id: str) -> web.Response:
        order = self._existing(
            order_id, 404, code="woocommerce_rest_order_invalid_id", message="Invalid order ID."
        )
        return _json(copy.deepcopy(order.trackings))

    async def _create_tracking(self, request: web.Request, order_id: str) -> web.Response:
        order = self._existing(
            order_id, 404, code="woocommerce_rest_order_invalid_id", message="Invalid order ID."
        )
        body = await _body(request)
        number = str(body.get("tracking_number") or "").strip()
        if not number:
            raise WooError(
                400,
                "rest_missing_callback_param",
                "Missing parameter(s): tracking_number",
                params=["tracking_number"],
            )
        custom = str(body.get("custom_tracking_provider") or "").strip()
        provider = custom or str(body.get("tracking_provider") or "").strip()
        link = str(body.get("custom_tracking_link") or "").replace("%1$s", number) if custom else ""
        tracking_id = hashlib.md5(f"{order_id}-{number}-{next(self._item_ids)}".encode()).hexdigest()  # noqa: S324
        base = f"{self.url}/wp-json/wc-shipment-tracking/v3/orders/{order_id}/shipment-trackings"
        item = {
            "tracking_id": tracking_id,
            "tracking_provider": provider,
            "tracking_link": link,
            "tracking_number": number,
            "date_shipped": str(body.get("date_shipped") or datetime.now(UTC).strftime("%Y-%m-%d")),
            "_links": {
                "self": [{"href": f"{base}/{tracking_id}"}],
                "collection": [{"href": base}],
                "up": [{"href": f"{self.url}/wp-json/wc-shipment-tracking/v3/orders/{order_id}"}],
            },
        }
        order.trackings.append(item)
        order.modified = time.time()  # the tracking items are order meta: saving them stamps the order
        self._record(order, provider, number, [])
        return _json(item, status=201, headers={"Location": f"{base}/{tracking_id}"})

    # --- helpers ----------------------------------------------------------------------------------

    def _record(
        self, order: _Order, carrier: str, tracking_number: str, items: list[tuple[str, str]]
    ) -> None:
        line_ids = tuple(line_id for _, line_id in items)
        quantities = tuple(int(quantity) for quantity, _ in items)
        order.fulfilments.append(
            RecordedFulfilment(str(order.doc["id"]), carrier, tracking_number, line_ids, quantities)
        )

    def _order(self, order_id: str) -> _Order:
        return self._orders[int(order_id)]

    def _existing(
        self,
        order_id: str,
        status: int,
        *,
        code: str = "woocommerce_rest_shop_order_invalid_id",
        message: str = "Invalid ID.",
    ) -> _Order:
        order = self._orders.get(int(order_id))
        if order is None:
            raise WooError(status, code, message)
        return order

    def _line_item(self, line: SeedLine) -> dict[str, Any]:
        item_id = next(self._item_ids)
        line_total = f"{line.unit_price * line.quantity:.2f}"
        return {
            "id": item_id,
            "name": f"Product {line.sku or item_id}",
            "product_id": 100 + item_id,
            "variation_id": 0,
            "quantity": line.quantity,
            "tax_class": "",
            "subtotal": line_total,
            "subtotal_tax": "0.00",
            "total": line_total,
            "total_tax": "0.00",
            "taxes": [],
            "meta_data": [
                {"id": next(self._item_ids), "key": k, "value": v, "display_key": k, "display_value": v}
                for k, v in line.properties.items()
            ],
            "sku": line.sku or "",
            "price": _json_number(line.unit_price),
            "image": {"id": "", "src": ""},
            "parent_name": None,
        }

    def _render(self, order: _Order) -> dict[str, Any]:
        """The order as an answer carries it. A shallow copy: only top-level keys are set here, and an
        answer is serialised, never changed, so the stored document's nested values can be shared."""
        doc = dict(order.doc)
        for name, stamp in (
            ("date_created", order.created),
            ("date_modified", order.modified),
            ("date_paid", order.paid_at),
            ("date_completed", order.completed_at),
        ):
            doc[name] = None if stamp is None else _local(stamp)
            doc[f"{name}_gmt"] = None if stamp is None else _gmt(stamp)
        if self.meta_padding:
            doc["meta_data"] = [
                *doc.get("meta_data", []),
                {"id": 1, "key": "_plugin_cache", "value": "x" * self.meta_padding},
            ]
        doc["_links"] = {
            "self": [{"href": f"{self.url}/wp-json/wc/v3/orders/{doc['id']}"}],
            "collection": [{"href": f"{self.url}/wp-json/wc/v3/orders"}],
        }
        return doc


# --- module helpers -------------------------------------------------------------------------------


_BODY = "relay.fake.body"
"""Where `_json` keeps the value it serialised on its response, for `_fields` to filter without parsing it."""


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        charset="UTF-8",
        headers=headers,
    )
    response[_BODY] = body
    return response


def _json_number(amount: Decimal) -> float | int:
    """WooCommerce renders `price` as a JSON number (PHP float or int)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _fields_param(query: Any) -> list[str] | None:
    """The requested `_fields` (comma-separated, or repeated as `_fields[]`), or None when absent."""
    raw = [*query.getall("_fields", []), *query.getall("_fields[]", [])]
    if not raw:
        return None
    return [name.strip() for value in raw for name in value.split(",") if name.strip()]


def _only_fields(body: Any, fields: list[str]) -> Any:
    if isinstance(body, list):
        return [_only_fields(item, fields) for item in body]
    if isinstance(body, dict):
        return {name: value for name, value in body.items() if name in fields}
    return body


def _kept_headers(response: web.Response) -> dict[str, str]:
    """A filtered answer's own headers (paging, Location), without those `_json` sets again."""
    dropped = {"content-type", "content-length"}
    return {k: v for k, v in response.headers.items() if k.lower() not in dropped}


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _gmt(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime(LOCAL_FORMAT)


def _local(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, SITE_TZ).strftime(LOCAL_FORMAT)


def _within(stamp: float, after: float | None, before: float | None) -> bool:
    """WordPress date queries are exclusive and compare whole seconds."""
    second = math.floor(stamp)
    return (after is None or second > after) and (before is None or second < before)


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        key, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except ValueError:
        return None, None
    return (key, secret) if sep else (None, None)


def _permission_error(request: web.Request, status: int) -> WooError:
    if request.method == "GET":
        collection = request.path.rstrip("/").endswith(("/orders", "/notes", "/shipment-trackings"))
        message = (
            "Sorry, you cannot list resources." if collection else "Sorry, you cannot view this resource."
        )
        return WooError(status, "woocommerce_rest_cannot_view", message)
    if request.method == "POST" and request.path.rstrip("/").endswith(("/notes", "/shipment-trackings")):
        return WooError(
            status, "woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."
        )
    return WooError(
        status, "woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."
    )


def _invalid_param(name: str, problem: str) -> WooError:
    return WooError(400, "rest_invalid_param", f"Invalid parameter(s): {name}", params={name: problem})


def _int_param(query: Any, name: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid_param(name, f"{name} is not of type integer.") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} (inclusive) and {high} (inclusive)" if high else f"greater than {low - 1}"
        raise _invalid_param(name, f"{name} must be {bound}")
    return value


def _enum_param(query: Any, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = query.get(name, default)
    if value not in allowed:
        raise _invalid_param(name, f"{name} is not one of {', '.join(allowed)}.")
    return str(value)


def _date_param(query: Any, name: str, gmt: bool) -> float | None:
    """Epoch seconds for a date filter; naive values are GMT with `dates_are_gmt`, else site time."""
    raw = query.get(name)
    if raw is None:
        return None
    if not DATE_PARAM.match(raw):
        raise _invalid_param(name, "Invalid date.")
    parsed = datetime.fromisoformat(raw.replace(" ", "T"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC if gmt else SITE_TZ)
    return parsed.timestamp()


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise WooError(400, "rest_invalid_json", "Invalid JSON body passed.") from None
    if not isinstance(body, dict):
        raise WooError(400, "rest_invalid_json", "Invalid JSON body passed.")
    return body
