"""The alibaba1688 adapter's fake: an in-process 1688 open platform gateway (buyer side).

It emulates, from the public documentation (see adapters/alibaba1688/README.md and /work/shared/1688.md):

- `POST /openapi/param2/1/{namespace}/{apiName}/{appKey}`, form-encoded, checked like the gateway: app key,
  `_aop_signature` (verified with `relay.signing`; `gw.SignatureInvalid` otherwise) and `access_token`
  (`"Request need user authorized"` once `expire_token()` was called, until the token is refreshed at
  `POST /openapi/param2/1/system.oauth2/getToken/{appKey}` with `grant_type=refresh_token`).
- `alibaba.trade.fastCreateOrder`: **not idempotent**, like the real one: a second create with the same
  `outOrderId` makes a second order. Answers `result.orderId`, `totalSuccessAmount` and `postFee` in fen.
- `alibaba.trade.get.buyerView` (by `orderId` or `outOrderId`) and `alibaba.trade.getBuyerOrderList`
  (by `outOrderId`, or `modifyStartTime` inclusive; newest first; paged, at most `page_size` a page).
- `alibaba.trade.getLogisticsInfos.buyerView`: business error `500_2` ("no logistics yet") before the
  first parcel, then one entry per parcel with `orderEntryIds` and `logisticsOrderGoods` (sub-order ids).
- `alibaba.trade.cancel`: only while `waitbuyerpay` (`ORDER_STATUS_ERROR` after), and not within
  `cancel_min_age_s` of creation (`CLOSE_ORDER_TOO_FAST`).
- `alibaba.trade.pay.protocolPay.preparePay`: pays a `waitbuyerpay` order.
- Unpaid orders close by themselves `pay_timeout_s` after creation (`cancel`, `closeReason=BUYER_NO_PAY`).
- The seller sends paid orders after `ship_paid_after_s` (when set), one parcel per line with `split_parcels`.
- Message push: with `push_url` set, paying and sending push `ORDER_BUYER_VIEW_ORDER_PAY` /
  `ORDER_BUYER_VIEW_ANNOUNCE_SENDGOODS` to relay, signed like 1688 (`relay.signing.aop_push_signature`),
  `push_repeats` times each; `send_push` posts any message.

It implements `relay.testing.vendor.FakeShipmentListing` (registered as `relay.fakes` -> `alibaba1688`).
Keys are `outOrderId`s. Generic faults (`fail_next`, `hang_next`) hit the next gateway call of any API;
`lose_answer_next` the next call that acts (create, cancel, pay); each fault may name the APIs it hits.
1688's own faults: `flow_control_next(times, api=)` (`gw.QosAppFrequencyLimit`, HTTP 400),
`expire_token()`, `lose_pay_answer_next()` (the money is taken, the answer says not paid),
`refuse_pay_next(code)`, `duplicate(key)` (a second live order under one `outOrderId`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from adapters.alibaba1688.client import (
    CANCEL,
    FAST_CREATE_ORDER,
    FLOW_CONTROL,
    GET_BUYER_ORDER_LIST,
    GET_BUYER_VIEW,
    GET_LOGISTICS_INFOS,
    NO_LOGISTICS_YET,
    PREPARE_PAY,
    TOKEN_EXPIRED_MESSAGE,
)
from relay.signing import aop_push_signature, aop_signature_matches

CHINA = timezone(timedelta(hours=8))
WRITES = frozenset({FAST_CREATE_ORDER, CANCEL, PREPARE_PAY})
LIVE = ("waitbuyerpay", "waitsellersend", "waitbuyerreceive", "confirm_goods", "success")
SHIPPED = ("waitbuyerreceive", "confirm_goods", "success")
DEFAULT_UNIT_PRICE_FEN = 1250
DEMO_SKUS = ("MUG-WHT", "TEE-RED-M", "TEE-BLU-L", "HOODIE-GRY-XL", "CAP-BLK", "POSTER-A2")
"""SKUs `adapter_options()` maps to offers (the contract suite's and the demo's)."""
DEFAULT_POST_FEE_FEN = 800


def stamp(epoch: float) -> str:
    """1688's time format, `yyyyMMddHHmmssSSS+0800`."""
    moment = datetime.fromtimestamp(epoch, CHINA)
    return moment.strftime("%Y%m%d%H%M%S") + f"{moment.microsecond // 1000:03d}+0800"


