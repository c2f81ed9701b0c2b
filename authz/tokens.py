"""Verify a Kubernetes service-account token and read who it names.

The steps run in a fixed order, each refusing with its own reason: the
compact serialisation is parsed strictly, the issuer is chosen by `iss`,
the key by `kid`, the signature is checked with the one algorithm allowed
for that key (python-jose for RS* and ES*, see `authz.keys`), then each
claim is checked here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz.keys import KeySet
from authz.reasons import DenyError, Reason

__all__ = ["Identity", "Issuer", "UnverifiedToken", "parse", "verify"]

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_KID = re.compile(r"[\x21-\x7e]{1,256}")
_SUBJECT = re.compile(
    r"system:serviceaccount:"
    r"(?P<namespace>[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?):"
    r"(?P<name>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*)"
)


@dataclass(frozen=True)
class Issuer:
    """What verification needs to know about one trusted issuer."""

    issuer: str
    algorithms: tuple[str, ...]
    leeway_seconds: int


@dataclass(frozen=True)
class Identity:
    """The service account a verified token speaks for."""

    issuer: str
    namespace: str
    service_account: str

    @property
    def subject(self) -> str:
        """Return the Kubernetes user name of the service account."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@dataclass(frozen=True)
class UnverifiedToken:
    """A token split and decoded, its signature not yet checked."""

    compact: str = field(repr=False)
    header: Mapping[str, Any]
    claims: Mapping[str, Any]

    @property
    def algorithm(self) -> str:
        """Return the `alg` header."""
        return str(self.header["alg"])

    @property
    def kid(self) -> str:
        """Return the `kid` header."""
        return str(self.header["kid"])

    @property
    def issuer(self) -> str:
        """Return the `iss` claim."""
        return str(self.claims["iss"])


def parse(compact: str) -> UnverifiedToken:
    """Split and decode a JWS compact token, or raise `DenyError`."""
    parts = compact.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts[:2]):
        raise DenyError(Reason.TOKEN_MALFORMED, "not three base64url segments")

    header = _json_object(_b64decode(parts[0]), "header")
    claims = _json_object(_b64decode(parts[1]), "payload")
    if parts[2] and not _SEGMENT.fullmatch(parts[2]):
        raise DenyError(Reason.TOKEN_MALFORMED, "signature is not base64url")
    _b64decode(parts[2])
    _check_header(header)
    if not isinstance(claims.get("iss"), str):
        raise DenyError(Reason.CLAIMS_INVALID, "iss is missing or not a string")
    return UnverifiedToken(compact=compact, header=header, claims=claims)


def verify(
    token: UnverifiedToken,
    issuer: Issuer,
    keys: KeySet,
    audiences: Sequence[str],
    now: float,
) -> Identity:
    """Check signature and claims of `token`; return whom it names."""
    if token.algorithm not in issuer.algorithms:
        raise DenyError(Reason.ALGORITHM_NOT_ALLOWED, "alg is not allowed")
    if token.compact.endswith("."):
        raise DenyError(Reason.SIGNATURE_INVALID, "the signature is empty")
    if not keys.has(token.kid):
        raise DenyError(Reason.KEY_UNKNOWN, "kid is not in the issuer's key set")

    key = keys.verifier(token.kid, token.algorithm)
    if key is None:
        raise DenyError(Reason.KEY_ALGORITHM_MISMATCH, "alg does not fit the key")
    if not key.verify(token.compact):
        raise DenyError(Reason.SIGNATURE_INVALID, "signature does not verify")

    _check_times(token.claims, issuer.leeway_seconds, now)
    _check_audience(token.claims, audiences)
    return _identity(token.claims, issuer.issuer)


def _b64decode(segment: str) -> bytes:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        raise DenyError(Reason.TOKEN_MALFORMED, "bad base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != segment:
        raise DenyError(Reason.TOKEN_MALFORMED, "non-canonical base64url")
    return raw


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError):
        raise DenyError(Reason.TOKEN_MALFORMED, f"{part} is not JSON") from None
    except RecursionError:
        raise DenyError(Reason.TOKEN_MALFORMED, f"{part} is nested too deep") from None
    if not isinstance(value, dict):
        raise DenyError(Reason.TOKEN_MALFORMED, f"{part} is not a JSON object")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_header(header: Mapping[str, Any]) -> None:
    if "crit" in header:
        raise DenyError(Reason.CRITICAL_HEADER_UNSUPPORTED, "crit is not supported")
    if not isinstance(header.get("alg"), str):
        raise DenyError(Reason.TOKEN_MALFORMED, "alg is missing or not a string")
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise DenyError(Reason.TOKEN_MALFORMED, "kid is not 1-256 printable ASCII")


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    if name not in claims and not required:
        return None
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DenyError(Reason.CLAIMS_INVALID, f"{name} is missing or not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DenyError(Reason.CLAIMS_INVALID, f"{name} is not finite")
    return number


def _check_times(claims: Mapping[str, Any], leeway: int, now: float) -> None:
    expires = _number(claims, "exp", required=True)
    not_before = _number(claims, "nbf", required=False)
    issued = _number(claims, "iat", required=False)

    if expires is not None and now >= expires + leeway:
        raise DenyError(Reason.TOKEN_EXPIRED, "exp has passed")
    if not_before is not None and now + leeway < not_before:
        raise DenyError(Reason.TOKEN_NOT_YET_VALID, "nbf is in the future")
    if issued is not None and now + leeway < issued:
        raise DenyError(Reason.TOKEN_ISSUED_IN_FUTURE, "iat is in the future")


def _check_audience(claims: Mapping[str, Any], audiences: Sequence[str]) -> None:
    aud = claims.get("aud")
    listed = [aud] if isinstance(aud, str) else aud
    if not isinstance(listed, list) or not all(isinstance(a, str) for a in listed):
        raise DenyError(Reason.CLAIMS_INVALID, "aud is missing or not strings")
    if not set(listed) & set(audiences):
        raise DenyError(Reason.AUDIENCE_MISMATCH, "aud names no audience of the route")


def _identity(claims: Mapping[str, Any], issuer: str) -> Identity:
    sub = claims.get("sub")
    match = _SUBJECT.fullmatch(sub) if isinstance(sub, str) else None
    if match is None or len(match["name"]) > 253:
        raise DenyError(Reason.SUBJECT_INVALID, "sub is not a service account")

    identity = Identity(issuer, match["namespace"], match["name"])
    _check_nested(claims, identity)
    return identity


def _check_nested(claims: Mapping[str, Any], identity: Identity) -> None:
    """Refuse a token whose kubernetes.io claims name another account than sub."""
    nested = claims.get("kubernetes.io")
    if nested is None:
        return

    account = nested.get("serviceaccount") if isinstance(nested, Mapping) else None
    name = account.get("name") if isinstance(account, Mapping) else None
    namespace = nested.get("namespace") if isinstance(nested, Mapping) else None
    if (namespace, name) != (identity.namespace, identity.service_account):
        raise DenyError(Reason.SUBJECT_INVALID, "kubernetes.io claims disagree")
