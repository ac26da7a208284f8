"""Issue 13, item 1: the SKU catalogue in the store: import (diff, all or nothing), export round trip, the
config seed, and routing by it (priority, variant ids, per-storefront rows, inactive rows)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from relay.config import parse_settings
from relay.domain.models import Address, Order, OrderLine
from relay.domain.routing import (
    Catalogue,
    CatalogueFileError,
    catalogue_csv,
    convert,
    parse_catalogue_csv,
    plan_route,
)
from relay.exceptions import ConfigurationError
from relay.registry import Registry
from relay.store import RouteJob, SkuRecord, open_store
from tests.unit.schema_at import database_at

CSV = """storefront,sku,factory,factory_sku,unit_cost,currency,priority,active
,MUG-WHT,bolt,,3.10,EUR,0,true
,MUG-WHT,acme,,3.40,EUR,1,true
,TEE-RED-M,acme,ACME-TEE-R-M,5.00,EUR,0,true
shop2,TEE-RED-M,bolt,,,,0,true
,4483921,acme,,,,0,yes
,OLD-1,acme,,,,0,false
"""


def job(*lines: OrderLine, storefront: str = "shop") -> RouteJob:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    order = Order(
        external_id="1",
        created_at=when,
        updated_at=when,
        currency="EUR",
        shipping_address=Address(name="Ada"),
        lines=lines,
    )
    return RouteJob(1, storefront, order, order.content_hash())


def line(line_id: str, sku: str | None, variant_id: str | None = None) -> OrderLine:
    return OrderLine(line_id=line_id, sku=sku, variant_id=variant_id, quantity=1, unit_price=Decimal(10))


def test_csv_rows_are_read_with_their_defaults():
    rows = {(r.storefront, r.sku, r.factory): r for r in parse_catalogue_csv(CSV)}
    assert len(rows) == 6
    tee = rows[("", "TEE-RED-M", "acme")]
    assert (tee.factory_sku, tee.unit_cost, tee.currency, tee.priority, tee.active) == (
        "ACME-TEE-R-M",
        Decimal("5.00"),
        "EUR",
        0,
        True,
    )
    assert rows[("", "OLD-1", "acme")].active is False
    assert rows[("shop2", "TEE-RED-M", "bolt")].unit_cost is None


def test_every_bad_row_is_reported_by_its_line_number():
    text = (
        "sku,factory,unit_cost,currency,priority,active\n"
        "A,acme,1.00,EUR,0,true\n"  # line 2: fine
        "B,zeta,1.00,EUR,0,true\n"  # line 3: unknown factory
        "C,acme,abc,EUR,0,true\n"  # line 4: bad cost
        "D,acme,1.00,,0,true\n"  # line 5: cost without currency
        "E,acme,,,high,true\n"  # line 6: bad priority
        ",acme,,,,\n"  # line 7: no sku
        "A,acme,,,,maybe\n"  # line 8: bad flag
        "A,acme,,,,\n"  # line 9: repeats line 2
    )
    with pytest.raises(CatalogueFileError) as err:
        parse_catalogue_csv(text, factories={"acme", "bolt"})
    assert [n for n, _ in err.value.problems] == [3, 4, 5, 6, 7, 8, 9]
    assert "unknown factory 'zeta'" in dict(err.value.problems)[3]
    assert "repeats line 2" in dict(err.value.problems)[9]
    assert str(err.value).startswith("line 3: unknown factory")


def test_a_header_without_sku_and_factory_is_refused():
    with pytest.raises(CatalogueFileError, match="line 1: header"):
        parse_catalogue_csv("code,maker\nA,acme\n")


async def test_import_shows_the_diff_applies_it_at_once_and_bumps_the_version(store):
    before = await store.routing_snapshot()
    dry = await store.import_skus(parse_catalogue_csv(CSV), 1.0, dry_run=True)
    assert (len(dry.added), len(dry.changed), len(dry.removed), dry.applied) == (6, 0, 0, False)
    assert await store.list_skus() == []
    assert (await store.routing_snapshot()).catalogue_version == before.catalogue_version

    diff = await store.import_skus(parse_catalogue_csv(CSV), 1.0)
    assert (len(diff.added), diff.applied) == (6, True)
    assert (await store.routing_snapshot()).catalogue_version == before.catalogue_version + 1

    edited = CSV.replace(",MUG-WHT,acme,,3.40,EUR,1,true\n", ",MUG-WHT,acme,,3.60,EUR,1,true\n").replace(
        ",OLD-1,acme,,,,0,false\n", ""
    )
    diff = await store.import_skus(parse_catalogue_csv(edited), 2.0)
    assert [(a.unit_cost, b.unit_cost) for a, b in diff.changed] == [(Decimal("3.40"), Decimal("3.60"))]
    assert [r.sku for r in diff.removed] == ["OLD-1"] and diff.added == ()
    assert (await store.routing_snapshot()).catalogue_version == before.catalogue_version + 2


async def test_an_export_imports_again_with_no_diff(store):
    await store.import_skus(parse_catalogue_csv(CSV), 1.0)
    version = (await store.routing_snapshot()).catalogue_version
    exported = catalogue_csv(await store.list_skus())
    diff = await store.import_skus(parse_catalogue_csv(exported), 2.0)
    assert diff.empty
    assert (await store.routing_snapshot()).catalogue_version == version
    assert catalogue_csv(await store.list_skus()) == exported


async def test_a_duplicate_row_imports_nothing(store):
    rows = [SkuRecord(sku="A", factory="acme"), SkuRecord(sku="A", factory="acme", priority=2)]
    with pytest.raises(ValueError, match="duplicate row"):
        await store.import_skus(rows, 1.0)
    assert await store.list_skus() == []


async def test_the_config_seed_adds_follows_the_config_and_never_touches_imported_rows(store):
    diff = await store.seed_skus_from_config({"A": "acme", "B": "bolt"}, 1.0)
    assert sorted(r.sku for r in diff.added) == ["A", "B"]
    assert not (await store.seed_skus_from_config({"A": "acme", "B": "bolt"}, 2.0)).added  # idempotent

    # The config moves B to acme and drops A: config-owned rows follow it.
    diff = await store.seed_skus_from_config({"B": "acme"}, 3.0)
    assert sorted((r.sku, r.factory) for r in diff.removed) == [("A", "acme"), ("B", "bolt")]
    assert [(r.sku, r.factory) for r in diff.added] == [("B", "acme")]

    # Imported, B belongs to the catalogue: the config's line for it is ignored from then on.
    await store.import_skus([SkuRecord(sku="B", factory="bolt", priority=0)], 4.0)
    version = (await store.routing_snapshot()).catalogue_version
    assert (await store.seed_skus_from_config({"B": "acme", "C": "acme"}, 5.0)).added == (
        SkuRecord(sku="C", factory="acme", source="config"),
    )
    rows = {(r.sku, r.factory): r.source for r in await store.list_skus()}
    assert rows == {("B", "bolt"): "import", ("C", "acme"): "config"}
    assert (await store.routing_snapshot()).catalogue_version == version + 1


def test_routing_follows_priority_variant_ids_storefront_rows_and_factory_skus():
    catalogue = Catalogue(parse_catalogue_csv(CSV))
    plan = plan_route(
        job(line("1", "MUG-WHT"), line("2", "TEE-RED-M"), line("3", None, "4483921")), catalogue, now=0
    )
    assert plan.hold is None
    lines = {fo.factory: [ln.line_id for ln in fo.lines] for fo in plan.factory_orders}
    assert lines == {"bolt": ["1"], "acme": ["2", "3"]}
    acme = next(fo for fo in plan.factory_orders if fo.factory == "acme")
    assert acme.factory_skus == {"2": "ACME-TEE-R-M"}
    # shop2 has its own row for TEE-RED-M: it replaces the one for every storefront there.
    plan = plan_route(job(line("1", "TEE-RED-M"), storefront="shop2"), catalogue, now=0)
    assert [fo.factory for fo in plan.factory_orders] == ["bolt"]


def test_a_disabled_first_choice_falls_back_and_the_plan_says_why():
    catalogue = Catalogue(parse_catalogue_csv(CSV))
    plan = plan_route(job(line("1", "MUG-WHT")), catalogue, unavailable={"bolt": "disabled"}, now=0)
    assert [fo.factory for fo in plan.factory_orders] == ["acme"]
    assert plan.fallbacks == ("MUG-WHT: bolt disabled -> acme",)
    # No other factory makes it: it still goes to the first, to wait there.
    plan = plan_route(job(line("1", "TEE-RED-M")), catalogue, unavailable={"acme": "disabled"}, now=0)
    assert [fo.factory for fo in plan.factory_orders] == ["acme"] and plan.fallbacks == ()


def test_unknown_inactive_and_missing_skus_hold_the_order():
    catalogue = Catalogue(parse_catalogue_csv(CSV))
    plan = plan_route(job(line("1", "OLD-1"), line("2", "NOPE")), catalogue, now=0)
    assert plan.hold == "unknown_sku"
    assert plan.detail == "unmapped SKUs: NOPE; not active in the catalogue: OLD-1"
    plan = plan_route(job(line("1", None, "999")), catalogue, now=0)
    assert (plan.hold, plan.detail) == ("missing_sku", "lines without SKU: 1")


def test_new_routing_config_keys_are_validated_and_errors_name_the_key():
    secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    data = {
        "storefronts": {
            "shop": {
                "adapter": "demo",
                "url": "https://shop.example",
                "token": "t",
                "auto_place": "sometimes",
                "min_margin_percent": 120,
                "max_orders_per_hour": 0,
            }
        },
        "factories": {
            "acme": {
                "adapter": "webhook",
                "url": "https://acme.example/o",
                "signing_secret": secret,
                "callback_secrets": ["c"],
                "shipping_cost": "4.50 euros",
                "fallback_after_s": -1,
            }
        },
        "routing": {"skus": {"A": "acme"}, "rates": {"CNY-EUR": 0.13, "USD/EUR": 0}, "margins": {}},
    }
    with pytest.raises(ConfigurationError) as err:
        parse_settings(data, Registry())
    keys = dict(err.value.problems)
    assert set(keys) == {
        "storefronts.shop.auto_place",
        "storefronts.shop.min_margin_percent",
        "storefronts.shop.max_orders_per_hour",
        "factories.acme.shipping_cost",
        "factories.acme.fallback_after_s",
        "routing.rates",
        "routing.margins",
    }
    assert (
        keys["factories.acme.shipping_cost"]
        == "'4.50 euros' is not an amount and a currency, e.g. \"4.50 EUR\""
    )
    assert keys["routing.rates"] == (
        "'CNY-EUR' is not a currency pair like \"CNY/EUR\"; USD/EUR: the rate must be a number > 0"
    )


def test_conversion_uses_a_configured_rate_either_way_round_and_never_guesses():
    rates = {"CNY/EUR": Decimal("0.125")}
    assert convert(Decimal(80), "CNY", "EUR", rates) == Decimal(10)
    assert convert(Decimal(10), "EUR", "CNY", rates) == Decimal(80)
    assert convert(Decimal(10), "USD", "EUR", rates) is None
    assert convert(Decimal(10), "EUR", "EUR", {}) == Decimal(10)


async def test_migration_8_adds_an_empty_catalogue_to_a_version_7_database(tmp_path):
    path = tmp_path / "old.db"
    old = database_at(path, 7)
    old.commit()
    old.close()
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.migrate() >= 8  # up to the newest version
        assert await store.list_skus() == []
        assert (await store.routing_snapshot()).catalogue_version == 0
        diff = await store.seed_skus_from_config({"A": "acme"}, 1.0)
        assert [r.sku for r in diff.added] == ["A"]
        assert (await store.routing_snapshot()).catalogue_version == 1
    finally:
        await store.close()
