"""Completing WooCommerce orders, several in one request when they come together.

WooCommerce has no request that adds a parcel's tracking and completes the order, so the order's last parcel
costs a second write: `PUT orders/{id}` with `status=completed`. Setting a status is idempotent, so those
writes can go together: `POST orders/batch` (`WC_REST_Controller::batch_items`) applies each `update` item as
that `PUT` would, and answers each item with the order, or `{"id", "error": {"code", "message", "data"}}`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterable, Sequence

from adapters.woocommerce.client import WooCommerceClient, WooCommerceError
from relay.exceptions import ResponseTooLarge, RetriableAdapterError

BATCH_SIZE = 25
"""Orders per batch request. WooCommerce takes up to 100 items (`woocommerce_rest_batch_items_limit`), but it
answers each with the whole order (`_fields` cannot filter inside the answer's list): 25 orders of 20 kB stay
well under the default 1 MiB response cap. A store whose answer is larger gets half as many next time."""


def refuses_batches(status: int) -> bool:
    """A batch request refused as a whole, other than for a while (429) or by a failing server (5xx other
    than 501): the route is missing or trimmed (404, 405, 501), the item limit is lower (413), a firewall or
    a permission says no (403, 401), the body was refused (400). The store's completions go one `PUT` each
    from then on, so a `PUT` answers for each order (a refusal that holds for `PUT`s too fails them there)."""
    return (400 <= status < 500 and status != 429) or status == 501


class Completions:
    """Marks orders `completed`, one `PUT` for an order alone, one `POST orders/batch` for those that come
    together.

    One request is out at a time. A completion that comes while it is out waits for it, and then goes with
    the others that came meanwhile: no wait is added when completions are rare, and a burst of completions
    costs one request per `BATCH_SIZE` orders instead of one per order.

    Each caller gets its own order's outcome: an item's error is raised to it as the `WooCommerceError` a
    `PUT` of that order would have raised; a failure of the whole request (an error status, a timeout, a
    connection error) is raised to every caller in it, and each retries as it would have after its `PUT`.
    A store that refuses a batch request as a whole gets `PUT`s from then on (`refuses_batches`).
    """

    def __init__(self, client: Callable[[], WooCommerceClient]) -> None:
        self._client = client
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._sender: asyncio.Task[None] | None = None
        self.batch_size = BATCH_SIZE  # 1: the store takes no batches

    async def complete(self, order_id: str) -> None:
        """Set the order's status to `completed`; raises what the request (or its item) failed with."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(order_id, []).append(done)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="relay:woocommerce:completions")
        await done

    async def aclose(self) -> None:
        """Stop sending; callers still waiting get `CancelledError`."""
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        for futures in self._waiting.values():
            for done in futures:
                done.cancel()
        self._waiting.clear()

    async def _send(self) -> None:
        while self._waiting:
            taken: dict[str, list[asyncio.Future[None]]] = {}
            for order_id in list(itertools.islice(self._waiting, self.batch_size)):
                futures = [f for f in self._waiting.pop(order_id) if not f.done()]  # a cancelled caller
                if futures:
                    taken[order_id] = futures
            try:
                if len(taken) > 1:
                    await self._batch(taken)
                else:
                    await asyncio.gather(
                        *(self._put(order_id, futures) for order_id, futures in taken.items())
                    )
            except BaseException as exc:  # cancelled (aclose) or a bug: nobody is left waiting for ever
                _settle(itertools.chain.from_iterable(taken.values()), exc)
                raise

    async def _put(self, order_id: str, futures: Sequence[asyncio.Future[None]]) -> None:
        try:
            await self._client().update_order(order_id, {"status": "completed"}, {"_fields": "id,status"})
        except Exception as exc:
            _settle(futures, exc)
        else:
            _settle(futures, None)

    async def _batch(self, taken: dict[str, list[asyncio.Future[None]]]) -> None:
        items = [{"id": int(i) if i.isdigit() else i, "status": "completed"} for i in taken]
        try:
            answer = (await self._client().batch_orders({"update": items})).data
        except (WooCommerceError, ResponseTooLarge) as exc:
            if isinstance(exc, ResponseTooLarge):
                self.batch_size = max(1, len(taken) // 2)
            elif refuses_batches(exc.status):
                self.batch_size = 1
            else:
                _settle(itertools.chain.from_iterable(taken.values()), exc)
                return
            # The store took no batch, or its answer was too long to read: the same writes one by one.
            await asyncio.gather(*(self._put(order_id, futures) for order_id, futures in taken.items()))
            return
        except Exception as exc:
            _settle(itertools.chain.from_iterable(taken.values()), exc)
            return
        results: dict[str, object] = {}
        for item in (answer.get("update") if isinstance(answer, dict) else None) or []:
            if isinstance(item, dict) and "id" in item:
                results[str(item["id"])] = item
        for order_id, futures in taken.items():
            _settle(futures, _outcome(results.get(order_id), order_id))


def _outcome(item: object, order_id: str) -> BaseException | None:
    """None for an updated order; the error a `PUT` of it would have raised for an item error."""
    if not isinstance(item, dict):
        return RetriableAdapterError(f"the batch answer has no item for order {order_id}")
    error = item.get("error")
    if error is None:
        return None
    data = error.get("data") if isinstance(error, dict) else None
    status = data.get("status") if isinstance(data, dict) else None
    return WooCommerceError(
        status if isinstance(status, int) and status >= 400 else 400, json.dumps(error), {}
    )


def _settle(futures: Iterable[asyncio.Future[None]], outcome: BaseException | None) -> None:
    for done in futures:
        if done.done():
            continue
        if outcome is None:
            done.set_result(None)
        elif isinstance(outcome, asyncio.CancelledError):
            done.cancel()
        else:
            done.set_exception(outcome)
