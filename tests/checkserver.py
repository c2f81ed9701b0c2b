"""Run the Check service on a real gRPC server on a loopback port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from authz._proto.envoy.service.auth.v3 import (
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from authz.keys.store import KeyStore
from authz.policy import Policy
from authz.server import build, set_serving


@asynccontextmanager
async def check_stub(policy: Policy, keys: KeyStore) -> AsyncIterator[Any]:
    """Yield an Authorization stub talking to a started server."""
    server, health = build(policy, keys)
    port = server.add_insecure_port("127.0.0.1:0")
    await set_serving(health, serving=True)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield external_auth_pb2_grpc.AuthorizationStub(channel)
    finally:
        await server.stop(None)


def check_request(
    host: str, path: str = "/", headers: dict[str, str] | None = None
) -> external_auth_pb2.CheckRequest:
    """Return a CheckRequest for a GET with the given headers."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", host, path
    http.headers.update(headers or {})
    return request


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header for a bearer token."""
    return {"authorization": f"Bearer {token}"}


def free_port() -> int:
    """Return a loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
