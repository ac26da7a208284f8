"""The interfaces every fake vendor server implements: `FakeStorefront` and `FakeFactoryServer`.

A fake is an in-process aiohttp server that emulates one vendor's documented API (pagination,
throttling, error bodies, idempotency). Each adapter package ships one in its `fake.py` and registers
it in the `relay.fakes` entry point group under the adapter's name (`Registry.fake(name)`). The same
fake serves three users through these interfaces: the contract suites (`relay.testing.contract`),
`relay demo`, and tests (through `relay.testing.harness`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SeedLine:
    sku: str | None
    quantity: int = 1
    unit_price: Decimal = Decimal("10.00")
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedFulfilment:
    """One fulfilment the storefront holds for an order, as the fake recorded it."""

    order_id: str
    carrier: str
    tracking_number: str
    line_ids: tuple[str, ...]
    quantities: tuple[int, ...]


@runtime_checkable
class FakeStorefront(Protocol):
    """A running fake storefront. Construct, `await start()`, use, `await close()`."""

    adapter: str
    """The entry-point name of the adapter that talks to this fake (e.g. "shopify")."""

    page_size: int
    """Orders per listing page (the contract suite seeds more than this to test pagination)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def adapter_options(self) -> dict[str, Any]:
        """The adapter's config keys (URL, credentials...) pointing at this running fake."""
        ...

    def add_order(
        self,
        lines: list[SeedLine],
        *,
        paid: bool = True,
        test: bool = False,
        currency: str = "USD",
        updated_at: float | None = None,
    ) -> str:
        """Create an order; return its storefront id (as the adapter reports `Order.external_id`)."""
        ...

    def add_malformed_order(self) -> str:
        """Create an order record the adapter cannot parse (e.g. a line with no quantity)."""
        ...

    def line_ids(self, order_id: str) -> list[str]:
        """The storefront line ids of an order, in order (as the adapter reports `OrderLine.line_id`)."""
        ...

    def touch(self, order_id: str, *, updated_at: float | None = None) -> None:
        """Bump the order's updated timestamp (to now, or the given epoch seconds)."""
        ...

    def mark_paid(self, order_id: str) -> None: ...

    def cancel(self, order_id: str) -> None: ...

    def fulfilments(self, order_id: str) -> list[RecordedFulfilment]:
        """Fulfilments/tracking the storefront holds for this order."""
        ...

    def fail_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `times` API requests with `status` (and Retry-After when given).
        A status of 429 should use the vendor's own throttling shape where it has one."""
        ...

    def hang_next(self, *, times: int = 1) -> None:
        """Do not answer the next `times` requests (the client must time out)."""
        ...

    def reject_credentials(self, status: int = 401) -> None:
        """From now on answer every request as the vendor does for bad credentials."""
        ...

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request received, in order."""
        ...


@runtime_checkable
class FakeFactoryServer(Protocol):
    """A running fake factory. Construct (`cls(name)`), `await start()`, use, `await close()`.

    It keeps one order per idempotency key however often it is delivered, and takes faults scripted
    per request. The factory contract suite (`get_factory_test_class`) drives it only through this
    interface.
    """

    adapter: str
    """The entry-point name of the adapter that talks to this fake (e.g. "webhook")."""

    name: str

    callback_url: str | None
    """Where the fake reports parcels (relay's callback endpoint for it); None: it does not call back."""

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Stop serving; requests held by `hang_next` are released."""
        ...

    def adapter_options(self, url: str | None = None) -> dict[str, Any]:
        """The adapter's own config keys pointing at this fake (or its order endpoint at `url`, e.g. a
        fault proxy in front of it)."""
        ...

    def factory_config(self, url: str | None = None) -> dict[str, Any]:
        """The whole `[factories.NAME]` table: `adapter`, `adapter_options(url)` and the core's keys."""
        ...

    def held_keys(self) -> list[str]:
        """Keys of the orders the factory holds, one per order, in the order they were first taken."""
        ...

    def deliveries_of(self, key: str) -> int:
        """Valid (authenticated) deliveries received under this message id, faulted ones included."""
        ...

    def is_cancelled(self, key: str) -> bool:
        """True if the factory cancelled the order with this key (or remembers the key as cancelled)."""
        ...

    def mark_shipped(self, key: str) -> None:
        """Make the held order count as shipped, without reporting parcels (cancellations get 409)."""
        ...

    def fail_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `times` order/cancel requests with `status` (and Retry-After when given),
        without acting on them."""
        ...

    def hang_next(self, *, times: int = 1) -> None:
        """Do not answer the next `times` requests (until closed), without acting on them."""
        ...

    def lose_answer_next(self, how: str = "reset", *, times: int = 1) -> None:
        """Act on the next `times` requests (take the order), then lose the answer: `"reset"` closes the
        connection before answering, `"timeout"` never answers. The client cannot know it worked."""
        ...

    def reject_credentials(self, status: int = 401) -> None:
        """From now on refuse every request as unauthenticated (bad signature, bad token)."""
        ...


@runtime_checkable
class FakeShipmentListing(FakeFactoryServer, Protocol):
    """A fake factory that is polled for its parcels (for adapters that are `ShipmentSource`s)."""

    page_size: int
    """Parcels per listing page, however many the client asks for."""

    async def ship_all(self) -> int:
        """Ship every held order now: its parcels join the listing. Return how many orders shipped."""
        ...

    def listed_ids(self) -> list[str]:
        """`shipment_id` of every listed parcel, in listing order."""
        ...

    def fail_listing_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `times` listing requests with `status` (and Retry-After when given)."""
        ...
