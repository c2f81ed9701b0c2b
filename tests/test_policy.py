"""Policy files: the documented shape loads; every mistake names file, line, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.policy import PolicyError, load

from conftest import POLICY


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_documented_policy_loads_with_defaults(tmp_path: Path) -> None:
    """Defaults fill the header names, algorithms and leeway."""
    policy = load(_write(tmp_path, POLICY))

    assert policy.headers.upstream.user == "x-auth-request-user"
    assert policy.headers.upstream.service_account == "x-auth-request-serviceaccount"
    assert policy.headers.downstream.user == "gap-auth"
    assert policy.issuers[0].leeway_seconds == 30
    assert policy.issuers[0].jwks_file == tmp_path / "jwks.json"
    assert [r.name for r in policy.routes] == ["health", "admin", "echo-server"]


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        (("    public: true", "    public: true\n    colour: red"), 14, "colour"),
        (("    public: true", '    public: "yes"'), 13, "routes[0].public"),
        (
            (
                "    audiences: [echo-server.echo-server.svc.cluster.local]\n"
                "    service_accounts: [ops/*]",
                "",
            ),
            14,
            "routes[1]: a protected route needs audiences",
        ),
        (
            ("  - name: health", "  - name: health\n    name: again"),
            12,
            "duplicate key",
        ),
        (("[RS256, ES256]", "[HS256]"), 4, "issuers[0].algorithms[0]"),
        (("[RS256, ES256]", "[none]"), 4, "issuers[0].algorithms[0]"),
        (("[ops/*]", "[ops]"), 18, "NAMESPACE/NAME"),
        (("    paths: [/healthz]", "    paths: [healthz]"), 12, "start with /"),
        (("jwks_file: jwks.json", "jwks_uri: http://plain"), 3, "jwks_uri"),
        (("routes:", "routes: ["), 11, "expected"),
        (
            ("    issuers: [https://kubernetes.default.svc.cluster.local]\n", ""),
            14,
            "routes[1].name: with several issuers",
        ),
        (
            ("issuers: [https://kubernetes", "issuers: [https://unknown"),
            19,
            "routes[1].issuers[0]: 'https://unknown.default.svc.cluster.local' is not",
        ),
        (("  - name: admin", "  - name: health"), 14, "routes[1].name: route names"),
        (
            ("other-cluster.example.test", "kubernetes.default.svc.cluster.local"),
            5,
            "issuers[1].issuer: each issuer",
        ),
    ],
)
def test_bad_policy_names_file_line_and_key(
    tmp_path: Path, edit: tuple[str, str], line: int, message: str
) -> None:
    """Each mistake is refused with the file, its line and what is wrong."""
    old, new = edit
    assert old in POLICY
    path = _write(tmp_path, POLICY.replace(old, new, 1))

    with pytest.raises(PolicyError) as error:
        load(path)

    text = str(error.value)
    assert text.startswith(f"{path}:{line}: ")
    assert message in text
    assert "\n" not in text


def test_missing_policy_file(tmp_path: Path) -> None:
    """A policy file that does not exist is one readable line."""
    with pytest.raises(PolicyError, match="No such file"):
        load(tmp_path / "absent.yaml")
