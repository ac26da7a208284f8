"""The error tree. Each exception's docstring is its default message.

Adapters raise `RetriableAdapterError` (try again later: 408, 429, 5xx, timeouts, resets),
`FatalAdapterError` (will not succeed by retrying: other 4xx) or its `AuthError` branch.
Bad records inside an otherwise good page are not exceptions: adapters yield `models.Malformed`.
"""

from __future__ import annotations


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


class FatalAdapterError(AdapterError):
    """The remote end rejected the request; retrying the same request will not help."""


class AuthError(FatalAdapterError):
    """The remote end refused our credentials (401/403): check the token and its permissions."""


class EndpointGone(FatalAdapterError):
    """The remote end answered 410 Gone: the endpoint is disabled until an operator re-enables it."""


class AlreadyShipped(FatalAdapterError):
    """The factory refused a cancellation because it has already shipped the order (409 already_shipped)."""


class UnsafeURL(FatalAdapterError):
    """The URL is not allowed by the egress policy."""


def describe(exc: BaseException) -> str:
    """An error as stored and logged: message plus the quoted response body, if any."""
    body = getattr(exc, "body", None)
    return f"{exc}: {body}" if body else (str(exc) or type(exc).__name__)


def as_retriable(exc: BaseException) -> RetriableAdapterError:
    """Any unexpected failure of a send counts as retriable (the persisted schedule bounds it)."""
    return exc if isinstance(exc, RetriableAdapterError) else RetriableAdapterError(describe(exc))
