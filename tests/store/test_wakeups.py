"""Wake-ups between daemons on one PostgreSQL database (issue 16): a committed transaction's topics reach
the OTHER stores listening on its schema, nothing else does, and a listener that lost its session comes
back and says that it may have missed some (`*`).

PostgreSQL delivers notifications in commit order to every listener of the database, so "nothing arrived"
is checked deterministically: a later write's topic (a barrier) must be the first thing a listener hears.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from relay.domain.models import OrderLine
from relay.store import ShipmentVerdict, Store, open_store, wakeups
from relay.store.connector import Transaction
from relay.store.manager import RelayStore
from relay.store.postgres.connector import PostgresConnector
from relay.store.postgres.wakeups import PAYLOAD_LIMIT, channel, payload, topics_of
from relay.testing import postgres
from tests.unit.test_order_versions import T0, deliver, order, parcel, route

WAIT_S = 5.0  # a bound for failures only: a wake-up arrives in milliseconds


def line(line_id: str, sku: str) -> OrderLine:
    return OrderLine(line_id=line_id, sku=sku, quantity=2, unit_price=Decimal(1))


class Heard:
    """The topic sets a store's `on_wakeup` callback was handed, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[set[str]] = asyncio.Queue()

    def __call__(self, topics: set[str]) -> None:
        self.queue.put_nowait(topics)

    async def next(self) -> set[str]:
        return await asyncio.wait_for(self.queue.get(), WAIT_S)


async def write(store: Store, *topics: str, fail: bool = False) -> None:
    """One write transaction that notifies `topics` (and raises before its COMMIT if `fail`)."""

    async def unit(tx: Transaction) -> None:
        await tx.execute("set_factory_cursor", name="acme", cursor="c1", now=1.0)
        for topic in topics:
            tx.notify(topic)
        if fail:
            raise RuntimeError("rolled back")

    assert isinstance(store, RelayStore)
    await store.connector.run_write(unit)


@pytest.fixture
async def opened(postgres_url: str) -> AsyncIterator[Callable[[str], Awaitable[Store]]]:
    """Opens (and migrates) stores; closes them all at the end."""
    stores: list[Store] = []

    async def open_one(url: str) -> Store:
        store = open_store(url)
        await store.open()
        stores.append(store)
        await store.migrate()
        return store

    yield open_one
    for store in stores:
        await store.close()


async def test_a_commit_wakes_the_other_stores_on_its_schema_but_not_itself(
    postgres_url: str, opened: Callable[[str], Awaitable[Store]]
) -> None:
    a, b = await opened(postgres_url), await opened(postgres_url)
    heard_a, heard_b = Heard(), Heard()
    await a.on_wakeup(heard_a)
    await b.on_wakeup(heard_b)
    await write(a, wakeups.ROUTE, wakeups.ship("shop"), wakeups.ship("shop"))
    assert await heard_b.next() == {"route", "ship:shop"}  # one set per transaction, each topic once
    await write(b, "barrier")
    assert await heard_a.next() == {"barrier"}  # its own came first, if at all: it was ignored
    await a.notify({wakeups.poll("acme")})  # outside a transaction: a push message
    assert await heard_b.next() == {"poll:acme"}


async def test_a_rolled_back_write_and_a_write_without_topics_send_nothing(
    postgres_url: str, opened: Callable[[str], Awaitable[Store]]
) -> None:
    a, b = await opened(postgres_url), await opened(postgres_url)
    heard = Heard()
    await b.on_wakeup(heard)
    with pytest.raises(RuntimeError):
        await write(a, wakeups.forward("acme"), fail=True)
    await write(a)
    await write(a, "barrier")
    assert await heard.next() == {"barrier"}


async def test_another_schema_hears_nothing(
    postgres_server: str, postgres_url: str, opened: Callable[[str], Awaitable[Store]]
) -> None:
    schema, other_url = postgres.fresh_schema(postgres_server)
    try:
        a = await opened(postgres_url)
        other, neighbour = await opened(other_url), await opened(other_url)
        heard = Heard()
        await other.on_wakeup(heard)
        await write(a, wakeups.ROUTE)
        await write(neighbour, "barrier")
        assert await heard.next() == {"barrier"}
    finally:
        postgres.drop_schema(postgres_server, schema)


