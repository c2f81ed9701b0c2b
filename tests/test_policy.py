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
    _assert_refused(tmp_path, *edit, line, message)


def _assert_refused(
    tmp_path: Path, old: str, new: str, line: int, message: str
) -> None:
    """Edit the test policy; its load must fail on `line` with `message`."""
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


def _laughs() -> str:
    """A few hundred bytes whose aliases expand to a billion strings."""
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join([*lines, "issuers: *a8", ""])


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("issuers: " + "[" * 20_000 + "]" * 20_000, None, "nested too deep"),
        (_laughs(), None, "more than 1000000 values"),
        ("issuers:\n  - issuer: https://i\x01\n", 2, "character '\\x01' is not"),
        (POLICY + "1: x\n", 27, "1: Extra inputs are not permitted"),
    ],
    ids=["deep-nesting", "billion-laughs", "control-character", "number-key"],
)
def test_hostile_yaml_is_one_line(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    """YAML built to exhaust the parser gets one line too, quickly."""
    path = _write(tmp_path, text)

    with pytest.raises(PolicyError) as error:
        load(path)

    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(error.value).startswith(where)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("jwks_file: jwks.json", "jwks_uri: https://127.0.0.1:99999/k", 3, "port"),
        ("jwks_file: jwks.json", "jwks_uri: 'https://[::1/k'", 3, "not a valid URL"),
        ("jwks_file: jwks.json", "discovery_url: https:///x", 3, "with a host"),
        ("[/healthz]", "[/healthz/../admin]", 12, "write '/admin'"),
        ("[/healthz]", "[/a%2fb]", 12, "can never match"),
        ("[/healthz]", "[/caf%c3%a9]", 12, "write '/caf%C3%A9'"),
        (
            "jwks_file: jwks.json",
            "jwks_uri: https://user:pw@host/k",
            3,
            "credentials in a URL are refused",
        ),
        ("jwks_file: jwks.json", 'jwks_file: "a\\0b"', 3, "printable characters"),
        (
            "algorithms: [RS256, ES256]",
            "leeway_seconds: 1" + "0" * 5000,
            4,
            "too many digits",
        ),
        ("[/healthz]", "[/healthz/]", 12, "no * or final /"),
        ("[/healthz]", "['/healthz/*']", 12, "no * or final /"),
        ("[/healthz]", "[/v1/x%3Ay]", 12, "write '/v1/x:y'"),
        ("[echo-server.echo-server.svc.cluster.local]", "[Echo.example]", 15, "echo"),
        ("[echo-server.echo-server.svc.cluster.local]", "[a.example.]", 15, "write"),
        ("[echo-server.echo-server.svc.cluster.local]", "['*.example']", 15, "never"),
    ],
)
def test_entries_no_request_could_match_are_refused(
    tmp_path: Path, old: str, new: str, line: int, message: str
) -> None:
    """URLs httpx cannot fetch and hosts or paths in a form never matched."""
    _assert_refused(tmp_path, old, new, line, message)


def test_one_refused_item_is_one_problem(tmp_path: Path) -> None:
    """A list whose only item is refused is not also reported as empty."""
    path = _write(tmp_path, POLICY.replace("[ops/*]", "[ops]"))

    with pytest.raises(PolicyError) as error:
        load(path)

    assert "more problem" not in str(error.value)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            "  upstream:\n    user: x-who\n    namespace: x-who\n",
            "headers.upstream.namespace: two identity parts cannot share one header",
        ),
        (
            "  upstream:\n    user: authorization\n",
            "headers.upstream.user: 'authorization' is not free",
        ),
        ("  downstream:\n    issuer: host\n", "headers.downstream.issuer: 'host'"),
        (
            "  upstream:\n    user: x-who\n    namespace: x_who\n",
            "headers.upstream.namespace: two identity parts cannot share",
        ),
        ("  upstream:\n    user: x_request_id\n", "'x-request-id' is not free"),
        ("  upstream:\n    user: a-b-c-d-e-f-g\n", "headers.upstream.user: String"),
    ],
)
def test_identity_headers_are_distinct_and_not_reserved(
    tmp_path: Path, headers: str, message: str
) -> None:
    """The upstream must not read one header as two parts, nor lose a real one."""
    text = POLICY.replace(
        "headers:\n  downstream:\n    user: gap-auth\n", "headers:\n" + headers
    )
    path = _write(tmp_path, text)

    with pytest.raises(PolicyError, match=message):
        load(path)
