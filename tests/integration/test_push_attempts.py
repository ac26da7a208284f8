"""Issue 15: a tracking push looks before writing only when an earlier attempt's outcome is unknown.

The claim counts attempts (`lease_token`, in the claim's own transaction); an outcome recorded as
definite (pushed, throttled, not sent) settles the claim. A push claimed after an unsettled claim (a
crash after the write, a failure) carries `prior_attempt_unknown=True`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from relay.app import App
from relay.config import StorefrontSettings
from relay.domain.models import FactoryOrderState, PushState, Shipment, ShipmentLine
from relay.store import DeliveryOutcome, PushOutcome, open_store
from relay.store.records import PushJob
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

SHOP: dict[str, Any] = (
    {"storefronts": {"shop": {"start_from": "2020-01-01"}}}
    if "start_from" in StorefrontSettings.model_fields
    else {}
)
T = 1e10
LEASE = 30.0


async def _poll_and_route(app: App) -> None:
    for poller in app.pollers:
        await poller.safe_pass()
    while await app.router.safe_pass():
        pass


async def test_only_a_claim_after_an_unsettled_one_looks_first(tmp_path: Path) -> None:
    async with Harness(tmp_path, config=SHOP) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await _poll_and_route(app)
        store = open_store(h.database)
        await store.open()
        try:
            [delivery] = await store.claim_deliveries("a", ["acme"], T, LEASE, 10)
            await store.record_deliveries([DeliveryOutcome(delivery, FactoryOrderState.PLACED)], T + 1)
            with sqlite3.connect(tmp_path / "relay.db") as db:
                fo_key, line_id = db.execute(
                    "SELECT f.key, l.line_id FROM factory_orders f JOIN order_lines l ON l.factory_order_id = f.id"
                ).fetchone()
            shipment = Shipment(
                factory_order_key=fo_key,
                shipment_id="p1",
                carrier="UPS",
                tracking_number="1Z",
                lines=[ShipmentLine(line_id=line_id, quantity=1)],
            )
            await store.record_shipment("acme", "m-1", shipment, T + 2)
            now = T + 3

            async def claim() -> PushJob:
                nonlocal now
                now += LEASE + 1  # any earlier lease has lapsed
                [job] = await store.claim_pushes("a", ["shop"], now, LEASE, 10)
                return job

            job = await claim()
            assert job.push.prior_attempt_unknown is False  # never claimed: write at once
            # Throttled (nothing written): the next claim may still write at once.
            await store.record_pushes([_deferred(job, now + 1)], now)
            job = await claim()
            assert job.push.prior_attempt_unknown is False
            # Not sent at all (the pre-send check failed): likewise.
            await store.record_pushes([PushOutcome(job, PushState.PENDING, attempted=False)], now)
            job = await claim()
            assert job.push.prior_attempt_unknown is False
            # Claimed, then nothing recorded (a crash after the write): the next claim looks ...
            job = await claim()
            assert job.push.prior_attempt_unknown is True
            # ... and a throttle of that look settles nothing: still unknown.
            await store.record_pushes([_deferred(job, now + 1)], now)
            job = await claim()
            assert job.push.prior_attempt_unknown is True
            # A failure may have written: unknown.
            await store.record_pushes([_failed(job, now + 1)], now)
            job = await claim()
            assert job.push.prior_attempt_unknown is True
            await store.record_pushes([PushOutcome(job, PushState.DONE, reference="n1")], now)
            # The payload never stores the flag.
            with sqlite3.connect(tmp_path / "relay.db") as db:
                [(payload, settled, token)] = db.execute(
                    "SELECT payload, settled_token, lease_token FROM storefront_pushes"
                ).fetchall()
            assert "prior_attempt_unknown" not in payload and settled == token
        finally:
            await store.close()


def _deferred(job: PushJob, due: float) -> PushOutcome:
    return PushOutcome(job, PushState.PENDING, next_attempt_at=due, error="429", attempted=False, status=429)


def _failed(job: PushJob, due: float) -> PushOutcome:
    return PushOutcome(job, PushState.PENDING, next_attempt_at=due, error="502", status=502)