async def test_too_many_topics_for_one_notification_wake_everything(
    postgres_url: str, opened: Callable[[str], Awaitable[Store]]
) -> None:
    a, b = await opened(postgres_url), await opened(postgres_url)
    heard = Heard()
    await b.on_wakeup(heard)
    many = [wakeups.ship(f"shop-{n:04d}") for n in range(1000)]  # ~14 kB
    assert len(payload("sender", many).encode()) < PAYLOAD_LIMIT
    await write(a, *many)
    assert await heard.next() == {wakeups.ALL}


def test_a_payload_names_its_sender_and_its_topics() -> None:
    text = payload("me", ["ship:b", "route", "forward:a"])
    assert text == "me forward:a route ship:b"
    assert topics_of(text, "you") == {"forward:a", "route", "ship:b"}
    assert topics_of(text, "me") == set()


async def test_a_listener_whose_session_is_cut_reconnects_and_wakes_everything(
    postgres_url: str, opened: Callable[[str], Awaitable[Store]]
) -> None:
    a, b = await opened(postgres_url), await opened(postgres_url)
    heard = Heard()
    await b.on_wakeup(heard)
    assert isinstance(b, RelayStore) and isinstance(b.connector, PostgresConnector)
    listen = f"LISTEN {channel(b.connector.key)}"  # only b listens on this fresh schema
    with capture_logs() as logs:
        (terminated,) = postgres.raw_sql(
            postgres_url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = '{listen}'"
        )
        assert terminated == (True,)
        assert await heard.next() == {wakeups.ALL}  # notifications may have been missed meanwhile
    assert [e["event"] for e in logs if e["event"].startswith("wakeup_listener")] == [
        "wakeup_listener_lost",
        "wakeup_listener_restored",
    ]
    await write(a, wakeups.ROUTE)
    assert await heard.next() == {wakeups.ROUTE}


async def test_a_callback_that_raises_is_logged_and_listening_goes_on(
    postgres_url: str, opened: Callable[[str], Awaitable[Store]]
) -> None:
    a, b = await opened(postgres_url), await opened(postgres_url)
    heard = Heard()

    def callback(topics: set[str]) -> None:
        heard(topics)
        if topics == {wakeups.ROUTE}:
            raise RuntimeError("dispatcher bug")

    await b.on_wakeup(callback)
    with capture_logs() as logs:
        await write(a, wakeups.ROUTE)
        assert await heard.next() == {wakeups.ROUTE}
        await write(a, "barrier")
        assert await heard.next() == {"barrier"}  # still listening, on the same session: nothing missed
    failed = [e for e in logs if e["event"].startswith("wakeup_")]
    assert [(e["event"], e["topics"]) for e in failed] == [("wakeup_callback_failed", ["route"])]


async def test_the_transitions_wake_the_loops_that_have_work(
    postgres_url: str, opened: Callable[[str], Awaitable[Store]]
) -> None:
    """Each commit that makes work names its loop; claims, outcomes and reads name none (the barrier that
    follows them is heard first)."""
    a, b = await opened(postgres_url), await opened(postgres_url)
    heard = Heard()
    await b.on_wakeup(heard)
    now = float(T0)
    await a.ingest("shop", [order(lines=(line("a", "A"), line("b", "B")))], [], None, now)
    assert await heard.next() == {wakeups.ROUTE}
    assert await route(a, now) == 1
    assert await heard.next() == {wakeups.forward("acme"), wakeups.forward("bolt")}
    jobs = await deliver(a, now)  # claims and outcomes: nothing new for anyone
    acme = next(j for j in jobs if j.factory == "acme")
    result = await a.record_shipment("acme", "m-1", parcel(acme.key, "P1", a=2), now)
    assert result.verdict is ShipmentVerdict.ACCEPTED
    assert await heard.next() == {wakeups.ship("shop")}
    await a.ingest(
        "shop", [order(at=60, lines=(line("a", "A"), line("b", "B")), cancelled=True)], [], None, now
    )
    assert await heard.next() == {wakeups.forward("bolt")}  # acme shipped everything: only bolt is told
    await a.release_leases("nobody")
    await a.claim_pushes("s", ["shop"], now, 30, 50)
    await a.release_leases("s")  # a stopping daemon's claims: anyone's now
    assert await heard.next() == {wakeups.ALL}
