"""Factory adapter for 1688.com: relay buys each factory order as the reseller, exactly once, and polls parcels.

A 1688 seller takes no webhooks: relay places the order as a buyer through the 1688 open platform
(`alibaba.trade.fastCreateOrder`), optionally pays it (protocol pay), and reads the parcels back
(`getBuyerOrderList` + `getLogisticsInfos.buyerView`) as a `relay.contracts.ShipmentSource`.

Exactly once. fastCreateOrder is **not idempotent**; relay's factory order key is sent as `outOrderId`,
a lookup key. Every `submit` first looks the key up (`getBuyerOrderList(outOrderId=...)`) and creates
only when 1688 holds no order under it. A create is repeated in-call only after a definite refusal
(flow control, an expired token that was then refreshed); after an uncertain outcome (timeout, reset,
5xx, an unreadable answer) the key is looked up again, and when nothing is found yet the call fails
retriably: the next attempt looks up once more before it creates. Two live orders under one key raise
`NeedsAttention(duplicate_at_factory)`; an order 1688 closed unpaid raises
`NeedsAttention(payment_expired)` and is never re-created.

Lines. The factory SKU is `offerId:specId`: the catalogue's `factory_sku` for the line when it names one
(`FactoryOrder.factory_skus`), else the `skus` map. The buyer message carries the
customisation text and, on its last line, the key and which relay line is which offer/spec
(`relay <key>|<line>=<offer>:<spec prefix>*<qty>|...`), so parcels (sub-order ids -> offer/spec) map back to relay's line ids after a
restart without any state but 1688's.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, unquote

import aiohttp
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from adapters.alibaba1688.client import (
    CANCEL,
    FAST_CREATE_ORDER,
    GATEWAY,
    GET_BUYER_ORDER_LIST,
    GET_BUYER_VIEW,
    GET_LOGISTICS_INFOS,
    LOGISTICS,
    NO_LOGISTICS_YET,
    PREPARE_PAY,
    TRADE,
    AopClient,
    GatewayResponse,
    Kind,
    classify,
)
from relay.config import Secret
from relay.contracts import AdapterContext, NeedsAttention, PushRequest, PushVerdict, ShipmentPage
from relay.domain.models import (
    AttentionReason,
    FactoryOrder,
    FactoryOrderNotice,
    OrderLine,
    Placement,
    Shipment,
    ShipmentLine,
)
from relay.exceptions import (
    AdapterError,
    AlreadyShipped,
    AuthError,
    FatalAdapterError,
    RetriableAdapterError,
    describe,
)
from relay.outbound.retries import in_call_retries
from relay.outbound.session import error_for_status
from relay.signing import aop_push_signature_matches

CHINA = timezone(timedelta(hours=8))
FLOWS = ("general", "saleproxy", "fenxiao", "paired", "boutiquefenxiao", "boutiquepifa")
CLOSED = frozenset({"cancel", "terminated"})
SHIPPED = frozenset(
    {"waitbuyerreceive", "waitbuyersign", "signinsuccess", "confirm_goods", "success", "waitlogisticstakein"}
)
SHIPPED_ITEM = frozenset({2, 3, 5})  # productItems[].logisticsStatus: shipped, received, partly shipped
READ_ATTEMPTS = 3
CREATE_ATTEMPTS = 4  # flow control / refreshed token only: definite refusals
PAY_ATTEMPTS = 3  # preparePay "retry at most 3 times", re-reading the order before each retry
CANCEL_ATTEMPTS = 4
CANCEL_MIN_AGE_S = 10.0  # CLOSE_ORDER_TOO_FAST below this age (open.1688.com trade.cancel)
MESSAGE_LIMIT = 500
LOOKUP_PAGE = 20
MAX_LIST_PAGES = 500
MAX_TOMBSTONES = 10_000
PUSH_MAX_BYTES = 16 * 1024  # a push is one small JSON envelope (msgId, gmtBorn, type, data, userInfo)
PUSH_WAKES = ("ORDER_", "LOGISTICS_")  # order and logistics messages may mean paid, sent, closed
MAX_SEEN_PUSHES = 1_000
TRAILER = re.compile(r"^relay (fo_[A-Za-z0-9_]+)\|(.+)$")
CARRIERS = {  # logisticsCompanyNo -> the name storefronts know (GUESS for codes beyond SF/ZTO/YTO/STO)
    "SF": "SF Express",
    "ZTO": "ZTO Express",
    "YTO": "YTO Express",
    "STO": "STO Express",
    "YUNDA": "Yunda Express",
    "EMS": "China EMS",
    "JD": "JD Logistics",
    "JTSD": "J&T Express",
    "DBL": "Deppon",
}


PROVINCE_OF_CITY = {  # storefronts often leave out the province of a big city; 1688 wants it as text
    "beijing": "北京", "北京": "北京", "北京市": "北京",
    "shanghai": "上海", "上海": "上海", "上海市": "上海",
    "tianjin": "天津", "天津": "天津", "天津市": "天津",
    "chongqing": "重庆", "重庆": "重庆", "重庆市": "重庆",
    "shenzhen": "广东省", "深圳": "广东省", "深圳市": "广东省",
    "guangzhou": "广东省", "广州": "广东省", "广州市": "广东省",
    "dongguan": "广东省", "东莞": "广东省", "东莞市": "广东省",
    "hangzhou": "浙江省", "杭州": "浙江省", "杭州市": "浙江省",
    "yiwu": "浙江省", "义乌": "浙江省", "义乌市": "浙江省",
    "suzhou": "江苏省", "苏州": "江苏省", "苏州市": "江苏省",
    "nanjing": "江苏省", "南京": "江苏省", "南京市": "江苏省",
    "chengdu": "四川省", "成都": "四川省", "成都市": "四川省",
    "wuhan": "湖北省", "武汉": "湖北省", "武汉市": "湖北省",
    "xiamen": "福建省", "厦门": "福建省", "厦门市": "福建省",
}  # fmt: skip


class Forwarder(BaseModel):
    """A forwarding warehouse in mainland China (集运仓) that takes parcels for customers abroad."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    full_name: str = Field(min_length=1)
    mobile: str = Field(pattern=r"^1\d{10}$")
    province: str = Field(min_length=1)
    city: str = Field(min_length=1)
    area: str = ""
    town: str = ""
    address: str = Field(min_length=1, max_length=200)
    post_code: str = ""


