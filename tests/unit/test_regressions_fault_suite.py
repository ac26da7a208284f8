"""Regressions found by the fault suite (tests/fault)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from relay.domain.models import FactoryOrderState, Order, OrderLine, PushState, Shipment, ShipmentLine
from relay.domain.routing import plan_route
from relay.signing import SignatureError, verify
from relay.store import DeliveryOutcome, PushOutcome, open_store


@pytest.mark.parametrize("timestamp", ["¹", "١٢٣", "１２３"])  # noqa: RUF001 - Unicode digits, on purpose
def test_non_ascii_digit_timestamp_is_a_signature_error_not_a_crash(timestamp):
    headers = {"webhook-id": "m", "webhook-timestamp": timestamp, "webhook-signature": "v1,AAAA"}
    with pytest.raises(SignatureError):
        verify(["secret"], headers, b"{}", now=0, tolerance_s=300)


async def test_cancelling_the_unshipped_rest_of_a_partially_shipped_order_is_legal(store_url):
    """Order split over two factories; one ships and its tracking is pushed; then the storefront cancels.
    Found by the stateful machine: ingest raised IllegalTransition partially_shipped -> completed, so the
    poller's page failed on every poll."""
    store = open_store(store_url)
    await store.open()
    try:
        await store.migrate()
        when = datetime.fromtimestamp(1_700_000_000, UTC)
        order = Order(
            external_id="1",
            number="#1",
            created_at=when,
            updated_at=when,
            currency="USD",
            lines=(
                OrderLine(line_id="a", sku="A", quantity=1, unit_price=Decimal(1)),
                OrderLine(line_id="b", sku="B", quantity=1, unit_price=Decimal(1)),
            ),
        )
        await store.ingest("shop", [order], [], None, 1.0)
        jobs = await store.claim_orders_to_route("o", 2.0, 30, 10)
        await store.apply_routing([plan_route(j, {"A": "acme", "B": "bolt"}, now=2.0) for j in jobs], 2.0)
        deliveries = await store.claim_deliveries("o", ["acme", "bolt"], 3.0, 30, 10)
        await store.record_deliveries([DeliveryOutcome(j, FactoryOrderState.PLACED) for j in deliveries], 3.0)
        acme = next(j for j in deliveries if j.factory == "acme")
        await store.record_shipment(
            "acme",
            "m1",
            Shipment(
                factory_order_key=acme.key,
                shipment_id="P1",
                carrier="SF",
                tracking_number="T1",
                lines=(ShipmentLine(line_id="a", quantity=1),),
            ),
            4.0,
        )
        pushes = await store.claim_pushes("o", ["shop"], 5.0, 30, 10)
        await store.record_pushes([PushOutcome(p, PushState.DONE) for p in pushes], 5.0)
        cancelled = order.model_copy(
            update={"cancelled": True, "updated_at": datetime.fromtimestamp(1_700_000_010, UTC)}
        )
        await store.ingest("shop", [cancelled], [], None, 6.0)
        for _ in range(3):  # deliver the order.cancelled message to bolt, if one is owed
            jobs = await store.claim_deliveries("o", ["acme", "bolt"], 7.0, 30, 10)
            if not jobs:
                break
            await store.record_deliveries([DeliveryOutcome(j, _done(j)) for j in jobs], 7.0)
        view = await store.find_order(1)
        assert view is not None and view.order.state in ("partially_shipped", "completed")
    finally:
        await store.close()


def _done(job):
    from relay.domain.models import CancelState
    from relay.store import ORDER_CANCELLED

    return CancelState.DONE if job.kind == ORDER_CANCELLED else FactoryOrderState.PLACED
