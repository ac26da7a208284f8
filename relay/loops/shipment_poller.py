"""Factory poller: one per factory whose adapter is a `ShipmentSource` (a factory without callbacks).

Lists shipments reported since the stored cursor and records each parcel through the same store call as
a signed callback, under the message id `poll:<factory order key>:<shipment id>`, so a re-poll (or a
crash before the cursor was stored) has no second effect. The cursor is stored after each page's
parcels and notices (payment due or expired, paid, duplicates: `Store.apply_factory_notices`) are
recorded. Parcels the store rejects (unknown order, lines not in the factory order) are logged and
skipped: there is no one to answer 4xx to.

One poller per polled factory across every daemon on the database (ADR 14): a pass polls only under the
factory's lease (`factory:<name>`, `relay.loops.poller_lease`), and the page's notices and cursor are
written fenced by it: a poller that lost it records nothing more and stops the pass. Its parcels are not
fenced: each is recorded once by its message id whoever records it, and a parcel the factory reported is a
fact no newer outcome undoes. The lease is released when the poller stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.contracts import ShipmentSource
from relay.domain.models import Shipment
from relay.exceptions import AuthError, FatalAdapterError, RetriableAdapterError
from relay.loops.poller_lease import LeasedPoller
from relay.store import PollerLease, ShipmentVerdict, Store


def polled_message_id(shipment: Shipment) -> str:
    """The message id a polled parcel is recorded under: the same on every poll."""
    return f"poll:{shipment.factory_order_key}:{shipment.shipment_id}"


class ShipmentPoller(LeasedPoller):
    name = "factory_poller"

    def __init__(
        self,
        store: Store,
        factory: str,
        source: ShipmentSource,
        *,
        interval: float,
        clock: Callable[[], float],
        log: Any,
        owner: str,
        lease_s: float,
        on_shipments: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(
            store,
            f"factory:{factory}",
            owner=owner,
            lease_s=lease_s,
            interval=interval,
            clock=clock,
            log=log.bind(factory=factory),
        )
        self.store = store
        self.factory = factory
        self.source = source
        self.adapter = source  # `App.health` names a failing loop by its adapter
        self.on_shipments = on_shipments

    async def poll_under(self, lease: PollerLease) -> None:
        """One poll under the factory's lease (`LeasedPoller`)."""
        try:
            await self.poll_once(lease)
        except AuthError as exc:
            self.health.failed(self.clock(), exc, "factory_auth_failed")
        except RetriableAdapterError as exc:
            self.health.failed(self.clock(), exc, "factory_unavailable")
        except FatalAdapterError as exc:
            self.health.failed(self.clock(), exc, "factory_listing_rejected")

    async def poll_once(self, lease: PollerLease) -> int:
        """Drain the listing from the stored cursor, notices and cursor fenced by `lease` (`LeaseLost` when
        another daemon took it). Returns how many parcels were new."""
        cursor = await self.store.get_factory_cursor(self.factory)
        accepted = 0
        async for page in self.source.fetch_shipments(cursor):
            new = 0
            for shipment in page.shipments:
                result = await self.store.record_shipment(
                    self.factory, polled_message_id(shipment), shipment, self.clock()
                )
                if result.verdict is ShipmentVerdict.ACCEPTED:
                    new += 1
                elif result.verdict is not ShipmentVerdict.DUPLICATE:
                    self.log.warning(
                        "polled_shipment_rejected",
                        verdict=result.verdict.value,
                        detail=result.detail,
                        key=shipment.factory_order_key,
                        shipment_id=shipment.shipment_id,
                    )
            if page.notices:
                now = self.clock()
                applied = await self.store.apply_factory_notices(self.factory, page.notices, now, fence=lease)
                self.lease.renewed(lease, now)
                if applied:
                    self.log.info("factory_notices_applied", applied=applied)
            if page.cursor is not None and page.cursor != cursor:
                now = self.clock()
                await self.store.set_factory_cursor(self.factory, page.cursor, now, fence=lease)
                self.lease.renewed(lease, now)
                cursor = page.cursor
            if new:
                accepted += new
                self.on_shipments()
            self.lease.check()  # before the next page is asked for
        self.health.ok(self.clock())
        if accepted:
            self.log.info("shipments_polled", accepted=accepted)
        return accepted
