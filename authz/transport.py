"""The gRPC face of the decision core: CheckRequest in, CheckResponse out.

`AuthorizationService.Check` never raises: anything unexpected becomes a
deny with `internal_error`, logged with its traceback.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import grpc
import structlog
from google.protobuf import struct_pb2

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import (
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from authz._proto.google.rpc import status_pb2
from authz.decision import Decision, decide
from authz.keys.store import KeyStore
from authz.policy import Policy
from authz.reasons import DenyError, Reason
from authz.request import HttpRequest

__all__ = ["AuthorizationService", "to_check_response", "to_http_request"]

_LOG = structlog.get_logger("authz.decision")
REFETCH_WAIT_SECONDS = 2.0
"""The longest a check waits on a key refetch when the caller set no deadline."""
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers Envoy's ext_authz Check calls from the policy and key store."""

    def __init__(self, policy: Policy, keys: KeyStore) -> None:
        self._policy = policy
        self._keys = keys

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest | None,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> external_auth_pb2.CheckResponse:
        """Decide one request and translate the decision for Envoy.

        `request` is None when the bytes received were not a CheckRequest.
        """
        started = time.perf_counter()
        http: HttpRequest | None = None
        try:
            if request is None:
                raise DenyError(Reason.REQUEST_INVALID, "not a CheckRequest")
            http = to_http_request(request)
            decision = await self._decide(http, context)
        except DenyError as error:
            decision = Decision(error.reason, detail=error.detail)
        except Exception:
            _LOG.exception("check_failed")
            decision = Decision(Reason.INTERNAL_ERROR, detail="unexpected error")

        try:
            _log_decision(decision, http, request, started)
        except Exception:  # a log line that cannot be made must not fail the check
            with contextlib.suppress(Exception):
                _LOG.exception("log_failed")
        return _safe_response(decision)

    async def _decide(
        self, http: HttpRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Decision:
        """Decide, refetching keys once if the token names an unknown kid."""
        decision = decide(http, self._policy, self._keys.lookup, time.time())
        if decision.reason is not Reason.KEY_UNKNOWN or not decision.issuer:
            return decision

        wait = _refetch_wait(context)
        kid = decision.kid or ""
        if await self._keys.refetch_for(decision.issuer, kid, wait):
            decision = decide(http, self._policy, self._keys.lookup, time.time())
        return decision


def _refetch_wait(context: grpc.aio.ServicerContext[Any, Any] | None) -> float:
    """Return how long a check may wait on a key refetch.

    Envoy sends its ext_authz timeout as the call's deadline; the wait stops
    early enough to still answer within it.
    """
    remaining = context.time_remaining() if context is not None else None
    if remaining is None:
        return REFETCH_WAIT_SECONDS
    return max(0.0, min(REFETCH_WAIT_SECONDS, remaining * 0.8 - 0.02))


def to_http_request(request: external_auth_pb2.CheckRequest) -> HttpRequest:
    """Read the HTTP attributes Envoy sent, or raise `DenyError`."""
    attributes = request.attributes
    if not attributes.HasField("request") or not attributes.request.HasField("http"):
        raise DenyError(Reason.REQUEST_INVALID, "no HTTP attributes in the request")

    http = attributes.request.http
    headers = _headers(http)
    request_id = next((v for k, v in headers if k == "x-request-id"), http.id)
    return HttpRequest(
        method=http.method,
        host=http.host,
        path=http.path,
        headers=headers,
        request_id=request_id,
    )


def _headers(http: Any) -> tuple[tuple[str, str], ...]:
    """Read headers from the plain map and from the raw header map alike."""
    pairs = [(key.lower(), value) for key, value in http.headers.items()]
    for header in http.header_map.headers:
        value = header.value or header.raw_value.decode("utf-8", "replace")
        pairs.append((header.key.lower(), value))
    return tuple(pairs)


def to_check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    """Translate a decision into the CheckResponse Envoy expects."""
    outcome = decision.outcome
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=int(outcome.grpc_code), message=decision.reason),
        dynamic_metadata=_metadata(decision),
    )
    if decision.allowed:
        ok = response.ok_response
        ok.headers.extend(_options(decision.upstream_headers))
        ok.headers_to_remove.extend(decision.headers_to_remove)
        ok.response_headers_to_add.extend(_options(decision.downstream_headers))
    else:
        denied = response.denied_response
        denied.status.code = outcome.http_status  # type: ignore[assignment]
        denied.headers.extend(_options(decision.deny_headers()))
        denied.body = decision.deny_body()
    return response


def _options(headers: tuple[tuple[str, str], ...]) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=value),
            append_action=_OVERWRITE,
        )
        for key, value in headers
    ]


def _metadata(decision: Decision) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    metadata.update({"reason": str(decision.reason), "route": decision.route or ""})
    if decision.identity is not None:
        metadata.update({"subject": decision.identity.subject})
    return metadata


_FALLBACK = to_check_response(Decision(Reason.INTERNAL_ERROR))
_EMPTY = external_auth_pb2.CheckRequest()


def _safe_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    try:
        return to_check_response(decision)
    except Exception:
        _LOG.exception("response_failed")
        return _FALLBACK


def _log_decision(
    decision: Decision,
    http: HttpRequest | None,
    request: external_auth_pb2.CheckRequest | None,
    started: float,
) -> None:
    attributes = (request or _EMPTY).attributes.request.http
    _LOG.info(
        "decision",
        request_id=(http.request_id if http else attributes.id) or None,
        decision="allow" if decision.allowed else "deny",
        reason=str(decision.reason),
        status=decision.outcome.http_status,
        route=decision.route,
        subject=decision.identity.subject if decision.identity else None,
        method=attributes.method,
        host=attributes.host,
        path=attributes.path.split("?", 1)[0],
        detail=decision.detail or None,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
