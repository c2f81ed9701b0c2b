"""Security regressions: one test per attack, named after the attack.

Every token here is built from real keys: the trusted issuer's RSA key, an
attacker's own keys, or the trusted public key misused as an HMAC secret.
Each attack must end in a deny with its own reason, the HTTP status and gRPC
code of that reason, and no identity header on either side; the few inputs
that must still pass (a token within its leeway, a harmless header) say so.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk

import authz.decision
from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.decision import Decision, decide
from authz.keys import KeySet
from authz.policy import Policy, load
from authz.reasons import DenyError, GrpcCode, Reason
from authz.request import HttpRequest
from authz.testing import LocalIssuer
from authz.tokens import Issuer, parse, verify
from authz.transport import AuthorizationService, to_check_response

from conftest import ECHO, Check

IDENTITY_HEADERS = frozenset(
    {
        "x-auth-request-user",
        "x-auth-request-namespace",
        "x-auth-request-serviceaccount",
        "gap-auth",
    }
)
UPSTREAM_IDENTITY = IDENTITY_HEADERS - {"gap-auth"}


def _mixed_spellings(name: str) -> set[str]:
    """Every way of writing `name` with `-` or `_` at each separator."""
    spellings = {""}
    for char in name:
        options = "-_" if char in "-_" else char
        spellings = {done + option for done in spellings for option in options}
    return spellings - {name}


UNDERSCORED = {twin for name in UPSTREAM_IDENTITY for twin in _mixed_spellings(name)}
OIDC_TEST = "system:serviceaccount:default:oidc-test"
LEGACY_ISSUER = "kubernetes/serviceaccount"
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


# Building tokens by hand, byte for byte


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


Signer = Callable[[bytes], bytes]


def _compact(header: bytes, payload: bytes, sign: Signer | None = None) -> str:
    """Join raw header and payload JSON, signed by `sign` if given."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{_b64(signature)}"


def _rsa(issuer: LocalIssuer) -> Signer:
    """Return a signer with the issuer's private key, for any header we like."""
    key = jwk.construct(issuer.private_pem, issuer.algorithm)
    return lambda data: bytes(key.sign(data))


def _hmac(secret: bytes) -> Signer:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


_DROP = object()
"""A value for `_claims` and `_header` that removes the member instead."""


def _claims(issuer: LocalIssuer, **changes: Any) -> dict[str, Any]:
    """Return claims the echo-server route accepts, with `changes` applied."""
    claims = issuer.claims(service_account="oidc-test", audience=ECHO)
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not _DROP}


def _header(issuer: LocalIssuer, **changes: Any) -> dict[str, Any]:
    header = {"alg": issuer.algorithm, "kid": issuer.kid, **changes}
    return {k: v for k, v in header.items() if v is not _DROP}


def _token(issuer: LocalIssuer, header: Any = None, claims: Any = None) -> str:
    """Sign `header` (None: the usual one) and `claims` with the real key.

    Either may be raw JSON bytes, to send what json.dumps would never write.
    """
    raw_header = (
        header if isinstance(header, bytes) else _json(header or _header(issuer))
    )
    raw_claims = claims if isinstance(claims, bytes) else _json(claims)
    return _compact(raw_header, raw_claims, _rsa(issuer))


# What every deny must look like on the wire


def _assert_denied(
    decision: Decision,
    reason: Reason,
    status: int = 401,
    code: GrpcCode = GrpcCode.UNAUTHENTICATED,
) -> None:
    response = to_check_response(decision)

    got = (decision.reason, response.denied_response.status.code, response.status.code)
    assert got == (reason, status, code), f"got {decision.reason.value}"
    assert response.WhichOneof("http_response") == "denied_response"
    sent = {option.header.key for option in response.denied_response.headers}
    assert not sent & IDENTITY_HEADERS
    assert decision.upstream_headers == ()
    assert decision.downstream_headers == ()
    if reason is not Reason.SERVICE_ACCOUNT_NOT_ALLOWED:
        assert decision.identity is None


def _assert_allowed(decision: Decision, reason: Reason = Reason.ALLOWED) -> None:
    response = to_check_response(decision)

    got = (decision.reason, response.status.code)
    assert got == (reason, GrpcCode.OK), f"got {decision.reason.value}"
    assert response.WhichOneof("http_response") == "ok_response"


def _assert_bad_request(decision: Decision, reason: Reason) -> None:
    _assert_denied(decision, reason, 400, GrpcCode.INVALID_ARGUMENT)


# Tokens


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "nonE"])
def test_alg_none_in_any_capitalisation(
    check: Check, issuer: LocalIssuer, alg: str
) -> None:
    """An unsigned token is refused whatever the case of `none`."""
    token = _compact(_json(_header(issuer, alg=alg)), _json(_claims(issuer)))

    _assert_denied(check(token), Reason.ALGORITHM_NOT_ALLOWED)


def test_alg_none_signed_anyway(check: Check, issuer: LocalIssuer) -> None:
    """`none` with a real RS256 signature attached is still not RS256."""
    token = _token(issuer, _header(issuer, alg="none"), _claims(issuer))

    _assert_denied(check(token), Reason.ALGORITHM_NOT_ALLOWED)


def test_empty_signature(check: Check, issuer: LocalIssuer) -> None:
    """A valid token with its signature cut off is refused."""
    valid = _token(issuer, None, _claims(issuer))

    _assert_denied(check(valid.rsplit(".", 1)[0] + "."), Reason.SIGNATURE_INVALID)


@pytest.mark.parametrize("form", ["pem", "der"])
def test_hs256_signed_with_the_rsa_public_key(
    check: Check, issuer: LocalIssuer, policy: Policy, keyset: KeySet, form: str
) -> None:
    """The public key used as an HMAC secret forges nothing, PEM or DER."""
    secret = issuer.public_pem
    if form == "der":
        public = serialization.load_pem_public_key(issuer.public_pem)
        secret = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    header = _json(_header(issuer, alg="HS256"))
    token = _compact(header, _json(_claims(issuer)), _hmac(secret))

    _assert_denied(check(token), Reason.ALGORITHM_NOT_ALLOWED)
    # Even an issuer wrongly configured for HS256 would find no fitting key.
    lenient = Issuer(issuer.issuer, ("HS256", "RS256"), 30)
    with pytest.raises(DenyError) as denied:
        verify(parse(token), lenient, keyset, [ECHO], time.time())
    assert denied.value.reason is Reason.KEY_ALGORITHM_MISMATCH


def test_alg_that_does_not_fit_the_key_chosen_by_kid(
    check: Check, issuer: LocalIssuer
) -> None:
    """ES256, allowed for the issuer, on the kid of an RSA key is refused."""
    ec = LocalIssuer(issuer=issuer.issuer, algorithm="ES256", kid=issuer.kid)

    _assert_denied(check(ec.mint(audience=ECHO)), Reason.KEY_ALGORITHM_MISMATCH)