class Alibaba1688Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    app_key: str = Field(pattern=r"^\d{1,20}$")
    app_secret: Secret
    access_token: Secret
    refresh_token: Secret
    skus: dict[str, str] = Field(default_factory=dict)
    """relay SKU -> `offerId:specId` (1688's offer and its spec); the SKU catalogue's `factory_sku` for a
    line, when it names one, comes first."""
    flow: Literal["general", "saleproxy", "fenxiao", "paired", "boutiquefenxiao", "boutiquepifa"] = "general"
    protocol_pay: bool = False
    pay_channel: Literal["alipay", "shegou"] | None = None
    forwarder: Forwarder | None = None
    """Where orders for addresses outside mainland China go; the customer's address goes in the message."""
    payment_warning_s: float = Field(default=7200.0, ge=0)
    cancel_reason: Literal["buyerCancel", "other"] = "buyerCancel"
    page_size: int = Field(default=20, ge=1, le=50)
    gateway_url: AnyHttpUrl = AnyHttpUrl(GATEWAY)
    timeout_s: float = Field(default=30.0, gt=0, le=120)
    """The most one `submit` or `cancel` may take, every call, retry and wait included (the core's send
    budget: it claims no more than it can send within a lease)."""
    request_timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("skus")
    @classmethod
    def _offer_and_spec(cls, value: dict[str, str]) -> dict[str, str]:
        for sku, target in value.items():
            offer, _, spec = target.partition(":")
            if not offer.isdigit() or not re.fullmatch(r"[A-Za-z0-9]{1,64}", spec):
                raise ValueError(f"skus.{sku}: {target!r} is not offerId:specId")
        return value


class _FlowControl(RetriableAdapterError):
    """gw.QosAppFrequencyLimit: the gateway refused the call; nothing was done."""


class _Uncertain(RetriableAdapterError):
    """The call may or may not have acted: timeout, reset, unreadable answer."""


@dataclass(frozen=True)
class Item:
    sub_item_id: str
    offer_id: str
    spec_id: str
    quantity: int
    logistics_status: int


@dataclass(frozen=True)
class Trade:
    """The parts of a 1688 TradeInfo relay uses. Ids are strings (they exceed 2**53)."""

    order_id: str
    out_order_id: str
    status: str
    create_time: str
    modify_time: str
    pay_timeout_s: int | None
    close_reason: str
    close_operate_type: str
    total: Decimal | None
    goods: Decimal | None
    shipping: Decimal | None
    message: str
    items: tuple[Item, ...]

    @property
    def live(self) -> bool:
        return self.status not in CLOSED

    @property
    def shipped_any(self) -> bool:
        return self.status in SHIPPED or any(i.logistics_status in SHIPPED_ITEM for i in self.items)

    @property
    def closed_unpaid(self) -> bool:
        return self.status in CLOSED and (
            self.close_reason.upper() == "BUYER_NO_PAY" or self.close_operate_type == "CLOSE_TRADE_BY_SYSTEM"
        )

    @property
    def position(self) -> tuple[str, int]:
        return (self.modify_time[:17], int(self.order_id) if self.order_id.isdigit() else 0)

    @property
    def relay_key(self) -> str:
        """relay's factory order key: `outOrderId`, or the message trailer's when 1688 does not echo
        `outOrderId` (GUESS that it always does); "" for orders relay did not place."""
        if self.out_order_id:
            return self.out_order_id if self.out_order_id.startswith("fo_") else ""
        return parse_trailer(self.message)[0]

    def pay_deadline(self) -> datetime | None:
        created = parse_time(self.create_time)
        if created is None or self.pay_timeout_s is None:
            return None
        return created + timedelta(seconds=self.pay_timeout_s)


def parse_time(text: str) -> datetime | None:
    """1688's `yyyyMMddHHmmssSSS+0800`."""
    try:
        return datetime.strptime(text[:17], "%Y%m%d%H%M%S%f").replace(tzinfo=CHINA)
    except ValueError:
        return None


def time_text(moment: datetime) -> str:
    """A time as 1688 writes it, `yyyyMMddHHmmssSSS+0800`."""
    local = moment.astimezone(CHINA)
    return local.strftime("%Y%m%d%H%M%S") + f"{local.microsecond // 1000:03d}+0800"


def money(value: Any) -> Decimal | None:
    """A TradeInfo amount (yuan, a JSON number) as an exact Decimal to the fen."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None


def fen(value: Any) -> Decimal | None:
    """A create/preview amount (integer fen) as yuan."""
    try:
        return (Decimal(int(value)) / 100).quantize(Decimal("0.01"))
    except (TypeError, ValueError):
        return None


def parse_trade(raw: Any) -> Trade | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("baseInfo"), dict):
        return None
    base = raw["baseInfo"]
    order_id = str(base.get("idOfStr") or base.get("id") or "")
    if not order_id:
        return None
    items = []
    for item in raw.get("productItems") or []:
        if not isinstance(item, dict):
            continue
        try:
            status = int(item.get("logisticsStatus") or 0)
        except (TypeError, ValueError):
            status = 0
        items.append(
            Item(
                sub_item_id=str(item.get("subItemIDString") or item.get("subItemID") or ""),
                offer_id=str(item.get("productID") or ""),
                spec_id=str(item.get("specId") or ""),
                quantity=int(Decimal(str(item.get("quantity") or 0))),
                logistics_status=status,
            )
        )
    try:
        pay_timeout = int(base["payTimeout"]) if base.get("payTimeout") is not None else None
    except (TypeError, ValueError):
        pay_timeout = None
    return Trade(
        order_id=order_id,
        out_order_id=str(base.get("outOrderId") or ""),
        status=str(base.get("status") or ""),
        create_time=str(base.get("createTime") or ""),
        modify_time=str(base.get("modifyTime") or base.get("createTime") or ""),
        pay_timeout_s=pay_timeout,
        close_reason=str(base.get("closeReason") or ""),
        close_operate_type=str(base.get("closeOperateType") or ""),
        total=money(base.get("totalAmount")),
        goods=money(base.get("sumProductPayment")),
        shipping=money(base.get("shippingFee")),
        message=str(base.get("buyerFeedback") or ""),
        items=tuple(items),
    )


@dataclass(frozen=True)
class LineRef:
    """One relay line as the buyer message's trailer records it."""

    line_id: str
    offer_id: str
    spec_prefix: str
    quantity: int


