"""`relay orders`, `relay show` and the operator actions, through `main()` against a database a real App
(fake storefront and factories over loopback HTTP) filled. The App stays open between the commands, as a
running daemon would: the commands act through the database alone."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from adapters.webhook.fake import Fault
from relay.cli import main
from relay.cli.common import configure_logging_for, local_time
from relay.cli.show import TITLES
from relay.config import DaemonSettings
from relay.demo import run_demo
from relay.domain.models import factory_order_key
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine


@pytest.fixture(autouse=True)
def logs_to_stderr() -> Iterator[None]:
    """The App's logs as JSON lines on stderr (as `main()` sets them up), never on stdout; put back after."""
    saved = structlog.get_config()
    configure_logging_for(DaemonSettings(log_format="json"))
    yield
    structlog.configure(**saved)


def error_lines(err: str) -> list[str]:
    """stderr without the App's JSON log lines."""
    return [line for line in err.splitlines() if not line.startswith("{")]


async def relay(*argv: str) -> int:
    """`main()` in a thread: it runs its own event loop, as the console script does."""
    return await asyncio.to_thread(main, list(argv))


def column(lines: list[str], name: str, next_name: str | None) -> list[str]:
    """One column of a plain table (header first), cut by the header's positions."""
    header = lines[0]
    start = header.index(name)
    end = header.index(next_name) if next_name else None
    return [line[start:end].strip() for line in lines[1:]]


def section(out: str, title: str) -> list[str]:
    """The lines of the table under `title` (header row first)."""
    return out.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0].splitlines()


async def test_show_by_shop_number_renders_every_attempt_parcel_and_push_in_order(tmp_path, capsys):
    clock = ManualClock()
    async with Harness(tmp_path, split_parcels=True) as h:
        for _ in range(41):
            h.storefront.add_order([SeedLine("MUG-WHT")])
        oid = h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("TEE-BLU-L")])  # #1042, two parcels
        acme = h.factories["acme"]
        acme.clock = clock  # it checks the signature's timestamp against its own clock
        acme.fail_next(
            Fault(status=503, body='{"error": "warehouse busy"}'),
            Fault(status=503, body='{"error": "database down"}'),
        )
        async with h.app(clock=clock) as app:
            await app.run_once()  # first attempt: 503
            clock.advance(3600)
            await app.run_once()  # second attempt: 503 again
            clock.advance(3600)
            await app.run_once()  # placed
            assert await acme.ship_all() == 1
            await app.run_once()  # both parcels' tracking pushed
        assert len(h.storefront.fulfilments(oid)) == 2
        db = ["--database", h.database]

        assert await relay(*db, "show", "#1042") == 0
        out = capsys.readouterr().out
        assert out.startswith(f"order 42  shop:{oid}  #1042  completed\n")
        events = column(section(out, "Timeline"), "event", "state")
        assert events == [
            TITLES["received"],
            TITLES["routed"],
            TITLES["delivery_failed"],
            TITLES["delivery_failed"],
            TITLES["factory_accepted"],
            "placed",
            TITLES["shipment_received"],
            "partially_shipped",
            TITLES["shipment_received"],
            "shipped",
            TITLES["tracking_pushed"],
            TITLES["tracking_pushed"],
            "completed",
        ]
        details = column(section(out, "Timeline"), "details", None)
        assert "attempt=1  status=503" in details[2] and "warehouse busy" in details[2]
        assert "attempt=2  status=503" in details[3] and "database down" in details[3]
        assert "factory=acme  attempt=3" in details[4]
        parcels = section(out, "Parcels and tracking pushes")
        assert len(parcels) == 3 and all("done (1 attempt(s))" in line for line in parcels[1:])
        # Personal data is masked by default.
        assert f"customer{oid}@example.com" not in out and "Ada Customer" not in out
        assert "c***@e***.com" in out and "+86 *** **** 0000" in out and "A*** C***" in out
        assert "1 Demo Street" not in out and "1*** D*** S***" in out

        assert await relay(*db, "show", "#1042", "--json") == 0
        data = json.loads(capsys.readouterr().out)
        assert [TITLES.get(e["kind"], e["kind"]) for e in data["events"]] == events  # the same, as data
        assert [(e["status"], e["attempt"]) for e in data["events"] if e["kind"] == "delivery_failed"] == [
            (503, 1),
            (503, 2),
        ]
        assert all(e["at_local"] for e in data["events"])
        assert data["order"]["payload"]["email"] == "c***@e***.com"
        assert data["order"]["payload"]["shipping_address"]["phone"] == "+86 *** **** 0000"
        assert len(data["shipments"]) == 2 and {s["push_state"] for s in data["shipments"]} == {"done"}

        assert await relay(*db, "show", "#1042", "--pii") == 0
        out = capsys.readouterr().out
        assert f"customer{oid}@example.com" in out and "+86 755 0000 0000" in out and "Ada Customer" in out
        assert await relay(*db, "show", f"shop:{oid}", "--pii", "--json") == 0
        data = json.loads(capsys.readouterr().out)
        assert data["order"]["payload"]["email"] == f"customer{oid}@example.com"
        assert await relay(*db, "show", "42", "--json") == 0  # relay's id
        assert json.loads(capsys.readouterr().out)["order"]["number"] == "#1042"


