"""The error tree. Each exception's docstring is its default message.

Adapters raise `RetriableAdapterError` (try again later: 408, 429, 5xx, timeouts, resets, oversized
answers), `FatalAdapterError` (will not succeed by retrying: other 4xx) or one of its branches.
Bad records inside an otherwise good page are not exceptions: adapters yield `models.Malformed`.

    RelayError
    ├── ConfigurationError
    ├── IllegalTransition
    ├── SignatureError              an inbound message's signature is missing, stale or wrong
    ├── StoreError
    │   ├── StoreUnavailable
    │   └── UnsupportedDatabaseVersion
    └── AdapterError                a call to a storefront or factory failed
        ├── RetriableAdapterError
        │   └── ResponseTooLarge    the answer exceeded egress.max_response_bytes
        └── FatalAdapterError
            ├── AuthError           401/403
            ├── EndpointGone        410
            ├── AlreadyShipped      409 already_shipped, to a cancellation
            └── UnsafeURL           the egress policy refuses the URL or its address

What the outbox loops do with each is decided once, by `classify()`.
"""

from __future__ import annotations

import enum


class RelayError(Exception):
    """relay failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(RelayError):
    """The configuration is invalid."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {problem}" for key, problem in problems))


class IllegalTransition(RelayError):
    """That state change is not allowed."""


class SignatureError(RelayError):
    """The webhook signature is missing, malformed, stale or wrong."""


class StoreError(RelayError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The store cannot take writes right now (locked, disk full, I/O error); retry later."""


class UnsupportedDatabaseVersion(StoreError):
    """The database was written by a newer relay; refusing to touch it."""


class AdapterError(RelayError):
    """An adapter call failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


class RetriableAdapterError(AdapterError):
    """The remote end failed in a way that may pass: retry later."""


class ResponseTooLarge(RetriableAdapterError):
    """The response body exceeds the egress size cap.

    Retriable on the persisted schedule (the remote end may trim its answer, or the operator raise
    `egress.max_response_bytes`), but not within a call: the same request gets the same answer.
    """


class FatalAdapterError(AdapterError):
    """The remote end rejected the request; retrying the same request will not help."""


class AuthError(FatalAdapterError):
    """The remote end refused our credentials (401/403): check the token and its permissions."""


class EndpointGone(FatalAdapterError):
    """The remote end answered 410 Gone: the endpoint is disabled until an operator re-enables it."""


class AlreadyShipped(FatalAdapterError):
    """The factory refused a cancellation because it has already shipped the order (409 already_shipped)."""


class UnsafeURL(FatalAdapterError):
    """The URL is not allowed by the egress policy.

    Fatal as a configured URL (`relay check` refuses it), but a delivery refused at send time is
    retried on the persisted schedule: the name may resolve elsewhere later, or the operator may fix
    the configuration; see `classify()`.
    """


def describe(exc: BaseException) -> str:
    """An error as stored and logged: message plus the quoted response body, if any."""
    body = getattr(exc, "body", None)
    return f"{exc}: {body}" if body else (str(exc) or type(exc).__name__)


def as_retriable(exc: BaseException) -> RetriableAdapterError:
    """Any unexpected failure of a send counts as retriable (the persisted schedule bounds it)."""
    return exc if isinstance(exc, RetriableAdapterError) else RetriableAdapterError(describe(exc))


class Verdict(enum.Enum):
    """What an outbox loop (forwarder, shipper) does with a failed send."""

    RETRY = "retry"
    """Try again on the persisted schedule (within the retry policy's attempts)."""
    REJECTED = "rejected"
    """The remote end refused it for good: dead-letter for a person, with the error quoted."""
    GONE = "gone"
    """The endpoint is retired (410): stop sending to it. Destinations that cannot be paused treat
    this as `REJECTED`."""
    ALREADY_SHIPPED = "already_shipped"
    """A cancellation came too late: the parcels are coming."""


def classify(exc: BaseException) -> Verdict:
    """The one mapping from a send's exception to what the outbox loops do with it.

    Anything that is not a `FatalAdapterError` (including unexpected exceptions) is retried: the
    persisted schedule bounds it. `UnsafeURL` at send time is retried too (DNS may change, or the
    operator fix the configuration without losing the work); `ResponseTooLarge` is retriable by type.
    """
    if isinstance(exc, EndpointGone):
        return Verdict.GONE
    if isinstance(exc, AlreadyShipped):
        return Verdict.ALREADY_SHIPPED
    if isinstance(exc, FatalAdapterError) and not isinstance(exc, UnsafeURL):
        return Verdict.REJECTED
    return Verdict.RETRY
