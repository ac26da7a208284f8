"""`relay backup PATH [--force] [--json]`: an online copy of the database, safe while the daemon runs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from relay.cli.common import EX_OK, Cli, CliError, console, echo, emit_json, is_tty, pass_cli, run
from relay.store import BackupResult, open_store


@click.command(
    help="Copy the database to PATH with SQLite's online backup API: consistent while the daemon runs, "
    "without stopping or blocking it. The copy is written to PATH.tmp, fsynced, renamed to PATH and "
    "checked (integrity_check). Needs no secrets, never migrates: back up before `relay migrate`. "
    "Restore: stop the daemon, copy the file over the database (daemon.database), start it."
)
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--force", is_flag=True, help="Replace PATH if it exists (otherwise an existing PATH is an error)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_cli
def backup(cli: Cli, path: str, force: bool, as_json: bool) -> int:
    url = cli.database_url()
    if not url.startswith("sqlite:///"):
        raise CliError(
            "relay backup copies SQLite databases; back a PostgreSQL database up with pg_dump "
            f"(`pg_dump --format=custom --file={path} DBNAME`) or the server's base backups and WAL archiving"
        )

    async def act(progress: Callable[[int, int], None] | None) -> BackupResult:
        # Read-only and without the schema check: an old database is backed up before it is migrated.
        store = open_store(url, read_only=True)
        await store.open()
        try:
            with _stopped_by_signals():
                return await store.backup(path, force=force, progress=progress)
        finally:
            await store.close()

    try:
        with _progress_bar() if is_tty() and not as_json else contextlib.nullcontext() as bar:
            result = run(act(bar))
    except FileExistsError as exc:
        raise CliError(f"{exc}; pass --force to replace it") from None
    except OSError as exc:
        raise CliError(f"cannot write the backup to {path}: {exc.strerror or exc}") from None
    if as_json:
        emit_json({"database": url, **result.to_json(), "integrity": "ok"})
        return EX_OK
    echo(
        f"backed up {url} to {result.path}: {result.size_bytes / 1048576:.1f} MiB, "
        f"schema version {result.schema_version}, integrity ok"
    )
    return EX_OK


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT or SIGTERM cancel the backup (its temporary file is removed): `CliError`, exit 130 or 143."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if not received and task is not None:
            received.append(sig)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        yield
    except asyncio.CancelledError:
        if not received or task is None:
            raise
        task.uncancel()
        raise CliError(
            f"backup stopped by {received[0].name}; nothing was written", 128 + received[0]
        ) from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar of pages copied (updated from the backup's thread), gone when done."""
    progress = Progress(
        TextColumn("backup"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} pages"),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=True,
    )
    task = progress.add_task("backup", total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        yield update


COMMANDS = [backup]
