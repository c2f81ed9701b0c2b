"""Measure how long a check waits on a key refetch, and under a hanging server.

Runs a real HTTPS key server on loopback and the Check service on a real
gRPC server, then times (1) a token signed by a key added after start-up,
which costs one refetch, (2) the same against a key server that hangs, with
the deadline Envoy would send, and (3) a known key while the server hangs.

    .venv/bin/python bench/keys.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from authz import observability
from authz.keys.store import KeyStore
from authz.policy import load
from authz.testing import LocalIssuer

from checkserver import bearer, check_request, check_stub
from keyserver import KeyServer

AUDIENCE = "bench.example"
ROUNDS = 5
DEADLINE = 0.5


async def _timed(stub: Any, token: str, deadline: float) -> tuple[str, float]:
    started = time.perf_counter()
    request = check_request(AUDIENCE, headers=bearer(token))
    response = await stub.Check(request, timeout=deadline)
    return response.status.message, (time.perf_counter() - started) * 1000


async def main() -> None:
    """Run the three measurements and print one line each."""
    observability.configure(stream=open("/dev/null", "w"))  # noqa: SIM115
    folder = Path(tempfile.mkdtemp())
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(folder / "ca.crt"))
    server = KeyServer(ca=authority, ca_file=folder / "ca.crt").start()
    base = LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [base.public_jwk()]}
    (folder / "policy.yaml").write_text(
        f"issuers:\n  - issuer: {server.url}\n    jwks_uri: {server.url}/jwks\n"
        f"    ca_file: {folder / 'ca.crt'}\n    refetch_cooldown_seconds: 1\n"
        "    fetch_timeout_seconds: 5.0\n"
        f"routes:\n  - name: all\n    audiences: [{AUDIENCE}]\n"
        "    service_accounts: [default/*]\n",
    )
    policy = load(folder / "policy.yaml")
    store = KeyStore(policy)
    await store.load_all()

    async with check_stub(policy, store) as stub:
        known = base.mint(audience=AUDIENCE)
        warm = [(await _timed(stub, known, DEADLINE))[1] for _ in range(50)]
        print(f"known key, no fetch: median {statistics.median(warm):.2f} ms")

        refetch = []
        for _ in range(ROUNDS):
            await asyncio.sleep(1.05)
            added = LocalIssuer(issuer=server.url)
            server.jwks = {"keys": [base.public_jwk(), added.public_jwk()]}
            refetch.append(await _timed(stub, added.mint(audience=AUDIENCE), DEADLINE))
        print(_summary("new key, one refetch", refetch))

        server.mode = "hang"
        hung = []
        for _ in range(ROUNDS):
            await asyncio.sleep(1.05)
            stranger = LocalIssuer(issuer=server.url).mint(audience=AUDIENCE)
            hung.append(await _timed(stub, stranger, DEADLINE))
        print(_summary(f"unknown kid, server hangs, deadline {DEADLINE}s", hung))
        during = [await _timed(stub, known, DEADLINE) for _ in range(20)]
        print(_summary("known key while the server hangs", during))
    server.stop()


def _summary(label: str, results: list[tuple[str, float]]) -> str:
    reasons = sorted({reason or "allowed" for reason, _ in results})
    times = [ms for _, ms in results]
    return (
        f"{label}: median {statistics.median(times):.1f} ms, "
        f"max {max(times):.1f} ms, reasons {reasons}"
    )


if __name__ == "__main__":
    asyncio.run(main())
