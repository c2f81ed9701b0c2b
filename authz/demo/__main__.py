"""Replay three callers through a real Envoy and check what each one gets.

Run `python -m authz.demo` from the repository. It writes a JWKS and the demo
policy into `.demo/` (or `--work DIR`), starts the echo upstream, our server
and Envoy on free loopback ports, sends one request per scenario with a token
shaped like a projected service-account token, prints what happened next to
the server's decision line, stops every process and exits 1 if any outcome
differs from the expected one.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from authz.demo.scenarios import ECHO_HOST, SCENARIOS, Scenario, write_policy
from authz.demo.stack import ENVOY_CONFIG, Stack, StackError
from authz.testing import LocalIssuer

_UPSTREAM_HEADERS = (
    "x-auth-request-user",
    "x-auth-request-namespace",
    "x-auth-request-serviceaccount",
)
_CALLER_HEADERS = ("gap-auth", "www-authenticate")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo and return 0 when every outcome is the expected one."""
    args = _parser().parse_args(argv)
    work: Path = args.work or _default_work()
    issuer = LocalIssuer()
    policy = write_policy(work, issuer)

    try:
        with _sigterm_interrupts(), Stack(work, policy) as stack:
            print(f"envoy on {stack.url}, authz on {stack.authz_address}")
            results = _replay_all(stack, issuer)
    except StackError as error:
        print(f"demo: could not run the stack: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted; every process was stopped", file=sys.stderr)
        return 130

    print()
    print(_summary(results, work))
    return 0 if all(ok for _, ok in results) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m authz.demo")
    parser.add_argument(
        "--work", type=Path, help="folder for the policy, configs and logs"
    )
    return parser


def _default_work() -> Path:
    """Return `.demo/` in the repository, or a new temporary folder."""
    repository = ENVOY_CONFIG.parent.parent
    if ENVOY_CONFIG.is_file():
        return repository / ".demo"
    return Path(tempfile.mkdtemp(prefix="authz-demo-"))


def _replay_all(stack: Stack, issuer: LocalIssuer) -> list[tuple[Scenario, bool]]:
    with httpx.Client(base_url=stack.url, timeout=10.0, trust_env=False) as client:
        return [
            (scenario, _replay(number, scenario, issuer, stack, client))
            for number, scenario in enumerate(SCENARIOS, start=1)
        ]


def _replay(
    number: int,
    scenario: Scenario,
    issuer: LocalIssuer,
    stack: Stack,
    client: httpx.Client,
) -> bool:
    """Send one scenario's request, print what happened, tell if it matched."""
    token = scenario.mint(issuer)
    request_id = f"demo-{number}-{uuid.uuid4().hex[:8]}"
    caller = f"{scenario.namespace}/{scenario.service_account}"
    print(f"\n[{number}/{len(SCENARIOS)}] {scenario.name}: {caller}, ", end="")
    print(f"audience {scenario.audience!r}")
    print(f"  request   GET http://{ECHO_HOST}/  x-request-id: {request_id}")
    print(f"            authorization: Bearer {_truncated(token)}")

    headers = {"host": ECHO_HOST, "x-request-id": request_id}
    response = client.get("/", headers={**headers, "authorization": f"Bearer {token}"})
    decision = stack.decision(request_id)

    print(f"  status    {response.status_code} (expected {scenario.expected_status})")
    for line in _identity_lines(response):
        print(f"  {line}")
    print(f"  decision  {json.dumps(decision)}")
    problems = _problems(scenario, response, decision)
    for problem in problems:
        print(f"  MISMATCH  {problem}")
    return not problems


def _truncated(token: str) -> str:
    """Describe a token without printing any of it."""
    return f"<{len(token)}-byte token>"


def _identity_lines(response: httpx.Response) -> list[str]:
    """Return what the upstream and the caller were told about identity."""
    seen = _upstream_headers(response)
    lines = [
        f"upstream  {name}: {', '.join(seen[name])}"
        for name in _UPSTREAM_HEADERS
        if name in seen
    ]
    lines += [
        f"caller    {name}: {response.headers[name]}"
        for name in _CALLER_HEADERS
        if name in response.headers
    ]
    if response.status_code != 200:
        lines.append(f"body      {response.text.strip()}")
    return lines


def _upstream_headers(response: httpx.Response) -> dict[str, list[str]]:
    """Return the headers the echo upstream received, or {} if it was not hit."""
    if response.headers.get("content-type") != "application/json":
        return {}
    try:
        document: Any = response.json()
    except ValueError:
        return {}
    headers = document.get("headers") if isinstance(document, dict) else None
    return headers if isinstance(headers, dict) else {}


def _problems(
    scenario: Scenario, response: httpx.Response, decision: dict[str, Any]
) -> list[str]:
    """List every way the outcome differs from what `scenario` expects."""
    problems = []
    if response.status_code != scenario.expected_status:
        problems.append(f"status {response.status_code}")
    if decision.get("reason") != scenario.expected_reason:
        problems.append(f"reason {decision.get('reason')!r}")
    if scenario.expected_status == 200:
        upstream = _upstream_headers(response).get("x-auth-request-user")
        if upstream != [scenario.subject]:
            problems.append(f"upstream saw x-auth-request-user {upstream!r}")
        if response.headers.get("gap-auth") != scenario.subject:
            problems.append(f"caller got gap-auth {response.headers.get('gap-auth')!r}")
    return problems


def _summary(results: list[tuple[Scenario, bool]], work: Path) -> str:
    passed = sum(ok for _, ok in results)
    outcomes = ", ".join(
        f"{s.name} {s.expected_status}{'' if ok else ' FAILED'}" for s, ok in results
    )
    verdict = "ok" if passed == len(results) else "FAILED"
    counted = f"{passed}/{len(results)} as expected"
    return f"demo {verdict}: {counted} ({outcomes}); logs in {work}"


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so the stack is stopped on the way out."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