def trailer(key: str, refs: list[LineRef]) -> str:
    """The buyer message's last line: `relay <key>|<line id>=<offerId>:<specId prefix>*<qty>|...`."""
    return f"relay {key}|" + "|".join(
        f"{quote(r.line_id, safe='')}={r.offer_id}:{r.spec_prefix}*{r.quantity}" for r in refs
    )


def parse_trailer(message: str) -> tuple[str, list[LineRef]]:
    """The key and line references of a message's trailer (("", []) when there is none)."""
    last = message.strip().rsplit("\n", 1)[-1]
    match = TRAILER.match(last)
    if not match:
        return "", []
    refs = []
    for part in match.group(2).split("|"):
        line, _, rest = part.partition("=")
        offer, _, spec_qty = rest.partition(":")
        spec, _, qty = spec_qty.partition("*")
        if line and offer and qty.isdigit():
            refs.append(LineRef(unquote(line), offer, spec, int(qty)))
    return match.group(1), refs


def cursor_of(trade: Trade) -> str:
    stamp, order_id = trade.position
    return f"{stamp}:{order_id}"


def parse_cursor(since: str | None) -> tuple[str, int] | None:
    if not since:
        return None
    stamp, _, order_id = since.partition(":")
    if len(stamp) != 17 or not stamp.isdigit() or not order_id.isdigit():
        return None
    return (stamp, int(order_id))


