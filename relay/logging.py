"""Logging: structlog, one JSON object per line (console rendering on a TTY), secrets redacted."""

from __future__ import annotations

import datetime
import enum
import logging
import math
import re
import sys
import time
from _json import encode_basestring_ascii, make_encoder
from collections.abc import Collection, MutableMapping
from typing import Any

import orjson
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


_PLAIN_TYPES: dict[type, bool] = {int: True, float: True, bool: True, type(None): True}
"""Type -> its values need no scrubbing, remembered per type (`_is_plain`)."""


def _is_plain(kind: type) -> bool:
    """Values of `kind` carry no text a secret could be in, or only text written in relay's code: numbers,
    None, and relay's own enums (`OrderState`, ...: fixed words). `_scrubbed` returns the first as they are;
    the fast path skips both. Other `str` subclasses (and containers, exceptions) are scrubbed. A dict is
    never plain, an enum of relay's included: `redact_and_scrub` asks before it looks for a dict."""
    plain = _PLAIN_TYPES.get(kind)
    if plain is None:
        if issubclass(kind, dict):
            plain = False
        elif issubclass(kind, enum.Enum) and kind.__module__.partition(".")[0] == "relay":
            plain = True
        else:
            plain = not issubclass(kind, str | list | tuple | BaseException)
        if len(_PLAIN_TYPES) < _MEMO_SIZE:
            _PLAIN_TYPES[kind] = plain
    return plain


def redact_and_scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The processor relay configures, in one pass over the event: a field whose name looks like a
    credential (also one level down, in a dict) becomes `[redacted]`; every string value, and strings nested
    in dicts and lists, is scrubbed with `relay.exceptions.scrub` (URLs lose userinfo and query strings,
    credential-looking parameters and configured secrets become `[redacted]`, whatever field or message they
    were put in).

    The common values take a fast path: a plain `str` is answered from the scrub memo when it is there
    (every string not there is scrubbed), and numbers, None and relay's own enums (`_is_plain`) are left as
    they are without a look at their text."""
    memo = _memo if len(exceptions._known) == _memo_secrets else None  # None: refilled on the next miss
    secret_keys = _secret_keys
    plain_types = _PLAIN_TYPES
    for key, value in event.items():  # values are replaced, keys stay: iterating the items is safe
        secret = secret_keys.get(key)
        if secret is None:
            secret = _is_secret_key(key)
        if secret:
            event[key] = _scrub_text(REDACTED)
            continue
        kind = type(value)
        if kind is str:
            done = memo.get(value) if memo is not None else None
            event[key] = done if done is not None else _scrub_text(value)
        elif plain_types.get(kind):  # known to be plain (`_is_plain`): left as it is, without a call
            continue
        elif isinstance(value, dict):  # credential-named keys one level down, then the values
            event[key] = _scrubbed({k: (REDACTED if _is_secret_key(str(k)) else v) for k, v in value.items()})
        elif not _is_plain(kind):
            event[key] = _scrubbed(value)
    return event


def format_exc_info(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`structlog.processors.format_exc_info`, called only for an event with an `exc_info` field (without
    one it changes nothing)."""
    if "exc_info" in event:
        return structlog.processors.format_exc_info(logger, name, event)
    return event


_stamped_second: tuple[int, str] = (-1, "")
"""The last whole second stamped (seconds since the epoch) and its ISO form without the fraction."""