def parse_stamp(text: str) -> float:
    moment = datetime.strptime(text[:17], "%Y%m%d%H%M%S%f").replace(tzinfo=CHINA)
    return moment.timestamp()


def yuan(fen: int) -> float:
    return float(Decimal(fen) / 100)


@dataclass
class Fault:
    """What to do with one gateway call instead of answering normally. `apis`: the calls it hits (None: any)."""

    status: int | None = None
    retry_after: float | None = None
    hang: bool = False  # never answer (until the fake closes), without acting
    accept_then_drop: bool = False  # act, then cut the connection before answering
    accept_then_hang: bool = False  # act, then never answer (the client times out)
    body: str = '{"error": "injected"}'
    apis: frozenset[str] | None = None

    def hits(self, api: str) -> bool:
        return self.apis is None or api in self.apis


@dataclass
class Item:
    sub_item_id: str
    offer_id: str
    spec_id: str
    quantity: int
    price_fen: int


@dataclass
class Parcel:
    logistics_id: str
    bill_no: str
    company_no: str
    company_name: str
    goods: list[tuple[str, int]]  # (sub item id, quantity)
    sent_at: float


@dataclass
class FakeOrder:
    order_id: str
    out_order_id: str
    flow: str
    address: dict[str, Any]
    message: str
    items: list[Item]
    created_at: float
    modified_at: float
    post_fee_fen: int
    pay_timeout_s: int
    status: str = "waitbuyerpay"
    paid_at: float | None = None
    close_reason: str | None = None
    close_operate_type: str | None = None
    parcels: list[Parcel] = field(default_factory=list)

    @property
    def goods_fen(self) -> int:
        return sum(item.quantity * item.price_fen for item in self.items)

    def trade_info(self, *, echo_out_order_id: bool = True) -> dict[str, Any]:
        shipped: Counter[str] = Counter()
        for parcel in self.parcels:
            for sub, qty in parcel.goods:
                shipped[sub] += qty
        base = {
            "id": int(self.order_id),
            "idOfStr": self.order_id,
            "status": self.status,
            "createTime": stamp(self.created_at),
            "modifyTime": stamp(self.modified_at),
            "totalAmount": yuan(self.goods_fen + self.post_fee_fen),
            "sumProductPayment": yuan(self.goods_fen),
            "shippingFee": yuan(self.post_fee_fen),
            "buyerFeedback": self.message,
            "outOrderId": self.out_order_id if echo_out_order_id else "",
            "payTimeout": self.pay_timeout_s,
            "payTimeoutType": 0,
            "flow": self.flow,
        }
        if self.paid_at is not None:
            base["payTime"] = stamp(self.paid_at)
        if self.close_reason:
            base["closeReason"] = self.close_reason
            base["closeOperateType"] = self.close_operate_type
        items = []
        for item in self.items:
            sent = shipped[item.sub_item_id]
            items.append(
                {
                    "productID": int(item.offer_id),
                    "specId": item.spec_id,
                    "subItemID": int(item.sub_item_id),
                    "subItemIDString": item.sub_item_id,
                    "quantity": item.quantity,
                    "price": yuan(item.price_fen),
                    "itemAmount": yuan(item.price_fen * item.quantity),
                    "status": self.status,
                    "logisticsStatus": 1 if not sent else (2 if sent >= item.quantity else 5),
                }
            )
        pay_status = "1" if self.paid_at is None else "2"
        if self.status == "cancel":
            pay_status = "8" if self.paid_at is None else "4"
        return {"baseInfo": base, "productItems": items, "tradeTerms": [{"payStatus": pay_status}]}


