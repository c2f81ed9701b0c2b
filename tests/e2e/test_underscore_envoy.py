"""An Envoy that passes underscore headers, as Istio's proxy does by default.

Our sidecar config drops `x_auth_request_user` in Envoy itself; here Envoy
lets it through, and the server's answer alone must keep it from the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from authz.demo.scenarios import ECHO_HOST, SCENARIOS, write_policy
from authz.demo.stack import ENVOY_CONFIG, Stack
from authz.testing import LocalIssuer

FORGED = "system:serviceaccount:ops:admin"
TWINS = [
    "x_auth_request_user",
    "x_auth_request_namespace",
    "x_Auth_Request_User",
    "x_auth-request-user",
    "x-auth_request-serviceaccount",
    "x-auth-request_user",
]


def _passing_underscores(target: Path) -> Path:
    yaml = YAML()
    config = yaml.load(ENVOY_CONFIG.read_text("utf-8"))
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["common_http_protocol_options"]["headers_with_underscores_action"] = "ALLOW"
    with target.open("w", encoding="utf-8") as out:
        yaml.dump(config, out)
    return target


@pytest.fixture(scope="module")
def lenient(
    tmp_path_factory: pytest.TempPathFactory, issuer: LocalIssuer
) -> Iterator[httpx.Client]:
    """A stack whose Envoy forwards headers with underscores."""
    work = tmp_path_factory.mktemp("underscores")
    template = _passing_underscores(work / "template.yaml")
    policy = write_policy(work, issuer)
    with (
        Stack(work, policy, envoy_config=template) as stack,
        httpx.Client(base_url=stack.url, timeout=10.0, trust_env=False) as client,
    ):
        yield client


def _upstream_saw(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    headers: dict[str, Any] = response.json()["headers"]
    return {name.lower(): value for name, value in headers.items()}


@pytest.mark.parametrize("path", ["/", "/healthz"], ids=["allowed", "public"])
@pytest.mark.parametrize("twin", TWINS)
def test_underscore_twins_never_reach_the_upstream(
    lenient: httpx.Client, issuer: LocalIssuer, path: str, twin: str
) -> None:
    """A client's x_auth_request_user is removed on allowed and public routes."""
    headers = {"host": ECHO_HOST, twin: FORGED}
    if path == "/":
        headers["authorization"] = f"Bearer {SCENARIOS[0].mint(issuer)}"

    seen = _upstream_saw(lenient.get(path, headers=headers))

    assert twin.lower() not in seen
    assert FORGED not in str(seen)
