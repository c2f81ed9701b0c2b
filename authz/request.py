"""The parts of an HTTP request a decision looks at, free of any transport.

Envoy hands the request over as it arrived; `normalize_path` and
`normalize_host` turn the raw `:path` and `:authority` into the forms routes
are matched against, refusing what cannot be read one way only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz.reasons import DenyError, Reason

__all__ = ["HttpRequest", "normalize_host", "normalize_path"]


@dataclass(frozen=True)
class HttpRequest:
    """One request as Envoy described it; header names are lowercase."""

    method: str
    host: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    request_id: str = ""

    def header_values(self, name: str) -> list[str]:
        """Return every value sent under `name`, in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


_UNRESERVED = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")


def normalize_path(raw: str) -> str:
    """Return the path routes are matched against, or raise `DenyError`.

    The query and fragment are dropped, percent-encoded unreserved
    characters decoded, dot segments removed (RFC 3986, 5.2.4) and repeated
    slashes merged. An encoded slash or backslash, a raw backslash, a bad
    escape or a dot segment climbing above the root is refused rather than
    guessed at, since upstream servers disagree on what it means.
    """
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise DenyError(Reason.PATH_INVALID, "path must start with /")
    if not _PATH_CHARS.fullmatch(path):
        raise DenyError(Reason.PATH_INVALID, "path has characters outside RFC 3986")

    decoded = _decode_unreserved(path)
    segments = _remove_dot_segments(decoded.split("/")[1:])
    return "/" + "/".join(segments)


def _decode_unreserved(path: str) -> str:
    def replace(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        if char in _UNRESERVED:
            return char
        if char in "/\\":
            raise DenyError(Reason.PATH_INVALID, "encoded slash or backslash")
        return match.group(0).upper()

    if "%" in _PERCENT.sub("", path):
        raise DenyError(Reason.PATH_INVALID, "malformed percent-encoding")
    return _PERCENT.sub(replace, path)


def _remove_dot_segments(segments: list[str]) -> list[str]:
    output: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if not output:
                raise DenyError(Reason.PATH_INVALID, "dot segment above the root")
            output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        elif segment or last:
            output.append(segment)
    return output


_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)")


def normalize_host(raw: str) -> str:
    """Return the authority without its port, lowercase, or raise `DenyError`."""
    host, _, port = raw.rpartition(":") if _has_port(raw) else (raw, "", "")
    if port and not port.isdigit():
        raise DenyError(Reason.REQUEST_INVALID, "port is not a number")
    if not host or not _HOST.fullmatch(host):
        raise DenyError(Reason.REQUEST_INVALID, "host is empty or malformed")
    return host.lower().rstrip(".")


def _has_port(authority: str) -> bool:
    if authority.startswith("["):
        return "]:" in authority
    return ":" in authority