class Fake1688Gateway:
    """A running fake 1688 gateway on 127.0.0.1 (see the module docstring)."""

    adapter = "alibaba1688"

    def __init__(
        self,
        name: str = "ali",
        *,
        page_size: int = 2,
        cancel_min_age_s: float = 10.0,
        pay_timeout_s: int = 43200,
        split_parcels: bool = False,
        protocol_pay: bool = False,
        ship_paid_after_s: float | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.app_key = str(secrets.randbelow(9_000_000) + 1_000_000)
        self.app_secret = secrets.token_urlsafe(12)
        self.access_token = secrets.token_hex(16)
        self.refresh_token = secrets.token_hex(16)
        self.page_size = page_size
        self.cancel_min_age_s = cancel_min_age_s
        self.pay_timeout_s = pay_timeout_s
        self.split_parcels = split_parcels
        self.protocol_pay = protocol_pay
        self.ship_paid_after_s = ship_paid_after_s
        self._callback_url: str | None = None
        self.push_url: str | None = None  # relay's push endpoint: pay and send are pushed there when set
        self.push_repeats = 1  # how often each push is sent (1688 repeats a push it thinks was lost)
        self.pushes: list[tuple[str, int]] = []  # (message type, HTTP status; 0: relay unreachable)
        self._push_ids = itertools.count(1)
        self._push_tasks: set[asyncio.Task[int]] = set()
        self.clock: Callable[[], float] = time.time
        self.orders: dict[str, FakeOrder] = {}  # by 1688 order id, in creation order
        self.prices: dict[tuple[str, str], int] = {}  # (offerId, specId) -> unit price in fen
        self.deliveries: Counter[str] = Counter()  # per outOrderId: creates + lookups that found an order
        self.creates: Counter[str] = Counter()  # per outOrderId: orders made
        self.calls: list[str] = []  # API of every authenticated call, in order
        self.token_refreshes = 0
        self.rejected_signatures = 0
        self.faults: list[Fault] = []
        self.auth_status: int | None = None
        self.token_expired = False
        self.pay_faults: list[str] = []  # "lose" (taken, answered not paid) or an error code (refused)
        # Where the documentation leaves room (GUESS): does the list honour `outOrderId`, is it echoed?
        self.list_filters_out_order_id = True
        self.echoes_out_order_id = True
        self._ids = itertools.count(3_900_000_000_000_000_001)  # past 2**53, as real ids are
        self._subs = itertools.count(3_900_100_000_000_000_001)
        self._parcels = itertools.count(1)
        self._closing = asyncio.Event()
        self._host = host
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle and config (relay.testing.vendor.FakeFactoryServer) ---------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/openapi/param2/1/system.oauth2/getToken/{app_key}", self._token)
        app.router.add_post("/openapi/param2/1/{namespace}/{api}/{app_key}", self._gateway)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, 0).start()
        self.url = f"http://{self._host}:{self._runner.addresses[0][1]}/openapi"

    async def close(self) -> None:
        self._closing.set()
        for task in self._push_tasks:
            task.cancel()
        await asyncio.gather(*self._push_tasks, return_exceptions=True)
        if self._runner:
            await self._runner.cleanup()

    @property
    def callback_url(self) -> str | None:
        """relay's callback URL for this factory, as the demo and the harness set it for every fake. 1688
        calls no callbacks (parcels are polled); setting it points `push_url` at the sibling
        `/v1/factories/{name}/push`, where this gateway then pushes (unless `push_url` was set)."""
        return self._callback_url

    @callback_url.setter
    def callback_url(self, url: str | None) -> None:
        self._callback_url = url
        if url and url.endswith("/events") and self.push_url is None:
            self.push_url = url.removesuffix("/events") + "/push"

    def adapter_options(self, url: str | None = None) -> dict[str, Any]:
        """The alibaba1688 adapter's keys for this fake (or for `url`, e.g. a fault proxy in front of it).
        Every SKU the contract suite and the demo use maps to an offer here (`skus`)."""
        return {
            "gateway_url": url or self.url,
            "app_key": self.app_key,
            "app_secret": self.app_secret,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "protocol_pay": self.protocol_pay,
            "forwarder": {  # customers abroad (the contract suite's addresses): a warehouse in Shenzhen
                "full_name": "Relay Forwarding",
                "mobile": "13800138000",
                "province": "广东省",
                "city": "深圳市",
                "area": "宝安区",
                "address": "福永街道 1 号仓",
            },
            "skus": {sku: f"{600_000_000_000 + n}:{n:032x}" for n, sku in enumerate(DEMO_SKUS, 1)},
        }

    def factory_config(self, url: str | None = None) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            **self.adapter_options(url),
            "callback_secrets": [secrets.token_urlsafe(24)],  # the core requires one; 1688 never calls back
            "shipment_poll_interval_s": 1.0,
        }

    # --- fault knobs ------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        api: str | Iterable[str] | None = None,
    ) -> None:
        """Answer the next `times` gateway calls (of `api` if given) with `status`, without acting."""
        self.faults.extend([Fault(status=status, retry_after=retry_after, apis=_apis(api))] * times)

    def hang_next(self, *, times: int = 1, api: str | Iterable[str] | None = None) -> None:
        self.faults.extend([Fault(hang=True, apis=_apis(api))] * times)

    def lose_answer_next(
        self, how: str = "reset", *, times: int = 1, api: str | Iterable[str] | None = None
    ) -> None:
        """Act on the next `times` calls that act (create, cancel, pay; or `api`), then lose the answer."""
        if how not in ("reset", "timeout"):
            raise ValueError(f"how must be 'reset' or 'timeout', not {how!r}")
        apis = _apis(api) or WRITES
        fault = (
            Fault(accept_then_drop=True, apis=apis)
            if how == "reset"
            else Fault(accept_then_hang=True, apis=apis)
        )
        self.faults.extend([fault] * times)

    def flow_control_next(self, *, times: int = 1, api: str | Iterable[str] | None = None) -> None:
        """Answer the next `times` calls (of `api`) with flow control, as the gateway does (HTTP 400)."""
        body = json.dumps(
            {
                "error_code": FLOW_CONTROL,
                "error_message": "App call exceeds limited frequency",
                "exception": "App call exceeds limited frequency",
            }
        )
        self.faults.extend([Fault(status=400, body=body, apis=_apis(api))] * times)

    def fail_listing_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        self.fail_next(status, times=times, retry_after=retry_after, api=GET_BUYER_ORDER_LIST)

    def reject_credentials(self, status: int = 401) -> None:
        """Refuse every call from now on (`gw.SignatureInvalid`), the token endpoint too."""
        self.auth_status = status

    def expire_token(self) -> None:
        """The access token expires: calls are refused until the adapter refreshes it."""
        self.token_expired = True

    def lose_pay_answer_next(self) -> None:
        """The next protocol pay takes the money but answers `paySuccess=false` (documented)."""
        self.pay_faults.append("lose")

    def refuse_pay_next(self, code: str = "BALANCE_NOT_ENOUGH") -> None:
        self.pay_faults.append(code)

    # --- state ------------------------------------------------------------------------------------

    def orders_of(self, key: str) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.out_order_id == key]

    def held_keys(self) -> list[str]:
        """The `outOrderId` of every order, one entry per 1688 order (a duplicate shows twice)."""
        return [o.out_order_id for o in self.orders.values()]

    def deliveries_of(self, key: str) -> int:
        """Creates under this `outOrderId` (faulted ones included) plus lookups by it that found an order:
        the times the gateway was asked to place it, or answered that it holds it."""
        return self.deliveries[key]

    def is_cancelled(self, key: str) -> bool:
        """True when no live order holds this `outOrderId` and one was cancelled, or none was ever made
        (1688 keeps no record of a cancellation for an order it never had)."""
        orders = self.orders_of(key)
        return all(o.status == "cancel" for o in orders)

    def mark_paid(self, key: str) -> None:
        for order in self.orders_of(key):
            if order.status == "waitbuyerpay":
                self._pay(order)

    def mark_shipped(self, key: str) -> None:
        """Paid and sent, without any parcel listed."""
        for order in self.orders_of(key):
            if order.paid_at is None:
                self._pay(order)
            order.status = "waitbuyerreceive"
            self._touch(order)

    def duplicate(self, key: str) -> FakeOrder:
        """A second live order under `key` (as a second create would make)."""
        first = self.orders_of(key)[0]
        return self._create(
            key,
            first.flow,
            first.address,
            first.message,
            [{"offerId": i.offer_id, "specId": i.spec_id, "quantity": i.quantity} for i in first.items],
        )

    def ship(self, key: str, parcels: list[list[int]] | None = None, *, carrier: str = "SF") -> list[Parcel]:
        """Pay (the reseller pays by hand when protocol pay is off) and send parcels for the order under
        `key`: each parcel lists item indexes (all items in one parcel by default)."""
        order = next(o for o in self.orders_of(key) if o.status in LIVE)
        return self._ship_order(order, parcels, carrier=carrier)

    def _ship_order(self, order: FakeOrder, parcels: list[list[int]] | None, *, carrier: str) -> list[Parcel]:
        if order.paid_at is None:
            self._pay(order)
        groups = parcels or (
            [[i] for i in range(len(order.items))] if self.split_parcels else [list(range(len(order.items)))]
        )
        made = []
        names = {"SF": "顺丰速运", "ZTO": "中通快递", "YTO": "圆通速递"}
        for group in groups:
            n = next(self._parcels)
            parcel = Parcel(
                logistics_id=f"BX{n:016d}",
                bill_no=f"{carrier}{1_400_000_000_000 + n}",
                company_no=carrier,
                company_name=names.get(carrier, carrier),
                goods=[(order.items[i].sub_item_id, order.items[i].quantity) for i in group],
                sent_at=self.clock(),
            )
            order.parcels.append(parcel)
            made.append(parcel)
        shipped = {sub for p in order.parcels for sub, _ in p.goods}
        if all(item.sub_item_id in shipped for item in order.items):
            order.status = "waitbuyerreceive"
        self._touch(order)
        self._announce("ORDER_BUYER_VIEW_ANNOUNCE_SENDGOODS", order)
        return made

    async def ship_all(self) -> int:
        todo = [
            o
            for o in self.orders.values()
            if o.status in ("waitbuyerpay", "waitsellersend") and not o.parcels
        ]
        for order in todo:
            self._ship_order(order, None, carrier="SF")
        return len(todo)

    def listed_ids(self) -> list[str]:
        """Every parcel's `logisticsId`, in the order a poll from the beginning reports them: orders by
        (modifyTime, order id), parcels in the order they were sent."""
        ordered = sorted(self.orders.values(), key=lambda o: (stamp(o.modified_at), int(o.order_id)))
        return [p.logistics_id for o in ordered if o.out_order_id for p in o.parcels]

    @property
    def held(self) -> int:
        return len(self.orders)

    # --- the gateway ------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.auth_status is not None or request.match_info["app_key"] != self.app_key:
            return web.json_response({"error": "invalid_client", "error_description": "refused"}, status=401)
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("client_id") != self.app_key
            or form.get("client_secret") != self.app_secret
            or form.get("refresh_token") != self.refresh_token
        ):
            return web.json_response(
                {"error": "invalid_grant", "error_description": "bad refresh"}, status=401
            )
        self.access_token = secrets.token_hex(16)
        self.token_expired = False
        self.token_refreshes += 1
        return web.json_response(
            {
                "access_token": self.access_token,
                "expires_in": "36000",
                "resource_owner": "reseller",
                "memberId": "b2b-1234567890",
                "aliId": "1234567890",
            }
        )

    async def _gateway(self, request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one check a line
        namespace, api = request.match_info["namespace"], request.match_info["api"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        if self.auth_status is not None:
            return _gw_error("gw.SignatureInvalid", "Signature is invalid", status=self.auth_status)
        if request.match_info["app_key"] != self.app_key:
            return _gw_error("gw.AppKeyNotFound", "AppKey not found", status=400)
        path = f"param2/1/{namespace}/{api}/{self.app_key}"
        offered = form.get("_aop_signature", "")
        if not offered or not aop_signature_matches(self.app_secret, path, form, offered):
            self.rejected_signatures += 1
            return _gw_error("gw.SignatureInvalid", "Signature is invalid", status=400)
        if self.token_expired or form.get("access_token") != self.access_token:
            return _gw_error("401", TOKEN_EXPIRED_MESSAGE, status=401)
        handler = self._handlers().get(api)
        if handler is None:
            return _gw_error("gw.APIUnsupported", f"{namespace}:{api} is not supported", status=400)
        self.calls.append(api)
        self._expire_unpaid()
        self._ship_paid()
        if api == FAST_CREATE_ORDER:
            self.deliveries[form.get("outOrderId", "")] += 1
        fault = next((f for f in self.faults if f.hits(api)), None)
        if fault is not None:
            self.faults.remove(fault)
        if fault and fault.hang:
            await self._closing.wait()
            return web.Response(status=503)
        if fault and fault.status is not None:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return web.Response(
                status=fault.status, text=fault.body, headers=headers, content_type="application/json"
            )
        response = handler(form)
        if fault and fault.accept_then_drop:
            assert request.transport is not None
            request.transport.close()
        elif fault and fault.accept_then_hang:
            await self._closing.wait()
        return response

    def _handlers(self) -> dict[str, Callable[[dict[str, str]], web.Response]]:
        return {
            FAST_CREATE_ORDER: self._fast_create,
            GET_BUYER_VIEW: self._buyer_view,
            GET_BUYER_ORDER_LIST: self._order_list,
            GET_LOGISTICS_INFOS: self._logistics,
            CANCEL: self._cancel,
            PREPARE_PAY: self._prepare_pay,
        }

    def _fast_create(self, form: dict[str, str]) -> web.Response:
        try:
            address = json.loads(form["addressParam"])
            cargo = json.loads(form["cargoParamList"])
        except (KeyError, ValueError):
            return web.json_response({"success": False, "code": "PARAM_ERROR", "message": "bad parameters"})
        if form.get("flow") not in (
            "general",
            "saleproxy",
            "fenxiao",
            "paired",
            "boutiquefenxiao",
            "boutiquepifa",
        ):
            return web.json_response({"success": False, "code": "PARAM_ERROR", "message": "unknown flow"})
        missing = [k for k in ("fullName", "provinceText", "cityText", "address") if not address.get(k)]
        if (
            missing
            or not (address.get("mobile") or address.get("phone"))
            or len(address.get("address", "")) > 200
        ):
            return web.json_response(
                {"success": False, "code": "ADDRESS_ERROR", "message": f"address: {missing}"}
            )
        if not cargo or len(form.get("message", "")) > 500:
            return web.json_response({"success": False, "code": "PARAM_ERROR", "message": "cargo or message"})
        order = self._create(
            form.get("outOrderId", ""), form["flow"], address, form.get("message", ""), cargo
        )
        return web.json_response(
            {
                "success": True,
                "result": {
                    "orderId": order.order_id,
                    "totalSuccessAmount": order.goods_fen + order.post_fee_fen,
                    "postFee": order.post_fee_fen,
                    "failedOfferList": [],
                },
            }
        )

    def _create(
        self, key: str, flow: str, address: dict[str, Any], message: str, cargo: list[dict[str, Any]]
    ) -> FakeOrder:
        now = self.clock()
        order = FakeOrder(
            order_id=str(next(self._ids)),
            out_order_id=key,
            flow=flow,
            address=address,
            message=message,
            items=[
                Item(
                    sub_item_id=str(next(self._subs)),
                    offer_id=str(c["offerId"]),
                    spec_id=str(c["specId"]),
                    quantity=int(c["quantity"]),
                    price_fen=self.prices.get((str(c["offerId"]), str(c["specId"])), DEFAULT_UNIT_PRICE_FEN),
                )
                for c in cargo
            ],
            created_at=now,
            modified_at=now,
            post_fee_fen=DEFAULT_POST_FEE_FEN,
            pay_timeout_s=self.pay_timeout_s,
        )
        self.orders[order.order_id] = order
        if key:
            self.creates[key] += 1
        return order

    def _find(self, form: dict[str, str]) -> FakeOrder | None:
        if form.get("orderId"):
            return self.orders.get(form["orderId"])
        found = self.orders_of(form.get("outOrderId", "")) if form.get("outOrderId") else []
        return found[0] if found else None

    def _buyer_view(self, form: dict[str, str]) -> web.Response:
        order = self._find(form)
        if order is None:
            return _biz_error("ORDER_NOT_EXIST", "订单不存在")
        if form.get("outOrderId") and not form.get("orderId"):
            self.deliveries[order.out_order_id] += 1
        return web.json_response(
            {"success": "true", "result": order.trade_info(echo_out_order_id=self.echoes_out_order_id)}
        )

    def _order_list(self, form: dict[str, str]) -> web.Response:
        orders = list(self.orders.values())
        if form.get("outOrderId") and self.list_filters_out_order_id:
            orders = [o for o in orders if o.out_order_id == form["outOrderId"]]
            if orders:
                self.deliveries[form["outOrderId"]] += 1
        if form.get("orderStatus"):
            orders = [o for o in orders if o.status == form["orderStatus"]]
        if form.get("createStartTime"):
            begin = stamp(parse_stamp(form["createStartTime"]))
            orders = [o for o in orders if stamp(o.created_at) >= begin]
        if form.get("modifyStartTime"):
            start = stamp(parse_stamp(form["modifyStartTime"]))
            orders = [o for o in orders if stamp(o.modified_at) >= start]
        orders.sort(key=lambda o: (stamp(o.modified_at), int(o.order_id)), reverse=True)  # newest first
        page = max(int(form.get("page", "1")), 1)
        size = min(max(int(form.get("pageSize", "20")), 1), self.page_size)
        chunk = orders[(page - 1) * size : page * size]
        infos = [o.trade_info(echo_out_order_id=self.echoes_out_order_id) for o in chunk]
        return web.json_response({"result": infos, "totalRecord": len(orders)})

    def _logistics(self, form: dict[str, str]) -> web.Response:
        order = self.orders.get(form.get("orderId", ""))
        if order is None:
            return _biz_error("ORDER_NOT_EXIST", "订单不存在")
        if not order.parcels:
            return _biz_error(NO_LOGISTICS_YET, "订单尚未发货\uff0c暂无物流详情\uff0c请稍候再试\u3002")
        entries = []
        for parcel in order.parcels:
            entries.append(
                {
                    "logisticsId": parcel.logistics_id,
                    "logisticsBillNo": parcel.bill_no,
                    "logisticsCompanyId": f"CID-{parcel.company_no}",
                    "logisticsCompanyName": parcel.company_name,
                    "logisticsCompanyNo": parcel.company_no,
                    "orderEntryIds": ",".join(sub for sub, _ in parcel.goods),
                    "status": "TRANSPORT",
                    "gmtSystemSend": stamp(parcel.sent_at),
                    "logisticsOrderGoods": [
                        {
                            "logisticsId": parcel.logistics_id,
                            "tradeOrderId": order.order_id,
                            "tradeOrderItemId": sub,
                            "quantity": qty,
                            "unit": "件",
                        }
                        for sub, qty in parcel.goods
                    ],
                    "sendGoods": [
                        {"goodName": f"item {sub}", "quantity": qty, "unit": "件"}
                        for sub, qty in parcel.goods
                    ],
                }
            )
        return web.json_response({"success": True, "result": entries})

    def _cancel(self, form: dict[str, str]) -> web.Response:
        order = self.orders.get(form.get("tradeID", ""))
        if order is None or form.get("webSite") != "1688":
            return _biz_error("ORDER_NOT_EXIST", "订单不存在")
        if order.status != "waitbuyerpay":
            return _biz_error("ORDER_STATUS_ERROR", "订单状态错误")
        if self.clock() - order.created_at < self.cancel_min_age_s:
            return _biz_error("CLOSE_ORDER_TOO_FAST", "关闭订单操作过快")
        order.status = "cancel"
        order.close_reason = form.get("cancelReason") or "other"
        order.close_operate_type = "CLOSE_TRADE_BY_BUYER"
        self._touch(order)
        return web.json_response({"success": True})

    def _prepare_pay(self, form: dict[str, str]) -> web.Response:
        try:
            param = json.loads(form["tradeWithholdPreparePayParam"])
            order = self.orders[str(param["orderId"])]
        except (KeyError, ValueError):
            return _biz_error("ORDER_NOT_EXIST", "订单不存在")
        if order.status != "waitbuyerpay":
            return web.json_response(
                {"result": {"success": False, "code": "ORDER_STATUS_ERROR", "message": "状态错误"}}
            )
        fault = self.pay_faults.pop(0) if self.pay_faults else None
        if fault is not None and fault != "lose":
            return web.json_response({"result": {"success": False, "code": fault, "message": "支付失败"}})
        self._pay(order)
        paid = fault != "lose"
        return web.json_response(
            {"result": {"success": True, "result": {"payChannel": "alipay", "paySuccess": paid}}}
        )

    def _pay(self, order: FakeOrder) -> None:
        order.paid_at = self.clock()
        order.status = "waitsellersend"
        self._touch(order)
        self._announce("ORDER_BUYER_VIEW_ORDER_PAY", order)

    # --- message push -----------------------------------------------------------------------------

    def push_message(self, kind: str, order: FakeOrder | None = None) -> dict[str, Any]:
        """A push envelope as 1688 sends one (open.1688.com messageDoc, AliOpen `MessageContent`): `msgId`,
        `gmtBorn` (ms), `type`, `data` (for order messages `orderId`, `currentStatus`, `msgSendTime`,
        `buyerMemberId`; GUESS beyond the SDK's fields), `userInfo` (the member the message is for)."""
        now = self.clock()
        data: dict[str, Any] = {}
        if order is not None:
            data = {
                "orderId": int(order.order_id),
                "currentStatus": order.status,
                "msgSendTime": datetime.fromtimestamp(now, CHINA).strftime("%Y-%m-%d %H:%M:%S"),
                "buyerMemberId": "b2b-1234567890",
            }
        return {
            "msgId": str(next(self._push_ids) + 90_000_000_000),
            "gmtBorn": int(now * 1000),
            "type": kind,
            "data": data,
            "userInfo": "b2b-1234567890",
        }

    async def send_push(self, message: dict[str, Any], *, secret: str | None = None) -> int:
        """POST one push to `push_url`: form fields `message` (the JSON) and `_aop_signature` (signed with
        the app secret, or `secret`). Returns relay's HTTP status, 0 when relay could not be reached."""
        if not self.push_url:
            raise RuntimeError("no push_url: set it (or callback_url) to relay's push endpoint")
        fields = {"message": json.dumps(message, separators=(",", ":"), ensure_ascii=False)}
        fields["_aop_signature"] = aop_push_signature(secret or self.app_secret, fields)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.post(self.push_url, data=fields) as resp,
            ):
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.pushes.append((str(message.get("type")), status))
        return status

    def _announce(self, kind: str, order: FakeOrder) -> None:
        """Push `kind` about `order` in the background (`push_repeats` times, one msgId), if a
        `push_url` is set and an event loop runs."""
        if not self.push_url:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        message = self.push_message(kind, order)
        for _ in range(self.push_repeats):
            task = loop.create_task(self.send_push(message))
            self._push_tasks.add(task)
            task.add_done_callback(self._push_tasks.discard)

    def _touch(self, order: FakeOrder) -> None:
        order.modified_at = max(self.clock(), order.modified_at + 0.001)

    def _ship_paid(self) -> None:
        """With `ship_paid_after_s`, the seller sends every order paid that long ago (one parcel per line
        with `split_parcels`); 1688 shows it on the next read."""
        if self.ship_paid_after_s is None:
            return
        due = self.clock() - self.ship_paid_after_s
        for order in list(self.orders.values()):
            paid_at = order.paid_at
            if (
                order.status == "waitsellersend"
                and not order.parcels
                and paid_at is not None
                and paid_at <= due
            ):
                self._ship_order(order, None, carrier="SF")

    def _expire_unpaid(self) -> None:
        now = self.clock()
        for order in self.orders.values():
            if order.status == "waitbuyerpay" and now >= order.created_at + order.pay_timeout_s:
                order.status = "cancel"
                order.close_reason = "BUYER_NO_PAY"
                order.close_operate_type = "CLOSE_TRADE_BY_SYSTEM"
                self._touch(order)


def _apis(api: str | Iterable[str] | None) -> frozenset[str] | None:
    if api is None:
        return None
    return frozenset({api}) if isinstance(api, str) else frozenset(api)


def _gw_error(code: str, message: str, *, status: int) -> web.Response:
    return web.json_response(
        {"error_code": code, "error_message": message, "exception": message}, status=status
    )


def _biz_error(code: str, message: str) -> web.Response:
    return web.json_response({"success": False, "errorCode": code, "errorMessage": message})


__all__ = ["CHINA", "Fake1688Gateway", "FakeOrder", "Fault", "parse_stamp", "stamp"]
