"""One real stack for the whole session: echo upstream, our server, Envoy.

Requests go through Envoy's listener with the demo host; `send` gives each one
a fresh x-request-id so a test can find the server's decision line and tell
whether the echo upstream ever saw the request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from authz.demo.scenarios import ECHO_HOST, write_policy
from authz.demo.stack import Stack
from authz.testing import LocalIssuer

REQUEST_SECONDS = 10.0


def pytest_configure(config: pytest.Config) -> None:
    """Register the e2e marker, so `-m "not e2e"` skips these tests."""
    config.addinivalue_line("markers", "e2e: runs real Envoy and server processes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder as e2e."""
    for item in items:
        if "/e2e/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True)
class Sent:
    """A request sent through Envoy, with the id it carried."""

    response: httpx.Response
    request_id: str

    @property
    def upstream(self) -> dict[str, list[str]] | None:
        """Return the headers the echo upstream saw, or None if it was not hit."""
        if self.response.headers.get("content-type") != "application/json":
            return None
        document: Any = self.response.json()
        if not isinstance(document, dict) or "headers" not in document:
            return None
        headers: dict[str, list[str]] = document["headers"]
        return headers


Send = Callable[..., Sent]


@pytest.fixture(scope="session")
def issuer() -> LocalIssuer:
    """Return the cluster issuer the stack's policy trusts."""
    return LocalIssuer()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, issuer: LocalIssuer
) -> Iterator[Stack]:
    """Start the stack once; every process is stopped when the session ends."""
    work = tmp_path_factory.mktemp("stack")
    with Stack(work, write_policy(work, issuer), startup_seconds=30.0) as running:
        yield running


@pytest.fixture(scope="session")
def client(stack: Stack) -> Iterator[httpx.Client]:
    """Return an HTTP client aimed at Envoy's listener."""
    with httpx.Client(
        base_url=stack.url, timeout=REQUEST_SECONDS, trust_env=False
    ) as http:
        yield http


@pytest.fixture
def send(client: httpx.Client) -> Send:
    """Return a function that sends one GET through Envoy."""

    def run(
        token: str | None = None,
        *,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> Sent:
        request_id = f"e2e-{uuid.uuid4().hex[:12]}"
        sent = {"host": ECHO_HOST, "x-request-id": request_id, **(headers or {})}
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        return Sent(client.get(path, headers=sent), request_id)

    return run