def test_ec_alg_of_another_curve_than_the_key(issuer: LocalIssuer) -> None:
    """An ES384 token on a P-256 key's kid finds no verifier."""
    p256 = LocalIssuer(issuer=issuer.issuer, algorithm="ES256")
    p384 = LocalIssuer(issuer=issuer.issuer, algorithm="ES384", kid=p256.kid)
    lenient = Issuer(issuer.issuer, ("ES256", "ES384"), 30)
    keys = KeySet.from_jwks(p256.jwks())

    with pytest.raises(DenyError) as denied:
        verify(parse(p384.mint(audience=ECHO)), lenient, keys, [ECHO], time.time())
    assert denied.value.reason is Reason.KEY_ALGORITHM_MISMATCH


@pytest.mark.parametrize(
    "crit",
    [["exp"], ["b64"], [], "b64", None],
    ids=["exp", "b64", "empty", "str", "null"],
)
def test_crit_header_naming_anything(
    check: Check, issuer: LocalIssuer, crit: object
) -> None:
    """We implement no JWS extension, so any `crit` is refused."""
    token = _token(issuer, _header(issuer, crit=crit, exp=1, b64=True), _claims(issuer))

    _assert_denied(check(token), Reason.CRITICAL_HEADER_UNSUPPORTED)


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
@pytest.mark.parametrize("kid", ["trusted", "attacker"])
def test_key_carried_in_the_token_is_ignored(
    check: Check, issuer: LocalIssuer, member: str, kid: str
) -> None:
    """A token signed by the attacker, naming the attacker's key, is refused."""
    attacker = LocalIssuer(
        issuer=issuer.issuer, kid=issuer.kid if kid == "trusted" else "attacker"
    )
    pointers: dict[str, Any] = {
        "jwk": attacker.public_jwk(),
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": [base64.b64encode(attacker.public_pem).decode()],
    }
    token = _token(
        attacker, _header(attacker, **{member: pointers[member]}), _claims(issuer)
    )

    expected = Reason.SIGNATURE_INVALID if kid == "trusted" else Reason.KEY_UNKNOWN
    _assert_denied(check(token), expected)


def test_key_url_in_a_trusted_token_is_never_fetched(
    check: Check, issuer: LocalIssuer
) -> None:
    """A jku on a genuine token changes nothing: our key decides, unfetched."""
    header = _header(issuer, jku="http://127.0.0.1:1/never", x5u="http://127.0.0.1:1/")

    _assert_allowed(check(_token(issuer, header, _claims(issuer))))


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "https://attacker.example/jwks.json",
        "file:///etc/passwd",
    ],
    ids=["relative-path", "absolute-path", "url", "file-url"],
)
def test_kid_that_is_a_path_or_a_url(
    check: Check, issuer: LocalIssuer, kid: str
) -> None:
    """A kid is only ever looked up in the issuer's key set."""
    token = _token(issuer, _header(issuer, kid=kid), _claims(issuer))

    _assert_denied(check(token), Reason.KEY_UNKNOWN)


@pytest.mark.parametrize(
    "kid",
    ["k" * 257, "k" * 5000, 1, 1.5, True, None, [], ["k"], {"k": 1}, "", _DROP],
    ids=[
        "long",
        "very-long",
        "int",
        "float",
        "bool",
        "null",
        "empty-list",
        "list",
        "object",
        "empty",
        "absent",
    ],
)
def test_kid_very_long_or_not_a_string(
    check: Check, issuer: LocalIssuer, kid: object
) -> None:
    """A kid that is not a short string makes the token malformed."""
    token = _token(issuer, _header(issuer, kid=kid), _claims(issuer))

    _assert_denied(check(token), Reason.TOKEN_MALFORMED)


@pytest.mark.parametrize(
    "kid", ["k\n", "k\r\nx-auth-request-user: admin", "k\x00", "k\u202e", "k é"]
)
def test_kid_with_control_or_non_ascii_characters(
    check: Check, issuer: LocalIssuer, kid: str
) -> None:
    """A kid is printable ASCII, so it can never break a log line or a lookup."""
    token = _token(issuer, _header(issuer, kid=kid), _claims(issuer))

    _assert_denied(check(token), Reason.TOKEN_MALFORMED)


def _duplicate_in(issuer: LocalIssuer, part: str) -> tuple[bytes, bytes]:
    header = _json(_header(issuer))
    claims = _json(_claims(issuer))
    if part == "header-alg":
        header = header[:-1] + b',"alg":"none"}'
    elif part == "header-escaped-name":
        header = header[:-1] + b',"\\u0061lg":"none"}'
    elif part == "payload-sub":
        claims = claims[:-1] + b',"sub":"system:serviceaccount:kube-system:admin"}'
    elif part == "payload-aud":
        claims = b'{"aud":"elsewhere",' + claims[1:]
    elif part == "payload-nested":
        nested = b'"kubernetes.io":{"namespace":"default","namespace":"ops",'
        claims = claims.replace(b'"kubernetes.io":{', nested, 1)
    return header, claims


@pytest.mark.parametrize(
    "part",
    [
        "header-alg",
        "header-escaped-name",
        "payload-sub",
        "payload-aud",
        "payload-nested",
    ],
)
def test_duplicate_member_names(check: Check, issuer: LocalIssuer, part: str) -> None:
    """JSON with a member named twice could be read two ways: refused."""
    header, claims = _duplicate_in(issuer, part)
    token = _compact(header, claims, _rsa(issuer))

    _assert_denied(check(token), Reason.TOKEN_MALFORMED)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "raw",
    [b'"4102444800"', b"true", b"false", b"null", b"1e999", b"-1e999", b"[1]", b"{}"],
    ids=["string", "true", "false", "null", "inf", "-inf", "list", "object"],
)
def test_time_claim_of_the_wrong_json_type(
    check: Check, issuer: LocalIssuer, claim: str, raw: bytes
) -> None:
    """exp, nbf and iat are finite numbers, nothing else."""
    claims = _json(_claims(issuer, **{claim: 0}))
    claims = claims.replace(f'"{claim}":0'.encode(), f'"{claim}":'.encode() + raw)

    _assert_denied(check(_token(issuer, None, claims)), Reason.CLAIMS_INVALID)


@pytest.mark.parametrize("constant", [b"Infinity", b"-Infinity", b"NaN"])
def test_time_claim_as_a_non_json_constant(
    check: Check, issuer: LocalIssuer, constant: bytes
) -> None:
    """Python's json reads Infinity and NaN; JSON has neither."""
    claims = _json(_claims(issuer, exp=0)).replace(b'"exp":0', b'"exp":' + constant)

    _assert_denied(check(_token(issuer, None, claims)), Reason.TOKEN_MALFORMED)


