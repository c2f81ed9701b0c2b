"""A local token issuer, for the demo and the tests.

`LocalIssuer` holds a freshly made signing key, publishes its JWKS and mints
tokens shaped like the projected service-account tokens a kubelet mounts.
It is not used when serving.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jose import jwk, jws

from authz.keys import PSS_HASHES

__all__ = ["CLUSTER_ISSUER", "LocalIssuer"]

CLUSTER_ISSUER = "https://kubernetes.default.svc.cluster.local"

_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}


@dataclass
class LocalIssuer:
    """A signing key pair for one issuer name, with token minting."""

    issuer: str = CLUSTER_ISSUER
    algorithm: str = "RS256"
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _private_pem: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not self._private_pem:
            self._private_pem = _new_private_key(self.algorithm)

    @property
    def private_pem(self) -> bytes:
        """Return the private key in PEM form."""
        return self._private_pem

    @property
    def public_pem(self) -> bytes:
        """Return the public key in PEM (SubjectPublicKeyInfo) form."""
        key = serialization.load_pem_private_key(self._private_pem, password=None)
        return key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )

    def public_jwk(self) -> dict[str, Any]:
        """Return the public key as a JWK with this issuer's kid."""
        document: dict[str, Any] = jwk.construct(
            self.public_pem, _jose_family(self.algorithm)
        ).to_dict()
        document.update(kid=self.kid, use="sig", alg=self.algorithm)
        return document

    def jwks(self) -> dict[str, Any]:
        """Return the JWKS document that publishes the public key."""
        return {"keys": [self.public_jwk()]}

    def write_jwks(self, path: Path) -> Path:
        """Write the JWKS document to `path` and return it."""
        path.write_text(json.dumps(self.jwks()), encoding="utf-8")
        return path

    def claims(
        self,
        namespace: str = "default",
        service_account: str = "default",
        audience: str | list[str] = "",
        lifetime: int = 600,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Return the claims of a projected service-account token."""
        issued = int(time.time() if now is None else now)
        return {
            "aud": audience if isinstance(audience, list) else [audience],
            "exp": issued + lifetime,
            "iat": issued,
            "iss": self.issuer,
            "nbf": issued,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": f"{service_account}-pod", "uid": str(uuid.uuid4())},
                "serviceaccount": {
                    "name": service_account,
                    "uid": str(uuid.uuid4()),
                },
            },
        }

    def mint(self, **claims_args: Any) -> str:
        """Return a signed token for `claims(**claims_args)`."""
        return self.sign(self.claims(**claims_args))

    def sign(
        self, claims: dict[str, Any], headers: dict[str, Any] | None = None
    ) -> str:
        """Sign arbitrary claims with this issuer's key and kid."""
        extra = {"kid": self.kid, **(headers or {})}
        if self.algorithm.startswith("PS"):
            return self._sign_pss(claims, extra)
        token: str = jws.sign(
            claims, self._private_pem, headers=extra, algorithm=self.algorithm
        )
        return token

    def _sign_pss(
        self, claims: dict[str, Any], headers: dict[str, Any], salt: int | None = None
    ) -> str:
        """Sign with RSASSA-PSS, which python-jose cannot do."""
        header = {"alg": self.algorithm, "typ": "JWT", **headers}
        signing_input = f"{_b64json(header)}.{_b64json(claims)}"
        digest = PSS_HASHES[self.algorithm]()
        key = serialization.load_pem_private_key(self._private_pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        pss = padding.PSS(
            mgf=padding.MGF1(digest),
            salt_length=digest.digest_size if salt is None else salt,
        )
        signature = key.sign(signing_input.encode("ascii"), pss, digest)
        return f"{signing_input}.{_b64(signature)}"

    def sign_pss_with_salt(self, claims: dict[str, Any], salt: int) -> str:
        """Sign with PSS and a salt length other than RFC 7518's, for tests."""
        return self._sign_pss(claims, {"kid": self.kid}, salt)


def _jose_family(algorithm: str) -> str:
    """Return an algorithm python-jose knows for the same key type."""
    return "RS" + algorithm[2:] if algorithm.startswith("PS") else algorithm


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64json(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _new_private_key(algorithm: str) -> bytes:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm.startswith("ES"):
        key = ec.generate_private_key(_CURVES[algorithm])
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
