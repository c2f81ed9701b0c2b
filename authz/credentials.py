"""Read the bearer token a caller presented, and nothing else.

Only the `Authorization` header counts: a token in a query parameter or in
any other header is not a credential.
"""

from __future__ import annotations

import re

from authz.reasons import DenyError, Reason
from authz.request import HttpRequest

__all__ = ["bearer_token"]

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(request: HttpRequest, max_bytes: int) -> str:
    """Return the bearer token of `request`, or raise `DenyError`.

    The scheme is case-insensitive; exactly one space separates it from the
    token. Two Authorization headers, which Envoy joins with a comma, are
    refused rather than picking one.
    """
    values = request.header_values("authorization")
    if not values:
        raise DenyError(Reason.TOKEN_MISSING, "no Authorization header")
    if len(values) > 1 or "," in values[0]:
        raise DenyError(Reason.AUTHORIZATION_MALFORMED, "several Authorization values")

    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer":
        raise DenyError(
            Reason.AUTHORIZATION_SCHEME_UNSUPPORTED, "Authorization is not Bearer"
        )
    if len(token) > max_bytes:
        raise DenyError(Reason.TOKEN_TOO_LARGE, f"token is over {max_bytes} bytes")
    if not _TOKEN68.fullmatch(token):
        raise DenyError(Reason.AUTHORIZATION_MALFORMED, "Bearer value is malformed")
    return token
