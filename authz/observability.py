"""Structured logs: one JSON line per event, with secrets redacted.

Whatever a log call is handed, a processor removes credentials before the
line is written: values under sensitive keys, and anything shaped like a
JWT anywhere in a value, the rendered traceback included.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["REDACTED", "configure", "redact"]

REDACTED = "[redacted]"
_SENSITIVE_KEYS = re.compile(
    r"authorization|cookie|token|secret|password|credential", re.IGNORECASE
)
_SECRET_TEXT = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"  # a JWS in compact form
    r"|(?i:bearer|basic)\s+[^\s,;\"']+"  # an Authorization value
)


def redact(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace credentials in a log event before it is rendered."""
    for key, value in event.items():
        if key != "event" and _SENSITIVE_KEYS.search(key):
            event[key] = REDACTED
        else:
            event[key] = _scrub(value)
    return event


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_TEXT.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            k: REDACTED if _SENSITIVE_KEYS.search(str(k)) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def configure(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Send JSON log lines to `stream` (stdout by default)."""
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
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
