"""What every command shares: exit codes, the invocation (`Cli`: config, database, settings loaded on
demand), stores opened for one command, output (tables on a TTY, plain aligned text when piped, JSON) and
the one-line error (`CliError`).

A command module (`relay/cli/NAME.py`) defines click commands, every one with help on itself and on each
option, takes the invocation with `@pass_cli`, returns an exit code, and lists them in `COMMANDS`; the
module is named in `relay.cli.COMMAND_MODULES`. For example::

    @click.command(help="Count orders.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @pass_cli
    def count(cli: Cli, as_json: bool) -> int:
        async def act(store: Store) -> int:
            ...
            return EX_OK

        return run(cli.read(act))  # read-only: no secrets, never migrates; `cli.write(act)` to change

    COMMANDS = [count]

Output goes through `echo` / `table` / `emit_json`, which scrub it (`relay.exceptions.scrub`); an expected
failure raises `CliError(message, code)`: one line on stderr, that exit code.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from relay import logging as relay_logging
from relay.config import DaemonSettings, OperatorSettings, Settings, load_operator_settings, load_settings
from relay.exceptions import scrub
from relay.registry import Registry
from relay.store import Store, open_store

# sysexits.h codes, so service managers and scripts can tell failures apart.
EX_OK = 0
EX_FAILURE = 1  # the command ran and failed (a demo that did not deliver, an unknown order)
EX_USAGE = 2  # bad arguments (click's own code)
EX_NOINPUT = 66  # the database file does not exist (read-only commands never create one)
EX_SOFTWARE = 70  # a loop crashed: the daemon shut down cleanly and wants a restart
EX_TEMPFAIL = 75  # the database is unavailable, or part of a `run --once` pass failed: try again later
EX_CONFIG = 78  # the configuration (or the database's schema version) is unusable

T = TypeVar("T")


class CliError(Exception):
    """An expected failure: `message` is printed as one line on stderr and the command exits `code`."""

    def __init__(self, message: str, code: int = EX_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class _CurrentStderr:
    """`sys.stderr` as it is when a log line is written, not when logging was configured: `main()` may
    run many times in one process (tests), each time with another stderr."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging_for(daemon: DaemonSettings) -> None:
    """Log as `[daemon]` says (format, level), to stderr."""
    relay_logging.configure(daemon.log_format, daemon.log_level, stream=_CurrentStderr())


