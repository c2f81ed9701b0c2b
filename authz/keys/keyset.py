"""An issuer's signing keys, as read from a JWKS document.

A key verifies a token only with an algorithm that fits it: RSA keys of at
least 2048 bits for RS* and PS*, EC keys for the ES* of their own curve. A
key's `alg` and `use`, when the document states them, narrow that further.
python-jose verifies RS* and ES*; it has no RSASSA-PSS, so PS* signatures
are checked here with `cryptography`, the same library jose calls.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jose import jwk, jws
from jose.backends.base import Key
from jose.exceptions import JOSEError

__all__ = ["ALGORITHMS", "PSS_HASHES", "KeySet", "KeySetError", "Verifier"]

_LOG = structlog.get_logger(__name__)

ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}
"""Each supported algorithm with the key type and curve it needs."""


_MIN_RSA_BITS = 2048
"""RSA keys shorter than this are skipped: they can be factored."""


class KeySetError(ValueError):
    """A JWKS document that cannot be used at all."""


class Verifier(Protocol):
    """One key prepared for one algorithm."""

    def verify(self, compact: str) -> bool:
        """Tell whether the signature of a compact JWS is this key's."""


@dataclass(frozen=True)
class _JoseVerifier:
    """RS* and ES*, verified by python-jose with exactly one algorithm."""

    key: Key
    algorithm: str

    def verify(self, compact: str) -> bool:
        try:
            jws.verify(compact, self.key, algorithms=[self.algorithm])
        except JOSEError:
            return False
        return True


PSS_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "PS256": hashes.SHA256,
    "PS384": hashes.SHA384,
    "PS512": hashes.SHA512,
}


@dataclass(frozen=True)
class _PssVerifier:
    """RSASSA-PSS as RFC 7518 (3.5) has it: MGF1 and salt of the hash's size."""

    key: rsa.RSAPublicKey
    algorithm: str

    def verify(self, compact: str) -> bool:
        signing_input, _, signature = compact.rpartition(".")
        digest = PSS_HASHES[self.algorithm]()
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        try:
            raw = _b64decode(signature)
            self.key.verify(raw, signing_input.encode("ascii"), pss, digest)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class KeySet:
    """Public keys by `kid`, each prepared at load for every algorithm it fits."""

    verifiers: Mapping[str, Mapping[str, Verifier]] = field(repr=False)

    @classmethod
    def from_jwks(cls, document: object) -> KeySet:
        """Build a key set from a parsed JWKS document.

        Keys without a `kid`, private keys, keys for encryption, keys of
        unsupported types and keys whose material cannot be read are
        skipped with a warning; a document with no usable key at all is an
        error.
        """
        if not isinstance(document, Mapping) or not isinstance(
            document.get("keys"), list
        ):
            raise KeySetError("a JWKS document is an object with a 'keys' list")

        verifiers: dict[str, dict[str, Verifier]] = {}
        for entry in document["keys"]:
            prepared, problem = _prepared(entry)
            if problem:
                _LOG.warning("jwks_key_skipped", problem=problem)
                continue
            by_algorithm = verifiers.setdefault(entry["kid"], {})
            if by_algorithm:
                # Allowed for keys of other types (RFC 7517, 4.5): each is tried.
                _LOG.warning("jwks_kid_repeated", kid=entry["kid"])
            for algorithm, verifier in prepared.items():
                earlier = by_algorithm.get(algorithm)
                by_algorithm[algorithm] = (
                    verifier if earlier is None else _AnyOf((earlier, verifier))
                )
        if not verifiers:
            raise KeySetError("the JWKS document has no usable signing key")
        return cls(verifiers=verifiers)

    @property
    def kids(self) -> frozenset[str]:
        """Return the key ids in this set."""
        return frozenset(self.verifiers)

    def has(self, kid: str) -> bool:
        """Tell whether a key with this id is in the set."""
        return kid in self.verifiers

    def verifier(self, kid: str, algorithm: str) -> Verifier | None:
        """Return the key `kid` prepared for `algorithm`, or None if unfit."""
        return self.verifiers.get(kid, {}).get(algorithm)


@dataclass(frozen=True)
class _AnyOf:
    """Several keys of one issuer under one kid: any of them may have signed."""

    verifiers: tuple[Verifier, ...]

    def verify(self, compact: str) -> bool:
        return any(v.verify(compact) for v in self.verifiers)


def _prepared(entry: object) -> tuple[dict[str, Verifier], str | None]:
    """Return the key prepared for each algorithm it fits, or why it cannot be."""
    problem = _unusable(entry)
    if problem is not None or not isinstance(entry, Mapping):
        return {}, problem
    fitting = [alg for alg in ALGORITHMS if _fits(entry, alg)]
    if not fitting:
        return {}, "no supported algorithm fits the key's kty, crv and alg"
    prepared = {alg: _prepare(entry, alg) for alg in fitting}
    ready = {alg: v for alg, v in prepared.items() if v is not None}
    if len(ready) < len(prepared):
        return {}, "key material is not a valid public key"
    return ready, None


def _prepare(entry: Mapping[str, Any], algorithm: str) -> Verifier | None:
    """Build the verifier of a fitting key, or None if the key is unreadable."""
    if algorithm in PSS_HASHES:
        modulus, exponent = _b64int(entry.get("n")), _b64int(entry.get("e"))
        if not modulus or not exponent:
            return None
        try:
            public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except (ValueError, TypeError):
            return None
        return _PssVerifier(public, algorithm)
    try:
        return _JoseVerifier(jwk.construct(dict(entry), algorithm), algorithm)
    except Exception:  # jose raises JOSEError, ValueError or TypeError
        return None


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
    return _b64int(n).bit_length()


def _b64int(value: object) -> int:
    """Return a JWK's base64url big-endian integer, 0 if it is unreadable."""
    if not isinstance(value, str):
        return 0
    try:
        return int.from_bytes(_b64decode(value), "big")
    except ValueError:
        return 0


def _b64decode(segment: str) -> bytes:
    """Decode unpadded base64url, raising ValueError on anything else."""
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as error:
        raise ValueError(str(error)) from None


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