@pytest.mark.parametrize(
    ("past_leeway", "outcome"),
    [(-1, Reason.ALLOWED), (0, Reason.TOKEN_EXPIRED), (1, Reason.TOKEN_EXPIRED)],
    ids=["one-second-inside", "exactly-at-the-boundary", "one-second-past"],
)
def test_exp_at_the_leeway_boundary(
    check: Check, issuer: LocalIssuer, past_leeway: int, outcome: Reason
) -> None:
    """exp plus the 30 s leeway is the first instant the token is refused."""
    now = 1_900_000_000
    claims = _claims(issuer, iat=now - 600, nbf=now - 600, exp=now - 30 - past_leeway)
    decision = check(_token(issuer, None, claims), now=now)

    if outcome is Reason.ALLOWED:
        _assert_allowed(decision)
    else:
        _assert_denied(decision, outcome)


@pytest.mark.parametrize(
    ("ahead", "outcome"),
    [(30, Reason.ALLOWED), (31, Reason.TOKEN_NOT_YET_VALID)],
    ids=["within-leeway", "beyond-leeway"],
)
def test_nbf_in_the_future(
    check: Check, issuer: LocalIssuer, ahead: int, outcome: Reason
) -> None:
    """nbf up to the leeway ahead is clock skew; further is refused."""
    now = 1_900_000_000
    claims = _claims(issuer, iat=now, nbf=now + ahead, exp=now + 600)
    decision = check(_token(issuer, None, claims), now=now)

    if outcome is Reason.ALLOWED:
        _assert_allowed(decision)
    else:
        _assert_denied(decision, outcome)


def test_no_exp_at_all(check: Check, issuer: LocalIssuer) -> None:
    """A token that never expires is not a projected token: refused."""
    token = _token(issuer, None, _claims(issuer, exp=_DROP))

    _assert_denied(check(token), Reason.CLAIMS_INVALID)


def _legacy_claims(issuer: str) -> dict[str, Any]:
    """Return the claims of a pre-1.24 secret-based service-account token."""
    return {
        "iss": issuer,
        "kubernetes.io/serviceaccount/namespace": "default",
        "kubernetes.io/serviceaccount/secret.name": "oidc-test-token-x7k2p",
        "kubernetes.io/serviceaccount/service-account.name": "oidc-test",
        "kubernetes.io/serviceaccount/service-account.uid": "0f1e",
        "sub": OIDC_TEST,
    }


def _trusting(policy: Policy, issuer: str) -> Policy:
    """Return the test policy with `issuer` as its one trusted issuer."""
    trusted = policy.issuers[0].model_copy(update={"issuer": issuer})
    routes = tuple(r.model_copy(update={"issuers": None}) for r in policy.routes)
    return policy.model_copy(update={"issuers": (trusted,), "routes": routes})


@pytest.mark.parametrize(
    ("iss", "outcome"),
    [
        (LEGACY_ISSUER, Reason.ISSUER_UNKNOWN),
        ("https://kubernetes.default.svc.cluster.local", Reason.CLAIMS_INVALID),
    ],
    ids=["legacy-issuer", "projected-issuer"],
)
def test_legacy_secret_token_signed_with_the_trusted_key(
    check: Check, issuer: LocalIssuer, iss: str, outcome: Reason
) -> None:
    """A legacy token, no exp and no aud, is refused though the key is ours."""
    token = _token(issuer, None, _legacy_claims(iss))

    _assert_denied(check(token), outcome)


def test_legacy_secret_token_even_if_its_issuer_is_trusted(
    issuer: LocalIssuer, policy: Policy, keyset: KeySet
) -> None:
    """Trusting the legacy issuer name by mistake still lets no such token in."""
    trusting = _trusting(policy, LEGACY_ISSUER)
    token = _token(issuer, None, _legacy_claims(LEGACY_ISSUER))
    request = HttpRequest("GET", ECHO, "/", (("authorization", f"Bearer {token}"),))

    decision = decide(request, trusting, {LEGACY_ISSUER: keyset}.get, time.time())

    _assert_denied(decision, Reason.CLAIMS_INVALID)


_BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def _non_canonical(segment: str) -> str:
    """Return other text for the same bytes: set an unused low bit."""
    assert len(segment) % 4, "a segment without unused bits"
    last = _BASE64URL.index(segment[-1])
    return segment[:-1] + _BASE64URL[last | 1]


def _malformed(issuer: LocalIssuer, shape: str) -> str:
    """Return a real signed token, then bent into `shape`."""
    good = _token(issuer, None, _claims(issuer))
    head, body, signature = good.split(".")
    not_json = {
        "header-not-json": (b"alg=RS256", body),
        "header-json-array": (b"[1,2]", body),
        "payload-json-string": (None, b'"claims"'),
        "payload-bom": (None, b"\xef\xbb\xbf{}"),
        "payload-not-utf8": (None, b'{"sub":"\xff"}'),
    }
    if shape in not_json:
        raw_head, raw_body = not_json[shape]
        head = _b64(raw_head) if isinstance(raw_head, bytes) else head
        body = _b64(raw_body) if isinstance(raw_body, bytes) else body
        return f"{head}.{body}.{signature}"
    return {
        "one-part": head,
        "two-parts": f"{head}.{body}",
        "four-parts": f"{good}.{signature}",
        "jwe-five-parts": f"{head}.{body}.{body}.{body}.{signature}",
        "trailing-dot": f"{good}.",
        "leading-dot": f".{good}",
        "empty-header": f".{body}.{signature}",
        "empty-payload": f"{head}..{signature}",
        "padding": f"{head}{'=' * (-len(head) % 4 or 4)}.{body}.{signature}",
        "padded-signature": f"{good}==",
        "standard-alphabet": f"{head}.{body}.+/{signature[2:]}",
        "non-canonical-bits": f"{_non_canonical(head)}.{body}.{signature}",
        "impossible-length": f"AAAAA.{body}.{signature}",
    }[shape]


@pytest.mark.parametrize(
    "shape",
    [
        "one-part",
        "two-parts",
        "four-parts",
        "jwe-five-parts",
        "trailing-dot",
        "leading-dot",
        "empty-header",
        "empty-payload",
        "padded-signature",
        "standard-alphabet",
        "non-canonical-bits",
        "impossible-length",
        "header-not-json",
        "header-json-array",
        "payload-json-string",
        "payload-bom",
        "payload-not-utf8",
    ],
)
def test_malformed_compact_serialisation(
    check: Check, issuer: LocalIssuer, shape: str
) -> None:
    """Only three canonical base64url segments of JSON objects are read."""
    _assert_denied(check(_malformed(issuer, shape)), Reason.TOKEN_MALFORMED)


