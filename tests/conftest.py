"""Shared fixtures: a real local issuer, its JWKS on disk, and a policy."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from authz import observability
from authz.decision import Decision, KeyLookup, decide
from authz.keys import KeySet
from authz.policy import Policy, load
from authz.request import HttpRequest
from authz.testing import LocalIssuer

from keyserver import KeyServer

ECHO = "echo-server.echo-server.svc.cluster.local"
API_SERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
OTHER_CLUSTER = "https://other-cluster.example.test"

POLICY = """\
issuers:
  - issuer: https://kubernetes.default.svc.cluster.local
    jwks_file: jwks.json
    algorithms: [RS256, ES256]
  - issuer: https://other-cluster.example.test
    jwks_file: jwks.json
headers:
  downstream:
    user: gap-auth
routes:
  - name: health
    paths: [/healthz]
    public: true
  - name: admin
    hosts: [echo-server.echo-server.svc.cluster.local]
    paths: [/admin]
    audiences: [echo-server.echo-server.svc.cluster.local]
    service_accounts: [ops/*]
    issuers: [https://kubernetes.default.svc.cluster.local]
  - name: echo-server
    hosts: [echo-server.echo-server.svc.cluster.local]
    paths: [/]
    methods: [GET, HEAD, POST]
    audiences: [echo-server.echo-server.svc.cluster.local]
    service_accounts: [default/oidc-test]
    issuers: [https://kubernetes.default.svc.cluster.local]
"""


@pytest.fixture(scope="session")
def issuer() -> LocalIssuer:
    """Return the trusted cluster issuer, with a fresh RSA key."""
    return LocalIssuer()


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory: pytest.TempPathFactory, issuer: LocalIssuer) -> Path:
    """Return a folder holding policy.yaml and the issuer's jwks.json."""
    folder = tmp_path_factory.mktemp("policy")
    issuer.write_jwks(folder / "jwks.json")
    (folder / "policy.yaml").write_text(POLICY, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def policy(policy_dir: Path) -> Policy:
    """Return the loaded test policy."""
    return load(policy_dir / "policy.yaml")


@pytest.fixture(scope="session")
def keyset(issuer: LocalIssuer) -> KeySet:
    """Return the trusted issuer's key set."""
    return KeySet.from_jwks(issuer.jwks())


Check = Callable[..., Decision]


@pytest.fixture
def check(policy: Policy, keyset: KeySet) -> Check:
    """Return a function deciding a request built from short arguments."""

    def run(
        token: str | None = None,
        *,
        path: str = "/",
        host: str = ECHO,
        method: str = "GET",
        headers: tuple[tuple[str, str], ...] = (),
        authorization: str | None = None,
        now: float | None = None,
        keys: KeyLookup | None = None,
    ) -> Decision:
        sent = list(headers)
        if authorization is None and token is not None:
            authorization = f"Bearer {token}"
        if authorization is not None:
            sent.append(("authorization", authorization))
        request = HttpRequest(method, host, path, tuple(sent), request_id="t")
        lookup = keys or {i.issuer: keyset for i in policy.issuers}.get
        return decide(request, policy, lookup, time.time() if now is None else now)

    return run


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    """Return a throwaway test CA and its certificate file."""
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.crt"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
def server(ca: tuple[trustme.CA, Path]) -> Iterator[KeyServer]:
    """Start a key server on loopback; stop it after the test."""
    key_server = KeyServer(ca=ca[0], ca_file=ca[1]).start()
    yield key_server
    key_server.stop()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Capture the JSON log lines the server writes."""
    stream = io.StringIO()
    observability.configure(stream=stream)
    yield stream
    observability.configure()


class _FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


@pytest.fixture
def full_disk() -> Iterator[None]:
    """Make every log write fail, as on a full disk."""
    observability.configure(stream=_FullDisk())
    yield
    observability.configure()
