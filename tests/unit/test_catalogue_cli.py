"""`relay skus import | export | list`: a diff, all or nothing (one bad row: nothing imported, the line
named, non-zero exit), an export that imports again with no diff."""

from __future__ import annotations

import json

import pytest

from relay.cli import EX_FAILURE, main
from tests.unit.cli_config import CONFIG

GOOD = """sku,factory,unit_cost,currency,priority
MUG-WHT,bolt,3.10,EUR,0
MUG-WHT,acme,3.40,EUR,1
TEE-RED-M,acme,5.00,EUR,0
"""


@pytest.fixture
def relay(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(db=tmp_path / "relay.db"))
    assert main(["-c", str(path), "migrate"]) == 0
    return ["-c", str(path), "skus"]


def rows(relay, capsys) -> list[dict]:
    capsys.readouterr()
    assert main([*relay, "list", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_import_prints_the_diff_and_a_dry_run_changes_nothing(relay, tmp_path, capsys):
    csv = tmp_path / "skus.csv"
    csv.write_text(GOOD)
    capsys.readouterr()
    assert main([*relay, "import", str(csv), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+ MUG-WHT -> bolt: priority 0, 3.10 EUR" in out
    assert "3 added, 0 changed, 0 removed (dry run: nothing changed)" in out
    assert rows(relay, capsys) == []

    assert main([*relay, "import", str(csv)]) == 0
    assert "3 added, 0 changed, 0 removed; the daemon routes by it" in capsys.readouterr().out
    assert [(r["sku"], r["factory"], r["unit_cost"]) for r in rows(relay, capsys)] == [
        ("MUG-WHT", "bolt", "3.10"),
        ("MUG-WHT", "acme", "3.40"),
        ("TEE-RED-M", "acme", "5.00"),
    ]

    csv.write_text(
        GOOD.replace("MUG-WHT,acme,3.40,EUR,1\n", "MUG-WHT,acme,3.60,EUR,1\n").replace(
            "TEE-RED-M,acme,5.00,EUR,0\n", ""
        )
    )
    capsys.readouterr()
    assert main([*relay, "import", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "~ MUG-WHT -> acme: priority 1, 3.40 EUR\n  now MUG-WHT -> acme: priority 1, 3.60 EUR" in out
    assert "- TEE-RED-M -> acme: priority 0, 5.00 EUR" in out


def test_one_bad_row_imports_nothing_and_names_its_line(relay, tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    assert main([*relay, "import", str(good)]) == 0
    before = rows(relay, capsys)

    bad = tmp_path / "bad.csv"
    bad.write_text("sku,factory,unit_cost,currency\nNEW-HAT,acme,2.00,EUR\nNEW-CAP,acme,2.00,euro\n")
    assert main([*relay, "import", str(bad)]) == EX_FAILURE
    err = capsys.readouterr().err
    assert f"{bad}:3: currency 'euro' is not a 3-letter code" in err
    assert "1 problem(s)" in err and "nothing imported" in err
    assert rows(relay, capsys) == before  # NEW-HAT (a good row) was not imported either


def test_unknown_factories_and_storefronts_are_refused_by_line_naming_the_configured_ones(
    relay, tmp_path, capsys
):
    bad = tmp_path / "bad.csv"
    bad.write_text("storefront,sku,factory\n,A,acme\n,B,zeta\nshopp,C,acme\n")
    assert main([*relay, "import", str(bad)]) == EX_FAILURE
    err = capsys.readouterr().err
    assert "bad.csv:3: unknown factory 'zeta' (configured: acme, bolt)" in err
    assert "bad.csv:4: unknown storefront 'shopp' (configured: shop; empty: every storefront)" in err
    assert "2 problem(s)" in err
    assert rows(relay, capsys) == []


def test_export_round_trips_through_import_with_no_diff(relay, tmp_path, capsys):
    csv = tmp_path / "skus.csv"
    csv.write_text(
        "storefront,sku,factory,factory_sku,unit_cost,currency,priority,active\n"
        "shop,MUG-WHT,bolt,B-MUG,3.10,EUR,0,true\n"
        ",Ümlaut-1,acme,,,,2,false\n"
    )
    assert main([*relay, "import", str(csv)]) == 0
    capsys.readouterr()
    assert main([*relay, "export"]) == 0
    exported = capsys.readouterr().out
    assert exported.splitlines()[0] == "storefront,sku,factory,factory_sku,unit_cost,currency,priority,active"
    again = tmp_path / "again.csv"
    again.write_text(exported, encoding="utf-8")
    assert main([*relay, "import", str(again), "--dry-run"]) == 0
    assert "0 added, 0 changed, 0 removed" in capsys.readouterr().out
    assert main([*relay, "import", str(again)]) == 0
    assert "no change" in capsys.readouterr().out
