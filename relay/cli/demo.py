"""`relay demo`: the whole loop on loopback, against built-in fake storefront and factories."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from relay.cli.common import Cli, configure_logging_for, console, echo, is_tty, pass_cli, table
from relay.config import DaemonSettings
from relay.demo import DemoStopped, DemoSummary, run_demo


@click.command(
    short_help="The whole loop on loopback against fakes, checked.",
    help="Run the whole loop on loopback against a built-in fake storefront and two fake factories, then "
    "check that every order reached its factory exactly once and got its tracking back (exit 0), or not "
    "(exit 1). Ctrl-C / SIGTERM stop it cleanly (exit 130 / 143).",
)
@click.option("--orders", type=click.IntRange(min=1), default=50, show_default=True, help="Orders to seed.")
@click.option(
    "--storefront",
    default="demo",
    show_default=True,
    help="Storefront adapter to emulate: demo, shopify or woocommerce.",
)
@click.option(
    "--factory",
    default="webhook",
    show_default=True,
    help="Adapter of the second factory: webhook, factory_poll or alibaba1688.",
)
@click.option(
    "--timeout", type=float, default=120.0, show_default=True, help="Give up after this many seconds."
)
@click.option(
    "--database",
    default=None,
    metavar="PATH|URL",
    help="SQLite file to keep (default: a fresh temporary one, removed at the end), or the URL of an "
    "empty postgresql:// database.",
)
@pass_cli
def demo(
    cli: Cli, *, orders: int, storefront: str, factory: str, timeout: float, database: str | None
) -> int:
    configure_logging_for(DaemonSettings(log_format="json", log_level="warning"))
    tty = is_tty()
    summaries: list[DemoSummary] = []  # printed once the progress bar is gone
    with _progress_bar(orders) if tty else contextlib.nullcontext() as bar:
        code = asyncio.run(
            _until_signal(
                lambda stop: run_demo(
                    orders,
                    storefront=storefront,
                    factory=factory,
                    give_up_after_s=timeout,
                    database=database,
                    registry=cli.registry,
                    progress=bar,
                    summary=summaries.append if tty else None,
                    stop=stop,
                )
            )
        )
    for summary in summaries:
        _rich_summary(summary)
    return code


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Any]:
    """A rich progress bar of completed orders, with the other states beside it."""
    progress = Progress(
        TextColumn("orders completed"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
        console=console(),
    )
    task = progress.add_task("demo", total=total, states="")

    def update(orders: Mapping[str, int]) -> None:
        others = "  ".join(f"{s}={n}" for s, n in sorted(orders.items()) if s != "completed")
        progress.update(task, completed=orders.get("completed", 0), states=others)

    with progress:
        yield update


def _rich_summary(summary: DemoSummary) -> None:
    echo()
    table(summary.HEADERS, summary.rows(), title="summary")
    for line in summary.verdict():
        echo(line)


async def _until_signal(run: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Await `run(stop)`. SIGINT or SIGTERM set `stop` (the demo shuts down as at its end: 130 or 143); a
    second one cancels it outright."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) == 1:
            stop.set()
        elif task is not None:
            task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        return await run(stop)
    except (DemoStopped, asyncio.CancelledError):
        if not received or task is None:
            raise
        if task.cancelling():
            task.uncancel()
        echo(f"relay demo: stopped by {signal.Signals(received[0]).name}", err=True)
        return 128 + received[0]
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


COMMANDS = [demo]
