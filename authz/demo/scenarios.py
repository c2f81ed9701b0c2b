"""The demo's small world: one issuer, one protected service, three callers.

`write_policy` puts the demo policy and the issuer's JWKS in a folder;
`SCENARIOS` lists the three requests the demo replays and what each must get.
The end-to-end tests use the same world.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from authz.testing import LocalIssuer

__all__ = [
    "ECHO_HOST",
    "POLICY",
    "SCENARIOS",
    "Scenario",
    "subject",
    "write_policy",
]

ECHO_HOST = "echo-server.echo-server.svc.cluster.local"

POLICY = f"""\
issuers:
  - issuer: https://kubernetes.default.svc.cluster.local
    jwks_file: jwks.json
headers:
  downstream:
    user: gap-auth
routes:
  - name: health
    paths: [/healthz]
    public: true
  - name: echo-server
    hosts: [{ECHO_HOST}]
    paths: [/]
    audiences: [{ECHO_HOST}]
    service_accounts: [default/oidc-test]
"""


@dataclass(frozen=True)
class Scenario:
    """One caller, the audience its token names, and the status it must get."""

    name: str
    namespace: str
    service_account: str
    audience: str
    expected_status: int
    expected_reason: str

    def mint(self, issuer: LocalIssuer) -> str:
        """Return a projected-style token for this caller, valid for 600 s."""
        return issuer.mint(
            namespace=self.namespace,
            service_account=self.service_account,
            audience=self.audience,
            lifetime=600,
        )

    @property
    def subject(self) -> str:
        """Return the caller's Kubernetes user name."""
        return subject(self.namespace, self.service_account)


SCENARIOS = (
    Scenario("allowed", "default", "oidc-test", ECHO_HOST, 200, "allowed"),
    Scenario(
        "wrong_service_account",
        "default",
        "default",
        ECHO_HOST,
        403,
        "service_account_not_allowed",
    ),
    Scenario(
        "wrong_audience", "default", "oidc-test", "invalid", 401, "audience_mismatch"
    ),
)


def subject(namespace: str, service_account: str) -> str:
    """Return the user name Kubernetes gives a service account."""
    return f"system:serviceaccount:{namespace}:{service_account}"


def write_policy(folder: Path, issuer: LocalIssuer) -> Path:
    """Write jwks.json and policy.yaml into `folder`; return the policy path."""
    folder.mkdir(parents=True, exist_ok=True)
    issuer.write_jwks(folder / "jwks.json")
    policy = folder / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return policy
