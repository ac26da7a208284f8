"""Adapter discovery through entry points (`relay.storefronts`, `relay.factories`)."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from relay.exceptions import ConfigurationError

STOREFRONTS = "relay.storefronts"
FACTORIES = "relay.factories"


class Registry:
    """Resolves adapter names to classes. Tests may `register` extra classes without packaging them."""

    def __init__(self) -> None:
        self._extra: dict[tuple[str, str], type[Any]] = {}

    def register(self, group: str, name: str, cls: type[Any]) -> None:
        self._extra[(group, name)] = cls

    def names(self, group: str) -> list[str]:
        installed = {ep.name for ep in entry_points(group=group)}
        return sorted(installed | {name for g, name in self._extra if g == group})

    def load(self, group: str, name: str) -> type[Any]:
        if (group, name) in self._extra:
            return self._extra[(group, name)]
        for ep in entry_points(group=group, name=name):
            cls: type[Any] = ep.load()
            return cls
        installed = ", ".join(self.names(group)) or "none"
        raise ConfigurationError([(group, f"unknown adapter {name!r}; installed: {installed}")])
