"""The parts of an HTTP request a decision looks at, free of any transport.

Envoy hands the request over as it arrived; `normalize_method`,
`normalize_path` and `normalize_host` turn the raw `:method`, `:path` and
`:authority` into the forms routes are matched against, refusing what
cannot be read one way only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from authz.reasons import DenyError, Reason

__all__ = ["HttpRequest", "normalize_host", "normalize_method", "normalize_path"]


@dataclass(frozen=True)
class HttpRequest:
    """One request as Envoy described it; header names are lowercase.

    The headers are left out of the repr, so no Authorization value can
    reach a log line or a traceback through it.
    """

    method: str
    host: str
    path: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    request_id: str = ""

    def header_values(self, name: str) -> list[str]:
        """Return every value sent under `name`, in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


_UNRESERVED = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_DECODED = _UNRESERVED | frozenset("!$&'()*+,=:@")
"""Escapes of what a path segment may also hold raw (RFC 3986 pchar, but `;`)
are decoded before matching: upstream servers read `%3A` as `:`."""
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_DOUBLE_ENCODED = re.compile(r"%25(?:[0-9A-Fa-f]{2}|[uU])")  # %252e, %25u002e
_METHOD = re.compile(r"[A-Z0-9!#$%&'*+.^_`|~-]+")


def normalize_method(raw: str) -> str:
    """Return the method routes are matched against, or raise `DenyError`.

    Methods are case-sensitive and upstream servers disagree on what `get`
    means, so only a token without lowercase letters is read; it is never
    folded to upper case.
    """
    if not _METHOD.fullmatch(raw):
        raise DenyError(Reason.REQUEST_INVALID, "method is empty or not uppercase")
    return raw


def normalize_path(raw: str) -> str:
    """Return the path routes are matched against, or raise `DenyError`.

    The query is dropped, escapes of characters a path may hold raw decoded,
    dot segments removed (RFC 3986, 5.2.4) and repeated slashes merged.
    Whatever an upstream server could read as another path is refused
    rather than guessed at: a fragment, `;` path parameters (raw or
    encoded), an encoded slash or backslash, a raw backslash, a bad or
    doubled escape, an encoded control character, escapes that are not
    UTF-8 or decode to look-alikes of delimiters (`%EF%BC%8E` is a
    fullwidth dot), a dot segment climbing above the root, and `//` before
    `..`, whose meaning depends on when slashes are merged.
    """
    if "#" in raw:
        raise DenyError(Reason.PATH_INVALID, "a request target has no fragment")
    path = raw.split("?", 1)[0]
    if not path.startswith("/"):
        raise DenyError(Reason.PATH_INVALID, "path must start with /")
    if not _PATH_CHARS.fullmatch(path):
        raise DenyError(Reason.PATH_INVALID, "path has characters outside RFC 3986")
    if ";" in path:
        raise DenyError(Reason.PATH_INVALID, "path parameters (;) are refused")

    decoded = _decode_unreserved(path)
    _check_encoded_text(decoded)
    return "/" + "/".join(_remove_dot_segments(decoded.split("/")[1:]))


def _decode_unreserved(path: str) -> str:
    def replace(match: re.Match[str]) -> str:
        code = int(match.group(1), 16)
        if chr(code) in _DECODED:
            return chr(code)
        if chr(code) in "/\\;":
            raise DenyError(Reason.PATH_INVALID, "encoded slash, backslash or ;")
        if code < 0x20 or code == 0x7F:
            raise DenyError(Reason.PATH_INVALID, "encoded control character")
        return match.group(0).upper()

    if "%" in _PERCENT.sub("", path):
        raise DenyError(Reason.PATH_INVALID, "malformed percent-encoding")
    decoded = _PERCENT.sub(replace, path)
    # Checked after decoding too: %25%32%65 decodes to %252e.
    if _DOUBLE_ENCODED.search(path) or _DOUBLE_ENCODED.search(decoded):
        raise DenyError(Reason.PATH_INVALID, "double percent-encoding")
    return decoded


def _check_encoded_text(path: str) -> None:
    """Refuse escapes a lenient, normalising or case-blind server reads as ASCII."""
    try:
        text = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise DenyError(Reason.PATH_INVALID, "percent-encoding is not UTF-8") from None

    for char in set(text):
        if char.isascii():
            continue
        if not char.isprintable():
            raise DenyError(Reason.PATH_INVALID, "encoded invisible character")
        if any(c.isascii() for c in _readings_of(char)):
            # A fullwidth dot, the Kelvin sign (folds to k), a dotless i
            # (upper-cases to I): another server may read plain ASCII.
            raise DenyError(Reason.PATH_INVALID, "encoded look-alike of ASCII")


def _readings_of(char: str) -> str:
    """Return what normalising or case-blind servers may turn `char` into."""
    return "".join(
        (
            unicodedata.normalize("NFKC", char),
            char.lower(),
            char.upper(),
            char.casefold(),
        )
    )


def _remove_dot_segments(segments: list[str]) -> list[str]:
    merged_first = _resolve(_merge(segments))
    if _merge(_resolve(segments)) != merged_first:
        raise DenyError(Reason.PATH_INVALID, "// before .. can be read two ways")
    return merged_first


def _merge(segments: list[str]) -> list[str]:
    """Drop empty segments, but keep a trailing slash."""
    last = len(segments) - 1
    return [s for i, s in enumerate(segments) if s or i == last]


def _resolve(segments: list[str]) -> list[str]:
    """Remove `.` and `..` as RFC 3986 does, refusing to climb above the root."""
    output: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if not output:
                raise DenyError(Reason.PATH_INVALID, "dot segment above the root")
            output.pop()
        elif segment != ".":
            output.append(segment)
            continue
        if last:
            output.append("")
    return output


_AUTHORITY = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9_-]+\.)*[A-Za-z0-9_-]+\.?)"
    r"(?::[0-9]{0,5})?"
)
_MAX_HOST = 255


def normalize_host(raw: str) -> str:
    """Return the authority without its port, lowercase, or raise `DenyError`.

    Only a DNS name, an IPv4 address or a bracketed IPv6 address is read:
    userinfo, percent-escapes, empty labels and anything outside ASCII are
    refused. One trailing dot, the root of a fully qualified name, is dropped.
    """
    match = _AUTHORITY.fullmatch(raw) if len(raw) <= _MAX_HOST else None
    if match is None:
        raise DenyError(Reason.REQUEST_INVALID, "host is empty or malformed")
    return match["host"].lower().removesuffix(".")
