"""Logging: structlog, one JSON object per line (console rendering on a TTY), secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from relay.exceptions import scrub

_SECRET_KEY = re.compile(r"secret|token|password|authorization|signature|api[_-]?key|cookie", re.I)
REDACTED = "[redacted]"


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name looks like a credential."""
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = REDACTED
        elif isinstance(event[key], dict):
            event[key] = {k: (REDACTED if _SECRET_KEY.search(str(k)) else v) for k, v in event[key].items()}
    return event


def _scrubbed(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
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
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            scrub_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