@dataclass
class Cli:
    """One command line's global options, with the config loaded on demand (in full only when needed)."""

    config: str
    database: str | None = None
    """`--database`: overrides `daemon.database` (a path or a sqlite:/// URL)."""
    registry: Registry = field(default_factory=Registry)
    _settings: Settings | None = None
    _operator: OperatorSettings | None = None

    def settings(self, *, configure_logging: bool = True) -> Settings:
        """The whole config, secrets resolved (ConfigurationError names every bad key): for the commands
        that talk to storefronts and factories (`run`, `check`)."""
        if self._settings is None:
            settings = load_settings(self.config, self.registry)
            if self.database:
                daemon = settings.daemon.model_copy(update={"database": self.database_url()})
                settings = settings.model_copy(update={"daemon": daemon})
            self._settings = settings
            if configure_logging:
                configure_logging_for(settings.daemon)
        return self._settings

    def operator_settings(self) -> OperatorSettings:
        """`[daemon]`, `[retention]`, `[routing]` and the configured names, without resolving a secret:
        the operator commands. With `--database` and no config file, the defaults (no configured names)."""
        if self._operator is None:
            if self.database and not Path(self.config).exists():
                self._operator = OperatorSettings()
            else:
                self._operator = load_operator_settings(self.config)
            configure_logging_for(self._operator.daemon)
        return self._operator

    def database_url(self) -> str:
        """The database to open: `--database` if given, else the config's `daemon.database`."""
        if self.database:
            return self.database if "://" in self.database else f"sqlite:///{Path(self.database).resolve()}"
        return self.operator_settings().daemon.database

    async def read(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run `fn` on the database opened read-only: never created, never migrated (a missing file is
        `DatabaseMissing`, an old schema `DatabaseNeedsMigration`: run `relay migrate`)."""
        self.operator_settings()  # logging as configured, and a broken config is reported first
        store = open_store(self.database_url(), read_only=True)
        await store.open()
        try:
            await store.check_schema()
            return await fn(store)
        finally:
            await store.close()

    async def write(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run `fn` on the database opened for writing. Like `read`, the file must exist at the current
        schema version: an operator command never creates or migrates a database (`relay migrate` does)."""
        self.operator_settings()
        url = self.database_url()
        probe = open_store(url, read_only=True)  # refuses a missing file without creating one
        await probe.open()
        try:
            await probe.check_schema()
        finally:
            await probe.close()
        store = open_store(url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()


def require_database_directory(url: str) -> None:
    """For the commands that create the database (`run`, `migrate`): its directory must exist, else a
    `CliError` (EX_CONFIG) naming it, instead of a failure deep inside SQLite. Other backends: no check."""
    if not url.startswith("sqlite:///"):
        return
    path = url.partition("://")[2][1:]
    if not path or path == ":memory:":
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise CliError(
            f"the database directory {parent} does not exist (daemon.database = {url}): create it first",
            EX_CONFIG,
        )


pass_cli = click.make_pass_decorator(Cli)
"""Decorator: the command's first argument is the invocation's `Cli`."""


async def resolve_order(store: Store, ref: str) -> int:
    """Relay's id for an operator's ORDER argument: relay's id, `storefront:external_id` or the shop's
    order number (`#1042`). `CliError` when nothing matches, or when several do (naming them)."""
    ids = await store.resolve_order(ref)
    if not ids:
        raise CliError(f"no order matches {ref!r} (relay's id, storefront:external_id or #number)")
    if len(ids) == 1:
        return ids[0]
    matches = []
    for order_id in ids[:10]:
        view = await store.find_order(order_id)
        if view is not None:
            o = view.order
            matches.append(f"{o.id} ({o.storefront}:{o.external_id} #{o.number.lstrip('#')})")
    more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
    raise CliError(
        f"{ref!r} matches {len(ids)} orders: {', '.join(matches)}{more}; "
        "name one by relay's id or storefront:external_id"
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine to completion."""
    return asyncio.run(coro)


# --- output ---------------------------------------------------------------------------------------------


def is_tty() -> bool:
    """Whether stdout is a terminal: rich tables and progress bars; otherwise plain text."""
    return sys.stdout.isatty()


def console(*, stderr: bool = False) -> Console:
    """A rich console on the current stdout (or stderr); highlighting off, markup off: data is printed
    as is."""
    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, markup=False)


def echo(text: str = "", *, err: bool = False) -> None:
    """Print one line (scrubbed of credentials)."""
    click.echo(scrub(text), err=err)


def emit_json(data: Any) -> None:
    """Print `data` as indented JSON, scrubbed of credentials."""
    click.echo(scrub(json.dumps(data, indent=2, default=str, ensure_ascii=False)))


Cell = str | int | float | None


def cell(value: Cell) -> str:
    """A value as a table cell: None is '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, title: str | None = None) -> None:
    """Print a table with a header row: rich on a TTY, plain aligned columns (no colour, no box) when piped.
    Every cell is scrubbed of credentials."""
    cells = [[scrub(cell(v)) for v in row] for row in rows]
    if is_tty():
        rich_table = Table(*headers, title=title, title_justify="left")
        for row in cells:
            rich_table.add_row(*row)
        console().print(rich_table)
        return
    if title:
        click.echo(title)
    for line in plain_table(headers, cells).splitlines():  # line by line: a reader gone is noticed
        click.echo(line)


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        padded = [str(v).ljust(w) for v, w in zip(row, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def timestamp(value: float | None) -> str:
    """An epoch time as ISO 8601 UTC to the second, or '-'."""
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds") if value else "-"


def local_time(value: float | None) -> str:
    """An epoch time in the machine's local time zone, to the second, with the zone: '2026-12-03 11:29:15
    CET'; '-' for None."""
    if value is None:
        return "-"
    return datetime.fromtimestamp(value).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def local_iso(value: float | None) -> str | None:
    """An epoch time as ISO 8601 with the local offset (for JSON), or None."""
    return datetime.fromtimestamp(value).astimezone().isoformat(timespec="seconds") if value else None


def age(seconds: float | None) -> str:
    """A duration for people: '42s', '7m 3s', '5h 2m', '3d 4h'; '-' for None."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {s % size // subsize}{sub}"
    return f"{s}s"
