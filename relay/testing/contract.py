"""The adapter contract suites: one line gives an adapter the checks every adapter of its kind must pass.

Usage, in `tests/adapters/<name>/test_contract.py`::

    from relay.testing.contract import get_factory_test_class, get_storefront_test_class
    from adapters.myshop import MyShopStorefront
    from adapters.myshop.fake import FakeMyShop

    TestMyShopContract = get_storefront_test_class(MyShopStorefront, FakeMyShop)
    TestMyFactoryContract = get_factory_test_class(MyFactory, FakeMyFactory)

Both suites talk real HTTP to the adapter's fake vendor server and drive that fake only through its
protocol in `relay.testing.vendor` (`FakeStorefront`, `FakeFactoryServer`, `FakeShipmentListing`).

## Storefront adapters (`get_storefront_test_class`)

What the suite requires of an adapter:

* `fetch_orders(since)` drains pagination, returns every order updated at or after `since` (inclusive)
  and, on a later poll from the newest `updated_at` it has seen, loses nothing: not orders sharing that
  timestamp, not orders touched while the previous poll was paging. Adapters with `is_sorted = True`
  yield orders in non-decreasing `updated_at`.
* A record that cannot be mapped is yielded as `Malformed` (with its `external_id`); the rest of the page
  still comes through.
* Throttling (the fake's `fail_next(429, retry_after=s)`) is waited out in-call through the context's
  `sleep`, for at least `s` seconds; a short burst of 5xx or one unanswered request (timeouts) is retried
  in-call to success (so at least 3 attempts); persistent failures end in `RetriableAdapterError` after
  a bounded number of attempts. 401/403 raise `AuthError`, other 4xx `FatalAdapterError`.
* Fields map: `Decimal` prices, currency, shipping address, sku, quantity, line properties, and the
  paid / test / cancelled flags.
* `push_shipment` creates one fulfilment per parcel with only the parcel's lines, and pushing the same
  `ShipmentPush` twice creates one fulfilment.
* Cancelling a `fetch_orders` iteration while a request hangs returns promptly.
* `aclose()` closes every aiohttp session the adapter opened through `AdapterContext.new_session`.

Fakes must give each seeded order a shipping address with at least `line1`, `city` and `country_code`,
and emulate `hang_next` by not answering until the fake is closed.

## Factory adapters (`get_factory_test_class`)

What the suite requires of an adapter (see docs/factory-api.md for the wire contract):

* `submit(order)` twice with the same `order.key` leaves one order at the factory (the key travels as
  the idempotency key); different keys are different orders.
* Answers map to the error tree, for `submit` and `cancel` alike: 410 `EndpointGone`; 429
  `RetriableAdapterError` carrying Retry-After as `retry_after`; 408/5xx and timeouts
  `RetriableAdapterError`; 401/403 `AuthError`; other 4xx `FatalAdapterError` (none of its branches);
  each with the answer's `status`. Nothing is held at the factory after a refused order.
* An uncertain outcome, where the factory took the order but the answer was lost (connection reset,
  or no answer before the timeout), raises `RetriableAdapterError` (or is retried in-call), and the
  retry with the same key leaves exactly one order.
* `cancel`: cancelling twice is harmless; a cancellation the factory refuses with 409
  `already_shipped` raises `AlreadyShipped`, any other 409 does not; an order created after its
  cancellation was received is refused (`FatalAdapterError`).
* `aclose()` closes every aiohttp session the adapter opened through `AdapterContext.new_session`.
* Adapters that are also `ShipmentSource`s (polled factories): the listing is drained page by page;
  a poll resumed from any page's cursor continues where that page ended (no parcel lost or repeated,
  new parcels found by the next poll from the last cursor); one 5xx is retried in-call, a persistent
  one raises `RetriableAdapterError`, refused credentials `AuthError`.

The suite's sessions time out after `REQUEST_TIMEOUT_S` whatever timeout the adapter asks for, and its
`sleep` returns at once, so a hang costs a fraction of a second and nothing really waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import aiohttp
import pytest
import structlog

from relay.config import EgressSettings
from relay.contracts import AdapterContext, FactoryAdapter, ShipmentSource, StorefrontAdapter
from relay.domain.models import (
    Address,
    FactoryOrder,
    Malformed,
    Order,
    OrderLine,
    Shipment,
    ShipmentLine,
    ShipmentPush,
)
from relay.exceptions import (
    AlreadyShipped,
    AuthError,
    EndpointGone,
    FatalAdapterError,
    RetriableAdapterError,
)
from relay.outbound.session import new_session
from relay.testing.vendor import FakeFactoryServer, FakeShipmentListing, FakeStorefront, SeedLine

T0 = 1_790_000_000
"""Epoch seconds (2026-09-21) at which seeded orders start; fixed so every run sees the same data."""

REQUEST_TIMEOUT_S = 0.2
"""Total timeout of the sessions the suite hands to adapters: `hang_next` costs this much per attempt."""

CALL_BOUND_S = 5.0
"""Wall-clock bound on any single adapter call in the suite ("never hangs")."""


class _Startable(Protocol):
    async def start(self) -> Any: ...
    async def close(self) -> Any: ...


FakeT = TypeVar("FakeT", bound=_Startable)


@dataclass
class RecordingSleep:
    """An injectable `sleep` that returns at once and records every requested duration."""

    calls: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@dataclass
class SessionTracker:
    """Wraps `relay.outbound.session.new_session` and keeps every session it makes, to check they get closed."""

    egress: EgressSettings
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    max_total_timeout_s: float | None = None
    """If set, sessions time out after at most this long, whatever `total_timeout_s` the adapter asks."""

    def __call__(self, **kwargs: Any) -> aiohttp.ClientSession:
        if self.max_total_timeout_s is not None:
            asked = kwargs.get("total_timeout_s", self.egress.total_timeout_s)
            kwargs["total_timeout_s"] = min(asked, self.max_total_timeout_s)
        session = new_session(self.egress, **kwargs)
        self.sessions.append(session)
        return session

    async def aclose(self) -> None:
        """Close whatever the adapter left open (after the checks, so a leak fails but does not warn)."""
        for session in self.sessions:
            await session.close()


def loopback_egress(total_timeout_s: float = REQUEST_TIMEOUT_S) -> EgressSettings:
    """Egress settings for talking to a fake on 127.0.0.1 over plain http, with a short timeout."""
    return EgressSettings(
        allow_plain_http=True, allow_private_addresses=True, total_timeout_s=total_timeout_s
    )


def make_context(
    sleep: Callable[[float], Any], new_session: Callable[..., aiohttp.ClientSession] | None = None
) -> AdapterContext:
    """An `AdapterContext` for tests: real sessions (to loopback), wall clock, the given sleep."""
    return AdapterContext(
        new_session=new_session or SessionTracker(loopback_egress()),
        clock=time.time,
        sleep=sleep,
        log=structlog.get_logger(),
    )


async def drain(adapter: StorefrontAdapter, since: datetime | None) -> list[Order | Malformed]:
    """Every record of one `fetch_orders` run, in the order the adapter yielded them."""
    records: list[Order | Malformed] = []
    async with asyncio.timeout(CALL_BOUND_S):
        async for page in adapter.fetch_orders(since):
            records.extend(page)
    return records


def orders_only(records: list[Order | Malformed]) -> list[Order]:
    return [r for r in records if isinstance(r, Order)]


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class _ContractFixtures(Generic[FakeT]):
    """What both contracts share: the adapter class under test, its fake, and the fixtures around them."""

    adapter_cls: ClassVar[type[Any]]
    fake_factory: ClassVar[Callable[[], Any]]
    extra_options: ClassVar[dict[str, Any]] = {}
    session_timeout_s: ClassVar[float | None] = None
    """Caps the total timeout of every session handed to the adapter (None: the adapter's own)."""

    # --- fixtures --------------------------------------------------------------------------------

    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeT]:
        fake: FakeT = type(self).fake_factory()
        await fake.start()
        try:
            yield fake
        finally:
            await fake.close()

    @pytest.fixture
    def sleep(self) -> RecordingSleep:
        return RecordingSleep()

    @pytest.fixture
    async def sessions(self) -> AsyncIterator[SessionTracker]:
        tracker = SessionTracker(loopback_egress(), max_total_timeout_s=type(self).session_timeout_s)
        yield tracker
        await tracker.aclose()


