"""Run the gRPC server: ext_authz Check, health and reflection."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.keys.store import KeyStore
from authz.policy import Policy
from authz.transport import AuthorizationService

__all__ = ["ListenError", "build", "probe_listen", "serve", "set_serving"]

_LOG = structlog.get_logger(__name__)
_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_GRACE_SECONDS = 5.0
_READY_POLL_SECONDS = 0.2
# gRPC binds with SO_REUSEPORT by default: a second server on the same port
# would silently take half the checks, perhaps with an older policy.
_OPTIONS = [("grpc.so_reuseport", 0)]


class ListenError(Exception):
    """The address to listen on cannot be used; the message says why."""


async def serve(policy: Policy, listen: str, wait_for_keys: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and stop.

    Health reports NOT_SERVING until every issuer has made its first key
    fetch (with `wait_for_keys`, until every issuer has keys), then SERVING.
    """
    stop = _stop_on_signal()
    probe_listen(listen)
    keys = KeyStore(policy)
    server, health_servicer = build(policy, keys)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:
        raise ListenError(f"cannot serve on {listen}: gRPC cannot bind it") from None
    await set_serving(health_servicer, serving=False)
    await server.start()
    tcp_port = None if listen.startswith("unix:") else port
    _LOG.info("server_started", listen=listen, port=tcp_port)

    # Keys load while checks are already answered (keys_unavailable until
    # then), and a signal during a slow first fetch still drains cleanly.
    startup = asyncio.create_task(_start_keys(keys, health_servicer, wait_for_keys))
    await stop.wait()
    _LOG.info("server_stopping", grace_seconds=_GRACE_SECONDS)
    startup.cancel()
    await asyncio.gather(startup, return_exceptions=True)
    await set_serving(health_servicer, serving=False)
    await server.stop(_GRACE_SECONDS)
    await keys.stop()
    _LOG.info("server_stopped")


async def _start_keys(keys: KeyStore, health_servicer: Any, require: bool) -> None:
    await keys.load_all()
    keys.start_refreshing()
    while not keys.ready(require_keys=require):
        await asyncio.sleep(_READY_POLL_SECONDS)
    await set_serving(health_servicer, serving=True)
    _LOG.info("server_ready")


def probe_listen(listen: str) -> None:
    """Raise `ListenError` with the system's reason if `listen` is unusable.

    gRPC only says that binding failed, on stderr; binding once here first
    names the cause (address in use, unknown host, missing folder).
    """
    try:
        if listen.startswith("unix:"):
            _probe_unix(Path(listen.removeprefix("unix:")))
        else:
            _probe_tcp(listen)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ListenError(f"cannot serve on {listen}: {reason}") from None


def _probe_unix(path: Path) -> None:
    if not path.parent.is_dir():
        raise ValueError(f"{path.parent} is not a folder")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"{path.parent} is not writable")
    if path.exists() and not path.is_socket():
        raise ValueError(f"{path} exists and is not a socket")


def _probe_tcp(listen: str) -> None:
    host, colon, port = listen.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected HOST:PORT (port 0-65535) or unix:PATH")
    family, kind, _, _, address = socket.getaddrinfo(
        host.strip("[]"), int(port), type=socket.SOCK_STREAM
    )[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def build(policy: Policy, keys: KeyStore) -> tuple[grpc.aio.Server, Any]:
    """Return an unstarted server with Check, health and reflection."""
    server = grpc.aio.server(options=_OPTIONS)
    check = grpc.unary_unary_rpc_method_handler(
        AuthorizationService(policy, keys).Check,
        request_deserializer=_read_check_request,
        response_serializer=external_auth_pb2.CheckResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_SERVICE, {"Check": check}),)
    )
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer


def _read_check_request(data: bytes) -> external_auth_pb2.CheckRequest | None:
    """Parse a CheckRequest; None if it is not one, so Check still answers.

    With the generated deserializer, bytes that do not parse (a string field
    that is not UTF-8, say) end the call with a gRPC error instead of a deny.
    """
    try:
        return external_auth_pb2.CheckRequest.FromString(data)
    except DecodeError:
        return None


async def set_serving(servicer: Any, serving: bool) -> None:
    """Report the server and the Check service as serving or not."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", _SERVICE):
        await servicer.set(name, status)


def _stop_on_signal() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
