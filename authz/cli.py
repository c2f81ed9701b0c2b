"""The `authz` command: `serve` runs the server, `check` decides offline.

Exit codes: 0 allowed (or a clean stop), 1 denied, 2 a usage or policy
error, 3 a bug; errors are printed as one line on stderr (set AUTHZ_DEBUG=1
for a bug's traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authz import observability
from authz.decision import Decision, decide
from authz.keys.store import KeyStore
from authz.policy import Policy, PolicyError, load
from authz.request import HttpRequest
from authz.server import ListenError, serve

__all__ = ["main"]

EXIT_ALLOWED = 0
EXIT_DENIED = 1
EXIT_USAGE = 2
EXIT_BUG = 3


class _UsageError(Exception):
    """A problem with what the operator asked for."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except (PolicyError, ListenError, _UsageError) as error:
        print(f"authz: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if os.environ.get("AUTHZ_DEBUG") == "1":
            traceback.print_exc()
        name = type(error).__name__
        print(f"authz: error: unexpected {name}, a bug", file=sys.stderr)
        return EXIT_BUG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authz",
        description="Envoy ext_authz server for Kubernetes service-account tokens.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser("serve", help="run the gRPC ext_authz server")
    serve_cmd.add_argument("--config", required=True, type=Path, help="policy YAML")
    serve_cmd.add_argument(
        "--listen",
        default="0.0.0.0:9001",
        help="HOST:PORT or unix:/path (default 0.0.0.0:9001)",
    )
    serve_cmd.add_argument(
        "--wait-for-keys",
        action="store_true",
        help="report NOT_SERVING until every issuer has keys, not just tried",
    )
    serve_cmd.set_defaults(run=_serve)

    check_cmd = commands.add_parser(
        "check", help="decide one request offline and print the decision"
    )
    check_cmd.add_argument("--config", required=True, type=Path, help="policy YAML")
    check_cmd.add_argument(
        "--token-file", type=Path, help="file holding the bearer token (- for stdin)"
    )
    check_cmd.add_argument("--host", required=True, help="the request's host")
    check_cmd.add_argument("--path", required=True, help="the request's path")
    check_cmd.add_argument("--method", default="GET", help="default GET")
    check_cmd.set_defaults(run=_check)
    return parser


def _serve(args: argparse.Namespace) -> int:
    policy = load(args.config)
    observability.configure()
    asyncio.run(serve(policy, args.listen, args.wait_for_keys))
    return EXIT_ALLOWED


def _check(args: argparse.Namespace) -> int:
    policy = load(args.config)
    observability.configure(stream="stderr", level=logging.WARNING)
    headers = []
    if args.token_file is not None:
        headers.append(("authorization", f"Bearer {_read_token(args.token_file)}"))
    request = HttpRequest(args.method, args.host, args.path, tuple(headers))

    decision = asyncio.run(_decide_offline(request, policy))
    _print(json.dumps(_report(decision), indent=2))
    return EXIT_ALLOWED if decision.allowed else EXIT_DENIED


def _print(text: str) -> None:
    """Print, ignoring a reader that went away: the exit code still tells."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null, or the flush at exit fails again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _decide_offline(request: HttpRequest, policy: Policy) -> Decision:
    keys = KeyStore(policy)
    await keys.load_all()
    return decide(request, policy, keys.lookup, time.time())


def _read_token(path: Path) -> str:
    if str(path) == "-" and sys.stdin is None:
        raise _UsageError("--token-file -: there is no standard input")
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise _UsageError(f"{path}: cannot read token: {reason}") from None
    return text.strip()


def _report(decision: Decision) -> dict[str, Any]:
    identity = decision.identity
    return {
        "allowed": decision.allowed,
        "status": decision.outcome.http_status,
        "reason": str(decision.reason),
        "detail": decision.detail or None,
        "route": decision.route,
        "identity": None
        if identity is None
        else {
            "subject": identity.subject,
            "namespace": identity.namespace,
            "service_account": identity.service_account,
            "issuer": identity.issuer,
        },
        "upstream_headers": dict(decision.upstream_headers),
        "downstream_headers": dict(decision.downstream_headers),
        "headers_to_remove": list(decision.headers_to_remove),
    }
