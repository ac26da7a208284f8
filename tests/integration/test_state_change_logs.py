"""Issue 12, part 3: one `order_state_changed` line per order state change (shipped and completed too),
carrying relay's id and the shop's order number; a repeated failure is logged once when it starts and then
summarised every few minutes (`still_failing`), not once per parcel per pass."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog

from relay import logging as relay_logging
from relay.loops.base import SUMMARY_EVERY_S
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine


class Captured:
    """JSON log lines written through relay's own logging setup (what operators tail)."""

    def __init__(self) -> None:
        self.buf = io.StringIO()

    def __enter__(self) -> Captured:
        relay_logging.configure("json", "debug", stream=self.buf)
        return self

    def __exit__(self, *exc: object) -> None:
        structlog.reset_defaults()

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.buf.getvalue().splitlines()]
        return [e for e in lines if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


async def test_every_state_change_is_one_line_with_the_order_id_and_number(tmp_path):
    with Captured() as logs:
        async with Harness(tmp_path, split_parcels=True) as h:
            h.storefront.add_order([SeedLine("TEE-RED-M", quantity=2), SeedLine("TEE-BLU-L")])
            h.storefront.add_order([SeedLine("UNMAPPED")])
            async with h.app() as app:
                await app.run_once()
                await h.factories["acme"].ship_all()
                await app.run_once()
                view = await app.store.find_order(1)
    assert view is not None and view.order.state == "completed"
    first = logs.events("order_state_changed", order_id=1)
    assert {e["number"] for e in first} == {"#1001"} and {e["storefront"] for e in first} == {"shop"}
    states = [e["to_state"] for e in first]
    assert states[:3] == ["received", "routed", "placed"] and states[-2:] == ["shipped", "completed"]
    assert set(states) <= {"received", "routed", "placed", "partially_shipped", "shipped", "completed"}
    assert len(states) == len(set(states))  # each change once
    assert [e["from_state"] for e in first][:2] == [None, "received"]
    # Every line matches the order's history: one line per state-changing event, no more.
    changes = [(e.from_state, e.to_state) for e in view.events if e.to_state and e.to_state != e.from_state]
    assert [(e["from_state"], e["to_state"]) for e in first] == changes
    [held] = logs.events("order_state_changed", order_id=2, to_state="held")
    assert held["number"] == "#1002" and held["reason"] == "unknown_sku" and held["level"] == "warning"


async def test_failing_pushes_are_logged_once_then_summarised_not_per_parcel(tmp_path):
    clock = ManualClock()
    with Captured() as logs:
        async with Harness(tmp_path, split_parcels=True) as h:
            for _ in range(3):
                h.storefront.add_order([SeedLine("TEE-RED-M", quantity=2), SeedLine("TEE-BLU-L")])
            async with h.app(clock=clock) as app:
                await app.run_once()
                await h.factories["acme"].ship_all()
                h.storefront.fail_next(503, times=10_000)  # the shop is down from now on
                await app.run_once()
                clock.advance(60)
                await app.run_once()  # every push fails again: nothing new to say
                quiet = len(
                    logs.events("still_failing", storefront="shop", failing="storefront_push_failing")
                )
                clock.advance(SUMMARY_EVERY_S)
                await app.run_once()
                pushes = await app.store.stats()
    assert pushes.storefront_pushes.get("pending", 0) >= 6  # two parcels per order, none delivered
    assert len(logs.events("storefront_push_failing", storefront="shop")) == 1
    assert [e for e in logs.events("push_failed") if e["level"] != "debug"] == []
    assert quiet == 0
    [summary] = logs.events("still_failing", storefront="shop", failing="storefront_push_failing")
    assert summary["level"] == "warning" and summary["failures"] >= 12  # two passes of six parcels
    assert summary["failing_for_s"] >= SUMMARY_EVERY_S
    # The storefront's listing fails too: the poller says so once, then one summary.
    assert len(logs.events("storefront_unavailable", storefront="shop")) == 1
    assert len(logs.events("still_failing", loop="poller", storefront="shop")) == 1


def _info(logs: Captured) -> list[dict[str, Any]]:
    """The lines an operator sees at the default level, with relay's order id."""
    lines = [json.loads(line) for line in logs.buf.getvalue().splitlines()]
    return [e for e in lines if e["level"] != "debug" and "order_id" in e]


async def test_factory_references_and_tracking_numbers_stay_visible_at_info(tmp_path):
    with Captured() as logs:
        async with Harness(tmp_path, split_parcels=True) as h:
            h.storefront.add_order([SeedLine("TEE-RED-M", quantity=2), SeedLine("TEE-BLU-L")])  # two parcels
            h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("MUG-WHT")])  # acme and bolt
            h.storefront.add_order([SeedLine("TEE-BLU-L")])  # one factory, one parcel
            async with h.app() as app:
                await app.run_once()
                for factory in h.factories.values():
                    await factory.ship_all()
                await app.run_once()
                views = [await app.store.find_order(i) for i in (1, 2, 3)]
    assert all(v is not None and v.order.state == "completed" for v in views)
    info = _info(logs)
    for view in views:
        assert view is not None
        seen = [e for e in info if e["order_id"] == view.order.id]
        references = {fo.reference for fo in view.factory_orders}
        assert None not in references and references <= {e.get("reference") for e in seen}
        parcels = [
            e
            for e in seen
            if e.get("kind") == "shipment_received" or e.get("to_state") in ("shipped", "partially_shipped")
        ]
        tracking = sorted((s.tracking_number, s.carrier) for s in view.shipments)
        assert sorted((e["tracking_number"], e["carrier"]) for e in parcels) == tracking  # each parcel once
    first, simple = views[0], views[2]
    assert first is not None and simple is not None and len(first.shipments) == 2
    # The pushes: the first parcel's changed no state, still shown once; the last completes the order.
    pushed = [e for e in info if e["order_id"] == first.order.id and e.get("kind") == "tracking_pushed"]
    done = [e for e in info if e["order_id"] == first.order.id and e.get("to_state") == "completed"]
    assert {e["tracking_number"] for e in pushed + done} == {s.tracking_number for s in first.shipments}
    # A simple order: one info line per state change, no more.
    lines = [e for e in info if e["order_id"] == simple.order.id]
    assert all(e["event"] == "order_state_changed" for e in lines)
    [placed] = [e for e in lines if e["to_state"] == "placed"]
    assert placed["reference"] == simple.factory_orders[0].reference
