"""An issuer's signing keys, as read from a JWKS document.

A key verifies a token only with an algorithm that fits it: RSA keys of at
least 2048 bits for RS*, EC keys for the ES* of their own curve. A key's
`alg` and `use`, when the document states them, narrow that further.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError

__all__ = ["ALGORITHMS", "KeySet", "KeySetError"]

_LOG = structlog.get_logger(__name__)

ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}
"""Each supported algorithm with the key type and curve it needs."""


_MIN_RSA_BITS = 2048
"""RSA keys shorter than this are skipped: they can be factored."""


class KeySetError(ValueError):
    """A JWKS document that cannot be used at all."""


@dataclass(frozen=True)
class KeySet:
    """Public keys by `kid`, with verifiers built once per algorithm."""

    keys: Mapping[str, Mapping[str, Any]]
    _verifiers: dict[tuple[str, str], Key] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_jwks(cls, document: object) -> KeySet:
        """Build a key set from a parsed JWKS document.

        Keys without a `kid`, private keys, keys for encryption and keys of
        unsupported types are skipped with a warning; a document with no
        usable key at all is an error.
        """
        if not isinstance(document, Mapping) or not isinstance(
            document.get("keys"), list
        ):
            raise KeySetError("a JWKS document is an object with a 'keys' list")

        keys = {}
        for entry in document["keys"]:
            problem = _unusable(entry)
            if problem:
                _LOG.warning("jwks_key_skipped", problem=problem)
                continue
            keys[entry["kid"]] = dict(entry)
        if not keys:
            raise KeySetError("the JWKS document has no usable signing key")
        return cls(keys=keys)

    @property
    def kids(self) -> frozenset[str]:
        """Return the key ids in this set."""
        return frozenset(self.keys)

    def has(self, kid: str) -> bool:
        """Tell whether a key with this id is in the set."""
        return kid in self.keys

    def verifier(self, kid: str, algorithm: str) -> Key | None:
        """Return the key `kid` prepared for `algorithm`, or None if unfit."""
        cached = self._verifiers.get((kid, algorithm))
        if cached is not None:
            return cached

        entry = self.keys.get(kid)
        if entry is None or not _fits(entry, algorithm):
            return None
        try:
            verifier = jwk.construct(dict(entry), algorithm)
        except JOSEError:
            return None
        self._verifiers[(kid, algorithm)] = verifier
        return verifier


def _unusable(entry: object) -> str | None:
    if not isinstance(entry, Mapping):
        return "key is not an object"
    if not isinstance(entry.get("kid"), str) or not entry["kid"]:
        return "key has no kid"
    if entry.get("kty") not in ("RSA", "EC"):
        return "key type is not RSA or EC"
    if "d" in entry:
        return "key is private"
    if entry.get("use", "sig") != "sig":
        return "key is not for signatures"
    if entry["kty"] == "RSA" and _modulus_bits(entry.get("n")) < _MIN_RSA_BITS:
        return f"RSA key is shorter than {_MIN_RSA_BITS} bits"
    return None


def _modulus_bits(n: object) -> int:
    """Return the size of a JWK's base64url modulus, 0 if it is unreadable."""
    if not isinstance(n, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(raw, "big").bit_length()


def _fits(entry: Mapping[str, Any], algorithm: str) -> bool:
    wanted = ALGORITHMS.get(algorithm)
    if wanted is None:
        return False
    key_type, curve = wanted
    if entry.get("kty") != key_type:
        return False
    if curve is not None and entry.get("crv") != curve:
        return False
    return bool(entry.get("alg", algorithm) == algorithm)
