"""Issue 11, item 12 (retention): `inbound_messages`, `order_events` and parcels no longer grow forever.
`relay prune [--dry-run]` and the daemon's daily pass delete old callback ids and the history of long-final
orders in bounded batches; non-final orders are never touched, and a pruned parcel is never pushed twice."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import structlog

from adapters.webhook.fake import Fault
from relay.cli import main
from relay.loops.pruner import DAY_S, Pruner
from relay.store import PruneReport
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("orders", "order_events", "shipments", "storefront_pushes", "inbound_messages")
        }


def history_of(path: Path, order_id: int) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        events = db.execute("SELECT count(*) FROM order_events WHERE order_id = ?", (order_id,)).fetchone()[0]
        parcels = db.execute("SELECT count(*) FROM shipments WHERE order_id = ?", (order_id,)).fetchone()[0]
    return events, parcels


async def completed_and_pending(h: Harness, app: object) -> tuple[str, str]:
    """Two orders shipped to completion (acme) and one left owed to a failing factory (bolt)."""
    done_a = h.storefront.add_order([SeedLine("TEE-RED-M")])
    done_b = h.storefront.add_order([SeedLine("TEE-BLU-L")])
    pending = h.storefront.add_order([SeedLine("MUG-WHT")])
    h.factories["bolt"].fail_next(Fault(status=503), times=50)
    await app.run_once()  # type: ignore[attr-defined]
    await h.factories["acme"].ship_all()
    await app.run_once()  # type: ignore[attr-defined]
    return done_a, pending or done_b


async def test_prune_deletes_old_history_of_final_orders_only(tmp_path):
    db = tmp_path / "relay.db"
    async with Harness(tmp_path) as h, h.app() as app:
        done, pending = await completed_and_pending(h, app)
        done_id = await app.store.find_order_id("shop", done)
        pending_id = await app.store.find_order_id("shop", pending)
        view = await app.store.find_order(done_id)
        assert view is not None and view.order.state == "completed"
        before = counts(db)
        assert before["inbound_messages"] == 2 and before["shipments"] == 2
        pending_history = history_of(db, pending_id)
        assert pending_history[0] > 0

        # Nothing is old enough yet: nothing goes.
        fresh = await app.store.prune(
            inbound_before=time.time() - DAY_S, history_before=time.time() - DAY_S, batch_size=1
        )
        assert fresh == PruneReport()

        later = time.time() + 1
        dry = await app.store.prune(inbound_before=later, history_before=later, batch_size=1, dry_run=True)
        assert counts(db) == before
        report = await app.store.prune(inbound_before=later, history_before=later, batch_size=1)
        assert report == dry
        assert report.inbound_messages == 2 and report.orders == 2 and report.shipments == 2
        assert report.storefront_pushes == 2 and report.order_events > 0
        after = counts(db)
        assert after["orders"] == before["orders"]  # orders themselves stay
        assert after["inbound_messages"] == after["shipments"] == after["storefront_pushes"] == 0
        assert history_of(db, done_id) == (0, 0)
        assert history_of(db, pending_id) == pending_history  # not final: untouched
        view = await app.store.find_order(done_id)
        assert view is not None and view.order.state == "completed"

        # A factory re-sending a pruned parcel under a new message id is refused, not pushed again.
        acme = h.factories["acme"]
        held = next(iter(acme.orders.values()))
        lines = [{"line_id": li["line_id"], "quantity": li["quantity"]} for li in held.payload["lines"]]
        status = await acme.send_event(
            {
                "type": "shipment.created",
                "data": {
                    "factory_order_key": held.key,
                    "shipment_id": f"{held.reference}-P1",
                    "carrier": "SF Express",
                    "tracking_number": "SF000000000001",
                    "tracking_url": None,
                    "lines": lines,
                },
            },
            "resent-after-prune",
        )
        assert status == 422
        await app.run_once()
        assert len(h.storefront.fulfilments(done)) == 1
        assert await app.store.prune(inbound_before=later, history_before=later, batch_size=1) == PruneReport(
            inbound_messages=0
        )


async def test_the_daemon_prunes_on_its_own(tmp_path):
    db = tmp_path / "relay.db"
    async with Harness(tmp_path) as h, h.app() as app:
        done, _ = await completed_and_pending(h, app)
        assert [p.label for p in app.pruners] == ["pruner"]
        assert app.pruners[0].interval == 86400.0  # daily by default
        done_id = await app.store.find_order_id("shop", done)
        assert history_of(db, done_id) != (0, 0)
        now = time.time()
        future = Pruner(app.store, app.settings.retention, clock=lambda: now + 91 * DAY_S, log=app.log)
        assert await future.safe_pass() is False
        assert future.health.failing_since is None
    assert history_of(db, done_id) == (0, 0)
    assert counts(db)["inbound_messages"] == 0


def test_relay_prune_command(tmp_path, capsys):
    db = tmp_path / "relay.db"

    async def prepare() -> Path:
        async with Harness(tmp_path) as h:
            async with h.app() as app:
                await completed_and_pending(h, app)
            return h.write_config(
                tmp_path / "relay.toml",
                inbound={"timestamp_tolerance_s": 0.01},
                retention={"inbound_message_days": 1e-6, "order_history_days": 1e-6},
            )

    config = asyncio.run(prepare())
    capsys.readouterr()  # the daemon's log lines
    before = counts(db)
    time.sleep(0.2)
    try:
        assert main(["-c", str(config), "prune", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("would delete: 2 inbound message id(s)"), out
        assert counts(db) == before
        assert main(["-c", str(config), "prune"]) == 0
        assert capsys.readouterr().out.startswith("deleted: 2 inbound message id(s)")
    finally:
        structlog.reset_defaults()  # the CLI configured logging onto capsys's stream
    after = counts(db)
    assert after["inbound_messages"] == after["shipments"] == 0
    assert after["orders"] == before["orders"]


def test_retention_must_outlast_the_replay_window(tmp_path, capsys):
    path = tmp_path / "relay.toml"
    path.write_text(
        "[retention]\ninbound_message_days = 0.001\n"
        '[storefronts.shop]\nadapter = "demo"\nurl = "https://shop.example/"\ntoken = "t0k3n-abc"\n'
        '[factories.acme]\nadapter = "webhook"\nurl = "https://factory.example/orders"\n'
        'signing_secret = "signing-secret-1"\ncallback_secrets = ["callback-secret-1"]\n'
    )
    assert main(["-c", str(path), "check"]) == 78
    assert "retention.inbound_message_days" in capsys.readouterr().err
