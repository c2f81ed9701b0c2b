"""The `authz` command line: exit codes, output, and one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from authz import cli
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from authz.keys.store import KeyStore
from authz.policy import Policy
from authz.server import build
from authz.testing import LocalIssuer

from checkserver import bearer, check_request, free_port
from conftest import ECHO
from keyserver import KeyServer


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
    assert report["downstream_headers"] == {"gap-auth": report["identity"]["subject"]}
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


def _serve(
    policy_dir: Path, listen: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "authz", "serve"]
    command += ["--config", str(policy_dir / "policy.yaml"), "--listen", listen]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _check_over(target: str, token: str, attempts: int = 100) -> Any:
    """Send one Check to `target`, retrying while the server starts."""

    async def ask() -> Any:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            request = check_request(ECHO, headers=bearer(token))
            return await stub.Check(request, timeout=2, wait_for_ready=True)

    for _ in range(attempts):
        try:
            return asyncio.run(ask())
        except grpc.RpcError:
            time.sleep(0.1)
    raise AssertionError(f"no answer from {target}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_on_a_unix_socket_and_stop_on_a_signal(
    tmp_path: Path, policy_dir: Path, issuer: LocalIssuer, stop: signal.Signals
) -> None:
    """`--listen unix:PATH` answers Check; SIGTERM and SIGINT stop it cleanly."""
    socket_path = tmp_path / "authz.sock"
    process = _serve(policy_dir, f"unix:{socket_path}")
    try:
        token = issuer.mint(service_account="oidc-test", audience=ECHO)
        reply = _check_over(f"unix:{socket_path}", token)
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=20)

    assert reply.status.code == 0
    assert process.returncode == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events[-2:] == ["server_stopping", "server_stopped"]
    assert token not in out + err


@pytest.mark.parametrize(
    "listen",
    ["256.0.0.1:9001", "127.0.0.1:99999", "9001", "unix:/nonexistent/dir/sock"],
)
def test_serve_on_an_unusable_address_exits_2(policy_dir: Path, listen: str) -> None:
    """An address that cannot be bound is one line and exit 2."""
    result = _authz("serve", "--config", policy_dir / "policy.yaml", "--listen", listen)

    assert result.returncode == 2
    assert result.stderr.startswith(f"authz: error: cannot serve on {listen}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_second_server_on_a_taken_port_is_refused(
    policy_dir: Path, issuer: LocalIssuer
) -> None:
    """A second `authz serve` on a port in use exits 2; the first keeps it."""
    listen = f"127.0.0.1:{free_port()}"
    first = _serve(policy_dir, listen)
    try:
        _check_over(listen, issuer.mint(audience=ECHO))
        second = _authz(
            "serve", "--config", policy_dir / "policy.yaml", "--listen", listen
        )
    finally:
        first.terminate()
        first.communicate(timeout=20)

    assert second.returncode == 2
    assert second.stderr == (
        f"authz: error: cannot serve on {listen}: Address already in use\n"
    )


def test_grpc_refuses_to_share_a_port(policy: Policy) -> None:
    """Two servers built by `build` cannot bind one port (no SO_REUSEPORT)."""

    async def bind_twice() -> None:
        first, _ = build(policy, KeyStore(policy))
        port = first.add_insecure_port("127.0.0.1:0")
        await first.start()
        try:
            second, _ = build(policy, KeyStore(policy))
            with pytest.raises(RuntimeError):
                second.add_insecure_port(f"127.0.0.1:{port}")
        finally:
            await first.stop(None)

    asyncio.run(bind_twice())


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_hanging_first_key_fetch_drains(
    tmp_path: Path, server: KeyServer, stop: signal.Signals
) -> None:
    """A stop while the key server hangs is as clean as any other stop."""
    server.mode = "hang"
    (tmp_path / "policy.yaml").write_text(
        "issuers:\n"
        f"  - issuer: {server.url}\n"
        f"    jwks_uri: {server.url}/jwks\n"
        f"    ca_file: {server.ca_file}\n"
        "    fetch_timeout_seconds: 30.0\n"
        "routes:\n  - name: all\n    public: true\n",
        encoding="utf-8",
    )
    process = _serve(tmp_path, f"unix:{tmp_path / 'authz.sock'}")
    for _ in range(100):
        if server.hits["/jwks"]:
            break
        time.sleep(0.1)
    process.send_signal(stop)
    out, err = process.communicate(timeout=20)

    assert server.hits["/jwks"] == 1
    assert process.returncode == 0, err
    assert err == ""
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events[-2:] == ["server_stopping", "server_stopped"]


def test_a_bug_is_exit_3_and_one_line(
    policy_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unexpected error is not mistaken for a deny (1) or a usage error (2)."""

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "decide", broken)

    policy = str(policy_dir / "policy.yaml")
    code = cli.main(["check", "--config", policy, "--host", ECHO, "--path", "/"])

    assert code == 3
    assert capsys.readouterr().err == "authz: error: unexpected RuntimeError, a bug\n"


def test_reader_gone_keeps_the_decision_exit_code(
    tmp_path: Path, policy_dir: Path, issuer: LocalIssuer
) -> None:
    """`authz check ... | true`: a closed stdout is not a bug; 0 or 1 remains."""
    token = _token_file(tmp_path, issuer.mint(audience=ECHO))
    command = [sys.executable, "-m", "authz", "check", "--token-file", str(token)]
    command += ["--config", str(policy_dir / "policy.yaml"), "--host", ECHO]
    process = subprocess.Popen(
        [*command, "--path", "/"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)

    assert process.returncode == 1  # default/default may not call echo-server
    assert err == b""


def test_a_stalled_log_reader_does_not_stall_checks(policy_dir: Path) -> None:
    """stdout a pipe nobody reads: checks are still answered, SIGTERM still works."""
    listen = f"127.0.0.1:{free_port()}"
    # Buffered stdout, as in a container: the writer must not hold its lock.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = _serve(policy_dir, listen, env)

    async def flood() -> int:
        async with grpc.aio.insecure_channel(listen) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            request = check_request(ECHO, "/healthz/" + "x" * 500)
            answered = 0
            for _ in range(1500):  # ~1 MB of log lines, a pipe holds 64 KiB
                reply = await stub.Check(request, timeout=5, wait_for_ready=True)
                answered += reply.status.code == 0
            return answered

    try:
        answered = asyncio.run(flood())
    finally:
        process.terminate()
        stopped = _wait(process, 20)

    assert answered == 1500
    assert stopped
    assert process.returncode == 0


def _wait(process: subprocess.Popen[str], seconds: float) -> bool:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True


def test_token_from_a_closed_stdin_is_a_usage_error(policy_dir: Path) -> None:
    """`--token-file -` with no standard input at all is exit 2, one line."""
    command = [sys.executable, "-m", "authz", "check", "--token-file", "-"]
    command += ["--config", str(policy_dir / "policy.yaml"), "--host", ECHO]
    done = subprocess.run(
        [*command, "--path", "/"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(0),
    )

    assert done.returncode == 2
    assert done.stderr == "authz: error: --token-file -: there is no standard input\n"
