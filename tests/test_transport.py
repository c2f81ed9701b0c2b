"""The gRPC servicer over a real grpc.aio server on a loopback port."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import (
    external_auth_pb2,
)
from authz.keys.store import KeyStore
from authz.policy import Policy
from authz.reasons import GrpcCode
from authz.server import build, set_serving
from authz.testing import LocalIssuer

from conftest import ECHO

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _request(
    headers: dict[str, str] | None = None, path: str = "/", **http: Any
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    target = request.attributes.request.http
    target.method = http.pop("method", "GET")
    target.host = http.pop("host", ECHO)
    target.path = path
    target.id = "42"
    target.headers.update(headers or {})
    for key, value in http.pop("raw", {}).items():
        target.header_map.headers.add(key=key, raw_value=value.encode())
    return request


def _call(
    policy: Policy, *requests: external_auth_pb2.CheckRequest | bytes
) -> list[Any]:
    """Start a server on a free port, send each request, stop the server.

    A request given as bytes is sent as they are, parsed or not.
    """

    async def run() -> list[Any]:
        keys = KeyStore(policy)
        await keys.load_all()
        server, health = build(policy, keys)
        port = server.add_insecure_port("127.0.0.1:0")
        await set_serving(health, serving=True)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                check = channel.unary_unary(
                    "/envoy.service.auth.v3.Authorization/Check",
                    request_serializer=_serialize,
                    response_deserializer=external_auth_pb2.CheckResponse.FromString,
                )
                health_stub = health_pb2_grpc.HealthStub(channel)
                answers = [await check(r, timeout=10) for r in requests]
                status = await health_stub.Check(health_pb2.HealthCheckRequest())
                assert status.status == health_pb2.HealthCheckResponse.SERVING
                return answers
        finally:
            await server.stop(None)

    return asyncio.run(run())


def _serialize(request: external_auth_pb2.CheckRequest | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def _headers(options: Any) -> dict[str, str]:
    assert all(option.append_action == OVERWRITE for option in options)
    return {option.header.key: option.header.value for option in options}


def test_allow_overwrites_identity_headers(policy: Policy, issuer: LocalIssuer) -> None:
    """An allow sets identity headers upstream and downstream, overwriting."""
    token = issuer.mint(service_account="oidc-test", audience=ECHO)
    request = _request({"authorization": f"Bearer {token}", "x-auth-request-user": "x"})

    (response,) = _call(policy, request)

    assert response.status.code == GrpcCode.OK
    assert response.WhichOneof("http_response") == "ok_response"
    assert _headers(response.ok_response.headers)["x-auth-request-user"] == (
        "system:serviceaccount:default:oidc-test"
    )
    assert _headers(response.ok_response.response_headers_to_add) == {
        "gap-auth": "system:serviceaccount:default:oidc-test"
    }


def test_public_route_removes_identity_headers(policy: Policy) -> None:
    """A public allow tells Envoy to drop any client-sent identity header."""
    (response,) = _call(policy, _request({"x-auth-request-user": "x"}, "/healthz"))

    assert response.status.code == GrpcCode.OK
    assert "x-auth-request-user" in response.ok_response.headers_to_remove
    assert not response.ok_response.headers


def test_deny_carries_status_challenge_and_json_body(policy: Policy) -> None:
    """A deny is a 401 with a Bearer challenge and a short JSON body."""
    (response,) = _call(policy, _request())

    assert response.status.code == GrpcCode.UNAUTHENTICATED
    denied = response.denied_response
    assert denied.status.code == 401
    assert _headers(denied.headers)["www-authenticate"] == "Bearer"
    assert json.loads(denied.body) == {"status": 401, "reason": "token_missing"}


def test_raw_header_map_is_read(policy: Policy, issuer: LocalIssuer) -> None:
    """Headers sent in header_map (encode_raw_headers) count like the plain map."""
    token = issuer.mint(service_account="oidc-test", audience=ECHO)

    (response,) = _call(policy, _request(raw={"authorization": f"Bearer {token}"}))

    assert response.status.code == GrpcCode.OK


@pytest.mark.parametrize(
    "request_",
    [
        external_auth_pb2.CheckRequest(),
        _request(host=""),
        _request(path=""),
        _request(method=""),
    ],
    ids=["no-attributes", "empty-host", "empty-path", "empty-method"],
)
def test_incomplete_request_is_denied_not_failed(
    policy: Policy, request_: external_auth_pb2.CheckRequest
) -> None:
    """A CheckRequest missing its HTTP parts gets a 400 deny, not an error."""
    (response,) = _call(policy, request_)

    assert response.status.code == GrpcCode.INVALID_ARGUMENT
    assert response.denied_response.status.code == 400


def test_one_log_line_per_decision_without_the_token(
    policy: Policy, issuer: LocalIssuer, logs: io.StringIO
) -> None:
    """Each decision logs one JSON line with its fields; no token appears."""
    token = issuer.mint(service_account="oidc-test", audience=ECHO)
    bad = issuer.mint(service_account="oidc-test", audience="invalid")
    requests = [
        _request({"authorization": f"Bearer {t}", "x-request-id": f"r{n}"}, "/p?q=1")
        for n, t in enumerate((token, bad))
    ]

    _call(policy, *requests)

    text = logs.getvalue()
    for secret in (token, bad, token.split(".")[2], bad.split(".")[1]):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    decisions = [line for line in lines if line["event"] == "decision"]
    assert [(d["request_id"], d["decision"], d["reason"]) for d in decisions] == [
        ("r0", "allow", "allowed"),
        ("r1", "deny", "audience_mismatch"),
    ]
    first = decisions[0]
    assert first["path"] == "/p"
    assert first["subject"] == "system:serviceaccount:default:oidc-test"
    assert (first["method"], first["host"], first["route"]) == (
        "GET",
        ECHO,
        "echo-server",
    )
    assert first["duration_ms"] >= 0


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda raw: raw.replace(b"PLACEHOLDER", b"\xff\xfe\xfdPLACEHO"),
        lambda raw: raw[:-3],
        lambda raw: b"\x0a\xff\xff\xff\xff\x0f",
    ],
    ids=["not-utf8", "truncated", "bad-length"],
)
def test_bytes_that_are_not_a_check_request_are_denied(
    policy: Policy, logs: io.StringIO, corrupt: Any
) -> None:
    """Undecodable bytes get a CheckResponse deny, not a gRPC error."""
    request = _request({"authorization": "Bearer PLACEHOLDER"})
    raw = corrupt(request.SerializeToString())

    (response,) = _call(policy, raw)

    assert response.status.code == GrpcCode.INVALID_ARGUMENT
    assert response.denied_response.status.code == 400
    assert json.loads(response.denied_response.body)["reason"] == "request_invalid"
    line = json.loads(logs.getvalue().splitlines()[-1])
    assert (line["event"], line["reason"]) == ("decision", "request_invalid")


@pytest.mark.usefixtures("full_disk")
def test_a_log_that_cannot_be_written_fails_nothing(
    policy: Policy, issuer: LocalIssuer
) -> None:
    """With every log write failing, checks are still answered."""
    token = issuer.mint(service_account="oidc-test", audience=ECHO)
    allowed, denied = _call(
        policy, _request({"authorization": f"Bearer {token}"}), _request()
    )

    assert allowed.status.code == GrpcCode.OK
    assert denied.denied_response.status.code == 401
