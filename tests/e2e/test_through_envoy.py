"""Requests through the real Envoy: who gets in, and what the upstream sees."""

from __future__ import annotations

import http.client

import pytest

from authz.demo.scenarios import ECHO_HOST, SCENARIOS, Scenario, subject
from authz.demo.stack import LOOPBACK, Stack
from authz.testing import LocalIssuer

from .conftest import REQUEST_SECONDS, Send

IDENTITY_HEADERS = (
    "x-auth-request-user",
    "x-auth-request-namespace",
    "x-auth-request-serviceaccount",
)
OIDC_TEST = subject("default", "oidc-test")


@pytest.fixture
def good_token(issuer: LocalIssuer) -> str:
    """Return a token the echo-server route accepts."""
    return SCENARIOS[0].mint(issuer)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_demo_scenario(
    scenario: Scenario, issuer: LocalIssuer, stack: Stack, send: Send
) -> None:
    """Each demo caller gets its status, and the decision line says why."""
    sent = send(scenario.mint(issuer))

    assert sent.response.status_code == scenario.expected_status
    decision = stack.decision(sent.request_id)
    assert decision["reason"] == scenario.expected_reason
    assert decision["decision"] == (
        "allow" if scenario.expected_status == 200 else "deny"
    )
    assert decision["host"] == ECHO_HOST


def test_allowed_caller_identity_reaches_upstream_and_caller(
    good_token: str, send: Send
) -> None:
    """The upstream gets the identity headers; the caller gets gap-auth."""
    sent = send(good_token)

    assert sent.upstream is not None
    assert sent.upstream["x-auth-request-user"] == [OIDC_TEST]
    assert sent.upstream["x-auth-request-namespace"] == ["default"]
    assert sent.upstream["x-auth-request-serviceaccount"] == ["oidc-test"]
    assert sent.response.headers["gap-auth"] == OIDC_TEST


@pytest.mark.parametrize("scenario", SCENARIOS[1:], ids=lambda s: s.name)
def test_denied_caller_gets_json_reason(
    scenario: Scenario, issuer: LocalIssuer, stack: Stack, send: Send
) -> None:
    """A denied request never reaches the upstream; the body names the reason."""
    sent = send(scenario.mint(issuer))

    assert sent.upstream is None
    assert sent.request_id not in stack.upstream_request_ids()
    assert sent.response.json() == {
        "status": scenario.expected_status,
        "reason": scenario.expected_reason,
    }
    assert "gap-auth" not in sent.response.headers


def test_missing_token_gets_bearer_challenge(send: Send) -> None:
    """No Authorization header: 401 with a bare Bearer challenge."""
    sent = send()

    assert sent.response.status_code == 401
    assert sent.response.headers["www-authenticate"] == "Bearer"
    assert sent.response.json()["reason"] == "token_missing"
    assert sent.upstream is None


def test_client_identity_headers_are_overwritten(good_token: str, send: Send) -> None:
    """A caller's own x-auth-request-* values never reach the upstream."""
    forged = dict.fromkeys(IDENTITY_HEADERS, "evil")
    sent = send(good_token, headers=forged)

    assert sent.response.status_code == 200
    assert sent.upstream is not None
    assert sent.upstream["x-auth-request-user"] == [OIDC_TEST]
    assert sent.upstream["x-auth-request-namespace"] == ["default"]
    assert sent.upstream["x-auth-request-serviceaccount"] == ["oidc-test"]


def test_public_route_strips_client_identity_headers(send: Send) -> None:
    """On /healthz no identity header reaches the upstream, forged or not."""
    sent = send(path="/healthz", headers=dict.fromkeys(IDENTITY_HEADERS, "evil"))

    assert sent.response.status_code == 200
    assert sent.upstream is not None
    assert not set(IDENTITY_HEADERS) & set(sent.upstream)


def test_underscore_identity_header_is_dropped(good_token: str, send: Send) -> None:
    """x_auth_request_user, read as the dashed name by many apps, is dropped."""
    sent = send(good_token, headers={"x_auth_request_user": "evil"})

    assert sent.response.status_code == 200
    assert sent.upstream is not None
    assert "x_auth_request_user" not in sent.upstream
    assert sent.upstream["x-auth-request-user"] == [OIDC_TEST]


def _raw_get(stack: Stack, target: str) -> tuple[int, str]:
    """Send a request target exactly as written; httpx would clean it up."""
    connection = http.client.HTTPConnection(
        LOOPBACK, stack.ports.listener, timeout=REQUEST_SECONDS
    )
    try:
        connection.request("GET", target, headers={"host": ECHO_HOST})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_dot_segments_do_not_borrow_the_public_route(stack: Stack) -> None:
    """/healthz/../private is judged, and served, as /private."""
    status, body = _raw_get(stack, "/healthz/../private")

    assert status == 401
    assert '"token_missing"' in body


def test_encoded_slash_is_refused_by_envoy(stack: Stack) -> None:
    """An encoded slash could be read two ways, so Envoy refuses it."""
    status, _ = _raw_get(stack, "/healthz%2F..%2Fprivate")

    assert status == 400


def test_tokens_never_reach_the_logs(
    good_token: str, issuer: LocalIssuer, stack: Stack, send: Send
) -> None:
    """Neither our server, Envoy nor the upstream writes a token down."""
    denied = SCENARIOS[2].mint(issuer)
    send(good_token)
    sent = send(denied)
    stack.decision(sent.request_id)

    for name in ("authz", "envoy", "echo"):
        text = stack.log(name).read_text("utf-8", errors="replace")
        for token in (good_token, denied):
            assert token.rsplit(".", 1)[1] not in text, name


def test_query_string_never_reaches_the_logs(
    good_token: str, stack: Stack, send: Send
) -> None:
    """A token put in the query string is not a credential, nor logged."""
    sent = send(path=f"/?access_token={good_token}")
    stack.decision(sent.request_id)

    assert sent.response.status_code == 401
    signature = good_token.rsplit(".", 1)[1]
    for name in ("authz", "envoy", "echo"):
        assert signature not in stack.log(name).read_text("utf-8", errors="replace")
