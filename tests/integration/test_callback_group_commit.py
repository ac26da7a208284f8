"""Shipment callbacks that arrive together share one transaction, each with the effect it has alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from relay.domain.models import Shipment
from relay.store import ShipmentVerdict
from relay.store.transitions import shipments
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


def parcel(key: str, line_id: str, n: int = 1) -> Shipment:
    return Shipment.model_validate(
        {
            "factory_order_key": key,
            "shipment_id": f"P{n}",
            "carrier": "SF Express",
            "tracking_number": f"SF{abs(hash((key, n))) % 10**10:010d}",
            "lines": [{"line_id": line_id, "quantity": 1}],
        }
    )


async def test_concurrent_callbacks_share_one_commit_and_keep_their_verdicts(tmp_path: Path) -> None:
    async with Harness(tmp_path, ship_after_s=None) as h:
        ids = [h.storefront.add_order([SeedLine("TEE-RED-M", quantity=1)]) for _ in range(3)]
        async with h.app() as app:
            await app.run_once()
            held = list(h.factories["acme"].orders.values())
            assert len(held) == 3
            commits: list[str] = []
            await app.store.connector.on_writer(  # type: ignore[attr-defined]
                lambda db: db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
            )
            now = time.time()
            calls = [
                app.store.record_shipment(
                    "acme", f"m-{o.key}", parcel(o.key, o.payload["lines"][0]["line_id"]), now
                )
                for o in held
            ]
            first = held[0]
            calls.append(
                app.store.record_shipment(  # the same message again, in the same batch
                    "acme", f"m-{first.key}", parcel(first.key, first.payload["lines"][0]["line_id"]), now
                )
            )
            calls.append(app.store.record_shipment("acme", "m-x", parcel("fo_unknown", "1"), now))
            results = await asyncio.gather(*calls)
            await app.store.connector.on_writer(lambda db: db.set_trace_callback(None))  # type: ignore[attr-defined]
            assert [r.verdict for r in results] == [ShipmentVerdict.ACCEPTED] * 3 + [
                ShipmentVerdict.DUPLICATE,
                ShipmentVerdict.UNKNOWN_ORDER,
            ]
            assert commits == ["COMMIT"]
            await app.run_once()
        for order_id in ids:
            assert len(h.storefront.fulfilments(order_id)) == 1


async def test_a_failing_callback_does_not_fail_the_others_in_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Harness(tmp_path, ship_after_s=None) as h:
        for _ in range(2):
            h.storefront.add_order([SeedLine("TEE-RED-M", quantity=1)])
        async with h.app() as app:
            await app.run_once()
            good, bad = list(h.factories["acme"].orders.values())
            original = shipments.record_shipments

            async def flaky(tx: Any, batch: Sequence[shipments.ShipmentCallback]) -> Any:
                if any(c.message_id == "m-bad" for c in batch):
                    raise RuntimeError("boom")
                return await original(tx, batch)

            monkeypatch.setattr(shipments, "record_shipments", flaky)
            now = time.time()
            results = await asyncio.gather(
                app.store.record_shipment(
                    "acme", "m-good", parcel(good.key, good.payload["lines"][0]["line_id"]), now
                ),
                app.store.record_shipment(
                    "acme", "m-bad", parcel(bad.key, bad.payload["lines"][0]["line_id"]), now
                ),
                return_exceptions=True,
            )
            assert results[0].verdict is ShipmentVerdict.ACCEPTED  # type: ignore[union-attr]
            assert isinstance(results[1], RuntimeError)
            stats = await app.store.stats()
            assert stats.storefront_pushes == {"pending": 1}


async def test_parcels_of_one_order_in_one_batch_see_each_other(tmp_path: Path) -> None:
    """A batch is read once and written set-based (ADR 12), yet each parcel is judged after the ones before
    it: the second parcel of a line completes it, a replayed message or parcel is a duplicate, and a parcel
    beyond the ordered quantity is refused."""
    async with Harness(tmp_path, ship_after_s=None) as h:
        order_id = h.storefront.add_order([SeedLine("TEE-RED-M", quantity=2)])
        async with h.app() as app:
            await app.run_once()
            (held,) = h.factories["acme"].orders.values()
            line_id = held.payload["lines"][0]["line_id"]
            commits: list[str] = []
            await app.store.connector.on_writer(  # type: ignore[attr-defined]
                lambda db: db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
            )
            now = time.time()
            results = await asyncio.gather(
                app.store.record_shipment("acme", "m1", parcel(held.key, line_id, 1), now),
                app.store.record_shipment("acme", "m1", parcel(held.key, line_id, 1), now),
                app.store.record_shipment("acme", "m2", parcel(held.key, line_id, 1), now),
                app.store.record_shipment("acme", "m3", parcel(held.key, line_id, 2), now),
                app.store.record_shipment("acme", "m4", parcel(held.key, line_id, 3), now),
            )
            await app.store.connector.on_writer(lambda db: db.set_trace_callback(None))  # type: ignore[attr-defined]
            assert [(r.verdict, r.detail) for r in results] == [
                (ShipmentVerdict.ACCEPTED, None),
                (ShipmentVerdict.DUPLICATE, "message already processed"),
                (ShipmentVerdict.DUPLICATE, "parcel already recorded"),
                (ShipmentVerdict.ACCEPTED, None),
                (ShipmentVerdict.INVALID_LINES, f"line {line_id!r}: 3 shipped exceeds 2 ordered"),
            ]
            assert len(commits) == 1
            view = await app.store.find_order(results[0].order_id)  # type: ignore[arg-type]
            assert view is not None
            assert view.order.state == "shipped"
            assert [fo.state for fo in view.factory_orders] == ["shipped"]
            assert sorted(s.shipment_id for s in view.shipments) == ["P1", "P2"]
            shipped, fully = await app.store.connector.on_writer(  # type: ignore[attr-defined]
                lambda db: (
                    db.execute("SELECT shipped_quantity FROM order_lines").fetchall(),
                    db.execute(
                        "SELECT payload ->> 'order_fully_shipped' FROM storefront_pushes ORDER BY id"
                    ).fetchall(),
                )
            )
            assert [tuple(r) for r in shipped] == [(2,)]
            assert [tuple(r) for r in fully] == [(0,), (1,)]  # the second parcel completes the order
            await app.run_once()
        assert len(h.storefront.fulfilments(order_id)) == 2
