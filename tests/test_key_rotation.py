"""Rotation and outages, through the real Check service and key server."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.keys import store as store_module
from authz.keys.sources import KeySourceError
from authz.keys.store import KeyStore
from authz.policy import Policy, load
from authz.reasons import GrpcCode, Reason
from authz.testing import LocalIssuer

from checkserver import bearer, check_request, check_stub, free_port
from keyserver import KeyServer

AUDIENCE = "echo-server.echo-server.svc.cluster.local"


def _policy(tmp_path: Path, server: KeyServer, **settings: Any) -> Policy:
    extra = "".join(f"    {key}: {value}\n" for key, value in settings.items())
    text = (
        "issuers:\n"
        f"  - issuer: {server.url}\n"
        f"    jwks_uri: {server.url}/jwks\n"
        f"    ca_file: {server.ca_file}\n"
        f"{extra}"
        "routes:\n"
        "  - name: all\n"
        f"    audiences: [{AUDIENCE}]\n"
        "    service_accounts: [default/*]\n"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return load(path)


async def _check(stub: Any, token: str, timeout: float = 5.0) -> Any:
    request = check_request(AUDIENCE, headers=bearer(token))
    return await stub.Check(request, timeout=timeout)


def test_new_key_is_allowed_on_first_request_with_one_refetch(
    tmp_path: Path, server: KeyServer
) -> None:
    """A token signed by a key added after start-up passes at once."""
    old = LocalIssuer(issuer=server.url)
    new = LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [old.public_jwk()]}
    policy = _policy(tmp_path, server, refetch_cooldown_seconds=1)

    async def run() -> Any:
        store = KeyStore(policy)
        await store.load_all()
        await asyncio.sleep(1.1)  # past the cooldown of the start-up fetch
        server.jwks = {"keys": [old.public_jwk(), new.public_jwk()]}
        async with check_stub(policy, store) as stub:
            return await _check(stub, new.mint(audience=AUDIENCE))

    response = asyncio.run(run())

    assert response.status.code == GrpcCode.OK
    assert server.hits["/jwks"] == 2


def test_unknown_kid_burst_refetches_once_per_cooldown(
    tmp_path: Path, server: KeyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random kids cannot make the server hammer the issuer."""
    started: list[float] = []
    real = store_module.read_keys

    async def timed(config: Any) -> Any:
        # The cooldown runs from a fetch's start; the key server sees each
        # one a little later, the first (TLS set-up) up to 0.1 s later.
        started.append(time.monotonic())
        return await real(config)

    monkeypatch.setattr(store_module, "read_keys", timed)
    signer = LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [signer.public_jwk()]}
    policy = _policy(tmp_path, server, refetch_cooldown_seconds=2)

    def forged() -> str:
        return LocalIssuer(issuer=server.url, kid=uuid.uuid4().hex).mint(
            audience=AUDIENCE
        )

    tokens = [forged() for _ in range(20)]

    async def run() -> list[Any]:
        store = KeyStore(policy)
        await store.load_all()
        async with check_stub(policy, store) as stub:
            first = await asyncio.gather(*(_check(stub, t) for t in tokens * 5))
            await asyncio.sleep(2.1)
            second = await asyncio.gather(*(_check(stub, t) for t in tokens * 5))
        return first + second

    responses = asyncio.run(run())

    assert {r.status.message for r in responses} == {Reason.KEY_UNKNOWN}
    # 200 unknown kids over more than one cooldown: a refetch at least once,
    # never two closer than the cooldown, however long the bursts took.
    refetches = server.hit_times[1:]
    assert 1 <= len(refetches) < len(responses) / 20
    assert len(started) == len(server.hit_times)
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert min(gaps) >= 2 - 0.05


