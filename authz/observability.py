"""Structured logs: one JSON line per event, with secrets redacted.

Whatever a log call is handed, a processor removes credentials before the
line is written: values under sensitive keys, and anything shaped like a
JWT anywhere in a value, the rendered traceback included.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

__all__ = ["REDACTED", "configure", "redact"]

REDACTED = "[redacted]"
_SENSITIVE_KEYS = re.compile(
    r"authorization|cookie|token|secret|password|credential", re.IGNORECASE
)
# Every pattern is linear in its input, and no value is read past
# `_MAX_READ` characters: a hostile path costs the same as a short one.
_RUN = re.compile(r"[A-Za-z0-9_.-]+")
_AUTHORIZATION_VALUE = re.compile(r"(?i:bearer|basic)\s+[^\s,;\"']+")
_USERINFO = re.compile(r"(?<![^\s/\"'@])[^\s/\"'@]++@")
_MAX_CHARS = 1024
"""Longer values are cut, after redaction, so a log line stays a line."""
_MAX_READ = 4 * _MAX_CHARS
_MAX_TRACEBACK = 64 * _MAX_CHARS
_JWS_FRAGMENT = 16
"""From `eyJ` on, this many token characters are redacted, dots or not: a
value cut in the middle of a token must not leave the rest of it."""


def redact(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace credentials in a log event before it is rendered."""
    for key, value in event.items():
        if key != "event" and _SENSITIVE_KEYS.search(key):
            event[key] = REDACTED
        elif key == "exception" and isinstance(value, str):
            event[key] = _scrub_text(value[:_MAX_TRACEBACK])
        else:
            event[key] = _scrub(value)
    return event


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _shorten(_scrub_text(value[:_MAX_READ]), len(value))
    if isinstance(value, dict):
        return {
            k: REDACTED if _SENSITIVE_KEYS.search(str(k)) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _scrub_text(text: str) -> str:
    text = _AUTHORIZATION_VALUE.sub(REDACTED, text)
    text = _USERINFO.sub(f"{REDACTED}@", text)  # user:password@host
    return _RUN.sub(_scrub_run, text)


def _scrub_run(match: re.Match[str]) -> str:
    """Redact a JWS in compact form, or what is left of one, inside a run."""
    run = match.group()
    start = run.find("eyJ")
    if start < 0 or len(run) - start < _JWS_FRAGMENT:
        return run
    return run[:start] + REDACTED


def _shorten(text: str, original: int) -> str:
    if original <= _MAX_CHARS and len(text) <= _MAX_CHARS:
        return text
    return f"{text[:_MAX_CHARS]}...[{original} chars in all]"


class _StandardStream:
    """`sys.stdout` or `sys.stderr` as it is when a line is written.

    Binding the object itself would keep writing to whatever stood there at
    configuration time, a replaced or closed stream included.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def write(self, text: str) -> int:
        written: int = getattr(sys, self._name).write(text)
        return written

    def flush(self) -> None:
        getattr(sys, self._name).flush()


class _Guarded:
    """A stream whose failures drop the line rather than fail the caller.

    A full disk or a closed pipe must not turn a check into a gRPC error or
    end the key refresh: the decision matters more than its log line.
    """

    def __init__(self, stream: TextIO | _StandardStream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


def configure(
    stream: TextIO | Literal["stdout", "stderr"] = "stdout",
    level: int = logging.INFO,
) -> None:
    """Send JSON log lines to `stream`: standard output by default."""
    target = _Guarded(_StandardStream(stream) if isinstance(stream, str) else stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(target),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
