"""Settings: read from TOML, validated in full, every problem reported by its dotted key.

Secrets may be written as `{ env = "NAME" }` or `{ file = "/run/secrets/name" }` (preferred) or inline.
They become `SecretStr`, whose repr and str never show the value.

Each `[storefronts.NAME]` / `[factories.NAME]` table has a few core keys (`adapter`, intervals, ...);
every other key belongs to the adapter and is validated against that adapter class's `Options` model.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
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
    field_validator,
)

from relay.exceptions import ConfigurationError, UnsafeURL, remember_secrets
from relay.outbound.policy import check_url
from relay.signing import secret_bytes

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


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
    batch_size: int = Field(default=200, ge=1, le=10_000)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("database")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError("only sqlite:///PATH is supported (sqlite:///:memory: for a throwaway store)")
        return value


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

    @field_validator("start_from")
    @classmethod
    def _start_point(cls, value: str) -> str:
        parse_start_from(value, now=0.0)
        return value


class FactorySettings(_AdapterSection):
    callback_secrets: tuple[Secret, ...] = Field(min_length=1)
    concurrency: int = Field(default=8, ge=1, le=256)
    shipment_poll_interval_s: float = Field(default=60.0, gt=0)  # adapters that are polled for shipments
    retry: RetrySettings = RetrySettings()

    @field_validator("callback_secrets")
    @classmethod
    def _usable_secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:  # a bad `whsec_` secret would fail every callback, not `relay check`
            try:
                secret_bytes(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return value


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    daemon: DaemonSettings = DaemonSettings()
    inbound: InboundSettings = InboundSettings()
    egress: EgressSettings = EgressSettings()
    retention: RetentionSettings = RetentionSettings()
    storefronts: dict[str, StorefrontSettings] = Field(min_length=1)
    factories: dict[str, FactorySettings] = Field(min_length=1)
    routing: dict[str, dict[str, str]] = Field(default_factory=dict)

    @property
    def sku_map(self) -> dict[str, str]:
        return self.routing.get("skus", {})


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
    routing = _table(data, "routing")
    problems.extend((f"routing.{key}", "unknown key") for key in sorted(set(routing) - {"skus"}))
    factories = _table(data, "factories")
    skus = _table(routing, "skus")
    for sku, factory in skus.items():
        if factory not in factories:
            problems.append((f'routing.skus."{sku}"', f"unknown factory {factory!r}"))
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


def load_settings(path: str | Path, registry: Any) -> Settings:
    """Read and validate a TOML config file."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigurationError([(str(path), f"cannot read: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError([(str(path), f"not valid TOML: {exc}")]) from None
    return parse_settings(data, registry)
