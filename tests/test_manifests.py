"""The shipped manifests parse, and the policy they carry loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from authz.policy import load

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


@pytest.mark.parametrize(
    "path", sorted(MANIFESTS.rglob("*.yaml")), ids=lambda p: p.name
)
def test_manifest_is_valid_yaml(path: Path) -> None:
    """Every manifest is YAML a cluster could read: documents with a kind."""
    documents = list(YAML(typ="safe").load_all(path.read_text(encoding="utf-8")))

    assert documents
    if path.name != "policy.yaml":
        assert all("kind" in doc for doc in documents if doc)


def test_in_cluster_policy_loads() -> None:
    """The policy mounted in the cluster passes the same checks as any other."""
    policy = load(MANIFESTS / "policy.yaml")

    assert policy.issuers[0].in_cluster
    assert [route.name for route in policy.routes] == ["health", "echo-server"]


def test_istio_policy_loads(tmp_path: Path) -> None:
    """The shared server's policy, inlined in its ConfigMap, loads."""
    documents = YAML(typ="safe").load_all(
        (MANIFESTS / "istio" / "authz.yaml").read_text()
    )
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    (tmp_path / "policy.yaml").write_text(config["data"]["policy.yaml"])

    policy = load(tmp_path / "policy.yaml")

    assert policy.issuers[0].in_cluster
    assert policy.route("echo-server.echo-server", "/", "GET") is not None
