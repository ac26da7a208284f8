"""A test harness: fake storefront and factories on loopback, settings pointing at them, and an App.

    async with Harness(tmp_path) as h:
        order_id = h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await app.run_once()
            await h.factories["acme"].ship_all()
            await app.run_once()

Factories do not ship on their own unless `ship_after_s` is given, so tests decide when parcels arrive.
Apps get `h.sleep`, a `RecordingSleep`: in-call retries return at once and `h.sleep.calls` lists the
waits they asked for (pass `h.app(sleep=asyncio.sleep)` for real waits).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from relay.app import App
from relay.config import Settings, parse_settings
from relay.registry import Registry
from relay.testing.contract import RecordingSleep
from relay.testing.vendor import FakeStorefront

DEFAULT_SKUS = {"TEE-RED-M": "acme", "TEE-BLU-L": "acme", "MUG-WHT": "bolt", "CAP-BLK": "bolt"}


class ManualClock:
    """An injectable clock that only moves when told to."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge config tables."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        *,
        factories: Iterable[str] = ("acme", "bolt"),
        sku_map: dict[str, str] | None = None,
        ship_after_s: float | None = None,
        split_parcels: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.database = f"sqlite:///{tmp_path / 'relay.db'}"
        fakes = Registry()  # fakes come from the `relay.fakes` entry points: relay never imports adapters
        self.storefront: FakeStorefront = fakes.fake("demo")(page_size=20)
        self.factories: dict[str, Any] = {  # the webhook adapter's FakeFactory
            name: fakes.fake("webhook")(name, ship_after_s=ship_after_s, split_parcels=split_parcels)
            for name in factories
        }
        self.sku_map = sku_map if sku_map is not None else DEFAULT_SKUS
        self.extra = config or {}
        self.registry = Registry()
        self.sleep = RecordingSleep()  # every App's in-call retry waits, recorded instead of slept

    async def __aenter__(self) -> Harness:
        await self.storefront.start()
        for f in self.factories.values():
            await f.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for f in self.factories.values():
            await f.close()
        await self.storefront.close()

    def config(self, **extra: Any) -> dict[str, Any]:
        """The config mapping (as parsed from TOML) for the fakes, deep-merged with overrides."""
        base = {
            "daemon": {"database": self.database, "instance_id": "test", "shutdown_grace_s": 2},
            "inbound": {"host": "127.0.0.1", "port": 0},
            "egress": {"allow_plain_http": True, "allow_private_addresses": True, "total_timeout_s": 2},
            "storefronts": {
                "shop": {"adapter": "demo", "poll_interval_s": 0.2, **self.storefront.adapter_options()}
            },
            "factories": {name: f.factory_config() for name, f in self.factories.items()},
            "routing": {"skus": self.sku_map},
        }
        return merge(merge(base, self.extra), extra)

    def write_config(self, path: Path, **extra: Any) -> Path:
        """Write the config as TOML (for a daemon run as a subprocess)."""
        path.write_text(to_toml(self.config(**extra)))
        return path

    def settings(self, **extra: Any) -> Settings:
        return parse_settings(self.config(**extra), self.registry)

    def app(self, *, clock: Any = None, settings: Settings | None = None, **kwargs: Any) -> _AppContext:
        return _AppContext(self, settings or self.settings(), clock, kwargs)


class _AppContext:
    """`async with h.app() as app`: opens the App and points the fake factories at its callback URL."""

    def __init__(self, harness: Harness, settings: Settings, clock: Any, kwargs: dict[str, Any]) -> None:
        extra: dict[str, Any] = {
            "install_signal_handlers": False,
            "registry": harness.registry,
            "sleep": harness.sleep,
            **kwargs,
        }
        if clock is not None:
            extra["clock"] = clock
        self.harness = harness
        self.app = App(settings, **extra)

    async def __aenter__(self) -> App:
        await self.app.__aenter__()
        for name, f in self.harness.factories.items():
            f.callback_url = self.app.callback_url(name)
        return self.app

    async def __aexit__(self, *exc: object) -> None:
        await self.app.__aexit__(*exc)


def _toml_key(key: str) -> str:
    return key if key.replace("-", "_").isidentifier() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Serialise a config mapping to TOML; every nested dict becomes a table."""
    out = "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in data.items() if not isinstance(v, dict))
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
            out += f"\n[{name}]\n" + to_toml(value, name)
    return out
