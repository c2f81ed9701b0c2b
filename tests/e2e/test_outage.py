"""When our server is gone, Envoy answers 503 and lets nothing through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authz.demo.scenarios import SCENARIOS
from authz.demo.stack import Stack
from authz.testing import LocalIssuer

from .conftest import Send


@pytest.fixture
def authz_down(stack: Stack) -> Iterator[None]:
    """Kill our server as a crash would; start it again afterwards."""
    stack.kill("authz")
    try:
        yield
    finally:
        stack.start_authz()


@pytest.mark.usefixtures("authz_down")
def test_server_down_gives_503_and_nothing_upstream(
    issuer: LocalIssuer, stack: Stack, send: Send
) -> None:
    """A valid token and a forged identity during an outage: 503, not passed on."""
    sent = send(SCENARIOS[0].mint(issuer), headers={"x-auth-request-user": "evil"})

    assert sent.response.status_code == 503
    assert sent.upstream is None
    assert sent.request_id not in stack.upstream_request_ids()


def test_service_resumes_after_restart(
    issuer: LocalIssuer, stack: Stack, send: Send
) -> None:
    """Once our server is back, the same kind of request is allowed again."""
    stack.kill("authz")
    stack.start_authz()

    sent = send(SCENARIOS[0].mint(issuer))

    assert sent.response.status_code == 200
