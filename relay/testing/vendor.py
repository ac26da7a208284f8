"""The interface every fake storefront server implements.

A fake storefront is an in-process aiohttp server that emulates one vendor's documented API
(pagination, throttling, error bodies). The same fake serves three users through this interface:
the adapter contract suite (`relay.testing.contract`), `relay demo --storefront NAME`, and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol


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
