"""Read the bearer token a caller presented, and nothing else.

Only the `Authorization` header counts: a token in a query parameter or in
any other header is not a credential.
"""

from __future__ import annotations

import re

from authz.reasons import DenyError, Reason
from authz.request import HttpRequest

__all__ = ["bearer_token"]

_SCHEME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(request: HttpRequest, max_bytes: int) -> str:
    """Return the bearer token of `request`, or raise `DenyError`.

    The value is a scheme, exactly one space and a token68 (RFC 9110): the
    scheme is case-insensitive, nothing is trimmed. Two Authorization
    headers, which Envoy joins with a comma, are refused rather than picking
    one. A token over `max_bytes` is refused before anything reads it.
    """
    values = request.header_values("authorization")
    if not values:
        raise DenyError(Reason.TOKEN_MISSING, "no Authorization header")
    if len(values) > 1 or "," in values[0]:
        raise DenyError(Reason.AUTHORIZATION_MALFORMED, "several Authorization values")

    scheme, separator, token = _split(values[0])
    if scheme.lower() != "bearer":
        raise DenyError(
            Reason.AUTHORIZATION_SCHEME_UNSUPPORTED, "Authorization is not Bearer"
        )
    if len(token.encode("utf-8", "surrogatepass")) > max_bytes:
        raise DenyError(Reason.TOKEN_TOO_LARGE, f"token is over {max_bytes} bytes")
    if separator != " " or not _TOKEN68.fullmatch(token):
        raise DenyError(
            Reason.AUTHORIZATION_MALFORMED, "the value after the scheme is malformed"
        )
    return token


def _split(value: str) -> tuple[str, str, str]:
    """Split an Authorization value into scheme, separator and the rest."""
    match = _SCHEME.match(value)
    if match is None:
        raise DenyError(Reason.AUTHORIZATION_MALFORMED, "Authorization has no scheme")
    rest = value[match.end() :]
    return match.group(), rest[:1], rest[1:]
