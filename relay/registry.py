"""Adapter discovery through entry points: `relay.storefronts`, `relay.factories`, and `relay.fakes`.

Every adapter package registers its adapter class under its name, and its fake (an in-process server
emulating the vendor, `relay.testing.vendor.FakeStorefront` or `FakeFactoryServer`) under the same name
in `relay.fakes`. The core finds both through a `Registry` and never imports `adapters.*` itself, so an
adapter can live in its own distribution.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from relay.exceptions import ConfigurationError

STOREFRONTS = "relay.storefronts"
FACTORIES = "relay.factories"
FAKES = "relay.fakes"

_WHAT = {FAKES: "no fake registered for adapter"}


class Registry:
    """Resolves adapter names to classes. Tests may `register` extra classes without packaging them."""

    def __init__(self) -> None:
        self._extra: dict[tuple[str, str], type[Any]] = {}

    def register(self, group: str, name: str, cls: type[Any]) -> None:
        """Make `cls` available as `name` in `group` for this registry only (overrides an entry point)."""
        self._extra[(group, name)] = cls

    def names(self, group: str) -> list[str]:
        """Every name in `group`: installed entry points and registered classes."""
        installed = {ep.name for ep in entry_points(group=group)}
        return sorted(installed | {name for g, name in self._extra if g == group})

    def load(self, group: str, name: str) -> type[Any]:
        """The class registered as `name` in `group`; `ConfigurationError` if there is none."""
        if (group, name) in self._extra:
            return self._extra[(group, name)]
        for ep in entry_points(group=group, name=name):
            cls: type[Any] = ep.load()
            return cls
        installed = ", ".join(self.names(group)) or "none"
        what = _WHAT.get(group, "unknown adapter")
        raise ConfigurationError([(group, f"{what} {name!r}; installed: {installed}")])

    def fake(self, adapter: str) -> type[Any]:
        """The fake server class for the adapter named `adapter` (from `relay.fakes`)."""
        return self.load(FAKES, adapter)
