"""Every reason code: one real case each, its statuses, and no identity leak.

`CASES` must name every `Reason`; a reason added without a case, or without
a row in `OUTCOMES`, fails here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable

import pytest

from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from authz.decision import Decision
from authz.policy import Policy
from authz.reasons import OUTCOMES, GrpcCode, Reason
from authz.testing import LocalIssuer
from authz.transport import AuthorizationService

from conftest import ECHO, OTHER_CLUSTER, Check


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _same_kid(issuer: LocalIssuer, **kwargs: str) -> LocalIssuer:
    return LocalIssuer(issuer=issuer.issuer, kid=issuer.kid, **kwargs)


def _internal_error(check: Check, issuer: LocalIssuer, policy: Policy) -> Decision:
    """Drive the servicer with a key store that fails, as a bug would."""

    class BrokenKeys:
        def lookup(self, name: str) -> None:
            raise RuntimeError("key store bug")

    service = AuthorizationService(policy, BrokenKeys())  # type: ignore[arg-type]
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="GET",
        host=ECHO,
        path="/",
        headers={"authorization": f"Bearer {issuer.mint(audience=ECHO)}"},
    )
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.CopyFrom(http)
    response = asyncio.run(service.Check(request, None))  # type: ignore[arg-type]
    assert response.status.code == GrpcCode.INTERNAL
    assert response.denied_response.status.code == 500
    return Decision(Reason(response.status.message))


Case = Callable[[Check, LocalIssuer, Policy], Decision]


def _now() -> int:
    """The time a case runs, not the time the module was imported."""
    return int(time.time())


CASES: dict[Reason, Case] = {
    Reason.ALLOWED: lambda c, i, p: c(
        i.mint(service_account="oidc-test", audience=ECHO)
    ),
    Reason.PUBLIC_ROUTE: lambda c, i, p: c(path="/healthz"),
    Reason.REQUEST_INVALID: lambda c, i, p: c(host=""),
    Reason.PATH_INVALID: lambda c, i, p: c(path="/healthz/..%2Fadmin"),
    Reason.TOKEN_MISSING: lambda c, i, p: c(),
    Reason.AUTHORIZATION_SCHEME_UNSUPPORTED: lambda c, i, p: c(
        authorization="Basic dXNlcjpwYXNz"
    ),
    Reason.AUTHORIZATION_MALFORMED: lambda c, i, p: c(authorization="Bearer "),
    Reason.TOKEN_TOO_LARGE: lambda c, i, p: c("a" * 9000),
    Reason.TOKEN_MALFORMED: lambda c, i, p: c("abc.def"),
    Reason.CRITICAL_HEADER_UNSUPPORTED: lambda c, i, p: c(
        i.sign(i.claims(audience=ECHO), headers={"crit": ["exp"], "exp": 1})
    ),
    Reason.ALGORITHM_NOT_ALLOWED: lambda c, i, p: c(
        _b64({"alg": "none", "kid": i.kid}) + "." + _b64(i.claims(audience=ECHO)) + "."
    ),
    Reason.ISSUER_UNKNOWN: lambda c, i, p: c(
        LocalIssuer(issuer="https://elsewhere.example").mint(audience=ECHO)
    ),
    Reason.ISSUER_NOT_ALLOWED: lambda c, i, p: c(
        LocalIssuer(issuer=OTHER_CLUSTER).mint(
            service_account="oidc-test", audience=ECHO
        )
    ),
    Reason.KEY_UNKNOWN: lambda c, i, p: c(
        LocalIssuer(issuer=i.issuer).mint(audience=ECHO)
    ),
    Reason.KEY_ALGORITHM_MISMATCH: lambda c, i, p: c(
        _same_kid(i, algorithm="ES256").mint(audience=ECHO)
    ),
    Reason.SIGNATURE_INVALID: lambda c, i, p: c(_same_kid(i).mint(audience=ECHO)),
    Reason.CLAIMS_INVALID: lambda c, i, p: c(
        i.sign({**i.claims(audience=ECHO), "exp": str(_now() + 600)})
    ),
    Reason.TOKEN_EXPIRED: lambda c, i, p: c(i.mint(audience=ECHO, lifetime=-31)),
    Reason.TOKEN_NOT_YET_VALID: lambda c, i, p: c(
        i.sign({**i.claims(audience=ECHO), "nbf": _now() + 120})
    ),
    Reason.TOKEN_ISSUED_IN_FUTURE: lambda c, i, p: c(
        i.sign({**i.claims(audience=ECHO), "iat": _now() + 120})
    ),
    Reason.AUDIENCE_MISMATCH: lambda c, i, p: c(i.mint(audience="invalid")),
    Reason.SUBJECT_INVALID: lambda c, i, p: c(
        i.sign({**i.claims(audience=ECHO), "sub": "alice"})
    ),
    Reason.NO_ROUTE: lambda c, i, p: c(host="other.example"),
    Reason.SERVICE_ACCOUNT_NOT_ALLOWED: lambda c, i, p: c(
        i.mint(service_account="default", audience=ECHO)
    ),
    Reason.KEYS_UNAVAILABLE: lambda c, i, p: c(
        i.mint(audience=ECHO), keys=lambda name: None
    ),
    Reason.INTERNAL_ERROR: _internal_error,
}

EXPECTED = {
    Reason.ALLOWED: (GrpcCode.OK, 200),
    Reason.PUBLIC_ROUTE: (GrpcCode.OK, 200),
    Reason.REQUEST_INVALID: (GrpcCode.INVALID_ARGUMENT, 400),
    Reason.PATH_INVALID: (GrpcCode.INVALID_ARGUMENT, 400),
    Reason.NO_ROUTE: (GrpcCode.PERMISSION_DENIED, 403),
    Reason.SERVICE_ACCOUNT_NOT_ALLOWED: (GrpcCode.PERMISSION_DENIED, 403),
    Reason.KEYS_UNAVAILABLE: (GrpcCode.UNAVAILABLE, 503),
    Reason.INTERNAL_ERROR: (GrpcCode.INTERNAL, 500),
}


def test_every_reason_has_an_outcome_and_a_case() -> None:
    """A reason without a status mapping or a test case fails here."""
    assert set(OUTCOMES) == set(Reason)
    assert set(CASES) == set(Reason)


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_reason_case(
    reason: Reason, check: Check, issuer: LocalIssuer, policy: Policy
) -> None:
    """Each case ends with its reason, statuses, and headers only on allow."""
    decision = CASES[reason](check, issuer, policy)

    assert decision.reason is reason
    grpc_code, http_status = EXPECTED.get(reason, (GrpcCode.UNAUTHENTICATED, 401))
    assert decision.outcome.grpc_code is grpc_code
    assert decision.outcome.http_status == http_status
    if reason is not Reason.ALLOWED:
        assert decision.upstream_headers == ()
        assert decision.downstream_headers == ()
    if not decision.allowed and reason is not Reason.SERVICE_ACCOUNT_NOT_ALLOWED:
        assert decision.identity is None
