"""A thin client for the 1688 open platform gateway (buyer side). From relay it uses only `relay.signing`.

Every API call is `POST {gateway}/param2/1/{namespace}/{apiName}/{appKey}`, form-encoded UTF-8, with the
reseller's `access_token`, `_aop_timestamp` (ms) and `_aop_signature` = uppercase hex HMAC-SHA1 keyed with
the app secret over `urlPath + concat(sorted(key + value))`, where `urlPath` starts at `param2/`
(open.1688.com sysSignature; `relay.signing.aop_signature`). Nested parameters (`addressParam`,
`cargoParamList`, `tradeWithholdPreparePayParam`) travel as one JSON string each.

The token is refreshed with the OAuth refresh flow: `POST {gateway}/param2/1/system.oauth2/getToken/{appKey}`
with `grant_type=refresh_token`, `client_id`, `client_secret`, `refresh_token` (not signed).

This module reads answers and classifies them (`classify`); mapping to relay's error tree is the
adapter's. Transport errors (timeouts, resets) are left to the caller.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp

from relay.signing import aop_signature

GATEWAY = "https://gw.open.1688.com/openapi"

TRADE = "com.alibaba.trade"
LOGISTICS = "com.alibaba.logistics"
FAST_CREATE_ORDER = "alibaba.trade.fastCreateOrder"
GET_BUYER_VIEW = "alibaba.trade.get.buyerView"
GET_BUYER_ORDER_LIST = "alibaba.trade.getBuyerOrderList"
GET_LOGISTICS_INFOS = "alibaba.trade.getLogisticsInfos.buyerView"
CANCEL = "alibaba.trade.cancel"
PREPARE_PAY = "alibaba.trade.pay.protocolPay.preparePay"

TOKEN_EXPIRED_MESSAGE = "Request need user authorized"  # noqa: S105 - an error text, not a secret
FLOW_CONTROL = "gw.QosAppFrequencyLimit"
AUTH_ERRORS = frozenset(
    {"gw.SignatureInvalid", "gw.APIACLDecline", "gw.AppKeyNotFound", "gw.NoUsageLeftError"}
)
NO_LOGISTICS_YET = "500_2"
"""getLogisticsInfos.buyerView: not shipped yet, no logistics details."""


class Kind(Enum):
    """What an answer means, before any mapping to relay's errors."""

    OK = "ok"
    BUSINESS_ERROR = "business_error"  # HTTP 200, success=false (or an errorCode) in the body
    FLOW_CONTROL = "flow_control"  # gw.QosAppFrequencyLimit: nothing was done, try again later
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a kind of answer, not a secret  # "Request need user authorized": refresh the token, then retry
    AUTH = "auth"  # bad signature, API not granted to the app, unknown app key, no usage left
    GATEWAY_ERROR = "gateway_error"  # any other gw.* error (a bad parameter, an unknown API)
    HTTP_ERROR = "http_error"  # no gateway JSON: judge by the HTTP status
    UNREADABLE = "unreadable"  # HTTP 200 but not a JSON object


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def data(self) -> dict[str, Any]:
        data = self.json()
        return data if isinstance(data, dict) else {}

    @property
    def error_code(self) -> str:
        """The gateway's `error_code`, or a business `errorCode` / `code` (empty when there is none)."""
        data = self.data
        for key in ("error_code", "errorCode", "code"):
            value = data.get(key)
            if value not in (None, ""):
                return str(value)
        result = data.get("result")
        if isinstance(result, dict):
            for key in ("errorCode", "code"):
                if result.get(key) not in (None, ""):
                    return str(result[key])
        return ""

    @property
    def error_message(self) -> str:
        data = self.data
        for key in ("error_message", "errorMessage", "message", "exception"):
            value = data.get(key)
            if value not in (None, ""):
                return str(value)
        result = data.get("result")
        if isinstance(result, dict):
            for key in ("errorMessage", "message"):
                if result.get(key) not in (None, ""):
                    return str(result[key])
        return ""


def classify(resp: GatewayResponse) -> Kind:  # noqa: PLR0911 - a decision table reads best as early returns
    """Gateway errors are `{"error_code", "error_message", "exception"}` (HTTP 400/401/...); business
    errors come with HTTP 200 and `success=false` (typed String on get.buyerView) or an error code."""
    data = resp.json()
    if isinstance(data, dict):
        if TOKEN_EXPIRED_MESSAGE in (str(data.get("exception", "")), str(data.get("error_message", ""))):
            return Kind.TOKEN_EXPIRED
        code = str(data.get("error_code") or "")
        if code == FLOW_CONTROL:
            return Kind.FLOW_CONTROL
        if code in AUTH_ERRORS:
            return Kind.AUTH
        if code.startswith("gw."):
            return Kind.GATEWAY_ERROR
    if resp.status != 200:
        return Kind.HTTP_ERROR
    if not isinstance(data, dict):
        return Kind.UNREADABLE
    if str(data.get("success", "true")).lower() == "false" or data.get("errorCode") or data.get("error_code"):
        return Kind.BUSINESS_ERROR
    return Kind.OK


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


class AopClient:
    """Signs and POSTs gateway calls. The caller owns the session (timeouts, egress rules).

    `access_token` changes when `refresh_token()` succeeds; it lives in memory only (the configured one
    is used again after a restart, and refreshed when the gateway says it expired).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        app_key: str,
        app_secret: str,
        access_token: str,
        refresh_token: str,
        gateway: str = GATEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self.app_key = app_key
        self._secret = app_secret
        self.access_token = access_token
        self._refresh_token = refresh_token
        self.gateway = gateway.rstrip("/")
        self._clock = clock

    def url_path(self, namespace: str, api: str) -> str:
        return f"param2/1/{namespace}/{api}/{self.app_key}"

    def signed_params(self, namespace: str, api: str, params: Mapping[str, Any]) -> dict[str, str]:
        """The form fields of one call: the API's params (nested ones as JSON), the token, a timestamp
        and the signature over all of them."""
        fields = {k: v if isinstance(v, str) else compact_json(v) for k, v in params.items() if v is not None}
        fields["access_token"] = self.access_token
        fields["_aop_timestamp"] = str(int(self._clock() * 1000))
        fields["_aop_signature"] = aop_signature(self._secret, self.url_path(namespace, api), fields)
        return fields

    async def call(self, namespace: str, api: str, params: Mapping[str, Any]) -> GatewayResponse:
        url = f"{self.gateway}/{self.url_path(namespace, api)}"
        return await self._post(url, self.signed_params(namespace, api, params))

    async def refresh_token(self) -> GatewayResponse:
        """Exchange the refresh token for a new access token (kept in `access_token` on success)."""
        url = f"{self.gateway}/param2/1/system.oauth2/getToken/{self.app_key}"
        fields = {
            "grant_type": "refresh_token",
            "client_id": self.app_key,
            "client_secret": self._secret,
            "refresh_token": self._refresh_token,
        }
        resp = await self._post(url, fields)
        token = resp.data.get("access_token") if resp.status == 200 else None
        if isinstance(token, str) and token:
            self.access_token = token
        return resp

    async def _post(self, url: str, fields: dict[str, str]) -> GatewayResponse:
        async with self._session.post(
            url,
            data=fields,
            headers={"Accept": "application/json"},
            allow_redirects=False,
        ) as resp:
            return GatewayResponse(resp.status, await resp.text(errors="replace"), dict(resp.headers))