def add_timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`event["timestamp"]`, exactly as `structlog.processors.TimeStamper(fmt="iso", utc=True)` writes it
    (`datetime.now(timezone.utc).isoformat()` with `Z` for `+00:00`: microseconds, left out when 0), with
    the date and time of day formatted once per second."""
    global _stamped_second  # noqa: PLW0603 (this module's own cache)
    second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    known, prefix = _stamped_second
    if second != known:
        at = datetime.datetime.fromtimestamp(second, datetime.UTC)
        prefix = at.isoformat().removesuffix("+00:00")
        _stamped_second = (second, prefix)
    micros = nanoseconds // 1000
    event["timestamp"] = f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"
    return event


def _json_fallback(value: Any) -> Any:
    # What structlog's `JSONRenderer` does with a value JSON has no type for.
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


def _encode(event: MutableMapping[str, Any]) -> str:
    """`json.dumps(event, default=_json_fallback)`, what structlog's `JSONRenderer` writes: the C encoder
    `json.JSONEncoder.encode` builds on every call (its own circular-reference memo included), built here
    without the Python layers around it."""
    encoder = make_encoder({}, _json_fallback, encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return "".join(encoder(event, 0))


_FLAT_KINDS = {str, int, bool, type(None)}
"""Types whose values orjson writes exactly as `json` does (str subclasses, relay's enums among them, are
added as they are met: both write the text); `_flat_like_json`. Floats are judged by value."""
_OTHER_KINDS: set[type] = set()
"""Types met that are not in `_FLAT_KINDS`: containers, and types orjson may write apart (an `Enum`'s
value, a dataclass as an object, a date in ISO form, where `json` writes `repr`)."""


def _flat_like_json(values: Collection[Any]) -> bool:
    """True if orjson writes each of `values` byte for byte as `json` does, in ASCII: none is a container,
    each is of `_FLAT_KINDS` or a float in the range both write alike (orjson writes NaN and infinities as
    null, and numbers below 1e-4 without an exponent). Text it writes apart (non-ASCII, DEL) shows in its
    output; what it refuses (integers beyond 64 bits, lone surrogates) it raises for."""
    kinds = set(map(type, values))
    if kinds <= _FLAT_KINDS:
        return True
    if not kinds.isdisjoint(_OTHER_KINDS):  # a dict, say: known without a loop in Python
        return False
    for value in values:
        kind = type(value)
        if kind in _FLAT_KINDS:
            continue
        if kind is float:
            if not (value == 0.0 or 1e-4 <= abs(value) < math.inf):
                return False
        elif kind in _OTHER_KINDS:
            return False
        else:
            known = _FLAT_KINDS if issubclass(kind, str) else _OTHER_KINDS
            if len(known) < _MEMO_SIZE:
                known.add(kind)
            if known is _OTHER_KINDS:
                return False
    return True


def render_json(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """The event as one JSON object, exactly as `structlog.processors.JSONRenderer()` renders it.

    A dict of flat values (`_flat_like_json`: most lines) is rendered by orjson in half the time,
    indented: one item a line, after a two-space indent, with `json`'s key separator `": "`. Joining the
    lines with `json`'s item separator `", "` gives `json`'s line (a line break in text is escaped, so
    every one is orjson's). When orjson writes non-ASCII or DEL, which `json` escapes, or refuses a value,
    the event is rendered as before (`_encode`)."""
    if type(event) is dict and _flat_like_json(event.values()):  # a subclass may iterate apart
        try:
            rendered = orjson.dumps(event, option=orjson.OPT_INDENT_2)
        except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a key that is not a string
            return _encode(event)
        text = rendered.decode()
        if text.isascii() and "\x7f" not in text:
            return "{" + text[4:-2].replace(",\n  ", ", ") + "}"
    return _encode(event)


class LineWriter(structlog.WriteLogger):
    """The logger `configure` sets up: structlog's `WriteLogger` (one write of a line and its newline, then a
    flush), by which `LinesAtOnce` knows a bound logger writes relay's lines through relay's processors."""


class _LineWriterFactory(structlog.WriteLoggerFactory):
    """`structlog.WriteLoggerFactory`, making `LineWriter`s."""

    def __call__(self, *args: Any) -> LineWriter:
        return LineWriter(self._file)


class _HeldLines(list[str]):
    """The lines a bound logger wrote into it, in order: every log method appends."""

    msg = log = debug = info = warn = warning = list.append
    fatal = failure = err = error = critical = exception = list.append


class LinesAtOnce:
    """`with LinesAtOnce(log) as held_log:` (one block) the bound logger `log` for the block, its lines held
    and written to its stream when the block ends (also by an exception) in one write and one flush: the
    same lines, in the same order, as a write and flush each would give. Only `held_log`'s lines are held: a
    line logged meanwhile elsewhere (`log` itself, another logger or thread) is written at once, ahead of
    them. A logger that `configure` did not set up (no `LineWriter`) is used as it is."""

    __slots__ = ("_held", "_log")

    def __init__(self, log: Any) -> None:
        self._log = log
        self._held = _HeldLines()

    def __enter__(self) -> Any:
        log = self._log
        if type(getattr(log, "_logger", None)) is not LineWriter:
            return log
        # The same wrapper class (level filter), processors and context, writing into `_held`. Relay's
        # processors do not look at the logger they are given.
        return type(log)(self._held, processors=log._processors, context=log._context)

    def __exit__(self, *exc_info: object) -> None:
        if self._held:
            self._log._logger.msg("\n".join(self._held))


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Set up structlog for the process. `fmt` is auto (console on a TTY, else JSON), json or console."""
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if console else render_json
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            format_exc_info,
            redact_and_scrub,
            # Level and time are relay's own words: added after the scrubbing, which need not read them.
            structlog.processors.add_log_level,
            add_timestamp,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write of the line and its newline, then a flush (`PrintLogger` prints them apart); one write of
        # them all for the lines of a `LinesAtOnce` block.
        logger_factory=_LineWriterFactory(file=stream),
        # A `get_logger()` proxy assembles its logger once, not on every call (no logger is made at import
        # time in relay, so each is assembled under the configuration of its process or test).
        cache_logger_on_first_use=True,
    )