async def test_orders_lists_with_filters_and_json_matches_the_table(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.storefront.add_order([SeedLine("HAT")])  # unknown SKU: held
        h.storefront.add_order([SeedLine("MUG-WHT")])
        async with h.app() as app:
            await app.run_once()
        db = ["--database", h.database]

        assert await relay(*db, "orders") == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["id", "order", "number", "state", "reason", "detail", "updated"]
        assert await relay(*db, "orders", "--json") == 0
        rows = json.loads(capsys.readouterr().out)
        assert column(lines, "id", "order") == [str(r["id"]) for r in rows]
        assert column(lines, "state", "reason") == [r["state"] for r in rows]
        assert column(lines, "number", "state") == [r["number"] for r in rows]
        assert sorted(r["state"] for r in rows) == ["held", "placed", "placed"]

        assert await relay(*db, "orders", "--state", "held", "--json") == 0
        (held,) = json.loads(capsys.readouterr().out)
        assert (held["number"], held["attention_reason"]) == ("#1002", "unknown_sku")
        assert await relay(*db, "orders", "--reason", "unknown_sku", "--json") == 0
        assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [held["id"]]
        assert await relay(*db, "orders", "--factory", "bolt", "--json") == 0
        assert [r["number"] for r in json.loads(capsys.readouterr().out)] == ["#1003"]
        assert await relay(*db, "orders", "--storefront", "elsewhere", "--json") == 0
        assert json.loads(capsys.readouterr().out) == []
        assert await relay(*db, "orders", "--since", "1h", "--limit", "1", "--json") == 0
        assert len(json.loads(capsys.readouterr().out)) == 1
        assert await relay(*db, "orders", "--since", "2999-01-01", "--json") == 0
        assert json.loads(capsys.readouterr().out) == []
        assert await relay(*db, "orders", "--since", "yesterday") == 2
        assert "neither a duration" in capsys.readouterr().err


async def test_an_ambiguous_order_number_lists_the_matches(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])  # shop's #1001
        async with h.app() as app:
            await app.run_once()
            other = await app.store.find_order(1)
            assert other is not None
            # A second shop whose numbering also starts at #1001.
            await app.store.ingest("outlet", [other.order.payload], [], None, 1.0)
        assert await relay("--database", h.database, "show", "#1001") == 1
        (err,) = error_lines(capsys.readouterr().err)
        assert "'#1001' matches 2 orders: 1 (shop:1001 #1001), 2 (outlet:1001 #1001)" in err


async def test_release_after_mapping_the_sku_in_the_config_places_it_in_the_running_daemon(
    tmp_path: Path, capsys
) -> None:
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("HAT")])
        config = h.write_config(tmp_path / "relay.toml")
        async with h.app() as app:  # stays open: the daemon keeps running
            await app.run_once()
            assert await relay("-c", str(config), "orders", "--state", "held") == 0
            assert "unknown_sku" in capsys.readouterr().out
            assert await relay("-c", str(config), "release", "#1001") == 0  # not mapped yet: held again
            assert "released" in capsys.readouterr().out
            await app.run_once()
            view = await app.store.find_order(1)
            assert view is not None and view.order.attention_reason == "unknown_sku"

            h.write_config(tmp_path / "relay.toml", routing={"skus": {**h.sku_map, "HAT": "acme"}})
            assert await relay("-c", str(config), "release", "#1001") == 0
            out = capsys.readouterr().out
            assert "SKU catalogue from the config's routing.skus: 1 added" in out
            assert "order 1 released (unknown_sku): back to routing" in out
            await app.run_once()
            view = await app.store.find_order(1)
        assert view is not None and view.order.state == "placed"
        assert h.factories["acme"].deliveries == {factory_order_key("shop", oid, "acme"): 1}


