"""A factory without callbacks: orders go out signed, shipments come from polling its status endpoint."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from adapters.factory_poll.fake import FakePolledFactory
from relay.domain.models import Shipment, factory_order_key
from relay.loops.shipment_poller import polled_message_id
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


@pytest.fixture
async def slow():
    fake = FakePolledFactory("slow", page_size=2, split_parcels=True)
    await fake.start()
    yield fake
    await fake.close()


def harness(tmp_path, slow: FakePolledFactory, **config) -> Harness:
    return Harness(
        tmp_path,
        factories=("acme",),
        sku_map={"TEE-RED-M": "acme", "MUG-WHT": "slow", "CAP-BLK": "slow"},
        config={"factories": {"slow": slow.factory_config()}, **config},
    )


async def test_polled_shipments_flow_back_page_by_page_and_a_repoll_has_no_second_effect(tmp_path, slow):
    async with harness(tmp_path, slow) as h:
        oids = [h.storefront.add_order([SeedLine("MUG-WHT"), SeedLine("CAP-BLK")]) for _ in range(2)]
        async with h.app() as app:
            await app.run_once()
            assert slow.held == 2 and slow.rejected_signatures == 0
            assert await slow.ship_all() == 2  # two parcels each: four listed, two pages of two
            await app.run_once()
            states = [(await app.store.find_order(i)).order.state for i in (1, 2)]
            assert slow.listing_requests == [None, "0", "2"]  # the first poll found nothing yet
            assert await app.store.get_factory_cursor("slow") == "4"
            # The cursor is lost (restored backup, say): everything is listed again, nothing happens twice.
            await app.store.set_factory_cursor("slow", "0", app.clock())
            await app.run_once()
            assert await app.store.get_factory_cursor("slow") == "4"
            view = await app.store.find_order(1)
        assert states == ["completed", "completed"]
        assert [len(h.storefront.fulfilments(oid)) for oid in oids] == [2, 2]
        key = factory_order_key("shop", oids[0], "slow")
        parcel = Shipment.model_validate(slow.listed[0])
        assert polled_message_id(parcel) == f"poll:{key}:{parcel.shipment_id}"
        assert [s.shipment_id for s in view.shipments] == [p["shipment_id"] for p in slow.listed[:2]]


async def test_a_failing_listing_is_logged_once_and_the_cursor_waits(tmp_path, slow, recording_sleep):
    async with harness(tmp_path, slow) as h:
        h.storefront.add_order([SeedLine("MUG-WHT")])
        with capture_logs() as logs:
            async with h.app(sleep=recording_sleep) as app:
                await app.run_once()
                await slow.ship_all()
                slow.listing_faults = [503] * 6  # outlasts the in-call retries twice
                await app.run_once()
                await app.run_once()
                assert (
                    await app.store.get_factory_cursor("slow") == "0"
                )  # where the first, empty poll left it
                assert app.health()["failing"] == {"factory_poller:slow": "HTTP 503"}
                await app.run_once()
                state = (await app.store.find_order(1)).order.state
        assert state == "completed"
        assert len(recording_sleep.calls) == 4  # in-call retries: 2 per failed poll, never really slept
        assert [
            e["event"]
            for e in logs
            if e.get("loop") == "factory_poller"
            and e["log_level"] != "debug"
            and e["event"] in ("factory_unavailable", "recovered")
        ] == ["factory_unavailable", "recovered"]


async def test_bad_records_and_parcels_of_unknown_orders_are_skipped_and_the_cursor_moves_on(tmp_path, slow):
    async with harness(tmp_path, slow) as h:
        oid = h.storefront.add_order([SeedLine("MUG-WHT")])
        with capture_logs() as logs:
            async with h.app() as app:
                await app.run_once()
                slow.listed.append({"shipment_id": "no-key"})
                slow.listed.append(
                    {
                        "factory_order_key": "fo_nope",
                        "shipment_id": "X",
                        "carrier": "c",
                        "tracking_number": "t",
                        "lines": [{"line_id": "l", "quantity": 1}],
                    }
                )
                await slow.ship_all()
                slow.listed[-1]["shipped_at"] = "2025-01-01T00:00:00Z"  # unknown fields are ignored
                await app.run_once()
                assert await app.store.get_factory_cursor("slow") == "3"
                state = (await app.store.find_order(1)).order.state
        assert state == "completed" and len(h.storefront.fulfilments(oid)) == 1
        events = {e["event"] for e in logs}
        assert {"polled_shipment_malformed", "polled_shipment_rejected"} <= events


async def test_a_wrong_status_token_is_an_auth_failure(tmp_path, slow):
    options = slow.adapter_options() | {"status_token": "wrong"}
    async with harness(tmp_path, slow) as h:
        settings = h.settings(factories={"slow": options})
        async with h.app(settings=settings) as app:
            await app.run_once()
            assert app.health()["failing"] == {"factory_poller:slow": "HTTP 401: credentials refused"}
        assert slow.listing_requests == []
