"""A handful of the attacks in tests/test_attacks.py, through a real Envoy.

Each request goes through Envoy's listener exactly as written, so Envoy's
own path normalisation, header handling and request validation run before
our server is asked. What must hold: a forged token or a traversal never
reaches the upstream, forged identity headers never reach it, and whenever
a request does get through, the path our server judged is the very path the
upstream received.
"""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from authz.demo.scenarios import ECHO_HOST, subject
from authz.demo.stack import LOOPBACK, Stack
from authz.request import normalize_path
from authz.testing import LocalIssuer

from .conftest import REQUEST_SECONDS

OIDC_TEST = subject("default", "oidc-test")
IDENTITY_HEADERS = (
    "x-auth-request-user",
    "x-auth-request-namespace",
    "x-auth-request-serviceaccount",
)


@dataclass(frozen=True)
class Exchange:
    """One raw request through Envoy and what came of it."""

    status: int
    body: Any
    request_id: str

    @property
    def upstream(self) -> dict[str, Any] | None:
        """Return what the echo upstream received, or None if it was not hit."""
        if isinstance(self.body, dict) and "headers" in self.body:
            return self.body
        return None


def _send(
    stack: Stack,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    method: str = "GET",
) -> Exchange:
    """Send `target` byte for byte, with repeated headers kept as sent."""
    request_id = f"attack-{uuid.uuid4().hex[:12]}"
    connection = http.client.HTTPConnection(
        LOOPBACK, stack.ports.listener, timeout=REQUEST_SECONDS
    )
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in [
            ("host", ECHO_HOST),
            ("x-request-id", request_id),
            *headers,
        ]:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return Exchange(response.status, body, request_id)


def _assert_stopped(stack: Stack, sent: Exchange, status: int, reason: str) -> None:
    """The request was denied with `reason` and never reached the upstream."""
    assert sent.status == status
    assert sent.upstream is None
    assert sent.body == {"status": status, "reason": reason}
    assert stack.decision(sent.request_id)["reason"] == reason
    assert sent.request_id not in stack.upstream_request_ids()


def _b64(value: object) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(issuer: LocalIssuer) -> dict[str, Any]:
    return issuer.claims(service_account="oidc-test", audience=ECHO_HOST)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_through_envoy(issuer: LocalIssuer, stack: Stack, alg: str) -> None:
    """An unsigned token for the allowed account is refused, any case of none."""
    token = f"{_b64({'alg': alg, 'kid': issuer.kid})}.{_b64(_claims(issuer))}."

    sent = _send(stack, "/", [("authorization", f"Bearer {token}")])

    _assert_stopped(stack, sent, 401, "algorithm_not_allowed")


def test_stripped_signature_through_envoy(issuer: LocalIssuer, stack: Stack) -> None:
    """A genuine token with its signature cut off is refused."""
    token = issuer.sign(_claims(issuer)).rsplit(".", 1)[0] + "."

    sent = _send(stack, "/", [("authorization", f"Bearer {token}")])

    _assert_stopped(stack, sent, 401, "signature_invalid")


def _forged_identity() -> list[tuple[str, str]]:
    """Identity headers in three cases, the user one sent twice."""
    return [
        ("x-auth-request-user", "system:serviceaccount:kube-system:admin"),
        ("X-Auth-Request-User", "system:admin"),
        ("X-AUTH-REQUEST-NAMESPACE", "kube-system"),
        ("X-Auth-Request-ServiceAccount", "admin"),
    ]


def test_forged_identity_headers_on_an_allowed_request(
    issuer: LocalIssuer, stack: Stack
) -> None:
    """The upstream sees one verified value per identity header, never a forged one."""
    token = issuer.sign(_claims(issuer))
    headers = [("authorization", f"Bearer {token}"), *_forged_identity()]

    sent = _send(stack, "/", headers)

    assert sent.status == 200
    assert sent.upstream is not None
    received = sent.upstream["headers"]
    assert received["x-auth-request-user"] == [OIDC_TEST]
    assert received["x-auth-request-namespace"] == ["default"]
    assert received["x-auth-request-serviceaccount"] == ["oidc-test"]


