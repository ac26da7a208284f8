"""Settings: read from TOML, validated in full, every problem reported by its dotted key.

Secrets may be written as `{ env = "NAME" }` or `{ file = "/run/secrets/name" }` (preferred) or inline.
They become `SecretStr`, whose repr and str never show the value.

Each `[storefronts.NAME]` / `[factories.NAME]` table has a few core keys (`adapter`, intervals, ...);
every other key belongs to the adapter and is validated against that adapter class's `Options` model.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from relay.collector import GcSetting
from relay.exceptions import ConfigurationError, UnsafeURL, remember_secrets
from relay.outbound.policy import check_url
from relay.signing import secret_bytes

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")
_PAIR = re.compile(r"^[A-Z]{3}/[A-Z]{3}$")


def _resolve_secret(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, Mapping):
        if set(value) == {"env"}:
            name = str(value["env"])
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set")
            value = os.environ[name]
        elif set(value) == {"file"}:
            path = Path(str(value["file"]))
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
        else:
            raise ValueError('a secret is a string, { env = "NAME" } or { file = "/path" }')
    if not isinstance(value, str) or not value.strip():
        raise ValueError("secret is empty")
    return SecretStr(value.strip())


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]
"""A secret setting: inline string, `{ env = "NAME" }` or `{ file = "/path" }`."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonSettings(Section):
    database: str = "sqlite:///relay.db"
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    lease_s: float = Field(default=120.0, gt=0)
    poller_lease_s: float = Field(default=30.0, gt=0)
    """A poller's lease on its storefront or polled factory (ADR 14): another daemon takes the poll over
    at most this long after the holder died or hung. A poller renews it between passes at half this period
    (`relay.loops.poller_lease.LeasedPoller`), whatever its poll interval."""
    batch_size: int = Field(default=200, ge=1, le=10_000)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    """The daemon's event loop: `auto` runs uvloop when it is installed (it is, on Linux and macOS, with
    relay's own dependencies), else asyncio's; `uvloop` insists on it; `asyncio` never uses it."""
    gc: GcSetting = "tuned"
    """The cyclic garbage collector once the daemon has started (`relay.collector`): `tuned` freezes what
    start-up built and collects less often; `python` keeps CPython's defaults."""

    @field_validator("event_loop")
    @classmethod
    def _loop_installed(cls, value: str) -> str:
        if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError(
                "uvloop is not installed: `pip install uvloop` (on Linux and macOS it comes with relay), "
                'or use event_loop = "auto" (uvloop when installed, else asyncio)'
            )
        return value

    @field_validator("database")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value.startswith("sqlite:///"):
            return value
        if value.startswith("postgresql://") and len(value) > len("postgresql://"):
            return value  # the pool parameters are checked when the store is made (relay.store.postgres)
        what = (
            f"unsupported database URL scheme {value.partition('://')[0]!r}"
            if "://" in value
            else "not a URL"
        )
        raise ValueError(
            f"{what}: use sqlite:///PATH (sqlite:///:memory: for a "
            "throwaway store) or postgresql://USER@HOST:PORT/DBNAME (PostgreSQL, for several daemons)"
        )


class InboundSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=65536, ge=1024, le=10 * 1024 * 1024)
    timestamp_tolerance_s: float = Field(default=300.0, gt=0)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A request's line and headers must be in this long after the connection opened (or, kept alive,
    after the previous response); also how long an idle kept-alive connection stays open."""
    max_connections: int = Field(default=256, ge=1, le=65535)
    """Open inbound connections at most; a connection beyond gets 503 and is closed."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets: `[::1]:9464`) as (host, port). Raises ValueError otherwise."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError('must be "host:port", e.g. "127.0.0.1:9464" (IPv6: "[::1]:9464")')
    return host, int(port)


