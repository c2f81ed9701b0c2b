"""Structured logs: one JSON line per event, with secrets redacted.

Whatever a log call is handed, a processor removes credentials before the
line is written: values under sensitive keys, and anything shaped like a
JWT anywhere in a value, the rendered traceback included.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO
from urllib.parse import unquote

import structlog

__all__ = ["REDACTED", "configure", "flush", "redact"]

REDACTED = "[redacted]"
_SENSITIVE_KEYS = re.compile(
    r"authorization|cookie|token|secret|password|credential", re.IGNORECASE
)
# Every pattern is linear in its input, and no value is read past
# `_MAX_READ` characters: a hostile path costs the same as a short one.
_RUN = re.compile(r"[A-Za-z0-9_.%-]+")
_AUTHORIZATION_VALUE = re.compile(r"(?i:bearer|basic)\s+[^\s,;\"']+")
_USERINFO = re.compile(r"(?<![^\s/\"'@])[^\s/\"'@:]*+:[^\s/\"'@]*+@")
_MAX_CHARS = 1024
"""Longer values are cut, after redaction, so a log line stays a line."""
_MAX_READ = _MAX_CHARS + 64
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
    """Redact a JWS in compact form, or what is left of one, inside a run.

    Percent-escapes are read through, so `eyJhb%47ci...` is found too; such
    a run is redacted whole.
    """
    run = match.group()
    plain = unquote(run) if "%" in run else run
    start = plain.find("eyJ")
    if start < 0 or len(plain) - start < _JWS_FRAGMENT:
        return run
    return REDACTED if plain is not run else run[:start] + REDACTED


def _shorten(text: str, original: int) -> str:
    if original <= _MAX_CHARS and len(text) <= _MAX_CHARS:
        return text
    return f"{text[:_MAX_CHARS]}...[{original} chars in all]"


class _StandardStream:
    """`sys.stdout` or `sys.stderr`, written from a thread of its own.

    The stream is looked up at each write, not bound at configuration, so a
    replaced or closed stream is never written to. Lines wait in a bounded
    queue: a reader that stalls (a pipe nobody drains) never blocks the
    event loop that answers checks; past `capacity` waiting lines, new ones
    are dropped. A failed write drops its lines too: a full disk must not
    fail a check or end the key refresh. What waits is written at exit.
    """

    def __init__(self, name: str, capacity: int = 10_000) -> None:
        self._name = name
        self._lines: queue.Queue[str | threading.Event] = queue.Queue(capacity)
        self._writer = threading.Thread(target=self._run, name=name, daemon=True)
        self._writer.start()
        atexit.register(self.drain)

    def write(self, text: str) -> int:
        with contextlib.suppress(queue.Full):
            self._lines.put_nowait(text)
        return len(text)

    def flush(self) -> None:
        """Lines are flushed by the writer thread as they are written."""

    def drain(self, timeout: float = 2.0) -> bool:
        """Wait until what was written so far is out; tell if it is."""
        written = threading.Event()
        try:
            self._lines.put(written, timeout=timeout)
        except queue.Full:
            return False
        return written.wait(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._lines.get()]
            if not isinstance(batch[0], threading.Event):
                # Let lines gather: waking for each one takes the GIL from
                # the event loop often enough to cost a fifth of throughput.
                time.sleep(_GATHER_SECONDS)
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    batch.append(self._lines.get_nowait())
            with contextlib.suppress(Exception):  # the writer must outlive any line
                self._write("".join(t for t in batch if isinstance(t, str)))
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()

    def _write(self, text: str) -> None:
        stream = getattr(sys, self._name)
        if stream is None:
            return
        if stream is not getattr(sys, f"__{self._name}__"):
            stream.write(text)  # replaced, by a test's capture for one
            stream.flush()
            return
        # The process's own stream: write to its file descriptor. Through
        # the buffered object, a write stuck on a stalled reader would hold
        # the lock the interpreter takes at exit, and abort or hang it.
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(stream.fileno(), data) :]


_BATCH = 10_000
_GATHER_SECONDS = 0.05


def flush(timeout: float = 2.0) -> None:
    """Wait, at most `timeout` seconds each, until logged lines are written."""
    for stream in _STANDARD.values():
        stream.drain(timeout)


class _Guarded:
    """A stream whose failures drop the line rather than fail the caller."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


_STANDARD: dict[str, _StandardStream] = {}


def configure(
    stream: TextIO | Literal["stdout", "stderr"] = "stdout",
    level: int = logging.INFO,
) -> None:
    """Send JSON log lines to `stream`: standard output by default."""
    target: _StandardStream | _Guarded
    if isinstance(stream, str):
        if stream not in _STANDARD:
            _STANDARD[stream] = _StandardStream(stream)
        target = _STANDARD[stream]
    else:
        target = _Guarded(stream)
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
