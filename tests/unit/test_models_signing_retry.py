"""State machines, Standard Webhooks signatures, and the persisted retry policy."""

from __future__ import annotations

import pytest

from relay.domain.models import (
    FACTORY_ORDER_TRANSITIONS,
    ORDER_TRANSITIONS,
    FactoryOrderState,
    OrderState,
    PushState,
    check_transition,
    derive_order_state,
    factory_order_key,
)
from relay.domain.retry import STANDARD_WEBHOOKS_SCHEDULE, RetryPolicy
from relay.exceptions import FatalAdapterError, IllegalTransition, RetriableAdapterError
from relay.signing import SignatureError, sign, signed_headers, verify

F, P = FactoryOrderState, PushState


def test_illegal_transitions_raise():
    with pytest.raises(IllegalTransition):
        check_transition(ORDER_TRANSITIONS, OrderState.COMPLETED, OrderState.ROUTED, subject="o")
    with pytest.raises(IllegalTransition):
        check_transition(FACTORY_ORDER_TRANSITIONS, F.SHIPPED, F.PENDING, subject="fo")
    check_transition(ORDER_TRANSITIONS, OrderState.RECEIVED, OrderState.ROUTED, subject="o")


@pytest.mark.parametrize(
    ("fos", "total", "shipped", "pushes", "expected"),
    [
        ([F.PENDING, F.PLACED], 3, 0, [], OrderState.ROUTED),
        ([F.PLACED, F.PLACED], 3, 0, [], OrderState.PLACED),
        ([F.PLACED, F.PARTIALLY_SHIPPED], 3, 1, [P.DONE], OrderState.PARTIALLY_SHIPPED),
        ([F.SHIPPED, F.SHIPPED], 3, 3, [P.DONE, P.PENDING], OrderState.SHIPPED),
        ([F.SHIPPED], 3, 3, [P.DONE, P.DONE], OrderState.COMPLETED),
        ([F.DEAD, F.PLACED], 3, 0, [], OrderState.FAILED),
        ([F.SHIPPED], 1, 1, [P.DEAD], OrderState.FAILED),
        ([F.CANCELLED], 1, 0, [], OrderState.CANCELLED),
    ],
)
def test_order_state_is_derived_from_its_parts(fos, total, shipped, pushes, expected):
    assert derive_order_state(fos, total, shipped, pushes) is expected


def test_factory_order_key_is_stable_and_distinct():
    assert factory_order_key("shop", "1001", "acme") == factory_order_key("shop", "1001", "acme")
    assert factory_order_key("shop", "1001", "acme") != factory_order_key("shop", "1001", "bolt")
    assert factory_order_key("shop", "1001", "acme") != factory_order_key("shop2", "1001", "acme")


def test_standard_webhooks_reference_vector():
    # Test vector from the Standard Webhooks reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_verify_accepts_rotated_secrets_and_rejects_tampering():
    headers = signed_headers("new-secret", "m1", 1_000, b"{}")
    assert verify(["old-secret", "new-secret"], headers, b"{}", now=1_000, tolerance_s=300) == ("m1", 1_000)
    for bad_body, now in ((b"{ }", 1_000), (b"{}", 1_301)):
        with pytest.raises(SignatureError):
            verify(["new-secret"], headers, bad_body, now=now, tolerance_s=300)
    with pytest.raises(SignatureError):
        verify(["new-secret"], {}, b"{}", now=1_000, tolerance_s=300)


def test_retry_policy_follows_the_schedule_then_gives_up():
    policy = RetryPolicy(jitter=0, clock=lambda: 0.0)
    error = RetriableAdapterError("503")
    waits = [policy.decide(error, n).retry_at for n in range(1, len(STANDARD_WEBHOOKS_SCHEDULE))]
    assert waits == list(STANDARD_WEBHOOKS_SCHEDULE[1:])
    assert policy.decide(error, len(STANDARD_WEBHOOKS_SCHEDULE)) is None
    assert policy.decide(FatalAdapterError("400"), 1) is None


def test_retry_policy_honours_retry_after_and_bounds_jitter():
    throttled = RetriableAdapterError("429", retry_after=7)
    assert RetryPolicy(jitter=0, clock=lambda: 100.0).decide(throttled, 1).retry_at == 107
    low = RetryPolicy(jitter=0.1, clock=lambda: 0.0, rand=lambda: 0.0).decide(RetriableAdapterError(), 2)
    high = RetryPolicy(jitter=0.1, clock=lambda: 0.0, rand=lambda: 1.0).decide(RetriableAdapterError(), 2)
    assert (low.retry_at, high.retry_at) == pytest.approx((270.0, 330.0))
