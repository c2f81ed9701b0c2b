"""Measure the ext_authz call under a burst, for several Envoy timeouts.

For each timeout, `python -m authz.demo.load` starts a fresh stack whose Envoy
gives our server that long to answer, sends a bounded burst of allowed
requests through Envoy (N requests, C at a time, stopped at a deadline) and
prints how many got 200 or 503 and four latencies, outermost first: what the
client saw, the request's whole time in Envoy, Envoy's call to our server
(the part the timeout limits) and the decision time our server logged.
Client, Envoy, server and upstream share the machine, so on a small one the
numbers are pessimistic.

    python -m authz.demo.load --timeouts 0.25s,0.5s,1s,2s --requests 2000 \\
        --concurrency 50 --deadline 120
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from authz.demo.scenarios import ECHO_HOST, SCENARIOS, write_policy
from authz.demo.stack import LOOPBACK, Stack, StackError
from authz.testing import LocalIssuer

__all__ = ["Burst", "Result", "main", "measure"]

_TOKEN_POOL = 200
_WARMUP = 20
_REQUEST_SECONDS = 30.0
_QUANTILES = (50, 90, 99)


@dataclass(frozen=True)
class Burst:
    """How much load one measurement sends."""

    requests: int = 2000
    concurrency: int = 50
    deadline: float = 120.0


@dataclass
class Result:
    """What one burst at one timeout produced."""

    timeout: str
    burst: Burst
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    envoy: dict[str, Any] = field(default_factory=dict)
    server_ms: list[float] = field(default_factory=list)
    cut_short: bool = False

    def row(self) -> dict[str, Any]:
        """Return the numbers worth printing, rounded."""
        sent = sum(self.statuses.values())
        return {
            "timeout": self.timeout,
            "sent": sent,
            "200": self.statuses["200"],
            "503": self.statuses["503"],
            "other": sent - self.statuses["200"] - self.statuses["503"],
            "unsent": self.burst.requests - sent if self.cut_short else 0,
            "rps": round(sent / self.elapsed) if self.elapsed else 0,
            "client_ms": _percentiles(self.latencies_ms),
            "envoy_ms": self.envoy.get("envoy_ms", {}),
            "authz_call_ms": self.envoy.get("authz_call_ms", {}),
            "server_ms": _percentiles(self.server_ms),
            "ext_authz": self.envoy.get("ext_authz", {}),
        }


def measure(work: Path, timeout: str, burst: Burst) -> Result:
    """Start a stack with `timeout` for ext_authz and measure one burst."""
    issuer = LocalIssuer()
    policy = write_policy(work, issuer)
    tokens = [SCENARIOS[0].mint(issuer) for _ in range(_TOKEN_POOL)]
    result = Result(timeout, burst)

    with Stack(work, policy, authz_timeout=timeout) as stack:
        _warm_up(stack, tokens)
        started = time.perf_counter()
        _burst(stack, tokens, burst, result)
        result.elapsed = time.perf_counter() - started
        result.envoy = _envoy_stats(stack.admin_url)
        result.server_ms = _server_durations(stack)
    return result


def _warm_up(stack: Stack, tokens: list[str]) -> None:
    """Open a connection and wake every process before anything is timed."""
    connection = _connect(stack)
    try:
        for index in range(_WARMUP):
            _get(connection, tokens[index], f"warmup-{index}")
    finally:
        connection.close()


def _burst(stack: Stack, tokens: list[str], burst: Burst, result: Result) -> None:
    """Send the burst from `concurrency` threads until done or the deadline.

    Each thread keeps one connection open, like a busy client pod. Plain
    http.client in threads costs the client about a sixth of what httpx's
    async client does, which on a small machine would otherwise be the
    bottleneck and hide the numbers we are after.
    """
    indexes = iter(range(burst.requests))
    lock = threading.Lock()
    deadline = time.monotonic() + burst.deadline

    def next_index() -> int | None:
        with lock:
            return next(indexes, None) if time.monotonic() < deadline else None

    def worker() -> None:
        connection = _connect(stack)
        try:
            while (index := next_index()) is not None:
                token = tokens[index % len(tokens)]
                _timed(connection, token, f"load-{index}", result, lock)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=worker, daemon=True) for _ in range(burst.concurrency)
    ]
    for thread in threads:
        thread.start()
    give_up = deadline + _REQUEST_SECONDS
    for thread in threads:
        thread.join(max(0.0, give_up - time.monotonic()))
    with lock:
        result.cut_short = next(indexes, None) is not None


def _timed(
    connection: http.client.HTTPConnection,
    token: str,
    request_id: str,
    result: Result,
    lock: threading.Lock,
) -> None:
    started = time.perf_counter()
    try:
        status = str(_get(connection, token, request_id))
    except (OSError, http.client.HTTPException) as error:
        connection.close()  # the next request reconnects
        status = type(error).__name__
    elapsed_ms = (time.perf_counter() - started) * 1000
    with lock:
        result.latencies_ms.append(elapsed_ms)
        result.statuses[status] += 1


def _connect(stack: Stack) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(
        LOOPBACK, stack.ports.listener, timeout=_REQUEST_SECONDS
    )


def _get(connection: http.client.HTTPConnection, token: str, request_id: str) -> int:
    connection.request("GET", "/", headers=_headers(token, request_id))
    response = connection.getresponse()
    response.read()
    return response.status


def _headers(token: str, request_id: str) -> dict[str, str]:
    return {
        "host": ECHO_HOST,
        "authorization": f"Bearer {token}",
        "x-request-id": request_id,
    }


_STATS_FLUSH_SECONDS = 5.5
_COUNTER_PREFIXES = ("http.ingress.ext_authz.", "cluster.authz.upstream_rq_timeout")
_STATS_FILTER = (
    r"ext_authz|^cluster\.authz\.upstream_rq_(time|timeout)$"
    r"|^http\.ingress\.downstream_rq_time$"
)


def _envoy_stats(admin_url: str) -> dict[str, Any]:
    """Return Envoy's ext_authz counters and its latency quantiles.

    Envoy recomputes histogram quantiles only when it flushes stats, every
    5 s by default, so we wait for one flush after the burst first.
    """
    time.sleep(_STATS_FLUSH_SECONDS)
    response = httpx.get(
        f"{admin_url}/stats",
        params={"format": "json", "filter": _STATS_FILTER},
        timeout=10.0,
        trust_env=False,
    )
    stats: list[dict[str, Any]] = response.json()["stats"]
    counters = {
        s["name"].removeprefix("http.ingress.ext_authz.").removeprefix("cluster."): (
            s["value"]
        )
        for s in stats
        if s.get("value") and s["name"].startswith(_COUNTER_PREFIXES)
    }
    return {
        "ext_authz": counters,
        "authz_call_ms": _histogram(stats, "cluster.authz.upstream_rq_time"),
        "envoy_ms": _histogram(stats, "http.ingress.downstream_rq_time"),
    }


def _histogram(stats: list[dict[str, Any]], name: str) -> dict[str, float]:
    """Return p50/p90/p99/max of Envoy's histogram `name`, in ms."""
    wanted = {f"p{q}": float(q) for q in _QUANTILES} | {"max": 100.0}
    for entry in stats:
        histograms = entry.get("histograms") or {}
        supported = histograms.get("supported_quantiles", [])
        for computed in histograms.get("computed_quantiles", []):
            if computed["name"] == name:
                values = [v["cumulative"] for v in computed["values"]]
                return {
                    key: round(values[supported.index(q)], 1)
                    for key, q in wanted.items()
                    if q in supported and values[supported.index(q)] is not None
                }
    return {}


