"""What every command shares: exit codes, the loaded configuration, a store opened for one command."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from relay import logging as relay_logging
from relay.config import Settings, load_settings
from relay.registry import Registry
from relay.store import Store, open_store

# sysexits.h codes, so service managers and scripts can tell failures apart.
EX_OK = 0
EX_FAILURE = 1  # the command ran and failed (a demo that did not deliver, an unknown order)
EX_USAGE = 2  # argparse's own code for bad arguments
EX_SOFTWARE = 70  # a loop crashed: the daemon shut down cleanly and wants a restart
EX_TEMPFAIL = 75  # the database is unavailable, or part of a `run --once` pass failed: try again later
EX_CONFIG = 78  # the configuration (or the database's schema version) is unusable

T = TypeVar("T")


@dataclass
class Invocation:
    """One command line: its parsed arguments and the adapter registry, with settings loaded on demand."""

    args: argparse.Namespace
    registry: Registry = field(default_factory=Registry)
    _settings: Settings | None = None

    def settings(self, *, configure_logging: bool = True) -> Settings:
        """Load and validate the config file (ConfigurationError names every bad key)."""
        if self._settings is None:
            self._settings = load_settings(self.args.config, self.registry)
            if configure_logging:
                relay_logging.configure(self._settings.daemon.log_format, self._settings.daemon.log_level)
        return self._settings


Command = Callable[[Invocation], int]


async def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured store (migrating it), run `fn`, close the store."""
    store = open_store(settings.daemon.database)
    await store.open()
    try:
        await store.migrate()
        return await fn(store)
    finally:
        await store.close()


def timestamp(value: float | None) -> str:
    """An epoch time as ISO 8601 UTC to the second, or '-'."""
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds") if value else "-"
