"""`EventTap` hands over a transaction's state changes in the order they were written, whichever way
each history event names its order (relay's id, or the storefront's external id for a new order)."""

from __future__ import annotations

from relay.store import Store
from relay.store.changes import EventTap
from relay.store.connector import Transaction
from relay.store.manager import RelayStore
from tests.unit.test_order_versions import order


async def test_changes_come_in_the_order_written_whichever_way_events_name_their_order(store: Store) -> None:
    await store.ingest("shop", [order(external_id=x, number=f"#{x}") for x in "123"], [], None, 1.0)
    assert isinstance(store, RelayStore)

    async def unit(tx: Transaction) -> list[tuple[str, str]]:
        tap = EventTap(tx)
        by_id = {"at": 2.0, "kind": "held", "from_state": "received", "to_state": "held", "detail": None}
        by_ext = {"storefront": "shop", "at": 2.0, "kind": "x", "from_state": "received", "detail": None}
        await tap.execute("insert_event", order_id=1, **by_id)
        await tap.execute("insert_event_by_external_id", external_id="2", to_state="routed", **by_ext)
        await tap.execute("insert_event", order_id=3, **by_id)
        await tap.execute("insert_event", order_id=3, **{**by_id, "kind": "note", "to_state": "received"})
        return [(c.number, c.to_state) for c in (await tap.resolve())[0]]

    changes = await store.connector.run_write(unit)
    assert changes == [("#1", "held"), ("#2", "routed"), ("#3", "held")]  # the note is no state change
