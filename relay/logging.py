"""Logging: structlog, one JSON object per line (console rendering on a TTY), secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from relay import exceptions
from relay.exceptions import scrub

_SECRET_KEY = re.compile(r"secret|token|password|authorization|signature|api[_-]?key|cookie", re.I)
REDACTED = "[redacted]"

_secret_keys: dict[str, bool] = {}
"""Field name -> looks like a credential. Field names are few (they are written in the code)."""

_MEMO_MAX_CHARS = 64
_MEMO_SIZE = 4096
_memo: dict[str, str] = {}
_memo_secrets = -1
"""`scrub` of short strings, remembered: most log values repeat (event names, states, storefront and
factory names); a remembered answer is dropped as soon as another secret is remembered (`_memo_secrets`
is the number known when the memo was filled) and the memo is emptied when full."""


def _is_secret_key(key: str) -> bool:
    known = _secret_keys.get(key)
    if known is None:
        known = _secret_keys[key] = bool(_SECRET_KEY.search(key))
        if len(_secret_keys) > _MEMO_SIZE:
            _secret_keys.clear()
    return known


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name looks like a credential."""
    for key in list(event):
        if _is_secret_key(key):
            event[key] = REDACTED
        elif isinstance(event[key], dict):
            event[key] = {k: (REDACTED if _is_secret_key(str(k)) else v) for k, v in event[key].items()}
    return event


def _scrub_text(text: str) -> str:
    global _memo_secrets  # noqa: PLW0603 (the memo is this module's own cache)
    if len(text) > _MEMO_MAX_CHARS:
        return scrub(text)
    secrets = len(exceptions._known)
    if secrets != _memo_secrets or len(_memo) >= _MEMO_SIZE:
        _memo.clear()
        _memo_secrets = secrets
    done = _memo.get(text)
    if done is None:
        done = _memo[text] = scrub(text)
    return done


def _scrubbed(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: _scrubbed(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrubbed(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return scrub(str(value))
    return value


def scrub_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Scrub every string value of an event (and strings nested in dicts and lists) with
    `relay.exceptions.scrub`: URLs lose userinfo and query strings, credential-looking parameters and
    configured secrets become `[redacted]`, whatever field or message they were put in."""
    for key in list(event):
        event[key] = _scrubbed(event[key])
    return event


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Set up structlog for the process. `fmt` is auto (console on a TTY, else JSON), json or console."""
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.format_exc_info,
            redact,
            scrub_values,
            # Level and time are relay's own words: added after the scrubbing, which need not read them.
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        # A `get_logger()` proxy assembles its logger once, not on every call (no logger is made at import
        # time in relay, so each is assembled under the configuration of its process or test).
        cache_logger_on_first_use=True,
    )