class StorefrontContract(_ContractFixtures[FakeStorefront]):
    """The checks. Not collected itself (no `Test` prefix): `get_storefront_test_class` subclasses it."""

    @pytest.fixture
    async def adapter(
        self, fake: FakeStorefront, sleep: RecordingSleep, sessions: SessionTracker
    ) -> AsyncIterator[StorefrontAdapter]:
        cls = type(self).adapter_cls
        options = cls.Options.model_validate(fake.adapter_options() | type(self).extra_options)
        adapter: StorefrontAdapter = cls(f"contract-{fake.adapter}", options, make_context(sleep, sessions))
        yield adapter
        await adapter.aclose()

    # --- the adapter's shape ---------------------------------------------------------------------

    def test_implements_the_protocol(self, adapter: StorefrontAdapter) -> None:
        assert isinstance(adapter, StorefrontAdapter)
        assert isinstance(type(adapter).is_sorted, bool)
        assert adapter.name.startswith("contract-")

    # --- listing ---------------------------------------------------------------------------------

    async def test_pagination_is_drained(self, adapter: StorefrontAdapter, fake: FakeStorefront) -> None:
        ids = [
            fake.add_order([SeedLine(sku=f"SKU-{i}")], updated_at=T0 + i)
            for i in range(2 * fake.page_size + 1)
        ]
        records = await drain(adapter, None)
        assert sorted(r.external_id for r in orders_only(records)) == sorted(ids)
        assert len(records) == len(ids), "every order exactly once"

    async def test_sorted_adapters_yield_ascending_updated_at(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        if not type(adapter).is_sorted:
            pytest.skip("adapter declares is_sorted = False")
        for i in (5, 1, 4, 2, 3, 0, 6):
            fake.add_order([SeedLine(sku="S")], updated_at=T0 + i)
        stamps = [o.updated_at for o in orders_only(await drain(adapter, None))]
        assert stamps == sorted(stamps)

    async def test_since_is_inclusive_and_resumes_without_gaps(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        a, b, c = (fake.add_order([SeedLine(sku="S")], updated_at=T0 + i) for i in range(3))
        d, e = (fake.add_order([SeedLine(sku="S")], updated_at=T0 + 10) for _ in range(2))
        first = orders_only(await drain(adapter, None))
        assert {o.external_id for o in first} == {a, b, c, d, e}
        newest = max(o.updated_at for o in first)
        late = fake.add_order([SeedLine(sku="S")], updated_at=T0 + 10)  # same second as the newest seen
        later = fake.add_order([SeedLine(sku="S")], updated_at=T0 + 11)
        fake.touch(a, updated_at=T0 + 12)
        second = orders_only(await drain(adapter, newest))
        ids = [o.external_id for o in second]
        assert sorted(ids) == sorted([d, e, late, later, a]), "updated_at >= since, nothing older"
        assert next(o for o in second if o.external_id == a).updated_at == at(T0 + 12)

    async def test_order_touched_mid_poll_is_not_lost(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        ids = [fake.add_order([SeedLine(sku="S")], updated_at=T0 + i) for i in range(3 * fake.page_size)]
        seen: list[Order] = []
        async with asyncio.timeout(CALL_BOUND_S):
            async for page in adapter.fetch_orders(None):
                if not seen:  # between the first and second page: move a seen and an unseen order
                    fake.touch(ids[0], updated_at=T0 + 1000)
                    fake.touch(ids[-1], updated_at=T0 + 1001)
                seen.extend(orders_only(list(page)))
        assert seen
        resumed = orders_only(await drain(adapter, max(o.updated_at for o in seen)))
        everything = {o.external_id for o in seen} | {o.external_id for o in resumed}
        assert everything == set(ids), "a poll plus the next poll from its newest updated_at sees every order"
        latest = {o.external_id: o.updated_at for o in [*seen, *resumed]}
        assert latest[ids[0]] == at(T0 + 1000)
        assert latest[ids[-1]] == at(T0 + 1001)

    async def test_malformed_record_is_quarantined_not_fatal(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        good = fake.add_order([SeedLine(sku="GOOD-1")], updated_at=T0)
        bad = fake.add_malformed_order()
        fake.touch(bad, updated_at=T0 + 1)
        other = fake.add_order([SeedLine(sku="GOOD-2")], updated_at=T0 + 2)
        records = await drain(adapter, None)
        malformed = [r for r in records if isinstance(r, Malformed)]
        assert [m.external_id for m in malformed] == [bad]
        assert malformed[0].reason
        assert {o.external_id for o in orders_only(records)} == {good, other}

    async def test_fields_map(self, adapter: StorefrontAdapter, fake: FakeStorefront) -> None:
        lines = [
            SeedLine(sku="MUG-1", quantity=2, unit_price=Decimal("12.45"), properties={"Engraving": "Hi"}),
            SeedLine(sku="TEE-M", quantity=1, unit_price=Decimal("20.00")),
        ]
        unpaid = fake.add_order(lines, paid=False, test=True, currency="EUR", updated_at=T0)
        cancelled = fake.add_order([SeedLine(sku="X")], updated_at=T0 + 1)
        fake.cancel(cancelled)
        by_id = {o.external_id: o for o in orders_only(await drain(adapter, None))}
        order = by_id[unpaid]
        assert (order.paid, order.test, order.cancelled) == (False, True, False)
        assert order.currency == "EUR"
        assert order.updated_at == at(T0)
        assert order.created_at.tzinfo is not None
        assert order.total is None or isinstance(order.total, Decimal)
        assert [ln.line_id for ln in order.lines] == fake.line_ids(unpaid)
        assert [(ln.sku, ln.quantity, ln.unit_price) for ln in order.lines] == [
            ("MUG-1", 2, Decimal("12.45")),
            ("TEE-M", 1, Decimal("20.00")),
        ]
        assert all(isinstance(ln.unit_price, Decimal) for ln in order.lines)
        assert order.lines[0].properties == {"Engraving": "Hi"}
        address = order.shipping_address
        assert address.line1 and address.city and address.country_code
        assert by_id[cancelled].cancelled is True
        fake.mark_paid(unpaid)
        again = {o.external_id: o for o in orders_only(await drain(adapter, None))}
        assert again[unpaid].paid is True

    # --- failures --------------------------------------------------------------------------------

    async def test_throttling_is_waited_out(
        self, adapter: StorefrontAdapter, fake: FakeStorefront, sleep: RecordingSleep
    ) -> None:
        order = fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.fail_next(429, times=2, retry_after=1.5)
        records = await drain(adapter, None)
        assert [r.external_id for r in records] == [order]
        assert sleep.calls and max(sleep.calls) >= 1.5, f"Retry-After not honoured: {sleep.calls}"

    async def test_throttling_without_retry_after_backs_off(
        self, adapter: StorefrontAdapter, fake: FakeStorefront, sleep: RecordingSleep
    ) -> None:
        order = fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.fail_next(429)
        assert [r.external_id for r in await drain(adapter, None)] == [order]
        assert sleep.calls and max(sleep.calls) > 0

    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_transient_server_errors_are_retried(
        self, adapter: StorefrontAdapter, fake: FakeStorefront, sleep: RecordingSleep, status: int
    ) -> None:
        order = fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.fail_next(status, times=2)
        assert [r.external_id for r in await drain(adapter, None)] == [order]
        assert len(sleep.calls) >= 2

    async def test_persistent_server_errors_become_retriable(
        self, adapter: StorefrontAdapter, fake: FakeStorefront, sleep: RecordingSleep
    ) -> None:
        fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.fail_next(503, times=1000)
        with pytest.raises(RetriableAdapterError):
            await drain(adapter, None)
        assert sum(sleep.calls) < 600, "in-call retries are for seconds, persisted retries for longer"

    async def test_one_timeout_is_retried(self, adapter: StorefrontAdapter, fake: FakeStorefront) -> None:
        order = fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.hang_next()
        assert [r.external_id for r in await drain(adapter, None)] == [order]

    async def test_persistent_timeouts_become_retriable(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.hang_next(times=1000)
        with pytest.raises(RetriableAdapterError):
            await drain(adapter, None)

    @pytest.mark.parametrize("status", [401, 403])
    async def test_refused_credentials_raise_auth_error(
        self, adapter: StorefrontAdapter, fake: FakeStorefront, status: int
    ) -> None:
        order = fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.reject_credentials(status)
        with pytest.raises(AuthError):
            await drain(adapter, None)
        with pytest.raises(AuthError):
            await self._push(adapter, fake, order, "1Z-AUTH", [0])

    async def test_other_client_errors_are_fatal(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.fail_next(400)
        with pytest.raises(FatalAdapterError) as caught:
            await drain(adapter, None)
        assert not isinstance(caught.value, AuthError)

    async def test_cancelling_a_hung_poll_returns_promptly(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        fake.add_order([SeedLine(sku="S")], updated_at=T0)
        fake.hang_next(times=1000)
        task = asyncio.create_task(drain(adapter, None))
        async with asyncio.timeout(CALL_BOUND_S):
            while not fake.requests:  # noqa: ASYNC110 (FakeStorefront offers no event to wait on)
                await asyncio.sleep(0.005)
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 1.0

    # --- pushing tracking ------------------------------------------------------------------------

    @staticmethod
    async def _push(
        adapter: StorefrontAdapter,
        fake: FakeStorefront,
        order_id: str,
        tracking: str,
        line_indexes: list[int],
        *,
        quantity: int = 1,
        prior_attempt_unknown: bool = True,
    ) -> Any:
        line_ids = fake.line_ids(order_id)
        push = ShipmentPush(
            key=f"sp_{order_id}_{tracking}",
            storefront=f"contract-{fake.adapter}",
            order_id=order_id,
            order_number="",
            carrier="UPS",
            tracking_number=tracking,
            tracking_url=f"https://track.example/{tracking}",
            lines=tuple(ShipmentLine(line_id=line_ids[i], quantity=quantity) for i in line_indexes),
            order_fully_shipped=False,
            prior_attempt_unknown=prior_attempt_unknown,
        )
        async with asyncio.timeout(CALL_BOUND_S):
            return await adapter.push_shipment(push)

    async def test_a_first_attempt_writes_without_looking(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        """`prior_attempt_unknown=False`: nothing of the parcel can be there, so no lookup: one request (an
        idempotency-keyed write), or fewer than a push that must look first."""
        order = fake.add_order([SeedLine(sku="A"), SeedLine(sku="B")], updated_at=T0)
        before = len(fake.requests)
        await self._push(adapter, fake, order, "1Z-FIRST", [0], prior_attempt_unknown=False)
        first = len(fake.requests) - before
        before = len(fake.requests)
        await self._push(adapter, fake, order, "1Z-LOOKED", [1], prior_attempt_unknown=True)
        looked = len(fake.requests) - before
        assert [f.tracking_number for f in fake.fulfilments(order)] == ["1Z-FIRST", "1Z-LOOKED"]
        assert first == 1 or first < looked, (
            f"a first attempt made {first} requests, one that looks first {looked}: it looked anyway"
        )

    async def test_a_retry_after_an_unknown_outcome_looks_and_does_not_duplicate(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        """A first attempt wrote the parcel, then relay crashed before recording it: the next attempt
        (`prior_attempt_unknown=True`) finds it instead of writing it again."""
        order = fake.add_order([SeedLine(sku="A"), SeedLine(sku="B")], updated_at=T0)
        await self._push(adapter, fake, order, "1Z-CRASHED", [0], prior_attempt_unknown=False)
        await self._push(adapter, fake, order, "1Z-CRASHED", [0], prior_attempt_unknown=True)
        await self._push(adapter, fake, order, "1Z-CRASHED", [0], prior_attempt_unknown=True)
        assert [f.tracking_number for f in fake.fulfilments(order)] == ["1Z-CRASHED"]

    async def test_partial_shipments_make_one_fulfilment_per_parcel(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        order = fake.add_order([SeedLine(sku="A"), SeedLine(sku="B")], updated_at=T0)
        lines = fake.line_ids(order)
        await self._push(adapter, fake, order, "1Z-PARCEL-1", [0])
        [first] = fake.fulfilments(order)
        assert (first.carrier, first.tracking_number, first.line_ids, first.quantities) == (
            "UPS",
            "1Z-PARCEL-1",
            (lines[0],),
            (1,),
        )
        await self._push(adapter, fake, order, "1Z-PARCEL-2", [1])
        assert [(f.tracking_number, f.line_ids) for f in fake.fulfilments(order)] == [
            ("1Z-PARCEL-1", (lines[0],)),
            ("1Z-PARCEL-2", (lines[1],)),
        ]

    async def test_pushing_the_same_parcel_twice_fulfils_once(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        order = fake.add_order([SeedLine(sku="A", quantity=2), SeedLine(sku="B")], updated_at=T0)
        await self._push(adapter, fake, order, "1Z-TWICE", [0], quantity=2)
        await self._push(adapter, fake, order, "1Z-TWICE", [0], quantity=2)
        assert [f.tracking_number for f in fake.fulfilments(order)] == ["1Z-TWICE"]

    async def test_push_survives_a_transient_failure(
        self, adapter: StorefrontAdapter, fake: FakeStorefront
    ) -> None:
        order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
        fake.fail_next(503)
        await self._push(adapter, fake, order, "1Z-RETRY", [0])
        assert [f.tracking_number for f in fake.fulfilments(order)] == ["1Z-RETRY"]

    # --- resources -------------------------------------------------------------------------------

    async def test_aclose_closes_every_session(
        self, adapter: StorefrontAdapter, fake: FakeStorefront, sessions: SessionTracker
    ) -> None:
        order = fake.add_order([SeedLine(sku="A")], updated_at=T0)
        await drain(adapter, None)
        await self._push(adapter, fake, order, "1Z-CLOSE", [0])
        assert sessions.sessions, "adapters must make their sessions with AdapterContext.new_session"
        await adapter.aclose()
        assert all(s.closed for s in sessions.sessions)
        # The fixture closes the adapter once more: closing twice must be harmless.


def get_storefront_test_class(
    adapter_cls: type[Any], fake_factory: Callable[[], FakeStorefront], **extra_options: Any
) -> type:
    """A pytest test class running the storefront contract against `adapter_cls` and its fake.

    `fake_factory()` builds a not-yet-started `FakeStorefront`; each test starts and closes its own.
    The adapter is built as `adapter_cls(name, adapter_cls.Options.model_validate(fake.adapter_options()
    | extra_options), context)` with a recording `sleep` and real sessions to the fake. Assign the
    result to a module-level name starting with `Test` so pytest collects it.
    """
    name = f"Test{adapter_cls.__name__}Contract"
    return type(
        name,
        (StorefrontContract,),
        {
            "adapter_cls": adapter_cls,
            "fake_factory": staticmethod(fake_factory),
            "extra_options": dict(extra_options),
            "__doc__": f"Storefront contract for {adapter_cls.__module__}.{adapter_cls.__qualname__}.",
        },
    )


# --- factory adapters ------------------------------------------------------------------------------

FATAL_STATUSES = (400, 404, 409, 422)
"""Other 4xx: rejected for good (409 without `already_shipped` included)."""

RETRIABLE_STATUSES = (408, 500, 502, 503, 504)

PERSISTENT = 50
"""How many requests a "persistent" fault lasts: more than any adapter's in-call attempts."""


def factory_order(n: int = 1, *, factory: str = "contract") -> FactoryOrder:
    """A valid factory order; `n` makes its key (and order id) distinct."""
    return FactoryOrder(
        key=f"fo_contract_{n:04d}",
        factory=factory,
        storefront="shop",
        order_id=str(5_000_000_000_000 + n),
        order_number=f"#{1000 + n}",
        created_at=datetime.fromtimestamp(T0 + n, UTC),
        currency="EUR",
        email="ada@example.com",
        shipping_address=Address(
            name="Ada Lovelace", line1="12 St James's Square", city="London", country_code="GB"
        ),
        lines=(
            OrderLine(line_id=f"L{n}-1", sku="MUG-WHT", quantity=2, unit_price=Decimal("12.50")),
            OrderLine(line_id=f"L{n}-2", sku="TEE-RED-M", quantity=1, unit_price=Decimal("20.00")),
        ),
    )


async def drain_shipments(
    source: ShipmentSource, since: str | None, *, pages: int | None = None
) -> tuple[list[Shipment], str | None]:
    """Shipments of one `fetch_shipments` run (stopping after `pages` pages if given), and the cursor
    the core would store: the last page's cursor that was not None, else `since`."""
    shipments: list[Shipment] = []
    cursor = since
    listing = source.fetch_shipments(since)
    try:
        async with asyncio.timeout(CALL_BOUND_S):
            seen = 0
            async for page in listing:
                shipments.extend(page.shipments)
                cursor = page.cursor if page.cursor is not None else cursor
                seen += 1
                if pages is not None and seen >= pages:
                    break
    finally:
        if isinstance(listing, AsyncGenerator):  # a poll stopped early is closed, as the core does
            await listing.aclose()
    return shipments, cursor


class FactoryContract(_ContractFixtures[FakeFactoryServer]):
    """The checks. Not collected itself (no `Test` prefix): `get_factory_test_class` subclasses it."""

    session_timeout_s = REQUEST_TIMEOUT_S

    @pytest.fixture
    async def adapter(
        self, fake: FakeFactoryServer, sleep: RecordingSleep, sessions: SessionTracker
    ) -> AsyncIterator[FactoryAdapter]:
        cls = type(self).adapter_cls
        options = cls.Options.model_validate(fake.adapter_options() | type(self).extra_options)
        adapter: FactoryAdapter = cls(f"contract-{fake.adapter}", options, make_context(sleep, sessions))
        yield adapter
        await adapter.aclose()

    @staticmethod
    async def _submit(adapter: FactoryAdapter, order: FactoryOrder) -> Any:
        async with asyncio.timeout(CALL_BOUND_S):
            return await adapter.submit(order)

    @staticmethod
    async def _cancel(adapter: FactoryAdapter, order: FactoryOrder) -> None:
        async with asyncio.timeout(CALL_BOUND_S):
            await adapter.cancel(order, cancelled_at=datetime.fromtimestamp(T0 + 3600, UTC))

    # --- the adapter's shape ---------------------------------------------------------------------

    def test_implements_the_protocol(self, adapter: FactoryAdapter, fake: FakeFactoryServer) -> None:
        assert isinstance(adapter, FactoryAdapter)
        assert isinstance(fake, FakeFactoryServer)
        assert adapter.name.startswith("contract-")
        if isinstance(adapter, ShipmentSource):
            assert isinstance(fake, FakeShipmentListing), "a polled factory's fake must list its parcels"

    # --- idempotency -----------------------------------------------------------------------------

    async def test_one_key_submitted_twice_is_one_order(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        order = factory_order(1)
        first = await self._submit(adapter, order)
        again = await self._submit(adapter, order)
        assert fake.held_keys() == [order.key]
        assert fake.deliveries_of(order.key) == 2
        assert first.reference == again.reference, "a repeat is answered like the first delivery"

    async def test_distinct_keys_are_distinct_orders(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        orders = [factory_order(n) for n in (1, 2, 3)]
        for order in orders:
            await self._submit(adapter, order)
        assert fake.held_keys() == [o.key for o in orders]

    @pytest.mark.parametrize("how", ["reset", "timeout"])
    async def test_uncertain_outcome_resolves_to_one_order(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer, how: str
    ) -> None:
        order = factory_order(1)
        fake.lose_answer_next(how)
        try:
            await self._submit(adapter, order)  # an adapter may retry in-call; then this succeeds
        except RetriableAdapterError:
            assert fake.held_keys() == [order.key], "the factory acted although the answer was lost"
            await self._submit(adapter, order)  # the core's retry: same key
        assert fake.held_keys() == [order.key]
        assert fake.deliveries_of(order.key) >= 2

    # --- status mapping --------------------------------------------------------------------------

    @pytest.mark.parametrize("operation", ["submit", "cancel"])
    async def test_410_is_endpoint_gone(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer, operation: str
    ) -> None:
        fake.fail_next(410, times=PERSISTENT)
        with pytest.raises(EndpointGone) as caught:
            await self._call(adapter, operation, factory_order(1))
        assert caught.value.status == 410
        assert fake.held_keys() == []

    @pytest.mark.parametrize("operation", ["submit", "cancel"])
    async def test_429_is_retriable_with_retry_after(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer, sleep: RecordingSleep, operation: str
    ) -> None:
        fake.fail_next(429, times=PERSISTENT, retry_after=120)  # longer than anyone waits in-call
        with pytest.raises(RetriableAdapterError) as caught:
            await self._call(adapter, operation, factory_order(1))
        assert caught.value.status == 429
        assert caught.value.retry_after == pytest.approx(120)
        assert fake.held_keys() == []
        assert sum(sleep.calls) < 60, "long waits belong to the persisted schedule"

    @pytest.mark.parametrize("status", RETRIABLE_STATUSES)
    @pytest.mark.parametrize("operation", ["submit", "cancel"])
    async def test_timeouts_and_server_errors_are_retriable(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer, operation: str, status: int
    ) -> None:
        fake.fail_next(status, times=PERSISTENT)
        with pytest.raises(RetriableAdapterError) as caught:
            await self._call(adapter, operation, factory_order(1))
        assert caught.value.status == status
        assert fake.held_keys() == []

    async def test_no_answer_is_retriable(self, adapter: FactoryAdapter, fake: FakeFactoryServer) -> None:
        fake.hang_next(times=PERSISTENT)
        with pytest.raises(RetriableAdapterError):
            await self._submit(adapter, factory_order(1))
        assert fake.held_keys() == []

    @pytest.mark.parametrize("status", [401, 403])
    @pytest.mark.parametrize("operation", ["submit", "cancel"])
    async def test_refused_credentials_raise_auth_error(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer, operation: str, status: int
    ) -> None:
        fake.fail_next(status, times=PERSISTENT)
        with pytest.raises(AuthError) as caught:
            await self._call(adapter, operation, factory_order(1))
        assert caught.value.status == status

    async def test_a_refused_signature_or_token_raises_auth_error(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        fake.reject_credentials()
        with pytest.raises(AuthError):
            await self._submit(adapter, factory_order(1))
        assert fake.held_keys() == []

    @pytest.mark.parametrize("status", FATAL_STATUSES)
    @pytest.mark.parametrize("operation", ["submit", "cancel"])
    async def test_other_client_errors_are_fatal(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer, operation: str, status: int
    ) -> None:
        fake.fail_next(status, times=PERSISTENT)
        with pytest.raises(FatalAdapterError) as caught:
            await self._call(adapter, operation, factory_order(1))
        assert type(caught.value) is FatalAdapterError, f"{status} is a plain rejection, not {caught.value!r}"
        assert caught.value.status == status
        assert fake.held_keys() == []

    async def _call(self, adapter: FactoryAdapter, operation: str, order: FactoryOrder) -> None:
        if operation == "submit":
            await self._submit(adapter, order)
        else:
            await self._cancel(adapter, order)

    # --- cancellation ----------------------------------------------------------------------------

    async def test_cancelling_twice_is_harmless(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        order = factory_order(1)
        await self._submit(adapter, order)
        await self._cancel(adapter, order)
        await self._cancel(adapter, order)
        assert fake.is_cancelled(order.key)
        assert fake.held_keys() == [order.key]

    async def test_cancelling_a_shipped_order_raises_already_shipped(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        order = factory_order(1)
        await self._submit(adapter, order)
        fake.mark_shipped(order.key)
        with pytest.raises(AlreadyShipped) as caught:
            await self._cancel(adapter, order)
        assert caught.value.status == 409
        assert not fake.is_cancelled(order.key)

    async def test_an_order_after_its_cancellation_is_refused(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        order = factory_order(1)
        await self._cancel(adapter, order)  # the cancellation overtook its order.created
        assert fake.is_cancelled(order.key)
        with pytest.raises(FatalAdapterError) as caught:
            await self._submit(adapter, order)
        assert not isinstance(caught.value, AlreadyShipped | AuthError | EndpointGone)
        assert fake.held_keys() == []

    # --- resources -------------------------------------------------------------------------------

    async def test_aclose_closes_every_session(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer, sessions: SessionTracker
    ) -> None:
        order = factory_order(1)
        await self._submit(adapter, order)
        await self._cancel(adapter, order)
        if isinstance(adapter, ShipmentSource):
            await drain_shipments(adapter, None)
        assert sessions.sessions, "adapters must make their sessions with AdapterContext.new_session"
        await adapter.aclose()
        assert all(s.closed for s in sessions.sessions)
        # The fixture closes the adapter once more: closing twice must be harmless.

    # --- shipment sources (polled factories) -----------------------------------------------------

    @staticmethod
    def _source(
        adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> tuple[ShipmentSource, FakeShipmentListing]:
        if not isinstance(adapter, ShipmentSource) or not isinstance(fake, FakeShipmentListing):
            pytest.skip("not a ShipmentSource: the factory calls back")
        return adapter, fake

    async def _ship(self, adapter: FactoryAdapter, fake: FakeShipmentListing, numbers: range) -> None:
        for n in numbers:
            await self._submit(adapter, factory_order(n))
        await fake.ship_all()

    async def test_the_listing_is_drained_page_by_page(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        source, listing = self._source(adapter, fake)
        await self._ship(adapter, listing, range(1, 2 * listing.page_size + 2))
        shipments, cursor = await drain_shipments(source, None)
        assert [s.shipment_id for s in shipments] == listing.listed_ids()
        assert {s.factory_order_key for s in shipments} == set(listing.held_keys())
        assert cursor is not None

    async def test_the_cursor_resumes_where_it_left_off(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        source, listing = self._source(adapter, fake)
        await self._ship(adapter, listing, range(1, 2 * listing.page_size + 2))
        first, cursor = await drain_shipments(source, None, pages=1)  # the poll stops after one page
        assert 0 < len(first) <= listing.page_size
        rest, cursor = await drain_shipments(source, cursor)
        ids = [s.shipment_id for s in [*first, *rest]]
        assert ids == listing.listed_ids(), "resumed from the first page's cursor: nothing lost or repeated"
        again, same = await drain_shipments(source, cursor)
        assert again == [] and same == cursor, "nothing new: an empty poll keeps the cursor"
        await self._ship(adapter, listing, range(100, 102))
        new, _ = await drain_shipments(source, cursor)
        assert [s.shipment_id for s in new] == listing.listed_ids()[len(ids) :]

    async def test_one_listing_failure_is_retried_in_call(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer, sleep: RecordingSleep
    ) -> None:
        source, listing = self._source(adapter, fake)
        await self._ship(adapter, listing, range(1, 2))
        listing.fail_listing_next(503)
        shipments, _ = await drain_shipments(source, None)
        assert [s.shipment_id for s in shipments] == listing.listed_ids()
        assert sleep.calls

    async def test_persistent_listing_failures_are_retriable(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        source, listing = self._source(adapter, fake)
        listing.fail_listing_next(503, times=PERSISTENT)
        with pytest.raises(RetriableAdapterError):
            await drain_shipments(source, None)

    async def test_refused_listing_credentials_raise_auth_error(
        self, adapter: FactoryAdapter, fake: FakeFactoryServer
    ) -> None:
        source, listing = self._source(adapter, fake)
        listing.reject_credentials()
        with pytest.raises(AuthError):
            await drain_shipments(source, None)


def get_factory_test_class(
    adapter_cls: type[Any], fake_factory: Callable[[], FakeFactoryServer], **extra_options: Any
) -> type:
    """A pytest test class running the factory contract against `adapter_cls` and its fake.

    `fake_factory()` builds a not-yet-started `relay.testing.vendor.FakeFactoryServer` (a
    `FakeShipmentListing` for adapters that are `ShipmentSource`s); each test starts and closes its own.
    The adapter is built as `adapter_cls(name, adapter_cls.Options.model_validate(fake.adapter_options()
    | extra_options), context)` with a recording `sleep` and real sessions to the fake, capped at
    `REQUEST_TIMEOUT_S`. Assign the result to a module-level name starting with `Test`.
    """
    name = f"Test{adapter_cls.__name__}Contract"
    return type(
        name,
        (FactoryContract,),
        {
            "adapter_cls": adapter_cls,
            "fake_factory": staticmethod(fake_factory),
            "extra_options": dict(extra_options),
            "__doc__": f"Factory contract for {adapter_cls.__module__}.{adapter_cls.__qualname__}.",
        },
    )
