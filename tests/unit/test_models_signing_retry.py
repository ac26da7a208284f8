"""State machines, Standard Webhooks signatures, and the persisted retry policy."""

from __future__ import annotations

import pytest

from adapters.webhook.client import WebhookClient
from relay import exceptions
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
from relay.exceptions import (
    AlreadyShipped,
    AuthError,
    EndpointGone,
    FatalAdapterError,
    IllegalTransition,
    RelayError,
    ResponseTooLarge,
    RetriableAdapterError,
    UnsafeURL,
    Verdict,
    classify,
)
from relay.outbound.retries import BACKOFF, in_call_retries
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


def test_signature_error_is_in_the_error_tree_and_still_importable_from_signing():
    assert SignatureError is exceptions.SignatureError
    assert issubclass(SignatureError, RelayError)
    assert not issubclass(SignatureError, exceptions.AdapterError)  # inbound, not a remote call
    with pytest.raises(RelayError, match="no valid signature"):
        verify(["s"], signed_headers("other", "m1", 1_000, b"{}"), b"{}", now=1_000, tolerance_s=300)


def test_the_webhook_client_signs_with_relay_signing():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = WebhookClient(None, "https://x.example", secret).headers("msg_1", 1614265330, b"{}")  # type: ignore[arg-type]
    assert headers["webhook-signature"] == sign(secret, "msg_1", 1614265330, b"{}")
    assert headers["Idempotency-Key"] == headers["webhook-id"] == "msg_1"
    assert verify([secret], headers, b"{}", now=1614265330, tolerance_s=300) == ("msg_1", 1614265330)


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (RetriableAdapterError("503"), Verdict.RETRY),
        (ResponseTooLarge(), Verdict.RETRY),
        (UnsafeURL("resolves to 10.0.0.1"), Verdict.RETRY),
        (TimeoutError(), Verdict.RETRY),
        (RuntimeError("bug"), Verdict.RETRY),
        (FatalAdapterError("400"), Verdict.REJECTED),
        (AuthError(), Verdict.REJECTED),
        (EndpointGone(), Verdict.GONE),
        (AlreadyShipped(), Verdict.ALREADY_SHIPPED),
    ],
)
def test_one_classification_for_every_outbox_loop(error, verdict):
    assert classify(error) is verdict


def test_an_oversized_answer_is_its_own_retriable_error():
    assert issubclass(ResponseTooLarge, RetriableAdapterError)
    assert not issubclass(ResponseTooLarge, UnsafeURL)
    assert RetryPolicy(jitter=0, clock=lambda: 0.0).decide(ResponseTooLarge(), 1) is not None


class _Sleeps(list):
    async def __call__(self, seconds):
        self.append(seconds)


async def _count_attempts(retrying, error):
    calls = 0

    async def fail():
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        await retrying(fail)
    return calls


async def test_in_call_retries_wait_exactly_the_hint_else_back_off():
    sleeps = _Sleeps()
    assert (
        await _count_attempts(in_call_retries(sleeps, attempts=3), RetriableAdapterError(retry_after=7)) == 3
    )
    assert sleeps == [7, 7]
    sleeps.clear()
    assert await _count_attempts(in_call_retries(sleeps, attempts=4), RetriableAdapterError()) == 4
    assert len(sleeps) == 3 and all(0 <= s <= BACKOFF.max for s in sleeps)


async def test_in_call_retries_leave_long_waits_and_oversized_answers_to_the_core():
    sleeps = _Sleeps()
    retrying = in_call_retries(sleeps, max_wait_s=30)
    assert await _count_attempts(retrying, RetriableAdapterError(retry_after=31)) == 1
    assert await _count_attempts(in_call_retries(sleeps), ResponseTooLarge()) == 1
    assert await _count_attempts(in_call_retries(sleeps), FatalAdapterError()) == 1
    assert sleeps == []


async def test_in_call_retries_take_vendor_hooks():
    """What Shopify needs: its own exceptions, a wait hint from the cost bucket, more throttle attempts."""

    class Throttled(Exception):
        wait_s = 0.75

    sleeps = _Sleeps()
    retrying = in_call_retries(
        sleeps,
        attempts=lambda exc: 6 if isinstance(exc, Throttled) else 2,
        retry_on=lambda exc: isinstance(exc, Throttled | ConnectionError),
        wait_hint=lambda exc: exc.wait_s if isinstance(exc, Throttled) else None,
    )
    assert await _count_attempts(retrying, Throttled()) == 6
    assert sleeps == [0.75] * 5
    assert await _count_attempts(retrying, ConnectionError()) == 2
