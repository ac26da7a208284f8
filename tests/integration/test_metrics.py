"""Issue 12, part 2: `/metrics` (prometheus-client) on the admin listener, `/readyz`, and what stays on the
factory-facing port. The exposition is parsed with `prometheus_client.parser`, never matched as text."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from adapters.webhook.fake import Fault
from relay.domain.models import OrderState
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

ADMIN = {"admin": {"listen": "127.0.0.1:0"}}


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


Found = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Found:
    """Every sample of the exposition: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Found, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(app: Any) -> Found:
    status, text = await get(f"{app.admin_url}/metrics")
    assert status == 200, text
    return samples(text)


async def test_metrics_move_after_a_run_through_the_fakes(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.storefront.add_order([SeedLine("MUG-WHT")])
        h.storefront.add_order([SeedLine("UNMAPPED")])
        h.factories["bolt"].fail_next(Fault(status=503))
        h.factories["acme"].fail_next(Fault(status=422, body='{"error": "address rejected"}'))
        h.storefront.add_order([SeedLine("TEE-BLU-L")])
        retry_at_once = {"factories": {"bolt": {"retry": {"schedule_s": [0, 0, 0], "jitter": 0}}}}
        async with h.app(settings=h.settings(**ADMIN, **retry_at_once)) as app:
            before = await scrape(app)
            await app.run_once()
            failing = await scrape(app)
            await app.run_once()  # bolt's retry is due at once
            for factory in h.factories.values():
                await factory.ship_all()
            await app.run_once()
            after = await scrape(app)
            inbound_metrics, _ = await get(f"{app.inbound_url}/metrics")

    # Nothing before the run; every order state is a series, zeros included.
    assert value(before, "relay_orders_polled_total", storefront="shop") == 0
    assert {(name, labels) for (name, labels) in before if name == "relay_orders"} >= {
        ("relay_orders", frozenset({("state", s.value)})) for s in OrderState
    }
    assert value(after, "relay_orders_polled_total", storefront="shop") == 4
    assert value(after, "relay_orders_routed_total", storefront="shop") == 3
    assert value(after, "relay_orders_held_total", reason="unknown_sku") == 1
    assert value(after, "relay_orders_placed_total", factory="bolt") == 1
    assert value(after, "relay_orders_placed_total", factory="acme") == 1  # one of two was rejected
    deliveries = "relay_delivery_attempts_total"
    assert value(after, deliveries, factory="bolt", outcome="retry", status_class="5xx") == 1
    assert value(after, deliveries, factory="acme", outcome="dead", status_class="4xx") == 1
    assert value(after, deliveries, factory="acme", outcome="placed", status_class="2xx") == 1
    assert value(after, "relay_orders_shipped_total", storefront="shop") == 2
    assert value(after, "relay_orders_pushed_total", storefront="shop") >= 2
    pushes = "relay_push_attempts_total"
    assert value(after, pushes, storefront="shop", outcome="pushed", status_class="2xx") >= 2
    assert value(after, "relay_order_age_at_placement_seconds_count") == 2
    assert value(after, "relay_order_age_at_tracking_push_seconds_count") == 2
    assert value(after, "relay_order_transitions_total", from_state="new", to_state="received") == 4
    check_gauges(failing, after)
    # HTTP latency per peer, through the adapters' sessions.
    latency = "relay_http_request_duration_seconds_count"
    assert value(after, latency, role="factory", peer="bolt", status_class="5xx") == 1
    assert value(after, latency, role="storefront", peer="shop", status_class="2xx") >= 3
    assert value(after, "process_cpu_seconds_total") > 0
    assert inbound_metrics == 404  # not on the factory-facing port


def check_gauges(failing: Found, after: Found) -> None:
    """The gauges read from the store at scrape time, mid-run (bolt failing) and after the run."""
    assert value(after, "relay_orders", state="held") == 1
    assert value(after, "relay_orders", state="failed") == 1
    assert value(after, "relay_orders", state="completed") == 2
    assert value(after, "relay_orders", state="cancelled") == 0
    assert value(after, "relay_orders_needing_attention", reason="unknown_sku") == 1
    assert value(failing, "relay_factory_circuit_state", factory="bolt", state="open") == 1
    assert value(failing, "relay_oldest_pending_age_seconds") > 0  # bolt's order is owed
    assert value(after, "relay_oldest_pending_age_seconds") == 0  # nothing owed any more
    assert value(after, "relay_factory_circuit_state", factory="bolt", state="closed") == 1
    assert value(after, "relay_factory_circuit_state", factory="acme", state="closed") == 1
    assert value(after, "relay_storefront_last_poll_success_timestamp_seconds", storefront="shop") > 0


async def test_two_apps_in_one_process_keep_their_own_counters(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with Harness(tmp_path / "a") as a, Harness(tmp_path / "b") as b:
        a.storefront.add_order([SeedLine("TEE-RED-M")])
        async with a.app(settings=a.settings(**ADMIN)) as app_a, b.app(settings=b.settings(**ADMIN)) as app_b:
            await app_a.run_once()
            await app_b.run_once()
            found_a, found_b = await scrape(app_a), await scrape(app_b)
    assert value(found_a, "relay_orders_polled_total", storefront="shop") == 1
    assert value(found_b, "relay_orders_polled_total", storefront="shop") == 0


async def test_readyz_is_503_while_draining_and_public_readyz_has_no_details(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.factories["acme"].hang_next()  # the delivery stays in flight: the stop has to drain it
        async with h.app(settings=h.settings(**ADMIN)) as app:
            idle = await get(f"{app.admin_url}/readyz")
            run = asyncio.create_task(app.run())
            for _ in range(500):
                if h.factories["acme"].deliveries and (await get(f"{app.admin_url}/readyz"))[0] == 200:
                    break
                await asyncio.sleep(0.01)
            ready = await get(f"{app.admin_url}/readyz")
            app.stop()
            draining = await get(f"{app.admin_url}/readyz")
            public = await get(f"{app.inbound_url}/readyz")
            health = await get(f"{app.inbound_url}/healthz")
            await run
    assert idle[0] == 503 and '"loops_not_running"' in idle[1]
    assert ready == (200, '{"status": "ready", "failed": []}')
    assert draining[0] == 503 and '"draining"' in draining[1]
    assert public == (503, '{"status": "not_ready"}')
    assert health[0] == 200  # alive: the process answers while it drains