def test_removed_key_stops_verifying_after_refresh(
    tmp_path: Path, server: KeyServer
) -> None:
    """A key that leaves the set no longer verifies once keys are refreshed."""
    signer = LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [signer.public_jwk(), LocalIssuer().public_jwk()]}
    policy = _policy(tmp_path, server, refresh_seconds=10)
    token = signer.mint(audience=AUDIENCE)

    async def run() -> tuple[Any, Any]:
        store = KeyStore(policy)
        await store.load_all()
        async with check_stub(policy, store) as stub:
            before = await _check(stub, token)
            server.jwks = {"keys": [LocalIssuer().public_jwk()]}
            await store.issuers[server.url].fetch()
            return before, await _check(stub, token)

    before, after = asyncio.run(run())

    assert before.status.code == GrpcCode.OK
    assert after.status.message == Reason.KEY_UNKNOWN


@pytest.mark.parametrize("outage", ["error", "down"])
def test_cached_keys_serve_through_an_outage(
    tmp_path: Path, server: KeyServer, outage: str
) -> None:
    """If refreshing fails, the last good keys keep verifying."""
    signer = LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [signer.public_jwk()]}
    policy = _policy(tmp_path, server)

    async def run() -> Any:
        store = KeyStore(policy)
        await store.load_all()
        if outage == "down":
            server.stop()
        else:
            server.mode = "error"
        with pytest.raises(KeySourceError):
            await store.issuers[server.url].fetch()
        async with check_stub(policy, store) as stub:
            return await _check(stub, signer.mint(audience=AUDIENCE))

    assert asyncio.run(run()).status.code == GrpcCode.OK


@pytest.mark.parametrize("outage", ["error", "down", "hang"])
def test_no_keys_ever_is_a_quick_keys_unavailable(
    tmp_path: Path, server: KeyServer, outage: str
) -> None:
    """With nothing cached, valid tokens are denied quickly, never allowed."""
    signer = LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [signer.public_jwk()]}
    server.mode = outage
    policy = _policy(tmp_path, server, fetch_timeout_seconds=1.0)
    if outage == "down":
        server.stop()

    async def run() -> tuple[Any, float]:
        store = KeyStore(policy)
        await store.load_all()
        async with check_stub(policy, store) as stub:
            started = time.perf_counter()
            response = await _check(stub, signer.mint(audience=AUDIENCE), timeout=0.5)
            return response, time.perf_counter() - started

    response, elapsed = asyncio.run(run())

    assert response.status.code == GrpcCode.UNAVAILABLE
    assert response.status.message == Reason.KEYS_UNAVAILABLE
    assert response.denied_response.status.code == 503
    assert elapsed < 0.5


def test_hanging_key_server_does_not_outlast_the_deadline(
    tmp_path: Path, server: KeyServer
) -> None:
    """A refetch that hangs is cut off in time to answer within the deadline."""
    signer = LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [signer.public_jwk()]}
    policy = _policy(tmp_path, server, refetch_cooldown_seconds=1)
    unknown = LocalIssuer(issuer=server.url).mint(audience=AUDIENCE)

    async def run() -> tuple[Any, Any]:
        store = KeyStore(policy)
        await store.load_all()
        await asyncio.sleep(1.1)
        server.mode = "hang"
        async with check_stub(policy, store) as stub:
            denied = await _check(stub, unknown, timeout=0.5)
            allowed = await _check(stub, signer.mint(audience=AUDIENCE), timeout=0.5)
        return denied, allowed

    denied, allowed = asyncio.run(run())

    assert denied.status.message == Reason.KEY_UNKNOWN
    assert allowed.status.code == GrpcCode.OK


