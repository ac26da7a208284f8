"""Command line (click + rich): `relay [-c CONFIG] [--database URL] COMMAND ...`; `relay --help` lists them.

One module per command group lists its click commands in `COMMANDS` (see `relay.cli.common` for the
pattern); `COMMAND_MODULES` below names the modules. A command returns an exit code (`relay.cli.common`):
0 success, 1 failure, 2 usage, 66 the database file does not exist, 70 a loop crashed, 75 database
unavailable or, for `run --once`, any component failed during the pass (a storefront or factory
unreachable or refusing credentials, the store unavailable; also when only one of several storefronts
failed and the rest of the pass went through: the failed ones are named on stderr), 78 configuration
error (or a database schema this code cannot use), 130/143 stopped by SIGINT/SIGTERM, 141 stdout closed
early (`relay orders | head`: nothing is printed about it). Every expected failure is one message on
stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import click
import structlog

from relay.cli import backup, daemon, demo, factories, maintenance, orders, show, skus, status
from relay.cli.common import (
    EX_CONFIG,
    EX_FAILURE,
    EX_NOINPUT,
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    Cli,
    CliError,
    echo,
)
from relay.exceptions import (
    ConfigurationError,
    DatabaseMissing,
    DatabaseNeedsMigration,
    IllegalTransition,
    StoreUnavailable,
    UnsupportedDatabaseVersion,
)

__all__ = [
    "EX_CONFIG",
    "EX_FAILURE",
    "EX_NOINPUT",
    "EX_OK",
    "EX_SOFTWARE",
    "EX_TEMPFAIL",
    "cli",
    "main",
]

COMMAND_MODULES: tuple[ModuleType, ...] = (
    daemon,
    demo,
    status,
    orders,
    show,
    factories,
    maintenance,
    backup,
    skus,
)
"""Each module's `COMMANDS` are added to `relay`, in this order in `relay --help`."""

EX_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE


class _RelayGroup(click.Group):
    """The root group: commands listed in the order they were added; stdout closed early ends quietly."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # The reader went away (`relay orders | head -1`): stop writing, say nothing, exit like a
            # process killed by SIGPIPE. Later writes (and the flush at exit) go to /dev/null.
            with contextlib.suppress(OSError, ValueError):  # stdout without a file descriptor
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(EX_BROKEN_PIPE) from None


@click.group(
    cls=_RelayGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Drop-shipping order relay: storefront orders to factories exactly once, tracking back.",
)
@click.option(
    "-c",
    "--config",
    envvar="RELAY_CONFIG",
    default="config/relay.toml",
    show_default=True,
    show_envvar=True,
    metavar="PATH",
    help="TOML config file.",
)
@click.option(
    "--database",
    metavar="URL|PATH",
    default=None,
    help="Database to use instead of the config's daemon.database (sqlite:///PATH, a file path or "
    "postgresql://...); "
    "read-only commands then need no config file.",
)
@click.version_option(package_name="relay", prog_name="relay", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config: str, database: str | None) -> None:
    ctx.obj = Cli(config=config, database=database)


for _module in COMMAND_MODULES:
    for _command in _module.COMMANDS:
        cli.add_command(_command)


EXIT_CODES: dict[type[Exception], int] = {
    DatabaseMissing: EX_NOINPUT,
    UnsupportedDatabaseVersion: EX_CONFIG,
    DatabaseNeedsMigration: EX_CONFIG,
    StoreUnavailable: EX_TEMPFAIL,
    IllegalTransition: EX_FAILURE,
}
"""Expected failures from below the CLI: printed as `error: <message>`, exit with this code."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line and return its exit code: every expected failure becomes one message on
    stderr (scrubbed of credentials, `relay.exceptions.scrub`: a problem may quote a URL) and a code.
    The process's logging is configured for the command and put back as it was afterwards."""
    saved = structlog.get_config()
    try:
        return _main(argv)
    finally:
        structlog.configure(**saved)


def _main(argv: Sequence[str] | None) -> int:
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="relay", standalone_mode=False
        )
    except (click.exceptions.Abort, KeyboardInterrupt):  # Ctrl-C outside a command's own handling
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:  # `relay demo --storefront nope` names the choices this way
        if isinstance(exc.code, str):
            echo(exc.code, err=True)
            return EX_FAILURE
        return int(exc.code or 0)
    except Exception as exc:
        failure = _report(exc)
        if failure is None:
            raise
        return failure
    return code if isinstance(code, int) else EX_OK


def _report(exc: Exception) -> int | None:
    """Print an expected failure on stderr and return its exit code; None for a bug (traceback)."""
    if isinstance(exc, CliError):
        echo(f"error: {exc}", err=True)
        return exc.code
    if isinstance(exc, ConfigurationError):
        echo("configuration is invalid:", err=True)
        for key, problem in exc.problems:
            echo(f"  {key}: {problem}", err=True)
        return EX_CONFIG
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:  # `relay run` and a port taken
        text = (exc.strerror or str(exc)).removeprefix("error while attempting to ")
        echo(f"error: cannot {text} (another process listens there)", err=True)
        return EX_TEMPFAIL
    for kind, code in EXIT_CODES.items():
        if isinstance(exc, kind):
            hint = "; check daemon.database or --database (`relay migrate` creates a SQLite file; createdb a PostgreSQL database)"
            echo(f"error: {exc}{hint if isinstance(exc, DatabaseMissing) else ''}", err=True)
            return code
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
