"""Key sources against a real HTTPS key server: discovery, rotation, outages."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from authz.decision import decide
from authz.keys.store import KeyStore
from authz.policy import Policy, load
from authz.reasons import Reason
from authz.request import HttpRequest
from authz.testing import LocalIssuer

from keyserver import KeyServer

AUDIENCE = "echo-server.echo-server.svc.cluster.local"


def _policy(tmp_path: Path, issuers: list[dict[str, Any]]) -> Policy:
    lines = ["issuers:"]
    for issuer in issuers:
        first, *rest = issuer.items()
        lines.append(f"  - {first[0]}: {first[1]}")
        lines += [f"    {key}: {_yaml(value)}" for key, value in rest]
    lines += [
        "routes:",
        "  - name: all",
        f"    audiences: [{AUDIENCE}]",
        "    service_accounts: [default/*]",
    ]
    path = tmp_path / "policy.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load(path)


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _served(server: KeyServer, *issuers: LocalIssuer) -> None:
    server.jwks = {"keys": [i.public_jwk() for i in issuers]}


def _discovery(server: KeyServer, issuer: str, jwks_uri: str | None = None) -> None:
    server.discovery = {"issuer": issuer, "jwks_uri": jwks_uri or f"{server.url}/jwks"}


def _decide(store: KeyStore, policy: Policy, token: str) -> Reason:
    request = HttpRequest("GET", AUDIENCE, "/", (("authorization", f"Bearer {token}"),))
    return decide(request, policy, store.lookup, time.time()).reason


def _store(policy: Policy) -> KeyStore:
    store = KeyStore(policy)
    asyncio.run(store.load_all())
    return store


def test_discovery_then_fetch(tmp_path: Path, server: KeyServer) -> None:
    """Without jwks_uri, keys are found through the discovery document."""
    signer = LocalIssuer(issuer=server.url)
    _served(server, signer)
    _discovery(server, server.url)
    policy = _policy(tmp_path, [{"issuer": server.url, "ca_file": server.ca_file}])

    store = _store(policy)

    assert server.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}
    assert _decide(store, policy, signer.mint(audience=AUDIENCE)) is Reason.ALLOWED


def test_discovery_url_points_elsewhere(tmp_path: Path, server: KeyServer) -> None:
    """discovery_url reads the document from another address than the issuer."""
    issuer = "https://kubernetes.default.svc.cluster.local"
    signer = LocalIssuer(issuer=issuer)
    _served(server, signer)
    _discovery(server, issuer)
    policy = _policy(
        tmp_path,
        [{"issuer": issuer, "discovery_url": server.url, "ca_file": server.ca_file}],
    )

    store = _store(policy)

    assert _decide(store, policy, signer.mint(audience=AUDIENCE)) is Reason.ALLOWED


def test_explicit_jwks_uri_beats_discovery(tmp_path: Path, server: KeyServer) -> None:
    """An explicit jwks_uri is used even when discovery advertises a dead one."""
    signer = LocalIssuer(issuer=server.url)
    _served(server, signer)
    _discovery(server, server.url, jwks_uri="https://127.0.0.1:1/unreachable")
    policy = _policy(
        tmp_path,
        [
            {
                "issuer": server.url,
                "jwks_uri": f"{server.url}/jwks",
                "ca_file": server.ca_file,
            }
        ],
    )

    store = _store(policy)

    assert server.hits["/.well-known/openid-configuration"] == 0
    assert _decide(store, policy, signer.mint(audience=AUDIENCE)) is Reason.ALLOWED


def test_discovery_naming_another_issuer_is_refused(
    tmp_path: Path, server: KeyServer
) -> None:
    """A discovery document for another issuer yields no keys at all."""
    signer = LocalIssuer(issuer=server.url)
    _served(server, signer)
    _discovery(server, server.url + "/other")
    policy = _policy(tmp_path, [{"issuer": server.url, "ca_file": server.ca_file}])

    store = _store(policy)

    assert server.hits["/jwks"] == 0
    assert store.lookup(server.url) is None
    reason = _decide(store, policy, signer.mint(audience=AUDIENCE))
    assert reason is Reason.KEYS_UNAVAILABLE


def test_untrusted_certificate_is_refused(tmp_path: Path, server: KeyServer) -> None:
    """TLS verification is always on: a server outside the CA gets no trust."""
    _served(server, LocalIssuer(issuer=server.url))
    policy = _policy(
        tmp_path, [{"issuer": server.url, "jwks_uri": f"{server.url}/jwks"}]
    )

    store = _store(policy)

    assert store.lookup(server.url) is None


def test_bearer_token_file_is_sent_and_reread(
    tmp_path: Path, server: KeyServer
) -> None:
    """Endpoints closed to anonymous callers open with the mounted token."""
    signer = LocalIssuer(issuer=server.url)
    _served(server, signer)
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n", encoding="utf-8")
    server.required_token = "first-token"
    config = {
        "issuer": server.url,
        "jwks_uri": f"{server.url}/jwks",
        "ca_file": server.ca_file,
    }
    anonymous = _store(_policy(tmp_path, [config]))
    assert anonymous.lookup(server.url) is None

    policy = _policy(tmp_path, [{**config, "bearer_token_file": token_file}])
    store = _store(policy)
    assert store.lookup(server.url) is not None

    token_file.write_text("rotated-token\n", encoding="utf-8")
    server.required_token = "rotated-token"
    asyncio.run(store.issuers[server.url].fetch())

    assert server.tokens_seen[-2:] == ["first-token", "rotated-token"]


def test_in_cluster_uses_mounted_credentials(tmp_path: Path) -> None:
    """in_cluster fills in the pod's CA, token and the API server address."""
    policy = _policy(
        tmp_path,
        [
            {
                "issuer": "https://kubernetes.default.svc.cluster.local",
                "in_cluster": True,
            }
        ],
    )

    issuer = policy.issuers[0]
    secrets = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    assert issuer.effective_ca_file == secrets / "ca.crt"
    assert issuer.effective_bearer_token_file == secrets / "token"
    assert issuer.discovery_document_url == (
        "https://kubernetes.default.svc/.well-known/openid-configuration"
    )