def test_two_issuers_and_no_cross_signing(
    tmp_path: Path, server: KeyServer, ca: tuple[trustme.CA, Path]
) -> None:
    """Each issuer's tokens verify only with that issuer's keys; EC works."""
    rsa_issuer = LocalIssuer(issuer=server.url)
    other_rsa = LocalIssuer(issuer="https://other-cluster.example.test")
    ec_issuer = LocalIssuer(issuer="https://oidc.example.test", algorithm="ES256")
    server.jwks = {"keys": [rsa_issuer.public_jwk()]}
    _policy(tmp_path, server)
    extra = ""
    for signer in (other_rsa, ec_issuer):
        jwks = signer.write_jwks(tmp_path / f"{signer.kid}.json")
        extra += (
            f"  - issuer: {signer.issuer}\n    jwks_file: {jwks}\n"
            f"    algorithms: [{signer.algorithm}]\n"
        )
    names = ", ".join(s.issuer for s in (rsa_issuer, other_rsa, ec_issuer))
    text = (tmp_path / "policy.yaml").read_text().replace("routes:", extra + "routes:")
    text = text.replace(
        "  - name: all\n",
        "  - name: a-only\n    paths: [/a]\n"
        f"    audiences: [{AUDIENCE}]\n    service_accounts: [default/*]\n"
        f"    issuers: [{rsa_issuer.issuer}]\n"
        f"  - name: all\n    issuers: [{names}]\n",
    )
    (tmp_path / "policy.yaml").write_text(text)
    policy = load(tmp_path / "policy.yaml")
    claims_a = rsa_issuer.claims(audience=AUDIENCE)
    # Claims naming issuer A, signed with another trusted issuer's key:
    tokens = {
        "rsa": rsa_issuer.mint(audience=AUDIENCE),
        "other_rsa": other_rsa.mint(audience=AUDIENCE),
        "ec": ec_issuer.mint(audience=AUDIENCE),
        "b_key_b_kid": other_rsa.sign(claims_a),
        "b_key_a_kid": other_rsa.sign(claims_a, headers={"kid": rsa_issuer.kid}),
        "ec_key": ec_issuer.sign(claims_a),
    }

    async def run() -> dict[str, Any]:
        store = KeyStore(policy)
        await store.load_all()
        async with check_stub(policy, store) as stub:
            replies = {name: await _check(stub, t) for name, t in tokens.items()}
            for name in ("rsa", "other_rsa"):
                request = check_request(AUDIENCE, "/a", bearer(tokens[name]))
                replies[f"{name} on /a"] = await stub.Check(request, timeout=5)
            return replies

    replies = asyncio.run(run())

    assert [replies[n].status.code for n in ("rsa", "other_rsa", "ec")] == [0, 0, 0]
    assert replies["b_key_b_kid"].status.message == Reason.KEY_UNKNOWN
    assert replies["b_key_a_kid"].status.message == Reason.SIGNATURE_INVALID
    assert replies["ec_key"].status.message == Reason.ALGORITHM_NOT_ALLOWED
    # A route that names its issuer refuses another cluster's default/*.
    assert replies["rsa on /a"].status.code == GrpcCode.OK
    assert replies["other_rsa on /a"].status.message == Reason.ISSUER_NOT_ALLOWED


def _health(port: int) -> int:
    async def ask() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            return int(reply.status)

    return asyncio.run(ask())


