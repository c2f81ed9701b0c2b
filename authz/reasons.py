"""Every outcome of a check, and how each one is told to Envoy.

A decision carries exactly one `Reason`. `OUTCOMES` maps each reason to the
gRPC status code of the `CheckResponse` and the HTTP status the caller sees,
so a reason cannot exist without a status.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["OUTCOMES", "DenyError", "GrpcCode", "Outcome", "Reason"]


class GrpcCode(enum.IntEnum):
    """The google.rpc.Code values a CheckResponse may carry."""

    OK = 0
    INVALID_ARGUMENT = 3
    PERMISSION_DENIED = 7
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class Reason(enum.StrEnum):
    """Stable snake_case codes, one per way a check can end."""

    ALLOWED = "allowed"
    PUBLIC_ROUTE = "public_route"

    REQUEST_INVALID = "request_invalid"
    PATH_INVALID = "path_invalid"

    TOKEN_MISSING = "token_missing"
    AUTHORIZATION_SCHEME_UNSUPPORTED = "authorization_scheme_unsupported"
    AUTHORIZATION_MALFORMED = "authorization_malformed"
    TOKEN_TOO_LARGE = "token_too_large"
    TOKEN_MALFORMED = "token_malformed"
    CRITICAL_HEADER_UNSUPPORTED = "critical_header_unsupported"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    ISSUER_UNKNOWN = "issuer_unknown"
    ISSUER_NOT_ALLOWED = "issuer_not_allowed"
    KEY_UNKNOWN = "key_unknown"
    KEY_ALGORITHM_MISMATCH = "key_algorithm_mismatch"
    SIGNATURE_INVALID = "signature_invalid"
    CLAIMS_INVALID = "claims_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_ISSUED_IN_FUTURE = "token_issued_in_future"
    AUDIENCE_MISMATCH = "audience_mismatch"
    SUBJECT_INVALID = "subject_invalid"

    NO_ROUTE = "no_route"
    SERVICE_ACCOUNT_NOT_ALLOWED = "service_account_not_allowed"

    KEYS_UNAVAILABLE = "keys_unavailable"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Outcome:
    """How a reason reaches Envoy: gRPC status and HTTP status."""

    grpc_code: GrpcCode
    http_status: int

    @property
    def allowed(self) -> bool:
        """Tell whether this outcome lets the request through."""
        return self.grpc_code is GrpcCode.OK


_OK = Outcome(GrpcCode.OK, 200)
_BAD_REQUEST = Outcome(GrpcCode.INVALID_ARGUMENT, 400)
_UNAUTHENTICATED = Outcome(GrpcCode.UNAUTHENTICATED, 401)
_FORBIDDEN = Outcome(GrpcCode.PERMISSION_DENIED, 403)

OUTCOMES: dict[Reason, Outcome] = {
    Reason.ALLOWED: _OK,
    Reason.PUBLIC_ROUTE: _OK,
    Reason.REQUEST_INVALID: _BAD_REQUEST,
    Reason.PATH_INVALID: _BAD_REQUEST,
    Reason.TOKEN_MISSING: _UNAUTHENTICATED,
    Reason.AUTHORIZATION_SCHEME_UNSUPPORTED: _UNAUTHENTICATED,
    Reason.AUTHORIZATION_MALFORMED: _UNAUTHENTICATED,
    Reason.TOKEN_TOO_LARGE: _UNAUTHENTICATED,
    Reason.TOKEN_MALFORMED: _UNAUTHENTICATED,
    Reason.CRITICAL_HEADER_UNSUPPORTED: _UNAUTHENTICATED,
    Reason.ALGORITHM_NOT_ALLOWED: _UNAUTHENTICATED,
    Reason.ISSUER_UNKNOWN: _UNAUTHENTICATED,
    Reason.ISSUER_NOT_ALLOWED: _UNAUTHENTICATED,
    Reason.KEY_UNKNOWN: _UNAUTHENTICATED,
    Reason.KEY_ALGORITHM_MISMATCH: _UNAUTHENTICATED,
    Reason.SIGNATURE_INVALID: _UNAUTHENTICATED,
    Reason.CLAIMS_INVALID: _UNAUTHENTICATED,
    Reason.TOKEN_EXPIRED: _UNAUTHENTICATED,
    Reason.TOKEN_NOT_YET_VALID: _UNAUTHENTICATED,
    Reason.TOKEN_ISSUED_IN_FUTURE: _UNAUTHENTICATED,
    Reason.AUDIENCE_MISMATCH: _UNAUTHENTICATED,
    Reason.SUBJECT_INVALID: _UNAUTHENTICATED,
    Reason.NO_ROUTE: _FORBIDDEN,
    Reason.SERVICE_ACCOUNT_NOT_ALLOWED: _FORBIDDEN,
    Reason.KEYS_UNAVAILABLE: Outcome(GrpcCode.UNAVAILABLE, 503),
    Reason.INTERNAL_ERROR: Outcome(GrpcCode.INTERNAL, 500),
}


class DenyError(Exception):
    """A check step failed; carries the reason and a detail safe to log."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
