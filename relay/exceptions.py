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
    │   ├── UnsupportedDatabaseVersion
    │   ├── DatabaseMissing         a read-only open of a database file that does not exist
    │   ├── DatabaseNeedsMigration  the database is older than the code: run `relay migrate`
    │   ├── ReadOnlyStore           a write on a store opened read-only
    │   └── LeaseLost               a poller's fenced write: another daemon took its lease since
    └── AdapterError                a call to a storefront or factory failed
        ├── RetriableAdapterError
        │   ├── ResponseTooLarge    the answer exceeded egress.max_response_bytes
        │   └── Throttled           the platform's rate limit (retry_after): not a failed attempt
        └── FatalAdapterError
            ├── AuthError           401/403
            ├── EndpointGone        410
            ├── AlreadyShipped      409 already_shipped, to a cancellation
            └── UnsafeURL           the egress policy refuses the URL or its address

What the outbox loops do with each is decided once, by `classify()`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable


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


class DatabaseMissing(StoreError):
    """The database file does not exist (a read-only open never creates one)."""


class DatabaseNeedsMigration(StoreError):
    """The database's schema is older than this relay: run `relay migrate`."""


class ReadOnlyStore(StoreError):
    """The store was opened read-only: it takes no writes."""


class LeaseLost(StoreError):
    """The poller's lease was taken by another daemon since: its write was refused, nothing changed."""


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


class Throttled(RetriableAdapterError):
    """The platform's rate limit: nothing was done, come back after `retry_after` seconds.

    A throttle is the platform's schedule, not a failed attempt: the shipper reschedules the push for
    the announced time without spending its persisted retry schedule.
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


REDACTED = "[redacted]"

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
_SECRET_NAMES = (  # parameter names, not a password
    r"consumer_secret|consumer_key|client_secret|access_token|refresh_token|id_token|token|"  # noqa: S105
    r"api[_-]?key|apikey|secret|signature|sig|password|passwd|pwd|auth|authorization"
)
_PARAM = re.compile(rf"(?i)(?<![A-Za-z0-9_-])({_SECRET_NAMES})=[^\s&#'\"<>,;)]+")
_JSON_FIELD = re.compile(rf"(?i)((?<![A-Za-z0-9_-])[\"']?(?:{_SECRET_NAMES})[\"']?\s*:\s*)([\"'])([^\"']+)\2")
_USERINFO = re.compile(r"(?<![\w/])[^\s/:@'\"]+:[^\s/@'\"]+@(?=[A-Za-z0-9\[])")
_AUTH_SCHEME = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{8,}")
_SECRET_SHAPES = re.compile(
    r"\b(?:whsec_[A-Za-z0-9+/=]+|(?:ck|cs)_[0-9a-fA-F]{16,}|shp(?:at|ca|pa|ss)_[0-9a-fA-F]{16,})"
)
_HAS_SPACE = re.compile(r"\s").search  # `_AUTH_SCHEME` needs one
_known: set[str] = set()
_longest_first: tuple[str, ...] = ()  # `_known`, longest first: one secret may contain another


def remember_secrets(values: Iterable[str]) -> None:
    """Add configured secret values that `scrub` replaces wherever they appear (loaded settings call
    this; values shorter than 6 characters are ignored, they would mangle ordinary text)."""
    global _longest_first  # noqa: PLW0603 (this module's own cache of `_known`)
    for value in values:
        for form in (value, value.removeprefix("whsec_")):
            if len(form) >= 6:
                _known.add(form)
    _longest_first = tuple(sorted(_known, key=len, reverse=True))


def _scrub_url(match: re.Match[str]) -> str:
    url = match.group(0)
    scheme, _, rest = url.partition("://")
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = f"{REDACTED}@" + authority.rsplit("@", 1)[1]
    path = tail.partition("#")[0].partition("?")[0]
    return f"{scheme}://{authority}{path}" + (f"?{REDACTED}" if "?" in tail else "")


def scrub(text: str) -> str:
    """`text` with credentials removed, for anything that leaves the process (logs, the store, the CLI).

    URLs lose their userinfo and query string (`https://[redacted]@host/path?[redacted]`: query-string
    authentication and signed links carry secrets there); `name=value` pairs and JSON-ish `"name": "value"`
    fields whose name looks like a credential (consumer_secret, access_token, token, signature, password,
    ...) lose the value; `Basic`/`Bearer` credentials, `whsec_`, WooCommerce `ck_`/`cs_` and Shopify
    `shpat_` shaped strings, and every configured secret (`remember_secrets`) become `[redacted]`.
    """
    if not text:
        return text
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, REDACTED)
    # Each pattern runs only on text holding a character every match of it needs (most text holds none).
    if "://" in text:
        text = _URL.sub(_scrub_url, text)
    if "@" in text:
        text = _USERINFO.sub(f"{REDACTED}@", text)
    if "=" in text:
        text = _PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    if ":" in text:
        text = _JSON_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)
    if _HAS_SPACE(text):
        text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if "_" in text:
        text = _SECRET_SHAPES.sub(REDACTED, text)
    return text


def describe(exc: BaseException) -> str:
    """An error as stored and logged: message plus the quoted response body, if any, scrubbed of
    credentials (`scrub`): a redirect's `Location` or an aiohttp message may quote a secret-bearing URL."""
    body = getattr(exc, "body", None)
    return scrub(f"{exc}: {body}" if body else (str(exc) or type(exc).__name__))


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
