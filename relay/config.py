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
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from relay.exceptions import ConfigurationError

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


class _AdapterSection(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    adapter: str
    options: Any = None


class StorefrontSettings(_AdapterSection):
    poll_interval_s: float = Field(default=30.0, gt=0)
    cursor_overlap_s: float = Field(default=300.0, ge=0)
    test_tags: tuple[str, ...] = ()
    retry: RetrySettings = RetrySettings(schedule_s=(0, 5, 30, 120, 600, 1800, 3600, 7200, 21600, 43200))


class FactorySettings(_AdapterSection):
    callback_secrets: tuple[Secret, ...] = Field(min_length=1)
    concurrency: int = Field(default=8, ge=1, le=256)
    retry: RetrySettings = RetrySettings()


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    daemon: DaemonSettings = DaemonSettings()
    inbound: InboundSettings = InboundSettings()
    egress: EgressSettings = EgressSettings()
    storefronts: dict[str, StorefrontSettings] = Field(min_length=1)
    factories: dict[str, FactorySettings] = Field(min_length=1)
    routing: dict[str, dict[str, str]] = Field(default_factory=dict)

    @property
    def sku_map(self) -> dict[str, str]:
        return self.routing.get("skus", {})


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


def parse_settings(data: Mapping[str, Any], registry: Any) -> Settings:
    """Validate a config mapping. Raise `ConfigurationError` listing every problem by key."""
    problems: list[tuple[str, str]] = []
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(_problems(exc)) from None

    def with_options(kind: str, name: str, section: _AdapterSection, group: str) -> _AdapterSection:
        if not NAME_PATTERN.match(name):
            problems.append((f"{kind}.{name}", "name must match [a-z0-9][a-z0-9_-]*"))
        try:
            cls = registry.load(group, section.adapter)
        except ConfigurationError as exc:
            problems.append((f"{kind}.{name}.adapter", exc.problems[0][1]))
            return section
        extra = dict(section.model_extra or {})
        try:
            options = cls.Options.model_validate(extra)
        except ValidationError as exc:
            problems.extend(_problems(exc, (kind, name)))
            return section
        return section.model_copy(update={"options": options})

    storefronts = {
        name: with_options("storefronts", name, s, "relay.storefronts")
        for name, s in settings.storefronts.items()
    }
    factories = {
        name: with_options("factories", name, f, "relay.factories") for name, f in settings.factories.items()
    }
    unknown_routing = set(settings.routing) - {"skus"}
    problems.extend((f"routing.{key}", "unknown key") for key in sorted(unknown_routing))
    for sku, factory in settings.sku_map.items():
        if factory not in settings.factories:
            problems.append((f'routing.skus."{sku}"', f"unknown factory {factory!r}"))
    if problems:
        raise ConfigurationError(problems)
    return settings.model_copy(update={"storefronts": storefronts, "factories": factories})


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