def _server_durations(stack: Stack) -> list[float]:
    return [
        float(line["duration_ms"])
        for line in stack.events("authz", "decision")
        if str(line.get("request_id", "")).startswith("load-")
    ]


def _percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    found = {f"p{q}": round(cuts[q - 1], 1) for q in _QUANTILES}
    return found | {"max": round(max(values), 1)}


def _print_row(row: dict[str, Any]) -> None:
    def fmt(numbers: dict[str, float]) -> str:
        return " ".join(f"{k}={v:g}" for k, v in numbers.items()) or "-"

    print(
        f"timeout {row['timeout']:>6}: sent {row['sent']} "
        f"200={row['200']} 503={row['503']} other={row['other']} "
        f"unsent={row['unsent']} "
        f"{row['rps']} req/s"
    )
    print(f"    client latency ms    {fmt(row['client_ms'])}")
    print(f"    in envoy ms          {fmt(row['envoy_ms'])}")
    print(f"    envoy->authz call ms {fmt(row['authz_call_ms'])}")
    print(f"    server decision ms   {fmt(row['server_ms'])}")
    print(f"    envoy ext_authz      {row['ext_authz']}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m authz.demo.load")
    parser.add_argument("--timeouts", default="0.25s,0.5s,1s,2s")
    parser.add_argument("--requests", type=int, default=Burst.requests)
    parser.add_argument("--concurrency", type=int, default=Burst.concurrency)
    parser.add_argument(
        "--deadline", type=float, default=Burst.deadline, help="seconds per burst"
    )
    parser.add_argument("--work", type=Path, help="folder for configs and logs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Measure each timeout in turn and print one row per timeout."""
    args = _parser().parse_args(argv)
    burst = Burst(args.requests, args.concurrency, args.deadline)
    work = args.work or Path(tempfile.mkdtemp(prefix="authz-load-"))
    print(f"{burst.requests} requests, {burst.concurrency} at a time; logs in {work}")

    rows = []
    try:
        for timeout in args.timeouts.split(","):
            result = measure(work / f"timeout-{timeout}", timeout, burst)
            rows.append(result.row())
            _print_row(rows[-1])
    except StackError as error:
        print(f"load: could not run the stack: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