class AdminSettings(Section):
    """The operators' listener: `/metrics`, `/healthz`, a detailed `/readyz` and the status page.

    Off unless `listen` is set (`relay.example.toml` sets it to 127.0.0.1:9464). It has no
    authentication: bind it to loopback, or to a private network a scraper reaches.
    """

    listen: str = ""
    """`host:port` to bind, e.g. "127.0.0.1:9464"; "" (the default) starts no admin listener."""
    status_page: bool = False
    """Serve the read-only status page (`/status`); only on a loopback `listen` (it shows shop data)."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value.strip():
            split_listen(value)
        return value.strip()

    @field_validator("status_page")
    @classmethod
    def _loopback_only(cls, value: bool, info: ValidationInfo) -> bool:
        listen = info.data.get("listen")
        if value and listen is not None:  # None: `listen` itself was invalid (reported there)
            if not listen:
                raise ValueError('needs admin.listen, e.g. "127.0.0.1:9464"')
            if not _loopback(split_listen(listen)[0]):
                raise ValueError(
                    "the status page shows shop data: admin.listen must be a loopback address "
                    "(127.0.0.1, [::1] or localhost); reach it through an SSH tunnel or a proxy with auth"
                )
        return value


class EgressSettings(Section):
    """Rules for every outbound request to a storefront or factory."""

    allow_plain_http: bool = False
    allow_private_addresses: bool = False
    connect_timeout_s: float = Field(default=5.0, gt=0)
    total_timeout_s: float = Field(default=30.0, gt=0)
    max_response_bytes: int = Field(default=1024 * 1024, ge=1024)


class RetrySettings(Section):
    """Persisted retry schedule (seconds after each failed attempt); Standard Webhooks' by default."""

    schedule_s: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    jitter: float = Field(default=0.1, ge=0, le=1)

    @field_validator("schedule_s")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v < 0 for v in value):
            raise ValueError("must be a non-empty list of non-negative seconds")
        return value