def test_forged_identity_headers_on_the_public_route(stack: Stack) -> None:
    """No identity header reaches the upstream of a public route, in any case."""
    sent = _send(stack, "/healthz", _forged_identity())

    assert sent.status == 200
    assert sent.upstream is not None
    assert not set(IDENTITY_HEADERS) & set(sent.upstream["headers"])
    assert stack.decision(sent.request_id)["reason"] == "public_route"


def test_forged_identity_headers_on_a_denied_request(stack: Stack) -> None:
    """A forged identity with no token is a plain 401."""
    sent = _send(stack, "/", _forged_identity())

    _assert_stopped(stack, sent, 401, "token_missing")


@pytest.mark.parametrize(
    "target",
    [
        "/healthz/../private",
        "/healthz/%2e%2e/private",
        "/healthz/%2E%2E/private",
        "/healthz/.%2e/private",
        "/healthz/./../private",
        "/healthz/..;/private",
        "/healthz\\..\\private",
        "/private//../healthz",
    ],
)
def test_dot_segment_traversal_through_envoy(stack: Stack, target: str) -> None:
    """A path that climbs out of /healthz is judged where it lands: 401."""
    sent = _send(stack, target)

    _assert_stopped(stack, sent, 401, "token_missing")
    assert not stack.decision(sent.request_id)["path"].startswith("/healthz/")


@pytest.mark.parametrize(
    "target",
    [
        "/healthz/%C0%AE%C0%AE/private",
        "/healthz/%252e%252e/private",
        "/healthz/%EF%BC%8E%EF%BC%8E/private",
        "/healthz/..%3Bx/private",
    ],
    ids=["overlong-utf8", "double-encoded", "fullwidth-dots", "encoded-semicolon"],
)
def test_traversal_envoy_passes_and_we_refuse(stack: Stack, target: str) -> None:
    """Escapes Envoy leaves alone but some upstreams decode to ../ are refused."""
    _assert_stopped(stack, _send(stack, target), 400, "path_invalid")


@pytest.mark.parametrize(
    "target",
    ["/healthz%2F..%2Fprivate", "/healthz%5C..%5Cprivate", "/healthz%00/../private"],
    ids=["encoded-slash", "encoded-backslash", "nul"],
)
def test_traversal_envoy_refuses_itself(stack: Stack, target: str) -> None:
    """Envoy answers 400 before asking us; the upstream never sees it."""
    sent = _send(stack, target)

    assert sent.status == 400
    assert sent.upstream is None
    assert sent.request_id not in stack.upstream_request_ids()


@pytest.mark.parametrize(
    "target",
    [
        "/healthz//../private",
        "//healthz",
        "/%68ealthz",
        "/healthz/./x",
        "/healthz?/../x",
    ],
)
def test_upstream_gets_the_path_we_judged(stack: Stack, target: str) -> None:
    """When a traversal-shaped request passes, the upstream got our path."""
    sent = _send(stack, target)

    assert sent.status == 200
    assert sent.upstream is not None
    judged = stack.decision(sent.request_id)
    assert judged["reason"] == "public_route"
    served = sent.upstream["path"].split("?", 1)[0]
    assert normalize_path(judged["path"]) == normalize_path(served) == served


@pytest.mark.parametrize("method", ["get", "Get", "gEt"])
def test_lowercase_method_through_envoy(
    issuer: LocalIssuer, stack: Stack, method: str
) -> None:
    """Envoy refuses a lowercase method outright; we would refuse it too."""
    token = issuer.sign(_claims(issuer))

    sent = _send(stack, "/", [("authorization", f"Bearer {token}")], method=method)

    assert sent.status == 400
    assert sent.upstream is None
    assert sent.request_id not in stack.upstream_request_ids()


def test_two_authorization_headers_through_envoy(
    issuer: LocalIssuer, stack: Stack
) -> None:
    """Envoy joins two Authorization headers with a comma; we refuse the pair."""
    good = issuer.sign(_claims(issuer))
    headers = [("authorization", f"Bearer {good}"), ("Authorization", "Bearer x.y.z")]

    _assert_stopped(stack, _send(stack, "/", headers), 401, "authorization_malformed")
