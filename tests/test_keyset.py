"""Key types and algorithms: each key verifies only what fits it."""

from __future__ import annotations

import base64
import json
import time
import typing

import pytest

from authz.keys import ALGORITHMS, KeySet
from authz.policy import Algorithm
from authz.reasons import DenyError, Reason
from authz.testing import LocalIssuer
from authz.tokens import Issuer, parse, verify

AUDIENCE = "svc.example"
ISSUER = "https://issuer.example"


def _b64json(value: object) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _keys_for_any_alg(signer: LocalIssuer) -> KeySet:
    """Publish the signer's key without `alg`, so only its type limits it."""
    jwk = {k: v for k, v in signer.public_jwk().items() if k != "alg"}
    return KeySet.from_jwks({"keys": [jwk]})


def _verify(token: str, keys: KeySet, *algorithms: str) -> str:
    """Verify `token` and return the service account, or the deny reason."""
    issuer = Issuer(ISSUER, algorithms, 30)
    try:
        identity = verify(parse(token), issuer, keys, [AUDIENCE], time.time())
    except DenyError as denied:
        return denied.reason.value
    return identity.service_account


@pytest.fixture(scope="module")
def signers() -> dict[str, LocalIssuer]:
    """One issuer key per supported algorithm."""
    return {alg: LocalIssuer(issuer=ISSUER, algorithm=alg) for alg in ALGORITHMS}


def test_policy_offers_exactly_the_supported_algorithms() -> None:
    """The policy accepts every algorithm a key set can verify, and no other."""
    assert set(typing.get_args(Algorithm)) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_supported_algorithm_verifies(
    signers: dict[str, LocalIssuer], algorithm: str
) -> None:
    """RS*, PS* and ES* tokens verify with their own key."""
    signer = signers[algorithm]
    token = signer.mint(service_account="caller", audience=AUDIENCE)

    assert _verify(token, KeySet.from_jwks(signer.jwks()), algorithm) == "caller"


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_refuses_a_tampered_payload(
    signers: dict[str, LocalIssuer], algorithm: str
) -> None:
    """A token whose payload was swapped under a valid signature is refused."""
    signer = signers[algorithm]
    genuine = signer.mint(service_account="caller", audience=AUDIENCE)
    other = signer.mint(service_account="admin", audience=AUDIENCE)
    head, _, signature = genuine.split(".")
    forged = ".".join((head, other.split(".")[1], signature))

    keys = KeySet.from_jwks(signer.jwks())
    assert _verify(forged, keys, algorithm) == Reason.SIGNATURE_INVALID


@pytest.mark.parametrize(
    ("signed_as", "claimed"),
    [("PS256", "RS256"), ("RS256", "PS256"), ("PS384", "PS256"), ("PS256", "PS512")],
)
def test_rsa_padding_or_hash_other_than_the_header_says(
    signed_as: str, claimed: str
) -> None:
    """An RSA signature made one way does not verify under another `alg`."""
    signer = LocalIssuer(issuer=ISSUER, algorithm=signed_as)
    _, payload, signature = signer.mint(audience=AUDIENCE).split(".")
    header = {"alg": claimed, "kid": signer.kid}
    forged = ".".join((_b64json(header), payload, signature))

    keys = _keys_for_any_alg(signer)
    assert _verify(forged, keys, signed_as, claimed) == Reason.SIGNATURE_INVALID


@pytest.mark.parametrize("salt", [0, 20, 64])
def test_pss_salt_other_than_the_hash_size(salt: int) -> None:
    """PS256 takes a 32-byte salt (RFC 7518, 3.5); any other length fails."""
    signer = LocalIssuer(issuer=ISSUER, algorithm="PS256")
    claims = signer.claims(audience=AUDIENCE)

    token = signer.sign_pss_with_salt(claims, salt)
    keys = KeySet.from_jwks(signer.jwks())
    assert _verify(token, keys, "PS256") == Reason.SIGNATURE_INVALID
    assert _verify(signer.sign_pss_with_salt(claims, 32), keys, "PS256") == "default"


@pytest.mark.parametrize(
    ("key_algorithm", "token_algorithm"),
    [("ES256", "PS256"), ("PS256", "ES256"), ("ES384", "ES256"), ("RS256", "ES512")],
)
def test_key_type_that_does_not_fit_the_algorithm(
    key_algorithm: str, token_algorithm: str
) -> None:
    """A token whose alg needs another key type or curve finds no verifier."""
    key = LocalIssuer(issuer=ISSUER, algorithm=key_algorithm)
    other = LocalIssuer(issuer=ISSUER, algorithm=token_algorithm, kid=key.kid)
    token = other.mint(audience=AUDIENCE)

    keys = _keys_for_any_alg(key)
    verdict = _verify(token, keys, key_algorithm, token_algorithm)
    assert verdict == Reason.KEY_ALGORITHM_MISMATCH


def test_jwk_alg_narrows_what_an_rsa_key_verifies() -> None:
    """An RSA key published for RS256 does not verify PS256, and back."""
    ps = LocalIssuer(issuer=ISSUER, algorithm="PS256")
    as_rs256 = {**ps.public_jwk(), "alg": "RS256"}

    keys = KeySet.from_jwks({"keys": [as_rs256]})
    token = ps.mint(audience=AUDIENCE)
    assert _verify(token, keys, "RS256", "PS256") == Reason.KEY_ALGORITHM_MISMATCH


def test_one_kid_on_several_keys_verifies_each_of_them() -> None:
    """A JWKS naming two keys alike loses neither; a stranger still fails."""
    first = LocalIssuer(issuer=ISSUER, kid="shared")
    second = LocalIssuer(issuer=ISSUER, kid="shared")
    ec = LocalIssuer(issuer=ISSUER, kid="shared", algorithm="ES256")
    stranger = LocalIssuer(issuer=ISSUER, kid="shared")
    keys = KeySet.from_jwks(
        {"keys": [first.public_jwk(), second.public_jwk(), ec.public_jwk()]}
    )

    for signer in (first, second, ec):
        token = signer.mint(service_account="caller", audience=AUDIENCE)
        assert _verify(token, keys, "RS256", "ES256") == "caller"
    token = stranger.mint(audience=AUDIENCE)
    assert _verify(token, keys, "RS256", "ES256") == Reason.SIGNATURE_INVALID
