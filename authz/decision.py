"""The decision core: request attributes and policy in, `Decision` out.

Nothing here does I/O or knows about gRPC; keys come in through
`KeyLookup`, the time as a number, so every path can be tested directly.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from authz.credentials import bearer_token
from authz.keys import KeySet
from authz.policy import Policy, Route
from authz.reasons import OUTCOMES, DenyError, Outcome, Reason
from authz.request import (
    HttpRequest,
    normalize_host,
    normalize_method,
    normalize_path,
)
from authz.tokens import Identity, UnverifiedToken, parse, verify

__all__ = ["Decision", "KeyLookup", "decide"]

KeyLookup = Callable[[str], KeySet | None]
"""Return the current key set of an issuer, or None if none was loaded."""


@dataclass(frozen=True)
class Decision:
    """The answer for one request, with everything Envoy must be told."""

    reason: Reason
    route: str | None = None
    identity: Identity | None = None
    detail: str = ""
    token_presented: bool = False
    upstream_headers: tuple[tuple[str, str], ...] = ()
    downstream_headers: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    issuer: str | None = field(default=None, compare=False)
    kid: str | None = field(default=None, compare=False)

    @property
    def outcome(self) -> Outcome:
        """Return the gRPC and HTTP status for this decision's reason."""
        return OUTCOMES[self.reason]

    @property
    def allowed(self) -> bool:
        """Tell whether the request may pass."""
        return self.outcome.allowed

    def deny_headers(self) -> tuple[tuple[str, str], ...]:
        """Return the headers of the HTTP response a denied caller receives."""
        headers = [("content-type", "application/json")]
        if self.outcome.http_status == 401:
            challenge = "Bearer"
            if self.reason is Reason.AUTHORIZATION_MALFORMED:
                challenge = 'Bearer error="invalid_request"'
            elif self.token_presented:
                challenge = 'Bearer error="invalid_token"'
            headers.append(("www-authenticate", challenge))
        return tuple(headers)

    def deny_body(self) -> str:
        """Return the short JSON body of a denied response."""
        return json.dumps({"status": self.outcome.http_status, "reason": self.reason})


def decide(
    request: HttpRequest, policy: Policy, keys: KeyLookup, now: float
) -> Decision:
    """Decide whether `request` may pass under `policy` at time `now`."""
    try:
        route = _route(request, policy)
    except DenyError as error:
        return Decision(error.reason, detail=error.detail)

    if route.public:
        return _allow_public(route, policy)
    return _check_token(request, route, policy, keys, now)


def _route(request: HttpRequest, policy: Policy) -> Route:
    method = normalize_method(request.method)
    host = normalize_host(request.host)
    path = normalize_path(request.path)
    route = policy.route(host, path, method)
    for reading, fold_case in _readings(path):
        if policy.route(host, reading, method, fold_case) is not route:
            raise DenyError(Reason.PATH_INVALID, "servers may read another route")
    if route is None:
        raise DenyError(Reason.NO_ROUTE, "no route covers the request")
    return route


def _readings(path: str) -> list[tuple[str, bool]]:
    """Return how other servers may read `path`: to be judged the same.

    Many match paths case-blind (Express, ASP.NET), and Windows servers drop
    the dots, spaces and `::$DATA` that end a segment (IIS reads `/admin.`
    as `/admin`). A request whose route would change under such a reading
    is refused, and so is an 8.3 short name (`ADMINI~1`), whose long name
    cannot be known here.
    """
    segments = path.split("/")
    if any(_SHORT_NAME.fullmatch(segment) for segment in segments):
        raise DenyError(Reason.PATH_INVALID, "an 8.3 short file name")
    stripped = "/".join(_strip_segment_end(s) for s in segments)
    return [(path, True), (stripped, False), (stripped, True)]


_SHORT_NAME = re.compile(r"[^.~]{1,6}~[0-9]+(?:\.[^.]{0,3})?")
_STREAM = re.compile(r"::?\$DATA$", re.IGNORECASE)


def _strip_segment_end(segment: str) -> str:
    segment = _STREAM.sub("", segment)
    end = len(segment)
    while end and (segment[end - 1] == "." or segment.endswith("%20", 0, end)):
        end -= 1 if segment[end - 1] == "." else 3
    return segment[:end] or segment


def _allow_public(route: Route, policy: Policy) -> Decision:
    names = tuple(policy.headers.upstream.named().values())
    removed = names + _look_alikes(names)
    return Decision(Reason.PUBLIC_ROUTE, route=route.name, headers_to_remove=removed)


@functools.cache
def _look_alikes(names: tuple[str, ...]) -> tuple[str, ...]:
    """Return every spelling of `names` with `-` and `_` swapped, in any mix.

    CGI-style servers read `x_auth-request_user` as `x-auth-request-user`,
    and Envoy in front of this server may pass such names on (Istio's proxy
    does by default), so clients' copies under all of them go. The policy
    keeps the separators in a name few enough for this to stay short; the
    names come from the policy, so each set is spelled out once.
    """
    twins = {twin for name in names for twin in _spellings(name)}
    return tuple(sorted(twins - set(names)))


def _spellings(name: str) -> list[str]:
    first, *rest = re.split(r"[-_]", name)
    spellings = []
    for separators in itertools.product("-_", repeat=len(rest)):
        pairs = zip(separators, rest, strict=True)
        spellings.append(first + "".join(sep + part for sep, part in pairs))
    return spellings


def _check_token(
    request: HttpRequest, route: Route, policy: Policy, keys: KeyLookup, now: float
) -> Decision:
    presented = False
    token: UnverifiedToken | None = None
    try:
        compact = bearer_token(request, policy.max_token_bytes)
        presented = True
        token = parse(compact)
        identity = _verify(token, route, policy, keys, now)
    except DenyError as error:
        return Decision(
            error.reason,
            route=route.name,
            detail=error.detail,
            token_presented=presented or error.reason is Reason.TOKEN_TOO_LARGE,
            issuer=token.issuer if token else None,
            kid=token.kid if token else None,
        )

    if not route.permits(identity):
        return Decision(
            Reason.SERVICE_ACCOUNT_NOT_ALLOWED, route=route.name, identity=identity
        )
    return _allow(route, identity, policy)


def _verify(
    token: UnverifiedToken, route: Route, policy: Policy, keys: KeyLookup, now: float
) -> Identity:
    issuer = policy.issuer(token.issuer)
    if issuer is None:
        raise DenyError(Reason.ISSUER_UNKNOWN, "iss names no trusted issuer")
    if not route.accepts_issuer(issuer.issuer):
        raise DenyError(Reason.ISSUER_NOT_ALLOWED, "the route does not accept iss")
    keyset = keys(issuer.issuer)
    if keyset is None:
        raise DenyError(Reason.KEYS_UNAVAILABLE, "the issuer's keys are not loaded")
    audiences = route.audiences or ()
    return verify(token, issuer.for_verification(), keyset, audiences, now)


def _allow(route: Route, identity: Identity, policy: Policy) -> Decision:
    values = {
        "user": identity.subject,
        "namespace": identity.namespace,
        "service_account": identity.service_account,
        "issuer": identity.issuer,
    }
    up, down = policy.headers.upstream.named(), policy.headers.downstream.named()
    return Decision(
        Reason.ALLOWED,
        route=route.name,
        identity=identity,
        upstream_headers=tuple((name, values[part]) for part, name in up.items()),
        downstream_headers=tuple((name, values[part]) for part, name in down.items()),
        headers_to_remove=_look_alikes(tuple(up.values())),
        issuer=identity.issuer,
    )
