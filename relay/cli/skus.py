"""`relay skus import|export|list`: the SKU catalogue routing reads (see README "Routing").

`import FILE.csv` makes the catalogue equal to the file, all or nothing: every row is checked first (each
problem named by its line number, and then nothing is imported), the diff is printed, and it is applied in
one transaction (`--dry-run` only prints it). The running daemon routes by it from its next pass on.
`export` prints the catalogue as CSV in the same form (it imports again with no diff).
"""

from __future__ import annotations

import time
from typing import TextIO

import click

from relay.cli.common import EX_FAILURE, EX_OK, Cli, CliError, echo, emit_json, pass_cli, run, table
from relay.domain.routing import CatalogueFileError, catalogue_csv, parse_catalogue_csv
from relay.store import SkuDiff, SkuRecord, Store


@click.group(help="The SKU catalogue: which factory makes each storefront SKU, by priority, at what cost.")
def skus() -> None:
    pass


@skus.command(
    "import",
    help="Make the catalogue equal to the CSV file FILE (columns storefront, sku, factory, factory_sku, "
    "unit_cost, currency, priority, active; '-' reads stdin). All or nothing: one bad row and nothing is "
    "imported.",
)
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--dry-run", is_flag=True, help="Print the diff and change nothing.")
@pass_cli
def import_(cli: Cli, file: TextIO, dry_run: bool) -> int:
    configured = cli.operator_settings()
    name = getattr(file, "name", "-")
    try:
        rows = parse_catalogue_csv(
            file.read(), factories=configured.factories or None, storefronts=configured.storefronts or None
        )
    except CatalogueFileError as exc:
        for line, problem in exc.problems:
            echo(f"{name}:{line}: {problem}", err=True)
        raise CliError(f"{len(exc.problems)} problem(s) in {name}: nothing imported", EX_FAILURE) from None
    except UnicodeDecodeError:
        raise CliError(f"{name} is not UTF-8 text: nothing imported", EX_FAILURE) from None

    async def act(store: Store) -> SkuDiff:
        return await store.import_skus(rows, time.time(), dry_run=dry_run)

    diff = run(cli.read(act) if dry_run else cli.write(act))
    _print_diff(diff)
    return EX_OK


@skus.command(help="Print the catalogue as CSV (the form `skus import` reads).")
@pass_cli
def export(cli: Cli) -> int:
    async def act(store: Store) -> list[SkuRecord]:
        return await store.list_skus()

    click.echo(catalogue_csv(run(cli.read(act))), nl=False)  # data, not prose: printed byte for byte
    return EX_OK


@skus.command(
    "list", help="The catalogue: each SKU's factories by priority, cost, active, where it came from."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_cli
def list_(cli: Cli, as_json: bool) -> int:
    async def act(store: Store) -> list[SkuRecord]:
        return await store.list_skus()

    records = run(cli.read(act))
    if as_json:
        emit_json([r.to_json() for r in records])
        return EX_OK
    table(
        ["storefront", "sku", "factory", "factory sku", "unit cost", "priority", "active", "source"],
        [
            [
                r.storefront or "*",
                r.sku,
                r.factory,
                r.factory_sku,
                f"{r.unit_cost} {r.currency}" if r.unit_cost is not None else None,
                r.priority,
                "yes" if r.active else "no",
                r.source,
            ]
            for r in records
        ],
    )
    return EX_OK


def _describe(r: SkuRecord) -> str:
    where = f" (storefront {r.storefront})" if r.storefront else ""
    cost = f", {r.unit_cost} {r.currency}" if r.unit_cost is not None else ""
    sku = f", factory sku {r.factory_sku}" if r.factory_sku else ""
    return (
        f"{r.sku} -> {r.factory}{where}: priority {r.priority}{cost}{sku}{'' if r.active else ', inactive'}"
    )


def _print_diff(diff: SkuDiff) -> None:
    for r in diff.added:
        echo(f"+ {_describe(r)}")
    for before, after in diff.changed:
        echo(f"~ {_describe(before)}")
        echo(f"  now {_describe(after)}")
    for r in diff.removed:
        echo(f"- {_describe(r)}")
    counts = f"{len(diff.added)} added, {len(diff.changed)} changed, {len(diff.removed)} removed"
    if not diff.applied:
        echo(f"{counts} (dry run: nothing changed)")
    else:
        echo(f"{counts}; the daemon routes by it from its next pass" if not diff.empty else "no change")


COMMANDS = [skus]