class RetentionSettings(Section):
    """How long history is kept (`relay prune`, and the daemon's pass every `interval_s`); see
    `relay.store.transitions.retention`. Non-final orders are never pruned."""

    enabled: bool = True
    """Run the daemon's automatic pass (`relay prune` works either way)."""
    inbound_message_days: float = Field(default=30.0, gt=0)
    """Callback message ids (replay protection) are kept this long; must exceed the inbound timestamp
    tolerance, beyond which a replay is refused by its timestamp anyway."""
    order_history_days: float = Field(default=90.0, gt=0)
    """Events, parcels and tracking pushes of orders final (completed or cancelled, nothing owed) for
    this long are deleted; the order, its lines and factory orders stay."""
    interval_s: float = Field(default=86400.0, ge=60)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Message ids, or orders, per delete transaction."""


class _AdapterSection(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    adapter: str
    options: Any = None


class StorefrontSettings(_AdapterSection):
    poll_interval_s: float = Field(default=30.0, gt=0)
    cursor_overlap_s: float = Field(default=300.0, ge=0)
    test_tags: tuple[str, ...] = ()
    retry: RetrySettings = RetrySettings(schedule_s=(0, 5, 30, 120, 600, 1800, 3600, 7200, 21600, 43200))
    start_from: str = "now"
    """Where the very first poll (no stored cursor) starts: "now" (the daemon's first start) or an ISO 8601
    date or time (a date is midnight UTC; a time without offset is UTC). Orders updated before it are
    never listed; orders already fulfilled on the storefront are recorded, never routed."""
    # Routing guards (README "Routing"): an order they stop is held with the reason until `relay release`.
    auto_place: bool = True
    """False: every order waits for a person (`awaiting_approval`)."""
    max_order_value: Decimal | None = Field(default=None, gt=0)
    """An order worth more (its total, in its own currency) is held `order_value_cap`."""
    max_orders_per_hour: int | None = Field(default=None, ge=1)
    """Orders routed beyond this many in the last hour are held `order_rate_cap`."""
    min_margin: Decimal | None = Field(default=None, ge=0)
    """What the customer paid less factory cost and shipping must be at least this (the order's currency),
    else the order is held `margin_too_low`."""
    min_margin_percent: Decimal | None = Field(default=None, ge=0, lt=100)
    """The same as a percentage of what the customer paid."""

    @field_validator("start_from")
    @classmethod
    def _start_point(cls, value: str) -> str:
        parse_start_from(value, now=0.0)
        return value


class FactorySettings(_AdapterSection):
    callback_secrets: tuple[Secret, ...] = Field(min_length=1)
    concurrency: int = Field(default=8, ge=1, le=256)
    shipment_poll_interval_s: float = Field(default=60.0, gt=0)  # adapters that are polled for shipments
    fallback_after_s: float | None = Field(default=None, gt=0)
    """Once this factory has been failing (its circuit open) this long, factory orders not yet sent to it go
    to the next factory by catalogue priority. None: they wait for it."""
    retry: RetrySettings = RetrySettings()
    no_tracking_after_days: float | None = Field(default=None, gt=0)
    """An order placed with this factory this many days ago with no parcel yet is flagged `no_tracking`."""
    tracking_stalled_after_days: float | None = Field(default=None, gt=0)
    """A partly shipped order whose last parcel from this factory is this many days old is flagged
    `tracking_stalled`."""
    shipping_cost: str | None = None
    """What this factory charges to ship one order, "AMOUNT CUR" (e.g. "4.50 EUR"): the margin guard adds it
    to the factory cost of the lines."""

    @field_validator("shipping_cost")
    @classmethod
    def _money(cls, value: str | None) -> str | None:
        if value is not None:
            parse_money(value)
        return value

    @field_validator("callback_secrets")
    @classmethod
    def _usable_secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:  # a bad `whsec_` secret would fail every callback, not `relay check`
            try:
                secret_bytes(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return value


class RoutingSettings(BaseModel):
    """`[routing]`: the SKU seed for the catalogue and the exchange rates the margin guard may use."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # unknown keys: `_routing_problems` names them
    skus: dict[str, str] = Field(default_factory=dict)
    """`"SKU" = "factory"`: seeds the SKU catalogue (README "Routing")."""
    rates: dict[str, Decimal] = Field(default_factory=dict)
    """`"CNY/EUR" = 0.128`: one CNY is 0.128 EUR (the inverse is used too). A cost in a currency with no rate
    to the order's currency holds the order `currency_mismatch`: it is never guessed."""

    @field_validator("rates")
    @classmethod
    def _pairs(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        bad = [f'{pair!r} is not a currency pair like "CNY/EUR"' for pair in value if not _PAIR.match(pair)]
        bad += [
            f"{pair}: the rate must be a number > 0"
            for pair, r in value.items()
            if not r.is_finite() or r <= 0
        ]
        if bad:
            raise ValueError("; ".join(bad))
        return value


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    daemon: DaemonSettings = DaemonSettings()
    inbound: InboundSettings = InboundSettings()
    admin: AdminSettings = AdminSettings()
    egress: EgressSettings = EgressSettings()
    retention: RetentionSettings = RetentionSettings()
    storefronts: dict[str, StorefrontSettings] = Field(min_length=1)
    factories: dict[str, FactorySettings] = Field(min_length=1)
    routing: RoutingSettings = RoutingSettings()

    @property
    def sku_map(self) -> dict[str, str]:
        return self.routing.skus


def parse_money(text: str) -> tuple[Decimal, str]:
    """An amount and its currency, `"4.50 EUR"` -> `(Decimal("4.50"), "EUR")`; ValueError otherwise."""
    amount, _, currency = text.strip().partition(" ")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0 or not CURRENCY_CODE.match(currency.strip()):
        raise ValueError(f'{text!r} is not an amount and a currency, e.g. "4.50 EUR"')
    return value, currency.strip()


def parse_start_from(value: str, *, now: float) -> datetime:
    """The start point a `start_from` setting names: "now" is `now`; a date is its midnight UTC; a time
    without an offset is UTC. Raises ValueError for anything else."""
    text = value.strip()
    if text.lower() == "now":
        return datetime.fromtimestamp(now, UTC)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError('must be "now" or an ISO 8601 date or time, e.g. "2026-11-01"') from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _problems(exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append((_dotted(prefix + tuple(err["loc"])), msg))
    return problems


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """`data[key]` if it is a TOML table, else an empty one (the model check reports the bad type)."""
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _core_keys(section: type[BaseModel]) -> set[str]:
    return set(section.model_fields) - {"options"}


def _check_urls(prefix: str, options: BaseModel, egress: EgressSettings) -> list[tuple[str, str]]:
    """Configured URLs that the egress policy would refuse, by key."""
    problems = []
    for key, value in options:
        if isinstance(value, AnyUrl):
            try:
                check_url(
                    str(value),
                    allow_plain_http=egress.allow_plain_http,
                    allow_private=egress.allow_private_addresses,
                )
            except UnsafeURL as exc:
                problems.append((f"{prefix}.{key}", str(exc)))
    return problems


def parse_settings(data: Mapping[str, Any], registry: Any) -> Settings:
    """Validate a config mapping. Raise `ConfigurationError` listing every problem by key.

    Core keys and each adapter's own keys are validated independently, so one run of `relay check`
    reports every problem, not just the first layer that failed.
    """
    problems: list[tuple[str, str]] = []
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        found = _problems(exc)
        # A list that is empty only because its items failed is noise next to the items' own errors.
        problems.extend(
            (key, msg)
            for key, msg in found
            if not (
                msg.startswith(("Tuple should have at least", "List should have at least"))
                and any(k.startswith(key + ".") for k, _ in found)
            )
        )
    egress = settings.egress if settings else EgressSettings()
    options: dict[tuple[str, str], BaseModel] = {}
    for kind, group, section in (
        ("storefronts", "relay.storefronts", StorefrontSettings),
        ("factories", "relay.factories", FactorySettings),
    ):
        tables = data.get(kind)
        if not isinstance(tables, Mapping):
            continue
        for name, raw in tables.items():
            if not NAME_PATTERN.match(str(name)):
                problems.append((f"{kind}.{name}", "name must match [a-z0-9][a-z0-9_-]*"))
            if not isinstance(raw, Mapping) or not isinstance(raw.get("adapter"), str):
                continue
            try:
                cls = registry.load(group, raw["adapter"])
            except ConfigurationError as exc:
                problems.append((f"{kind}.{name}.adapter", exc.problems[0][1]))
                continue
            extra = {k: v for k, v in raw.items() if k not in _core_keys(section)}
            try:
                options[(kind, name)] = cls.Options.model_validate(extra)
            except ValidationError as exc:
                problems.extend(_problems(exc, (kind, name)))
                continue
            problems.extend(_check_urls(f"{kind}.{name}", options[(kind, name)], egress))
    if settings and settings.retention.inbound_message_days * 86400 <= settings.inbound.timestamp_tolerance_s:
        problems.append(
            (
                "retention.inbound_message_days",
                "must keep message ids longer than inbound.timestamp_tolerance_s",
            )
        )
    problems.extend(_routing_problems(data))
    if problems or settings is None:
        raise ConfigurationError(problems)
    remember_secrets(_secret_values(settings, *options.values()))  # logs and errors scrub them anywhere
    return settings.model_copy(
        update={
            "storefronts": {
                n: _with_options(s, options[("storefronts", n)]) for n, s in settings.storefronts.items()
            },
            "factories": {
                n: _with_options(f, options[("factories", n)]) for n, f in settings.factories.items()
            },
        }
    )


def _routing_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`[routing]`: unknown keys, and SKUs mapped to a factory that is not configured."""
    routing = _table(data, "routing")
    problems = [(f"routing.{key}", "unknown key") for key in sorted(set(routing) - {"skus", "rates"})]
    factories = _table(data, "factories")
    for sku, factory in _table(routing, "skus").items():
        if factory not in factories:
            problems.append((f'routing.skus."{sku}"', f"unknown factory {factory!r}"))
    return problems


def _secret_values(*models: BaseModel) -> list[str]:
    """Every `SecretStr` value in these models (nested models, tuples and dicts included)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for _, item in value:
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for model in models:
        walk(model)
    return found


def _with_options(section: _AdapterSection, options: BaseModel) -> Any:
    """The section with its adapter keys moved into `options` (raw extras dropped: they may hold secrets)."""
    core = {key: getattr(section, key) for key in _core_keys(type(section))}
    return type(section).model_construct(**core, options=options)


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigurationError([(str(path), f"cannot read: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError([(str(path), f"not valid TOML: {exc}")]) from None


def load_settings(path: str | Path, registry: Any) -> Settings:
    """Read and validate a TOML config file."""
    return parse_settings(_read_toml(path), registry)


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """What the CLI's operator commands need from a config: `[daemon]` (the database, logging),
    `[retention]`, the names of the configured storefronts and factories, and `[routing.skus]`."""

    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    storefronts: tuple[str, ...] = ()
    factories: tuple[str, ...] = ()
    sku_map: Mapping[str, str] = field(default_factory=dict)


def load_operator_settings(path: str | Path) -> OperatorSettings:
    """Read `[daemon]`, `[retention]`, `[routing]` and the table names of a config file, nothing else: no
    secret is resolved (no environment variable or secret file needs to exist) and no adapter is loaded,
    so `relay status` or `relay release` work where the daemon's credentials are not available. Raises
    `ConfigurationError` for a problem in those."""
    data = _read_toml(path)
    problems: list[tuple[str, str]] = []
    daemon, retention = DaemonSettings(), RetentionSettings()
    try:
        daemon = DaemonSettings.model_validate(_table(data, "daemon"))
    except ValidationError as exc:
        problems.extend(_problems(exc, ("daemon",)))
    try:
        retention = RetentionSettings.model_validate(_table(data, "retention"))
    except ValidationError as exc:
        problems.extend(_problems(exc, ("retention",)))
    problems.extend(_routing_problems(data))
    if problems:
        raise ConfigurationError(problems)
    return OperatorSettings(
        daemon=daemon,
        retention=retention,
        storefronts=tuple(sorted(_table(data, "storefronts"))),
        factories=tuple(sorted(_table(data, "factories"))),
        sku_map={str(k): str(v) for k, v in _table(_table(data, "routing"), "skus").items()},
    )