async def test_hold_release_cancel_retry_and_replay_through_the_cli(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.storefront.add_order([SeedLine("MUG-WHT")])
        h.factories["bolt"].fail_next(Fault(status=400, body='{"error": "bad address"}'))
        cfg = ["-c", str(h.write_config(tmp_path / "relay.toml"))]
        async with h.app() as app:
            assert await relay(*cfg, "factories", "disable", "acme", "--reason", "stocktaking") == 0
            await app.run_once()  # #1001: routed, waits for acme; #1002: dead-lettered by bolt (400)

            assert await relay(*cfg, "hold", "#1001", "--reason", "customer called: wrong size") == 0
            assert "order 1 held" in capsys.readouterr().out
            assert await relay(*cfg, "orders", "--state", "held", "--json") == 0
            (held,) = json.loads(capsys.readouterr().out)
            assert (held["attention_reason"], held["attention_detail"]) == (
                "operator_hold",
                "customer called: wrong size",
            )
            assert await relay(*cfg, "hold", "#1001", "--reason", " ") == 2
            assert "must not be empty" in capsys.readouterr().err

            assert await relay(*cfg, "status", "--json") == 0
            status = json.loads(capsys.readouterr().out)
            assert sorted((a["order_id"], a["reason"]) for a in status["attention"]) == [
                (1, "operator_hold"),
                (2, "factory_rejected"),
            ]
            assert [(d["order_id"], d["kind"], d["destination"]) for d in status["dead_letters"]] == [
                (2, "delivery", "bolt")
            ]
            acme = next(f for f in status["factories"] if f["name"] == "acme")
            assert (acme["disabled_reason"], status["orders_by_state"]["held"]) == ("stocktaking", 1)
            assert await relay(*cfg, "status") == 0
            out = capsys.readouterr().out
            assert "customer called: wrong size" in out and "bad address" in out and "stocktaking" in out

            assert await relay(*cfg, "retry", "--all-dead") == 0
            assert "retried 1 order(s): 2" in capsys.readouterr().out
            assert await relay(*cfg, "release", "1") == 0
            assert await relay(*cfg, "factories", "enable", "acme") == 0
            await app.run_once()
            assert h.factories["acme"].held == 1 and h.factories["bolt"].held == 1

            assert await relay(*cfg, "replay", "#1001") == 0
            assert "re-sent with the same key" in capsys.readouterr().out
            assert await relay(*cfg, "cancel", "#1002") == 0
            assert "order 2" in capsys.readouterr().out
            await app.run_once()
            assert await relay(*cfg, "hold", "#1002", "--reason", "too late") == 1
            (err,) = error_lines(capsys.readouterr().err)
            assert err.startswith("error: order 2 is cancelled")
        assert h.factories["bolt"].is_cancelled(factory_order_key("shop", "1002", "bolt"))


async def test_show_gives_a_bought_factory_orders_amount_currency_and_pay_deadline(tmp_path, capsys):
    db = tmp_path / "relay.db"
    assert (
        await run_demo(4, factory="alibaba1688", give_up_after_s=60, database=str(db), out=io.StringIO()) == 0
    )
    assert await relay("--database", str(db), "orders", "--factory", "bolt", "--json") == 0
    order_id = json.loads(capsys.readouterr().out)[0]["id"]
    assert await relay("--database", str(db), "show", str(order_id), "--json") == 0
    (bolt,) = [fo for fo in json.loads(capsys.readouterr().out)["factory_orders"] if fo["factory"] == "bolt"]
    assert bolt["amount"] and bolt["currency"] == "CNY" and bolt["pay_deadline"]
    assert await relay("--database", str(db), "show", str(order_id)) == 0
    (row,) = [line for line in section(capsys.readouterr().out, "Factory orders") if line.startswith("bolt")]
    deadline = datetime.fromisoformat(bolt["pay_deadline"]).timestamp()
    assert f"{bolt['amount']} CNY" in row and local_time(deadline) in row
