"""The `authz` command line: exit codes, output, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from authz.testing import LocalIssuer

from conftest import ECHO


def _authz(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n", encoding="utf-8")
    return path


def test_check_allowed_prints_identity_and_exits_0(
    tmp_path: Path, policy_dir: Path, issuer: LocalIssuer
) -> None:
    """An allowed request prints the decision as JSON and exits 0."""
    token = _token_file(
        tmp_path, issuer.mint(service_account="oidc-test", audience=ECHO)
    )

    result = _authz(
        "check",
        "--config",
        policy_dir / "policy.yaml",
        "--token-file",
        token,
        "--host",
        ECHO,
        "--path",
        "/echo?x=1",
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["allowed"] is True
    assert report["status"] == 200
    assert report["route"] == "echo-server"
    assert report["identity"]["subject"] == "system:serviceaccount:default:oidc-test"
    assert token.read_text().strip() not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("account", "audience", "status", "reason"),
    [
        ("default", ECHO, 403, "service_account_not_allowed"),
        ("oidc-test", "invalid", 401, "audience_mismatch"),
    ],
)
def test_check_denied_exits_1(
    tmp_path: Path,
    policy_dir: Path,
    issuer: LocalIssuer,
    account: str,
    audience: str,
    status: int,
    reason: str,
) -> None:
    """A denied request prints the status and reason and exits 1."""
    token = _token_file(
        tmp_path, issuer.mint(service_account=account, audience=audience)
    )

    result = _authz(
        "check",
        "--config",
        policy_dir / "policy.yaml",
        "--token-file",
        token,
        "--host",
        ECHO,
        "--path",
        "/",
    )

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["allowed"], report["status"], report["reason"]) == (
        False,
        status,
        reason,
    )


def test_check_without_token_on_public_route(policy_dir: Path) -> None:
    """No token is needed to check a public route."""
    result = _authz(
        "check",
        "--config",
        policy_dir / "policy.yaml",
        "--host",
        ECHO,
        "--path",
        "/healthz",
    )

    assert result.returncode == 0
    assert json.loads(result.stdout)["reason"] == "public_route"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--token-file", "/nonexistent/token"), "cannot read token"),
        (("--config", "/nonexistent/policy.yaml"), "cannot read"),
    ],
)
def test_check_usage_errors_exit_2_with_one_line(
    policy_dir: Path, args: tuple[str, ...], message: str
) -> None:
    """A missing file is exit 2 and one line on stderr, no traceback."""
    base = {"--config": str(policy_dir / "policy.yaml"), "--host": ECHO, "--path": "/"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))

    result = _authz("check", *[part for pair in base.items() for part in pair])

    assert result.returncode == 2
    assert result.stderr.startswith("authz: error: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_policy_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    """`serve` refuses a bad policy before listening, naming file and line."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("issuers: []\nroutes: []\nextra: 1\n", encoding="utf-8")

    result = _authz("serve", "--config", policy, "--listen", "127.0.0.1:0")

    assert result.returncode == 2
    assert result.stderr.startswith(f"authz: error: {policy}:1: issuers:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_arguments_exit_2() -> None:
    """Missing required arguments are a usage error."""
    assert _authz("check").returncode == 2
