"""Measure decision cost, server throughput and memory.

1. The pure decision core, in this process: microseconds per decision on
   the allow path and on typical deny paths.
2. `authz serve` in its own process, driven over gRPC from this one with a
   fixed concurrency: calls per second, latency percentiles, and the
   server's resident memory before and after the run.

    .venv/bin/python bench/decide.py [--calls 6000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from authz.decision import decide
from authz.keys import KeySet
from authz.policy import Policy, load
from authz.request import HttpRequest
from authz.testing import LocalIssuer

from checkserver import bearer, check_request

HOST = "echo-server.echo-server.svc.cluster.local"
POLICY = f"""\
issuers:
  - issuer: https://kubernetes.default.svc.cluster.local
    jwks_file: jwks.json
routes:
  - name: echo-server
    hosts: [{HOST}]
    audiences: [{HOST}]
    service_accounts: [default/oidc-test]
"""


def _per_call_us(run: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        run()
    return (time.perf_counter() - started) / count * 1e6


def bench_core(policy: Policy, keys: KeySet, issuer: LocalIssuer) -> None:
    """Print microseconds per decision for a few typical requests."""
    tokens = {
        "allow (RS256)": issuer.mint(service_account="oidc-test", audience=HOST),
        "deny: wrong audience": issuer.mint(service_account="oidc-test", audience="x"),
        "deny: account not allowed": issuer.mint(audience=HOST),
        "deny: no token": None,
    }
    for label, token in tokens.items():
        headers = (("authorization", f"Bearer {token}"),) if token else ()
        request = HttpRequest("GET", HOST, "/", headers)

        def run(request: HttpRequest = request) -> object:
            return decide(request, policy, lambda _: keys, time.time())

        print(f"core  {label:28} {_per_call_us(run, 3000):8.1f} us/decision")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _drive(port: int, token: str, calls: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    request = check_request(HOST, headers=bearer(token))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        async def worker(share: int) -> None:
            for _ in range(share):
                started = time.perf_counter()
                response = await stub.Check(request, timeout=5)
                latencies.append(time.perf_counter() - started)
                assert response.status.code == 0

        await asyncio.gather(
            *(worker(calls // concurrency) for _ in range(concurrency))
        )
    return latencies


def bench_server(folder: Path, token: str, calls: int, concurrency: int) -> None:
    """Run `authz serve` in a child process and drive it over gRPC."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "authz", "serve", "--config"]
    command += [str(folder / "policy.yaml"), "--listen", f"127.0.0.1:{port}"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        asyncio.run(_drive(port, token, 200, 4))  # warm up
        before = _rss_kib(server.pid)
        started = time.perf_counter()
        latencies = asyncio.run(_drive(port, token, calls, concurrency))
        elapsed = time.perf_counter() - started
        after = _rss_kib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)

    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    print(
        f"server {len(latencies)} allowed checks, concurrency {concurrency}: "
        f"{len(latencies) / elapsed:.0f} checks/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    print(f"server RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after")


def main() -> None:
    """Parse arguments and run both measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    issuer = LocalIssuer()
    issuer.write_jwks(folder / "jwks.json")
    (folder / "policy.yaml").write_text(POLICY, encoding="utf-8")
    policy = load(folder / "policy.yaml")

    bench_core(policy, KeySet.from_jwks(issuer.jwks()), issuer)
    token = issuer.mint(service_account="oidc-test", audience=HOST)
    bench_server(folder, token, args.calls, args.concurrency)


if __name__ == "__main__":
    main()
