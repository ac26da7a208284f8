"""Forwarder and shipper treat the same error the same way: both go through `relay.exceptions.classify`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from relay.domain.models import CancelState, FactoryOrderState, PushState
from relay.domain.retry import RetryPolicy
from relay.exceptions import (
    AuthError,
    FatalAdapterError,
    ResponseTooLarge,
    RetriableAdapterError,
    UnsafeURL,
)
from relay.loops.forwarder import Forwarder
from relay.loops.shipper import Shipper

ERRORS = [
    RetriableAdapterError("HTTP 503", status=503),
    ResponseTooLarge("response exceeds the 1048576-byte cap"),
    UnsafeURL("'factory.example' resolves only to addresses the egress policy forbids"),
    TimeoutError(),
    RuntimeError("a bug in an adapter"),
    FatalAdapterError("HTTP 422: rejected", status=422),
    AuthError("HTTP 401: credentials refused", status=401),
]


class Raises:
    """A storefront and factory adapter whose every call fails with `error`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def submit(self, order: Any) -> Any:
        raise self.error

    async def cancel(self, order: Any, *, cancelled_at: Any) -> None:
        raise self.error

    async def push_shipment(self, push: Any) -> Any:
        raise self.error


def loop_kwargs() -> dict[str, Any]:
    return {
        "owner": "test",
        "lease_s": 60,
        "batch_size": 10,
        "concurrency": {"x": 1},
        "clock": lambda: 1000.0,
        "log": structlog.get_logger(),
    }


async def forwarded(error: BaseException, kind: str = "order.created") -> Any:
    policies = {"x": RetryPolicy(jitter=0, clock=lambda: 1000.0)}
    forwarder = Forwarder(None, {"x": Raises(error)}, policies, **loop_kwargs())  # type: ignore[arg-type]
    job = SimpleNamespace(
        id=1, order_id=1, factory="x", key="fo_1", attempts=0, order=None, kind=kind, requested_at=0
    )
    return await forwarder.send(job)  # type: ignore[arg-type]


async def shipped(error: BaseException) -> Any:
    policies = {"x": RetryPolicy(jitter=0, clock=lambda: 1000.0)}
    shipper = Shipper(None, {"x": Raises(error)}, policies, **loop_kwargs())  # type: ignore[arg-type]
    job = SimpleNamespace(id=1, order_id=1, storefront="x", key="sp_1", attempts=0, push=None)
    return await shipper.send(job)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
async def test_forwarder_and_shipper_agree_on_every_error(error: BaseException) -> None:
    delivery, cancel, push = (
        await forwarded(error),
        await forwarded(error, "order.cancelled"),
        await shipped(error),
    )
    retried = {
        "delivery": delivery.state is FactoryOrderState.PENDING and delivery.next_attempt_at is not None,
        "cancel": cancel.state is CancelState.PENDING and cancel.next_attempt_at is not None,
        "push": push.state is PushState.PENDING and push.next_attempt_at is not None,
    }
    dead = {
        "delivery": delivery.state is FactoryOrderState.DEAD,
        "cancel": cancel.state is CancelState.DEAD,
        "push": push.state is PushState.DEAD,
    }
    expected_retry = not isinstance(error, FatalAdapterError) or isinstance(error, UnsafeURL)
    assert retried == dict.fromkeys(retried, expected_retry)
    assert dead == dict.fromkeys(dead, not expected_retry)