def test_health_turns_serving_when_keys_arrive(
    tmp_path: Path, server: KeyServer
) -> None:
    """`serve --wait-for-keys` is NOT_SERVING until the keys load, then SERVING."""
    server.jwks = {"keys": [LocalIssuer(issuer=server.url).public_jwk()]}
    server.mode = "error"
    _policy(tmp_path, server)
    port = free_port()
    command = [sys.executable, "-m", "authz", "serve", "--wait-for-keys"]
    command += [
        "--config",
        str(tmp_path / "policy.yaml"),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        seen = [_poll_health(port, until=health_pb2.HealthCheckResponse.NOT_SERVING)]
        server.mode = "ok"
        seen.append(_poll_health(port, until=health_pb2.HealthCheckResponse.SERVING))
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert seen == [
        health_pb2.HealthCheckResponse.NOT_SERVING,
        health_pb2.HealthCheckResponse.SERVING,
    ]
    assert process.returncode == 0


def _poll_health(port: int, until: int, limit: float = 20.0) -> int:
    deadline = time.monotonic() + limit
    status = -1
    while time.monotonic() < deadline:
        try:
            status = _health(port)
        except grpc.RpcError:
            status = -1
        if status == until:
            break
        time.sleep(0.2)
    return status


def test_refresh_outlives_an_unexpected_error(
    tmp_path: Path, server: KeyServer, monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    """A bug in a fetch is logged with its traceback and retried, not fatal."""
    signer = LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [signer.public_jwk()]}
    keys = KeyStore(_policy(tmp_path, server)).issuers[server.url]
    real = store_module.read_keys
    calls: list[int] = []

    async def flaky(config: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RecursionError("a bug")
        return await real(config)

    monkeypatch.setattr(store_module, "read_keys", flaky)

    async def run() -> bool:
        refresh = asyncio.create_task(keys.run())
        for _ in range(100):
            if keys.keyset is not None:
                break
            await asyncio.sleep(0.05)
        alive = not refresh.done()
        refresh.cancel()
        return alive

    assert asyncio.run(run())
    assert keys.keyset is not None
    assert len(calls) == 2
    failure = json.loads(logs.getvalue().splitlines()[0])
    assert failure["event"] == "keys_fetch_failed"
    assert "RecursionError" in failure["exception"]


def test_key_removed_after_a_garbage_answer_stops_verifying(
    tmp_path: Path, server: KeyServer
) -> None:
    """A nested-JSON answer between two refreshes leaves the refresh working."""
    kept, dropped = LocalIssuer(issuer=server.url), LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [kept.public_jwk(), dropped.public_jwk()]}
    policy = _policy(tmp_path, server)
    keys = KeyStore(policy)
    issuer = keys.issuers[server.url]
    token = dropped.mint(audience=AUDIENCE)

    async def run() -> list[Any]:
        await keys.load_all()
        async with check_stub(policy, keys) as stub:
            before = await _check(stub, token)
            server.raw_jwks = b"[" * 100_000
            with pytest.raises(KeySourceError):
                await issuer.fetch()
            during = await _check(stub, token)
            server.raw_jwks = None
            server.jwks = {"keys": [kept.public_jwk()]}
            await issuer.fetch()
            return [before, during, await _check(stub, token)]

    before, during, after = asyncio.run(run())

    assert before.status.code == GrpcCode.OK
    assert during.status.code == GrpcCode.OK  # the last good keys still serve
    assert after.status.message == Reason.KEY_UNKNOWN


def test_failed_start_up_fetch_backs_off_before_retrying(
    tmp_path: Path, server: KeyServer
) -> None:
    """The refresh does not repeat a start-up fetch that just failed at once."""
    server.mode = "error"
    store = KeyStore(_policy(tmp_path, server))
    issuer = store.issuers[server.url]

    async def run() -> int:
        await store.load_all()
        store.start_refreshing()
        await asyncio.sleep(0.3)
        await store.stop()
        return issuer.fetches

    assert asyncio.run(run()) == 1


@pytest.mark.usefixtures("full_disk")
def test_refresh_goes_on_when_its_log_cannot_be_written(
    tmp_path: Path, server: KeyServer
) -> None:
    """A full disk under the log does not stop keys from being replaced."""
    old, new = LocalIssuer(issuer=server.url), LocalIssuer(issuer=server.url)
    server.jwks = {"keys": [old.public_jwk()]}
    keys = KeyStore(_policy(tmp_path, server)).issuers[server.url]

    asyncio.run(keys.fetch())
    server.jwks = {"keys": [new.public_jwk()]}
    asyncio.run(keys.fetch())

    assert keys.keyset is not None
    assert keys.keyset.kids == {new.kid}


def test_refetch_joins_a_fetch_that_ends_as_it_waits(
    tmp_path: Path, server: KeyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that found a fetch under way joins it, even if it ends at once.

    The cooldown once broke here: the check decided to join, but started its
    own fetch a loop step later, after the one it meant to join had ended.
    """
    server.jwks = {"keys": [LocalIssuer(issuer=server.url).public_jwk()]}
    keys = KeyStore(_policy(tmp_path, server)).issuers[server.url]
    real = store_module.read_keys
    loaded: list[Any] = []

    async def instant(config: Any) -> Any:
        if not loaded:
            loaded.append(await real(config))
        return loaded[0]  # later fetches end in their first step

    monkeypatch.setattr(store_module, "read_keys", instant)

    async def run() -> bool:
        await keys.fetch()
        refresh = asyncio.create_task(keys.fetch())
        await asyncio.sleep(0)  # the refresh's fetch is started, not yet run
        known = await keys.refetch_for("unknown-kid", 1.0)
        await refresh
        return known

    assert not asyncio.run(run())
    assert keys.fetches == 2  # start-up and the refresh, no third