def test_padding_inside_the_token(check: Check, issuer: LocalIssuer) -> None:
    """`=` ends a b64token; one before a dot is not a Bearer value at all."""
    token = _malformed(issuer, "padding")

    _assert_denied(check(token), Reason.AUTHORIZATION_MALFORMED)


@pytest.mark.parametrize(
    "where", ["inside", "newline-inside", "tab-before", "after", "nbsp-inside"]
)
def test_whitespace_in_the_token(check: Check, issuer: LocalIssuer, where: str) -> None:
    """Whitespace in or around a token is not stripped and retried."""
    good = _token(issuer, None, _claims(issuer))
    head, rest = good.split(".", 1)
    value = {
        "inside": f"Bearer {head}. {rest}",
        "newline-inside": f"Bearer {head}.\n{rest}",
        "tab-before": f"Bearer\t{good}",
        "after": f"Bearer {good} ",
        "nbsp-inside": f"Bearer {head}.\u00a0{rest}",
    }[where]

    _assert_denied(check(authorization=value), Reason.AUTHORIZATION_MALFORMED)


def test_token_over_the_size_limit_is_refused_before_parsing(
    check: Check, issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A validly signed 9 KiB token never reaches the parser."""
    token = _token(issuer, None, _claims(issuer, pad="p" * 7000))
    assert len(token) > 8192

    def parse_spy(compact: str) -> None:
        raise AssertionError("the parser ran on an oversized token")

    monkeypatch.setattr(authz.decision, "parse", parse_spy)

    _assert_denied(check(token), Reason.TOKEN_TOO_LARGE)


def test_token_size_limit_is_configurable(
    issuer: LocalIssuer, policy: Policy, keyset: KeySet
) -> None:
    """A 3 KiB token passes by default and is refused under a 2 KiB limit."""
    token = _token(issuer, None, _claims(issuer, pad="p" * 1800))
    request = HttpRequest("GET", ECHO, "/", (("authorization", f"Bearer {token}"),))
    lookup = {issuer.issuer: keyset}.get
    small = policy.model_copy(update={"max_token_bytes": 2048})

    _assert_allowed(decide(request, policy, lookup, time.time()))
    _assert_denied(decide(request, small, lookup, time.time()), Reason.TOKEN_TOO_LARGE)


@pytest.mark.parametrize(
    "sub",
    [
        f"{OIDC_TEST}\n",
        f"{OIDC_TEST}\r\nx-auth-request-user: system:admin",
        f"{OIDC_TEST},system:serviceaccount:ops:admin",
        "system:serviceaccount:default:oidc-tést",
        "system:serviceaccount:défault:oidc-test",
        "system:serviceaccount:default:oidc\u2010test",
        "system:serviceaccount:default:OIDC-TEST",
        "system:serviceaccount:default:oidc-test:extra",
        "system:serviceaccount:default:oidc test",
        "system:serviceaccount::oidc-test",
        "system:serviceaccount:" + "n" * 64 + ":oidc-test",
    ],
    ids=[
        "newline",
        "header-injection",
        "comma",
        "non-ascii-name",
        "non-ascii-namespace",
        "unicode-hyphen",
        "uppercase",
        "extra-part",
        "space",
        "empty-namespace",
        "namespace-too-long",
    ],
)
def test_subject_that_would_break_an_identity_header(
    check: Check, issuer: LocalIssuer, sub: str
) -> None:
    """Only a well-formed service-account name ever becomes a header value."""
    namespace, _, name = sub.removeprefix("system:serviceaccount:").partition(":")
    nested = {"namespace": namespace, "serviceaccount": {"name": name, "uid": "u"}}
    token = _token(issuer, None, _claims(issuer, sub=sub, **{"kubernetes.io": nested}))

    _assert_denied(check(token), Reason.SUBJECT_INVALID)


@pytest.mark.parametrize(
    "nested",
    [
        {"namespace": "default,ops", "serviceaccount": {"name": "oidc-test"}},
        {"namespace": "default", "serviceaccount": {"name": "oidc-test\n"}},
        {"namespace": "default", "serviceaccount": "oidc-test"},
        {"namespace": ["default"], "serviceaccount": {"name": "oidc-test"}},
        "default/oidc-test",
    ],
    ids=["comma", "newline", "flat-account", "list-namespace", "string"],
)
def test_kubernetes_claims_disagreeing_with_sub(
    check: Check, issuer: LocalIssuer, nested: object
) -> None:
    """The kubernetes.io claims must name the very account sub names."""
    token = _token(issuer, None, _claims(issuer, **{"kubernetes.io": nested}))

    _assert_denied(check(token), Reason.SUBJECT_INVALID)


# Requests: where the token is read from


@pytest.mark.parametrize(
    "value",
    ["Bearer  {t}", "Bearer   {t}", " Bearer {t}", "Bearer\t{t}", "Bearer {t} "],
    ids=["two-spaces", "three-spaces", "space-before", "tab", "space-after"],
)
def test_authorization_with_extra_spaces(
    check: Check, issuer: LocalIssuer, value: str
) -> None:
    """Exactly one space separates the scheme from the token."""
    token = _token(issuer, None, _claims(issuer))

    _assert_denied(
        check(authorization=value.format(t=token)), Reason.AUTHORIZATION_MALFORMED
    )


def test_two_authorization_headers(check: Check, issuer: LocalIssuer) -> None:
    """Two Authorization headers are refused, not one of them picked."""
    good = _token(issuer, None, _claims(issuer))
    other = LocalIssuer(issuer=issuer.issuer).mint(audience=ECHO)
    headers = (
        ("authorization", f"Bearer {other}"),
        ("Authorization", f"Bearer {good}"),
    )

    _assert_denied(check(headers=headers), Reason.AUTHORIZATION_MALFORMED)


@pytest.mark.parametrize("separator", [",", ", ", " ,"])
def test_two_authorization_values_joined_by_envoy(
    check: Check, issuer: LocalIssuer, separator: str
) -> None:
    """Envoy joins repeated headers with a comma; that is refused too."""
    good = _token(issuer, None, _claims(issuer))
    joined = f"Bearer {good}{separator}Bearer {good}"

    _assert_denied(check(authorization=joined), Reason.AUTHORIZATION_MALFORMED)


@pytest.mark.parametrize(
    "value",
    ["Basic b2lkYy10ZXN0OnNlY3JldA==", "Digest username=x", "Token {t}", "JWT {t}"],
    ids=["basic", "digest", "token", "jwt"],
)
def test_other_authorization_schemes(
    check: Check, issuer: LocalIssuer, value: str
) -> None:
    """Only Bearer carries a token; a valid token under another scheme is not."""
    token = _token(issuer, None, _claims(issuer))

    _assert_denied(
        check(authorization=value.format(t=token)),
        Reason.AUTHORIZATION_SCHEME_UNSUPPORTED,
    )


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "bearer  ", "", " "])
def test_bearer_with_nothing_after_it(check: Check, value: str) -> None:
    """An Authorization header without a token is malformed, not missing."""
    _assert_denied(check(authorization=value), Reason.AUTHORIZATION_MALFORMED)


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/?access_token={t}", None),
        ("/?authorization=Bearer%20{t}", None),
        ("/", "x-access-token"),
        ("/", "x-forwarded-authorization"),
        ("/", "proxy-authorization"),
        ("/", "cookie"),
        ("/", "x-auth-request-access-token"),
    ],
    ids=[
        "query",
        "query-authorization",
        "x-access-token",
        "x-forwarded-authorization",
        "proxy-authorization",
        "cookie",
        "oauth2-proxy-header",
    ],
)
def test_token_in_a_query_parameter_or_another_header(
    check: Check, issuer: LocalIssuer, path: str, header: str | None
) -> None:
    """Only the Authorization header carries credentials."""
    token = _token(issuer, None, _claims(issuer))
    headers = ((header, f"Bearer {token}"),) if header else ()
    if header == "cookie":
        headers = (("cookie", f"access_token={token}"),)

    _assert_denied(
        check(path=path.format(t=token), headers=headers), Reason.TOKEN_MISSING
    )


@pytest.mark.parametrize(
    "name", ["AUTHORIZATION", "Authorization", "aUtHoRiZaTiOn"], ids=str.lower
)
def test_authorization_header_name_in_any_case(
    check: Check, issuer: LocalIssuer, name: str
) -> None:
    """Header names are case-insensitive; the token is found under any case."""
    token = _token(issuer, None, _claims(issuer))

    _assert_allowed(check(headers=((name, f"Bearer {token}"),)))


def test_two_authorization_headers_of_different_case(
    check: Check, issuer: LocalIssuer
) -> None:
    """Authorization and AUTHORIZATION are one header sent twice."""
    token = _token(issuer, None, _claims(issuer))
    headers = (("Authorization", f"Bearer {token}"), ("AUTHORIZATION", "Basic eA=="))

    _assert_denied(check(headers=headers), Reason.AUTHORIZATION_MALFORMED)


# Requests: which route a path lands on


@pytest.mark.parametrize(
    "path",
    [
        "/healthz/../admin",
        "/healthz/./../admin",
        "/healthz/%2e%2e/admin",
        "/healthz/%2E%2E/admin",
        "/healthz/.%2e/admin",
        "/healthz/%2e./admin/",
        "/healthz/x/../../admin",
        "/%68ealthz/../admin",
    ],
)
def test_dot_segments_cannot_carry_a_public_path_into_a_protected_route(
    check: Check, path: str
) -> None:
    """A path that resolves to /admin is judged by the admin route."""
    decision = check(path=path)

    _assert_denied(decision, Reason.TOKEN_MISSING)
    assert decision.route == "admin"


def _decide_under(
    tmp_path: Path,
    issuer: LocalIssuer,
    keyset: KeySet,
    path: str,
    method: str = "GET",
    *,
    policy: str,
) -> Decision:
    """Decide an unauthenticated request under a policy written for the test."""
    issuer.write_jwks(tmp_path / "jwks.json")
    (tmp_path / "policy.yaml").write_text(policy, encoding="utf-8")
    loaded = load(tmp_path / "policy.yaml")
    request = HttpRequest(method, ECHO, path)
    return decide(request, loaded, {issuer.issuer: keyset}.get, time.time())


_FALL_THROUGH = """\
issuers:
  - issuer: https://kubernetes.default.svc.cluster.local
    jwks_file: jwks.json
routes:
  - name: secrets
    paths: [/v1/secrets:reveal, "/users/@me", /files/a+b, "/it's", /a=b]
    audiences: [echo-server.echo-server.svc.cluster.local]
    service_accounts: [ops/*]
  - name: everything-else
    public: true
"""


@pytest.mark.parametrize(
    "path",
    [
        "/v1/secrets%3Areveal",
        "/v1/secrets%3areveal",
        "/users/%40me",
        "/files/a%2Bb",
        "/%69t%27s",
        "/a%3Db/x",
        "/v1/secrets%3Areveal/",
    ],
)
def test_encoded_path_characters_cannot_fall_through_to_a_public_route(
    tmp_path: Path, issuer: LocalIssuer, keyset: KeySet, path: str
) -> None:
    """`%3A` is `:` to an upstream, so it is `:` when routes are matched."""
    decision = _decide_under(tmp_path, issuer, keyset, path, policy=_FALL_THROUGH)

    _assert_denied(decision, Reason.TOKEN_MISSING)
    assert decision.route == "secrets"


_ADMIN_THEN_PUBLIC = """\
issuers:
  - issuer: https://kubernetes.default.svc.cluster.local
    jwks_file: jwks.json
routes:
  - name: admin
    paths: [/admin, /API/Users]
    methods: [GET, POST]
    audiences: [echo-server.echo-server.svc.cluster.local]
    service_accounts: [ops/*]
  - name: health
    paths: [/healthz]
    public: true
  - name: everything-else
    paths: [/]
    audiences: [echo-server.echo-server.svc.cluster.local]
    service_accounts: [default/*]
"""


@pytest.mark.parametrize(
    "path",
    [
        "/Admin",
        "/ADMIN/users",
        "/HEALTHZ",
        "/admin.",
        "/admin%20",
        "/admin.%20./x",
        "/ADMIN.",
        "/healthz%20",
        "/api/users",
        "/admin::$DATA",
        "/admin:%24DATA/x",
        "/ADMINI~1",
        "/admini~12.htm",
    ],
)
def test_paths_other_servers_read_as_another_route(
    tmp_path: Path, issuer: LocalIssuer, keyset: KeySet, path: str
) -> None:
    """Case-blind servers and Windows' dropped dots cannot change the route."""
    decision = _decide_under(tmp_path, issuer, keyset, path, policy=_ADMIN_THEN_PUBLIC)

    _assert_bad_request(decision, Reason.PATH_INVALID)


@pytest.mark.parametrize(
    ("path", "route"),
    [("/admin/x", "admin"), ("/API/Users/1", "admin"), ("/healthz", "health")],
)
def test_paths_read_alike_everywhere_are_judged_as_usual(
    tmp_path: Path, issuer: LocalIssuer, keyset: KeySet, path: str, route: str
) -> None:
    """Exact-case paths keep their route: only ambiguity is refused."""
    decision = _decide_under(tmp_path, issuer, keyset, path, policy=_ADMIN_THEN_PUBLIC)

    assert decision.route == route
    assert decision.reason in (Reason.TOKEN_MISSING, Reason.PUBLIC_ROUTE)


def test_head_is_judged_with_get(
    tmp_path: Path, issuer: LocalIssuer, keyset: KeySet
) -> None:
    """HEAD runs the GET handler upstream, so a GET route covers it."""
    decision = _decide_under(
        tmp_path, issuer, keyset, "/admin", "HEAD", policy=_ADMIN_THEN_PUBLIC
    )

    _assert_denied(decision, Reason.TOKEN_MISSING)
    assert decision.route == "admin"


@pytest.mark.parametrize(
    "path",
    [
        "/healthz?x=/admin",
        "/healthz?/../admin",
        "/healthz?%2e%2e/admin",
    ],
)
def test_query_is_not_part_of_the_path(check: Check, path: str) -> None:
    """The route is chosen without the query, whatever the query holds."""
    _assert_allowed(check(path=path), Reason.PUBLIC_ROUTE)


def test_query_cannot_hide_a_protected_path(check: Check) -> None:
    """/admin?/healthz is /admin."""
    decision = check(path="/admin?/healthz")

    _assert_denied(decision, Reason.TOKEN_MISSING)
    assert decision.route == "admin"


@pytest.mark.parametrize(
    "path",
    [
        "/healthz%2F..%2Fadmin",
        "/healthz%2f..%2fadmin",
        "/healthz/..%2Fadmin",
        "/healthz%5C..%5Cadmin",
        "/healthz%5c..%5cadmin",
        "/healthz\\..\\admin",
        "/admin%2Fusers",
    ],
)
def test_encoded_slash_or_backslash(check: Check, path: str) -> None:
    """An encoded slash or a backslash is read differently upstream: refused."""
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize("path", ["//admin", "///admin//users", "/healthz/..//admin"])
def test_double_slashes_merge_into_the_protected_route(check: Check, path: str) -> None:
    """Repeated slashes are merged before the route is chosen."""
    decision = check(path=path)

    _assert_denied(decision, Reason.TOKEN_MISSING)
    assert decision.route == "admin"


@pytest.mark.parametrize(
    "path",
    [
        "/admin//../healthz",
        "/admin//..",
        "/admin/x//../../healthz",
        "/healthz//../admin",
        "/healthz//..//admin",
    ],
)
def test_double_slash_before_dot_dot_is_ambiguous(check: Check, path: str) -> None:
    """A path whose meaning depends on when slashes are merged is refused.

    /admin//../healthz is /healthz with slashes merged first, but
    /admin/healthz when RFC 3986 dot removal runs on the raw path.
    """
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize("path", ["/..", "/healthz/../..", "/../admin", "/%2e%2e/x"])
def test_dot_segment_above_the_root(check: Check, path: str) -> None:
    """A path climbing above / has no meaning: refused."""
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


# Requests: identity headers and what Envoy hands over


@pytest.mark.parametrize(
    "name",
    ["x-auth-request-user", "X-Auth-Request-User", "X-AUTH-REQUEST-USER"],
    ids=["lower", "title", "upper"],
)
def test_client_identity_headers_on_a_public_route(check: Check, name: str) -> None:
    """A public allow tells Envoy to drop every identity header, any case."""
    decision = check(path="/healthz", headers=((name, OIDC_TEST),))
    response = to_check_response(decision)

    _assert_allowed(decision, Reason.PUBLIC_ROUTE)
    removed = set(response.ok_response.headers_to_remove)
    assert removed == UPSTREAM_IDENTITY | UNDERSCORED
    assert not response.ok_response.headers


@pytest.mark.parametrize(
    "name",
    ["x-auth-request-user", "X-Auth-Request-User", "X-AUTH-REQUEST-USER"],
    ids=["lower", "title", "upper"],
)
def test_client_identity_headers_on_an_allow(
    check: Check, issuer: LocalIssuer, name: str
) -> None:
    """A protected allow overwrites every identity header with verified values."""
    forged = ((name, "system:serviceaccount:ops:admin"),)
    decision = check(_token(issuer, None, _claims(issuer)), headers=forged)
    ok = to_check_response(decision).ok_response

    _assert_allowed(decision)
    assert {option.header.key for option in ok.headers} == UPSTREAM_IDENTITY
    assert all(option.append_action == OVERWRITE for option in ok.headers)
    assert set(ok.headers_to_remove) == UNDERSCORED
    assert {option.header.value for option in ok.headers} == {
        OIDC_TEST,
        "default",
        "oidc-test",
    }


class _Keys:
    """Hands the servicer one key set and never refetches."""

    def __init__(self, keyset: KeySet) -> None:
        self.keyset = keyset

    def lookup(self, issuer: str) -> KeySet | None:
        return self.keyset

    async def refetch_for(self, *args: object, **kwargs: object) -> bool:
        return False


def _serve(
    policy: Policy, keyset: KeySet, request: external_auth_pb2.CheckRequest
) -> tuple[external_auth_pb2.CheckResponse, Decision]:
    """Run one CheckRequest through the servicer, as Envoy would send it."""
    service = AuthorizationService(policy, _Keys(keyset))  # type: ignore[arg-type]
    response = asyncio.run(service.Check(request, None))  # type: ignore[arg-type]
    return response, Decision(Reason(response.status.message))


def _raw_request(
    raw: list[tuple[str, bytes]], plain: dict[str, str] | None = None
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", ECHO, "/"
    http.headers.update(plain or {})
    for key, value in raw:
        http.header_map.headers.add(key=key, raw_value=value)
    return request


def test_raw_header_map_is_read_like_the_plain_map(
    issuer: LocalIssuer, policy: Policy, keyset: KeySet
) -> None:
    """With encode_raw_headers, the token in header_map counts, once."""
    token = _token(issuer, None, _claims(issuer)).encode()

    response, decision = _serve(
        policy, keyset, _raw_request([("authorization", b"Bearer " + token)])
    )

    assert response.status.code == GrpcCode.OK
    assert decision.reason is Reason.ALLOWED


@pytest.mark.parametrize(
    "raw",
    [
        [("authorization", b"Bearer A"), ("Authorization", b"Bearer B")],
        [("authorization", b"Bearer \xff\xfe")],
    ],
    ids=["twice-in-raw-map", "not-utf8"],
)
def test_raw_header_map_cannot_smuggle_a_second_token(
    issuer: LocalIssuer, policy: Policy, keyset: KeySet, raw: list[tuple[str, bytes]]
) -> None:
    """Two raw Authorization values, or bytes that are not text, are refused."""
    token = _token(issuer, None, _claims(issuer)).encode()
    raw = [(k, v.replace(b"A", token, 1)) for k, v in raw]

    response, decision = _serve(policy, keyset, _raw_request(raw))

    _assert_denied(decision, Reason.AUTHORIZATION_MALFORMED)
    assert response.denied_response.status.code == 401


def test_token_in_both_the_plain_and_the_raw_map(
    issuer: LocalIssuer, policy: Policy, keyset: KeySet
) -> None:
    """A token in each map is two Authorization headers."""
    token = _token(issuer, None, _claims(issuer))
    request = _raw_request(
        [("authorization", f"Bearer {token}".encode())],
        {"authorization": f"Bearer {token}"},
    )

    _, decision = _serve(policy, keyset, request)

    _assert_denied(decision, Reason.AUTHORIZATION_MALFORMED)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (None, Reason.REQUEST_INVALID),
        ({"host": ""}, Reason.REQUEST_INVALID),
        ({"path": ""}, Reason.PATH_INVALID),
        ({"method": ""}, Reason.REQUEST_INVALID),
        ({"host": "", "path": "", "method": ""}, Reason.REQUEST_INVALID),
    ],
    ids=["no-http-attributes", "empty-host", "empty-path", "empty-method", "all-empty"],
)
def test_check_request_with_missing_http_attributes(
    issuer: LocalIssuer,
    policy: Policy,
    keyset: KeySet,
    fields: dict[str, str] | None,
    reason: Reason,
) -> None:
    """An incomplete CheckRequest is a 400 deny, never a crash."""
    request = external_auth_pb2.CheckRequest()
    if fields is not None:
        request = _raw_request([])
        http = request.attributes.request.http
        http.headers["authorization"] = (
            f"Bearer {_token(issuer, None, _claims(issuer))}"
        )
        for name, value in fields.items():
            setattr(http, name, value)

    response, decision = _serve(policy, keyset, request)

    _assert_bad_request(decision, reason)
    assert response.denied_response.status.code == 400


# Attacks beyond the issue's list


def test_kid_of_another_trusted_issuer(
    issuer: LocalIssuer, policy: Policy, keyset: KeySet
) -> None:
    """A token naming issuer A is never checked with a key of issuer B."""
    other = LocalIssuer(issuer="https://other-cluster.example")
    both = policy.issuers[0].model_copy(update={"issuer": other.issuer})
    trusting = policy.model_copy(update={"issuers": (*policy.issuers, both)})
    keys = {issuer.issuer: keyset, other.issuer: KeySet.from_jwks(other.jwks())}
    # Signed by B, with B's kid, but claiming to come from A.
    token = _token(other, None, _claims(issuer))
    request = HttpRequest("GET", ECHO, "/", (("authorization", f"Bearer {token}"),))

    _assert_denied(decide(request, trusting, keys.get, time.time()), Reason.KEY_UNKNOWN)


def test_ecdsa_signature_of_zeros(issuer: LocalIssuer) -> None:
    """r = s = 0 (CVE-2022-21449, "psychic signatures") verifies nothing."""
    ec = LocalIssuer(issuer=issuer.issuer, algorithm="ES256")
    header = _json(_header(ec))
    token = _compact(header, _json(_claims(ec)), lambda data: bytes(64))
    lenient = Issuer(issuer.issuer, ("ES256",), 30)

    with pytest.raises(DenyError) as denied:
        verify(parse(token), lenient, KeySet.from_jwks(ec.jwks()), [ECHO], time.time())
    assert denied.value.reason is Reason.SIGNATURE_INVALID


@pytest.mark.parametrize("depth", [1100, 2500])
def test_deeply_nested_json(check: Check, issuer: LocalIssuer, depth: int) -> None:
    """Nesting deep enough to exhaust Python's stack is malformed, not a crash."""
    nested = b"[" * depth + b"]" * depth
    claims = _json(_claims(issuer, deep=0)).replace(b'"deep":0', b'"deep":' + nested)
    token = _token(issuer, None, claims)

    _assert_denied(check(token), Reason.TOKEN_MALFORMED)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"1e400", Reason.CLAIMS_INVALID),
        (b"1" + b"0" * 400, Reason.CLAIMS_INVALID),
        (b"1" + b"0" * 5000, Reason.TOKEN_MALFORMED),
        (b"-1e400", Reason.CLAIMS_INVALID),
    ],
    ids=["float-overflow", "int-400-digits", "int-5000-digits", "negative-overflow"],
)
def test_very_large_number_in_exp(
    check: Check, issuer: LocalIssuer, raw: bytes, reason: Reason
) -> None:
    """An exp too large for a float is no expiry at all: refused."""
    claims = _json(_claims(issuer, exp=0)).replace(b'"exp":0', b'"exp":' + raw)

    _assert_denied(check(_token(issuer, None, claims)), reason)


@pytest.mark.parametrize(
    "aud",
    [[1], [None], [[ECHO]], [ECHO, 1], {ECHO: True}, 1, True, None],
    ids=["int", "null", "nested", "mixed", "object", "number", "bool", "null-aud"],
)
def test_audience_containing_non_strings(
    check: Check, issuer: LocalIssuer, aud: object
) -> None:
    """aud is a string or a list of strings; anything else is refused whole."""
    token = _token(issuer, None, _claims(issuer, aud=aud))

    _assert_denied(check(token), Reason.CLAIMS_INVALID)


@pytest.mark.parametrize("method", ["get", "Get", "gEt", "delete", "GET ", "G\u0130T"])
def test_http_method_not_in_canonical_case(
    check: Check, issuer: LocalIssuer, method: str
) -> None:
    """Methods are case-sensitive and upstreams disagree on "get": refused."""
    token = _token(issuer, None, _claims(issuer))

    _assert_bad_request(check(token, method=method), Reason.REQUEST_INVALID)


@pytest.mark.parametrize(
    "host",
    [
        "\u0435\u0441ho-server.echo-server.svc.cluster.local",
        "echo-server.echo-server.svc.cluster.local\u200b",
        "\uff45cho-server.echo-server.svc.cluster.local",
        "echo-server.echo-server.svc.cluster.locaI\u0307",
    ],
    ids=["cyrillic", "zero-width", "fullwidth", "combining"],
)
def test_unicode_or_homoglyph_host(
    check: Check, issuer: LocalIssuer, host: str
) -> None:
    """A host that only looks like a route's host is not read at all."""
    token = _token(issuer, None, _claims(issuer))

    _assert_bad_request(check(token, host=host), Reason.REQUEST_INVALID)


@pytest.mark.parametrize(
    "host",
    [
        f"user@{ECHO}",
        f"user:pass@{ECHO}",
        f"{ECHO}..",
        f"{ECHO}:\uff18\uff10",
        f"{ECHO}:80:80",
        f"{ECHO}%00",
        f"{ECHO};x",
        f"..{ECHO}",
        "echo-server..echo-server.svc.cluster.local",
        " " + ECHO,
    ],
    ids=[
        "userinfo",
        "userinfo-password",
        "two-trailing-dots",
        "fullwidth-port",
        "two-ports",
        "percent",
        "semicolon",
        "leading-dots",
        "empty-label",
        "space",
    ],
)
def test_host_with_userinfo_or_odd_syntax(
    check: Check, issuer: LocalIssuer, host: str
) -> None:
    """An authority that is not host[:port] is refused, not guessed at."""
    token = _token(issuer, None, _claims(issuer))

    _assert_bad_request(check(token, host=host), Reason.REQUEST_INVALID)


def test_host_with_one_trailing_dot(check: Check, issuer: LocalIssuer) -> None:
    """One trailing dot is the same fully qualified name."""
    _assert_allowed(check(_token(issuer, None, _claims(issuer)), host=f"{ECHO}."))


@pytest.mark.parametrize(
    "path",
    ["/admin%00", "/admin%00/x", "/healthz%00/../admin", "/admin%0A", "/admin%7f"],
    ids=["nul", "nul-segment", "nul-dots", "newline", "del"],
)
def test_encoded_control_character_in_path(
    check: Check, issuer: LocalIssuer, path: str
) -> None:
    """%00 or another control byte ends or splits a path upstream: refused."""
    token = _token(issuer, None, _claims(issuer))

    _assert_bad_request(check(token, path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize(
    "path",
    [
        "/healthz/%C0%AE%C0%AE/admin",
        "/healthz/%E0%80%AE%E0%80%AE/admin",
        "/healthz%C0%AF..%C0%AFadmin",
        "/healthz/%C0%2E%C0%2E/admin",
        "/healthz/%ED%A0%80/admin",
        "/healthz/%FF/admin",
    ],
    ids=["overlong-2", "overlong-3", "overlong-slash", "half", "surrogate", "ff"],
)
def test_overlong_or_invalid_utf8_in_path(check: Check, path: str) -> None:
    """Bytes that are not valid UTF-8 can decode to ../ upstream: refused."""
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize(
    "path",
    [
        "/healthz/%EF%BC%8E%EF%BC%8E/admin",
        "/healthz%EF%BC%8F..%EF%BC%8Fadmin",
        "/healthz/%E2%80%A5/admin",
        "/healthz%EF%BC%BC..%EF%BC%BCadmin",
    ],
    ids=["fullwidth-dots", "fullwidth-slash", "two-dot-leader", "fullwidth-backslash"],
)
def test_unicode_that_normalises_to_a_path_delimiter(check: Check, path: str) -> None:
    """Characters that NFKC turns into dots or slashes are refused."""
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize(
    "path",
    ["/%E2%84%AAey", "/adm%C4%B1n", "/%EF%BD%81dmin", "/%EF%AC%81le", "/stra%C3%9Fe"],
    ids=["kelvin-sign", "dotless-i", "fullwidth-a", "fi-ligature", "sharp-s"],
)
def test_unicode_that_other_servers_read_as_ascii(check: Check, path: str) -> None:
    """Case-blind Java reads the Kelvin sign as k; NFKC a fullwidth a as a."""
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize("path", ["/caf%C3%A9", "/%D0%BF%D1%83%D1%82%D1%8C"])
def test_unicode_without_an_ascii_reading_is_matched(check: Check, path: str) -> None:
    """Accented Latin and Cyrillic letters stay what they are."""
    _assert_denied(check(path=path), Reason.TOKEN_MISSING)


@pytest.mark.parametrize(
    "path",
    [
        "/healthz/..;/admin",
        "/healthz;/../admin",
        "/admin;x=1",
        "/healthz/.;/../admin",
        "/healthz/..%3Bx/admin",
        "/healthz/..%3b/admin",
    ],
)
def test_path_parameters(check: Check, issuer: LocalIssuer, path: str) -> None:
    """Path parameters are refused, raw or encoded.

    Tomcat cuts `;params` from segments, so /..;/ climbs there; servers that
    cut them after decoding climb on ..%3B the same way.
    """
    token = _token(issuer, None, _claims(issuer))

    _assert_bad_request(check(token, path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize("path", ["/healthz#/../admin", "/healthz#", "/admin#x"])
def test_fragment_in_path(check: Check, path: str) -> None:
    """A request target never carries a fragment; one that does is refused."""
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize(
    "path",
    [
        "/healthz/%252e%252e/admin",
        "/healthz%252F..%252Fadmin",
        "/healthz%255C..%255Cx",
        "/healthz/%25%32%65%25%32%65/admin",
        "/healthz/%25%32e/admin",
        "/healthz/%25u002e%25u002e/admin",
        "/healthz/%25%75002e/admin",
    ],
    ids=[
        "dots",
        "slash",
        "backslash",
        "escaped-digits",
        "half-escaped",
        "u-form",
        "escaped-u",
    ],
)
def test_double_encoded_path(check: Check, path: str) -> None:
    """%25 followed by an escape is decoded twice by some upstreams: refused."""
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


@pytest.mark.parametrize(
    "path", ["*", "admin", "http://evil.example/admin", "%2Fadmin", ""]
)
def test_path_that_is_not_origin_form(check: Check, path: str) -> None:
    """Only an absolute path is matched; asterisk or absolute form is refused."""
    _assert_bad_request(check(path=path), Reason.PATH_INVALID)


def test_rsa_key_shorter_than_2048_bits_in_the_jwks(
    check: Check, issuer: LocalIssuer
) -> None:
    """A factorable key published by mistake verifies nothing."""
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = LocalIssuer(
        issuer=issuer.issuer,
        _private_pem=weak_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    keys = KeySet.from_jwks({"keys": [weak.public_jwk(), issuer.public_jwk()]})

    assert keys.kids == {issuer.kid}
    _assert_denied(
        check(_token(weak, None, _claims(issuer)), keys=lambda name: keys),
        Reason.KEY_UNKNOWN,
    )


@pytest.mark.parametrize(
    "shape", ["genuine", "wrong-audience", "unsigned", "duplicate-alg", "too-large"]
)
def test_token_leaking_into_a_repr_or_a_denial(
    check: Check, issuer: LocalIssuer, shape: str
) -> None:
    """No token text reaches a decision, a deny body, or a repr in a traceback."""
    token = {
        "genuine": _token(issuer, None, _claims(issuer)),
        "wrong-audience": _token(issuer, None, _claims(issuer, aud="other")),
        "unsigned": _compact(_json(_header(issuer, alg="none")), _json({})),
        "duplicate-alg": _compact(*_duplicate_in(issuer, "header-alg"), _rsa(issuer)),
        "too-large": _token(issuer, None, _claims(issuer, pad="p" * 7000)),
    }[shape]
    request = HttpRequest("GET", ECHO, "/", (("authorization", f"Bearer {token}"),))
    decision = check(token)
    response = to_check_response(decision)

    texts = [repr(decision), decision.detail, str(response), repr(request)]
    if shape == "genuine":
        texts.append(repr(parse(token)))
    for text in texts:
        for secret in (token, *token.split(".")):
            assert not secret or secret not in text