class Alibaba1688Factory:
    """Buys factory orders on 1688 (see the module docstring); a `ShipmentSource` for their parcels."""

    Options: ClassVar[type[BaseModel]] = Alibaba1688Options

    def __init__(self, name: str, options: Alibaba1688Options, context: AdapterContext) -> None:
        self.name = name
        self.options = options
        self.context = context
        self._session = context.new_session(total_timeout_s=min(options.request_timeout_s, options.timeout_s))
        self._client = AopClient(
            self._session,
            app_key=options.app_key,
            app_secret=options.app_secret.get_secret_value(),
            access_token=options.access_token.get_secret_value(),
            refresh_token=options.refresh_token.get_secret_value(),
            gateway=str(options.gateway_url),
            clock=context.clock,
        )
        self._offers = {sku: tuple(target.split(":", 1)) for sku, target in options.skus.items()}
        self._refresh_lock = asyncio.Lock()
        self._cancelled_unplaced: dict[str, None] = {}  # keys cancelled before 1688 held an order
        self._flagged: set[tuple[str, str]] = set()  # (1688 order id, reason) already logged
        self._seen_pushes: dict[str, None] = {}  # msgIds of recent pushes, oldest first

    # --- FactoryAdapter ---------------------------------------------------------------------------

    async def submit(self, order: FactoryOrder) -> Placement:
        try:
            async with asyncio.timeout(self.options.timeout_s):
                return await self._submit(order)
        except TimeoutError as exc:
            raise RetriableAdapterError(
                f"placing at 1688 took longer than timeout_s={self.options.timeout_s:g}s; "
                "the next attempt looks the key up before anything else"
            ) from exc

    async def cancel(self, order: FactoryOrder, *, cancelled_at: datetime) -> None:
        try:
            async with asyncio.timeout(self.options.timeout_s):
                await self._cancel(order)
        except TimeoutError as exc:
            raise RetriableAdapterError(
                f"cancelling at 1688 took longer than timeout_s={self.options.timeout_s:g}s"
            ) from exc

    async def _submit(self, order: FactoryOrder) -> Placement:
        if order.key in self._cancelled_unplaced:
            raise FatalAdapterError(
                "cancelled before 1688 held an order under this key: not creating it", status=409
            )
        address, ship_to = self._address(order)
        cargo, message = self._cargo(order, ship_to)
        trade = self._resolve(order.key, await self._lookup(order))
        if trade is None:
            trade = await self._create(order, cargo, address, message)
        if self.options.protocol_pay and trade.status == "waitbuyerpay":
            trade = await self._pay(order, trade)
        unpaid = trade.status == "waitbuyerpay"
        return Placement(
            reference=self._reference(trade),
            amount=trade.total,
            currency="CNY" if trade.total is not None else None,
            pay_deadline=trade.pay_deadline() if unpaid else None,
            attention=AttentionReason.AWAITING_PAYMENT if unpaid else None,
        )

    async def _cancel(self, order: FactoryOrder) -> None:
        trades = await self._lookup(order)
        if not trades:
            self._cancelled_unplaced[order.key] = None
            while len(self._cancelled_unplaced) > MAX_TOMBSTONES:
                del self._cancelled_unplaced[next(iter(self._cancelled_unplaced))]
            return
        for trade in [t for t in trades if t.live]:
            await self._cancel_one(trade)

    async def aclose(self) -> None:
        await self._session.close()

    # --- PushReceiver -----------------------------------------------------------------------------

    def handle_push(self, request: PushRequest) -> PushVerdict:
        """A 1688 push message (open.1688.com messageDoc, AliOpen SDK): form field `message` (a JSON
        envelope `{msgId, gmtBorn, type, data, userInfo}`) and `_aop_signature` over every other parameter
        (`relay.signing.aop_push_signature`). Order and logistics messages wake the poller, once per
        `msgId` (1688 repeats a push it thinks was lost); nothing in a message is taken as the truth."""
        if len(request.body) > PUSH_MAX_BYTES:
            return PushVerdict(413, detail=f"push larger than {PUSH_MAX_BYTES} bytes")
        try:
            form = parse_qsl(request.body.decode(), keep_blank_values=True, strict_parsing=bool(request.body))
        except (UnicodeDecodeError, ValueError):
            return PushVerdict(400, detail="not a form-encoded body")
        params = {**request.query, **dict(form)}  # GUESS: the SDK signs query and form parameters alike
        offered = params.pop("_aop_signature", "")
        secret = self.options.app_secret.get_secret_value()
        if not offered or not aop_push_signature_matches(secret, params, offered):
            return PushVerdict(401, detail="invalid signature")
        try:
            message = json.loads(params.get("message", ""))
        except ValueError:
            message = None
        if not isinstance(message, dict):
            return PushVerdict(400, detail="`message` is not a JSON object")
        msg_id, kind = str(message.get("msgId") or ""), str(message.get("type") or "")
        data = message.get("data")
        order_id = str(data.get("orderId") or "") if isinstance(data, dict) else ""
        detail = f"{kind} msgId={msg_id or '-'} order={order_id or '-'}"[:200]
        if msg_id in self._seen_pushes:
            return PushVerdict(200, wake=False, detail=f"repeat: {detail}")
        if msg_id:
            self._seen_pushes[msg_id] = None
            while len(self._seen_pushes) > MAX_SEEN_PUSHES:
                del self._seen_pushes[next(iter(self._seen_pushes))]
        return PushVerdict(200, wake=kind.startswith(PUSH_WAKES), detail=detail)

    # --- ShipmentSource ---------------------------------------------------------------------------

    async def fetch_shipments(self, since: str | None) -> AsyncIterator[ShipmentPage]:
        """Orders modified after the cursor (`<modifyTime>:<orderId>`), oldest first; one page per order
        with parcels (its cursor), and a last empty page when orders without parcels moved it on."""
        after = parse_cursor(since)
        trades = [t for t in await self._modified_since(after) if after is None or t.position > after]
        trades.sort(key=lambda t: t.position)
        notices: list[FactoryOrderNotice] = []
        sent: set[tuple[str, str | None]] = set()  # one notice per factory order and reason per poll
        moved: str | None = None
        for trade in trades:
            notices += self._check_payment(trade)
            shipments = await self._shipments(trade) if self._ours(trade) and trade.shipped_any else []
            if shipments:
                moved = None
                sent.update((n.factory_order_key, n.reason) for n in notices)
                yield ShipmentPage(shipments, cursor_of(trade), notices)
                notices = []
            else:
                moved = cursor_of(trade)
        sent.update((n.factory_order_key, n.reason) for n in notices)
        unpaid = await self._watch_unpaid()
        for trade in unpaid:
            notices += [n for n in self._check_payment(trade) if (n.factory_order_key, n.reason) not in sent]
        # Two orders under one key are made by creates, so both are unpaid or one moved since the cursor.
        seen = {t.order_id: t for t in [*trades, *unpaid]}
        notices += self._check_duplicates(list(seen.values()))
        if moved is not None or notices:
            yield ShipmentPage([], moved, notices)

    # --- placing ----------------------------------------------------------------------------------

    def _cargo(self, order: FactoryOrder, ship_to: str = "") -> tuple[list[dict[str, Any]], str]:
        """`cargoParamList` (one entry per offer/spec) and the buyer message with the line trailer."""
        offers = {line.line_id: self._offer_of(order, line) for line in order.lines}
        unknown = sorted({line.sku or "(none)" for line in order.lines if offers[line.line_id] is None})
        if unknown:
            raise NeedsAttention(
                AttentionReason.UNKNOWN_SKU,
                f"no 1688 offerId:specId in the catalogue or `skus` for {', '.join(unknown)}",
            )
        quantities: dict[tuple[str, str], int] = {}
        refs = []
        notes = [f"order {order.order_number or order.order_id}"]
        if ship_to:
            notes.append(f"ship to: {ship_to}")
        for line in order.lines:
            offer, spec = offers[line.line_id] or ("", "")
            quantities[(offer, spec)] = quantities.get((offer, spec), 0) + line.quantity
            refs.append(LineRef(line.line_id, offer, spec[:8], line.quantity))
            if line.properties:
                props = "; ".join(f"{k}: {v}" for k, v in line.properties.items())
                notes.append(f"{line.sku} x{line.quantity}: {props}")
        tail = trailer(order.key, refs)
        if len(tail) > MESSAGE_LIMIT - 20:
            raise NeedsAttention(
                AttentionReason.FACTORY_REJECTED,
                f"{len(order.lines)} lines do not fit one 1688 buyer message",
            )
        text = "\n".join(notes)[: MESSAGE_LIMIT - len(tail) - 1]
        cargo = [
            {"offerId": int(offer), "specId": spec, "quantity": qty}
            for (offer, spec), qty in quantities.items()
        ]
        return cargo, f"{text}\n{tail}"

    def _offer_of(self, order: FactoryOrder, line: OrderLine) -> tuple[str, str] | None:
        """(offerId, specId) for a line: the catalogue's factory SKU if it is one, else the `skus` map."""
        target = order.factory_skus.get(line.line_id)
        if target is not None:
            offer, _, spec = target.partition(":")
            ok = offer.isdigit() and re.fullmatch(r"[A-Za-z0-9]{1,64}", spec)
            return (offer, spec) if ok else None
        found = self._offers.get(line.sku or "")
        return (found[0], found[1]) if found else None

    def _address(self, order: FactoryOrder) -> tuple[dict[str, str], str]:
        """`addressParam` from the storefront address (1688 delivers inside mainland China only, as text),
        and the customer's address for the message when the parcel goes to the `forwarder` instead."""
        a = order.shipping_address
        fwd = self.options.forwarder
        if fwd is not None and a.country_code.upper() not in ("CN", ""):
            parts = (
                a.name,
                a.company,
                a.line1,
                a.line2,
                a.city,
                a.region,
                a.postal_code,
                a.country_code,
                a.phone,
            )
            customer = ", ".join(p.strip() for p in parts if p.strip())
            if not (a.name.strip() and a.line1.strip() and a.city.strip()):
                raise NeedsAttention(
                    AttentionReason.ADDRESS_INVALID, f"incomplete address abroad: {customer!r}"
                )
            return {
                "fullName": fwd.full_name,
                "mobile": fwd.mobile,
                "phone": "",
                "postCode": fwd.post_code,
                "provinceText": fwd.province,
                "cityText": fwd.city,
                "areaText": fwd.area,
                "townText": fwd.town,
                "address": fwd.address,
            }, customer
        digits = re.sub(r"\D", "", a.phone)
        digits = digits[2:] if digits.startswith("86") and len(digits) == 13 else digits
        mobile = digits if re.fullmatch(r"1\d{10}", digits) else ""
        street = " ".join(part for part in (a.line1.strip(), a.line2.strip(), a.company.strip()) if part)
        province = a.region.strip() or PROVINCE_OF_CITY.get(a.city.strip().lower(), "")
        missing = [
            name
            for name, value in (
                ("name", a.name.strip()),
                ("phone", digits),
                ("region (province)", province),
                ("city", a.city.strip()),
                ("line1", a.line1.strip()),
            )
            if not value
        ]
        problems = [f"missing {', '.join(missing)}"] if missing else []
        if a.country_code.upper() not in ("CN", ""):
            problems.append(f"country {a.country_code} is not mainland China (and no `forwarder` is set)")
        if len(street) > 200:
            problems.append("street address longer than 200 characters")
        if problems:
            raise NeedsAttention(AttentionReason.ADDRESS_INVALID, "; ".join(problems))
        return {
            "fullName": a.name.strip(),
            "mobile": mobile,
            "phone": "" if mobile else digits,
            "postCode": a.postal_code.strip(),
            "provinceText": province,
            "cityText": a.city.strip(),
            "areaText": "",
            "townText": "",
            "address": street,
        }, ""

    async def _create(
        self, order: FactoryOrder, cargo: list[dict[str, Any]], address: dict[str, str], message: str
    ) -> Trade:
        params = {
            "flow": self.options.flow,
            "addressParam": address,
            "cargoParamList": cargo,
            "message": message,
            "outOrderId": order.key,
        }
        retries = in_call_retries(self.context.sleep, attempts=CREATE_ATTEMPTS, retry_on=_is_flow_control)
        try:
            resp: GatewayResponse = await retries(self._call, TRADE, FAST_CREATE_ORDER, params)
        except _FlowControl:
            raise  # refused every time: nothing was made; the persisted schedule tries again
        except RetriableAdapterError as exc:
            if exc.status == 429:
                raise  # a throttle is a refusal too
            return await self._after_uncertain(order, exc)
        result = resp.data.get("result")
        order_id = str(result.get("orderId") or "") if isinstance(result, dict) else ""
        if classify(resp) is Kind.BUSINESS_ERROR or not order_id:
            raise FatalAdapterError(
                f"1688 refused the order: {resp.error_code or 'no orderId'}: {resp.error_message}",
                status=resp.status,
                body=resp.body[:2048],
            )
        assert isinstance(result, dict)
        self.context.log.info(
            "alibaba1688_order_created",
            key=order.key,
            order_id=order_id,
            total_cny=str(fen(result.get("totalSuccessAmount"))),
            post_fee_cny=str(fen(result.get("postFee"))),
        )
        failed = result.get("failedOfferList") or []
        if failed:
            raise NeedsAttention(
                AttentionReason.FACTORY_REJECTED,
                f"1688 order {order_id} was created without offers {failed}: complete or cancel it at 1688",
                reference=order_id,
            )
        try:
            return await self._view(order_id)
        except RetriableAdapterError:  # it was made: report it from the answer
            return Trade(
                order_id=order_id,
                out_order_id=order.key,
                status="waitbuyerpay",
                create_time="",
                modify_time="",
                pay_timeout_s=None,
                close_reason="",
                close_operate_type="",
                total=fen(result.get("totalSuccessAmount")),
                goods=None,
                shipping=fen(result.get("postFee")),
                message=message,
                items=(),
            )

    async def _after_uncertain(self, order: FactoryOrder, exc: RetriableAdapterError) -> Trade:
        """A create whose outcome is unknown: 1688 is the truth, look the key up before anything else."""
        key = order.key
        self.context.log.warning("alibaba1688_create_uncertain", key=key, error=describe(exc))
        trade = self._resolve(key, await self._lookup(order))
        if trade is None:
            raise RetriableAdapterError(
                f"fastCreateOrder outcome unknown ({exc}); no 1688 order carries outOrderId {key} yet: "
                "it is looked up again before any new create",
                status=exc.status,
                body=exc.body,
                retry_after=exc.retry_after,
            )
        self.context.log.info(
            "alibaba1688_order_found_after_uncertain_create", key=key, order_id=trade.order_id
        )
        return trade

    def _resolve(self, key: str, trades: list[Trade]) -> Trade | None:
        """The one 1688 order under `key`, None when there is none; never two, never a closed one."""
        live = [t for t in trades if t.live]
        if len(live) > 1:
            ids = ", ".join(t.order_id for t in live)
            self.context.log.error("alibaba1688_duplicate_order", key=key, order_ids=ids)
            raise NeedsAttention(
                AttentionReason.DUPLICATE_AT_FACTORY,
                f"{len(live)} live 1688 orders carry outOrderId {key}: {ids}; cancel all but one at 1688",
                reference=ids,
            )
        if live:
            return live[0]
        if trades:
            trade = trades[0]
            if trade.closed_unpaid:
                raise NeedsAttention(
                    AttentionReason.PAYMENT_EXPIRED,
                    f"1688 order {trade.order_id} was closed unpaid ({trade.close_reason}); not re-created",
                    reference=trade.order_id,
                )
            raise FatalAdapterError(
                f"1688 order {trade.order_id} under this key is {trade.status} ({trade.close_reason}); "
                "not re-created",
                status=409,
            )
        return None

    async def _pay(self, order: FactoryOrder, trade: Trade) -> Trade:
        """Protocol pay, confirmed by re-reading: `paySuccess=false` may come back although the money was
        taken, so the order's status decides, and a retry happens only while it is still unpaid."""
        last = ""
        for attempt in range(1, PAY_ATTEMPTS + 1):
            param: dict[str, Any] = {"orderId": int(trade.order_id), "opRequestId": f"{order.key}-pay"}
            if self.options.pay_channel:
                param["payChannel"] = self.options.pay_channel
            refused = False
            try:
                resp = await self._call(TRADE, PREPARE_PAY, {"tradeWithholdPreparePayParam": param})
            except RetriableAdapterError as exc:
                last = str(exc)
            else:
                outer = resp.data.get("result")
                outer = outer if isinstance(outer, dict) else {}
                if outer.get("success") is False or classify(resp) is Kind.BUSINESS_ERROR:
                    last = f"{outer.get('code') or resp.error_code}: {outer.get('message') or resp.error_message}"
                    refused = True
                else:
                    inner = outer.get("result")
                    last = f"paySuccess={inner.get('paySuccess') if isinstance(inner, dict) else None}"
            trade = await self._view(trade.order_id)
            if trade.status != "waitbuyerpay":
                if trade.closed_unpaid:
                    self._resolve(order.key, [trade])  # raises payment_expired
                self.context.log.info("alibaba1688_order_paid", key=order.key, order_id=trade.order_id)
                return trade
            if refused:
                deadline = trade.pay_deadline()
                raise NeedsAttention(
                    AttentionReason.AWAITING_PAYMENT,
                    f"protocol pay of 1688 order {trade.order_id} was refused ({last}): pay it at 1688"
                    + (
                        f" before {deadline.astimezone(UTC).isoformat(timespec='minutes')}"
                        if deadline
                        else ""
                    ),
                    reference=trade.order_id,
                )
            if attempt < PAY_ATTEMPTS:
                await self.context.sleep(2.0 * attempt)
        raise RetriableAdapterError(
            f"1688 order {trade.order_id} is placed but still unpaid after protocol pay ({last}); "
            "the next attempt re-reads it and pays again"
        )

    def _reference(self, trade: Trade) -> str:
        """`1688:<orderId>; <status>; CNY <total>`: the money and the deadline are `Placement` fields."""
        parts = [f"1688:{trade.order_id}", trade.status]
        if trade.total is not None:
            parts.append(f"CNY {trade.total}")
        return "; ".join(parts)[:200]

    # --- cancelling -------------------------------------------------------------------------------

    async def _cancel_one(self, trade: Trade) -> None:
        for _ in range(CANCEL_ATTEMPTS):
            if not trade.live:
                return
            if trade.shipped_any:
                raise AlreadyShipped(
                    f"1688 order {trade.order_id} is already sent ({trade.status})", status=409
                )
            if trade.status != "waitbuyerpay":
                raise NeedsAttention(
                    AttentionReason.REFUND_REQUIRED,
                    f"1688 order {trade.order_id} is paid ({trade.status}): only a refund requested at 1688 "
                    "(the seller must agree) can undo it",
                    reference=trade.order_id,
                )
            params = {
                "webSite": "1688",
                "tradeID": trade.order_id,
                "cancelReason": self.options.cancel_reason,
            }
            retries = in_call_retries(self.context.sleep, attempts=READ_ATTEMPTS, retry_on=_is_flow_control)
            resp: GatewayResponse = await retries(self._call, TRADE, CANCEL, params)
            code = resp.error_code if classify(resp) is Kind.BUSINESS_ERROR else ""
            if code == "CLOSE_ORDER_TOO_FAST":
                created = parse_time(trade.create_time)
                age = self.context.clock() - created.timestamp() if created else 0.0
                await self.context.sleep(max(CANCEL_MIN_AGE_S - age, 1.0))
            elif code and code != "ORDER_STATUS_ERROR":
                raise FatalAdapterError(
                    f"1688 refused to cancel order {trade.order_id}: {code}: {resp.error_message}",
                    status=resp.status,
                    body=resp.body[:2048],
                )
            trade = await self._view(trade.order_id)  # confirm, or see what changed (paid, sent)
            if not trade.live:
                self.context.log.info("alibaba1688_order_cancelled", order_id=trade.order_id)
                return
        raise RetriableAdapterError(
            f"1688 order {trade.order_id} is not cancelled yet (too soon after creation?)",
            retry_after=CANCEL_MIN_AGE_S,
        )

    # --- reading ----------------------------------------------------------------------------------

    async def _lookup(self, order: FactoryOrder) -> list[Trade]:
        """Every 1688 order carrying `outOrderId = key` (a lookup key, not a guarantee of one order).

        Only orders whose echoed `outOrderId` (or message trailer) is the key count. When the answer holds
        other orders, the gateway did not filter by `outOrderId` (GUESS that it always does): then every
        order created since the storefront order (less an hour) is read, so absence is proven, not assumed.
        """
        key = order.key
        resp = await self._read(
            TRADE, GET_BUYER_ORDER_LIST, {"outOrderId": key, "page": 1, "pageSize": LOOKUP_PAGE}
        )
        if classify(resp) is Kind.BUSINESS_ERROR:
            raise RetriableAdapterError(
                f"looking up outOrderId {key} failed: {resp.error_code}: {resp.error_message}",
                status=resp.status,
            )
        trades = [t for t in map(parse_trade, _list(resp.data.get("result"))) if t is not None]
        mine = [t for t in trades if t.relay_key == key]
        if len(mine) == len(trades):
            return mine
        self.context.log.warning("alibaba1688_lookup_unfiltered", key=key)
        since = order.created_at - timedelta(hours=1)
        return [t for t in await self._scan({"createStartTime": time_text(since)}) if t.relay_key == key]

    async def _view(self, order_id: str) -> Trade:
        resp = await self._read(TRADE, GET_BUYER_VIEW, {"webSite": "1688", "orderId": order_id})
        trade = parse_trade(resp.data.get("result")) if classify(resp) is Kind.OK else None
        if trade is None:
            raise RetriableAdapterError(
                f"reading 1688 order {order_id} failed: {resp.error_code}: {resp.error_message}",
                status=resp.status,
            )
        return trade

    async def _modified_since(self, after: tuple[str, int] | None) -> list[Trade]:
        """Orders modified at or after the cursor's time."""
        return await self._scan({"modifyStartTime": f"{after[0]}+0800"} if after is not None else {})

    async def _scan(self, query: Mapping[str, Any]) -> list[Trade]:
        """Every page of `getBuyerOrderList(query)` (newest first at 1688; deduplicated by id, keeping the
        newest version: paging while orders change repeats some, never skips one)."""
        found: dict[str, Trade] = {}
        listed = 0
        for page in range(1, MAX_LIST_PAGES + 1):
            params: dict[str, Any] = {**query, "page": page, "pageSize": self.options.page_size}
            resp = await self._read(TRADE, GET_BUYER_ORDER_LIST, params)
            if classify(resp) is Kind.BUSINESS_ERROR:
                raise RetriableAdapterError(f"order listing failed: {resp.error_code}: {resp.error_message}")
            raw = _list(resp.data.get("result"))
            for trade in filter(None, map(parse_trade, raw)):
                known = found.get(trade.order_id)
                if known is None or trade.position > known.position:
                    found[trade.order_id] = trade
            try:
                total = int(resp.data.get("totalRecord") or 0)
            except (TypeError, ValueError):
                total = 0
            listed += len(raw)
            if not raw or listed >= total:  # the gateway may cap pageSize below what was asked
                break
        return list(found.values())

    async def _shipments(self, trade: Trade) -> list[Shipment]:
        """The order's parcels (one logistics entry each), mapped to relay's lines through the sub-order ids."""
        params = {
            "orderId": trade.order_id,
            "webSite": "1688",
            "fields": "company.name,sender,receiver,sendgood",
        }
        resp = await self._read(LOGISTICS, GET_LOGISTICS_INFOS, params)
        if classify(resp) is Kind.BUSINESS_ERROR:
            if resp.error_code == NO_LOGISTICS_YET:
                return []
            raise RetriableAdapterError(
                f"logistics of 1688 order {trade.order_id}: {resp.error_code}: {resp.error_message}"
            )
        refs = parse_trailer(trade.message)[1]
        items = {i.sub_item_id: i for i in trade.items}
        left = {n: ref.quantity for n, ref in enumerate(refs)}
        shipments = []
        for entry in _list(resp.data.get("result")):
            if not isinstance(entry, dict):
                continue
            parcel_id = str(entry.get("logisticsId") or entry.get("logisticsBillNo") or "")
            tracking = str(entry.get("logisticsBillNo") or "")
            lines: dict[str, int] = {}
            for sub, quantity in _goods(entry, items):
                item = items.get(sub)
                todo = quantity
                for n, ref in enumerate(refs):  # fill relay's lines of this offer/spec in order
                    if todo <= 0:
                        break
                    if (
                        item
                        and ref.offer_id == item.offer_id
                        and item.spec_id.startswith(ref.spec_prefix)
                        and left[n]
                    ):
                        take = min(todo, left[n])
                        left[n] -= take
                        todo -= take
                        lines[ref.line_id] = lines.get(ref.line_id, 0) + take
            if not parcel_id or not tracking or not lines:
                self.context.log.warning(
                    "polled_shipment_malformed",
                    reason="no tracking number" if not tracking else "no relay line for its goods",
                    order_id=trade.order_id,
                    shipment_id=parcel_id or None,
                )
                continue
            company = str(entry.get("logisticsCompanyNo") or "").upper()
            carrier = CARRIERS.get(company) or str(
                entry.get("logisticsCompanyName") or company or "1688 logistics"
            )
            shipments.append(
                Shipment(
                    factory_order_key=trade.relay_key,
                    shipment_id=parcel_id,
                    carrier=carrier,
                    tracking_number=tracking,
                    lines=tuple(ShipmentLine(line_id=k, quantity=v) for k, v in lines.items()),
                )
            )
        return shipments

    # --- flags: notices for the core (`ShipmentPage.notices`), logged once per order and process --------

    def _ours(self, trade: Trade) -> bool:
        return trade.relay_key != ""

    def _flag(self, trade: Trade, reason: AttentionReason, event: str, **fields: Any) -> None:
        if (trade.order_id, reason.value) in self._flagged:
            return
        self._flagged.add((trade.order_id, reason.value))
        self.context.log.error(
            event, needs_attention=reason.value, key=trade.relay_key, order_id=trade.order_id, **fields
        )

    def _check_duplicates(self, trades: list[Trade]) -> list[FactoryOrderNotice]:
        by_key: dict[str, list[Trade]] = {}
        for trade in trades:
            if self._ours(trade) and trade.live:
                by_key.setdefault(trade.relay_key, []).append(trade)
        notices = []
        for key, dupes in by_key.items():
            if len(dupes) > 1:
                for trade in dupes:
                    self._flag(trade, AttentionReason.DUPLICATE_AT_FACTORY, "alibaba1688_duplicate_order")
                ids = ", ".join(t.order_id for t in dupes)
                notices.append(
                    FactoryOrderNotice(
                        factory_order_key=key,
                        reason=AttentionReason.DUPLICATE_AT_FACTORY,
                        detail=f"{len(dupes)} live 1688 orders carry outOrderId {key}: {ids}; "
                        "cancel all but one at 1688",
                    )
                )
        return notices

    def _check_payment(self, trade: Trade) -> list[FactoryOrderNotice]:
        """The notice `trade`'s payment state calls for: closed unpaid, payment due soon, or paid."""
        if not self._ours(trade):
            return []
        key = trade.relay_key
        if trade.closed_unpaid:
            self._flag(trade, AttentionReason.PAYMENT_EXPIRED, "alibaba1688_order_closed_unpaid")
            detail = f"1688 order {trade.order_id} was closed unpaid ({trade.close_reason}); not re-created"
            return [
                FactoryOrderNotice(
                    factory_order_key=key, reason=AttentionReason.PAYMENT_EXPIRED, detail=detail
                )
            ]
        if trade.status == "waitbuyerpay":
            deadline = trade.pay_deadline()
            now = datetime.fromtimestamp(self.context.clock(), UTC)
            if deadline is not None and deadline - now <= timedelta(seconds=self.options.payment_warning_s):
                pay_by = deadline.astimezone(UTC).isoformat(timespec="minutes")
                self._flag(trade, AttentionReason.AWAITING_PAYMENT, "alibaba1688_payment_due", pay_by=pay_by)
                detail = f"pay 1688 order {trade.order_id} before {pay_by}: 1688 closes it unpaid then"
                return [
                    FactoryOrderNotice(
                        factory_order_key=key, reason=AttentionReason.AWAITING_PAYMENT, detail=detail
                    )
                ]
            return []
        if trade.live:
            detail = f"1688 order {trade.order_id} is paid ({trade.status})"
            return [FactoryOrderNotice(factory_order_key=key, reason=None, detail=detail)]
        return []

    async def _watch_unpaid(self) -> list[Trade]:
        """Unpaid orders change no more until they close: look at them on every poll."""
        try:
            resp = await self._read(
                TRADE, GET_BUYER_ORDER_LIST, {"orderStatus": "waitbuyerpay", "page": 1, "pageSize": 50}
            )
        except AdapterError as exc:
            self.context.log.warning("alibaba1688_unpaid_check_failed", error=describe(exc))
            return []
        return list(filter(None, map(parse_trade, _list(resp.data.get("result")))))

    # --- the gateway ------------------------------------------------------------------------------

    async def _read(self, namespace: str, api: str, params: Mapping[str, Any]) -> GatewayResponse:
        """A call that changes nothing: retried in-call on anything retriable."""
        retries = in_call_retries(self.context.sleep, attempts=READ_ATTEMPTS)
        return await retries(self._call, namespace, api, params)

    async def _call(self, namespace: str, api: str, params: Mapping[str, Any]) -> GatewayResponse:
        """One call; refreshes an expired token once. Returns OK and business-error answers; raises the
        rest (`_Uncertain` when the call may have acted without us knowing)."""
        for refreshed in (False, True):
            token = self._client.access_token
            try:
                resp = await self._client.call(namespace, api, params)
            except AdapterError:
                raise
            except TimeoutError as exc:
                raise _Uncertain(f"{api}: timed out after {self.options.request_timeout_s:g}s") from exc
            except aiohttp.ClientError as exc:
                raise _Uncertain(f"{api}: connection failed: {type(exc).__name__}: {exc}") from exc
            kind = classify(resp)
            if kind is Kind.TOKEN_EXPIRED and not refreshed:
                await self._refresh(token)
                continue
            return self._check(api, resp, kind)
        raise AssertionError("unreachable")

    def _check(self, api: str, resp: GatewayResponse, kind: Kind) -> GatewayResponse:
        quoted = resp.body[:2048]
        what = f"{api}: {resp.error_code}: {resp.error_message}"
        if kind in (Kind.OK, Kind.BUSINESS_ERROR):
            return resp
        if kind is Kind.FLOW_CONTROL:
            raise _FlowControl(f"flow control: {what}", status=resp.status, body=quoted)
        if kind in (Kind.AUTH, Kind.TOKEN_EXPIRED):
            raise AuthError(f"credentials refused: {what}", status=resp.status, body=quoted)
        if kind is Kind.GATEWAY_ERROR:
            raise FatalAdapterError(f"gateway refused: {what}", status=resp.status, body=quoted)
        if kind is Kind.UNREADABLE:
            raise _Uncertain(f"{api}: unreadable answer", status=resp.status, body=quoted)
        raise error_for_status(resp.status, resp.body, resp.headers)

    async def _refresh(self, stale: str) -> None:
        async with self._refresh_lock:
            if self._client.access_token != stale:
                return  # refreshed by a concurrent call
            try:
                resp = await self._client.refresh_token()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise RetriableAdapterError(f"refreshing the 1688 access token failed: {exc}") from exc
            if self._client.access_token == stale:
                if resp.status >= 500:
                    raise RetriableAdapterError("refreshing the 1688 access token failed", status=resp.status)
                raise AuthError(
                    "the 1688 access token expired and the refresh token was refused: authorise the app again "
                    "(adapters/alibaba1688/README.md)",
                    status=resp.status,
                    body=resp.body[:512],
                )
            self.context.log.info("alibaba1688_token_refreshed")


def _is_flow_control(exc: BaseException) -> bool:
    return isinstance(exc, _FlowControl)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _goods(entry: dict[str, Any], items: Mapping[str, Item]) -> list[tuple[str, int]]:
    """(sub-order id, quantity) of one parcel: `logisticsOrderGoods`, else every `orderEntryIds` item whole."""
    goods = []
    for g in _list(entry.get("logisticsOrderGoods")):
        if isinstance(g, dict) and g.get("tradeOrderItemId") is not None:
            try:
                goods.append((str(g["tradeOrderItemId"]), int(Decimal(str(g.get("quantity") or 0)))))
            except (InvalidOperation, ValueError):
                continue
    if goods:
        return goods
    ids = [s.strip() for s in str(entry.get("orderEntryIds") or "").split(",") if s.strip()]
    return [(sub, items[sub].quantity) for sub in ids if sub in items]
