"""Properties of the decision core over generated requests, paths and tokens.

Hypothesis builds requests from hostile parts: methods, hosts and paths
mixing dot segments, escapes and look-alikes, Authorization values in odd
shapes, and token-like strings from random text up to genuinely signed
tokens with one thing changed. Whatever it builds, the core answers with a
decision and never raises, and it allows only a token that an independent
check (python-jose and the claim rules written out here) accepts.
"""

from __future__ import annotations

import base64
import json
import re
import time
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jose import jwk, jws

from authz.credentials import bearer_token
from authz.decision import Decision, decide
from authz.keys import KeySet
from authz.policy import Policy
from authz.reasons import OUTCOMES, DenyError, Reason
from authz.request import HttpRequest, normalize_host, normalize_path
from authz.testing import LocalIssuer
from authz.tokens import parse

from conftest import ECHO

NOW = float(int(time.time()))
LEEWAY = 30
ISSUER = LocalIssuer()
OTHER_KEY = LocalIssuer(issuer=ISSUER.issuer, kid=ISSUER.kid)
KEYS = KeySet.from_jwks(ISSUER.jwks())
SIGNER = jwk.construct(ISSUER.private_pem, "RS256")
MAX_TOKEN_BYTES = 8192

SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW, MANY = 1000, 2000


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# Genuine tokens, some of them valid, to mutate and to present as they are


def _minted(**changes: Any) -> str:
    claims = ISSUER.claims(
        service_account=changes.pop("account", "oidc-test"),
        namespace=changes.pop("namespace", "default"),
        audience=changes.pop("audience", ECHO),
        now=NOW,
    )
    claims.update(changes)
    return ISSUER.sign(claims)


GENUINE = [
    _minted(),
    _minted(namespace="ops", account="admin"),
    _minted(account="default"),
    _minted(audience="invalid"),
    _minted(exp=NOW - LEEWAY),
    _minted(nbf=NOW + LEEWAY + 1),
    _minted(sub="system:serviceaccount:default:oidc-test\n"),
    _minted(aud=[ECHO, 1]),
    OTHER_KEY.mint(service_account="oidc-test", audience=ECHO, now=NOW),
]

_BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

headers_json = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "HS256", "none", "NONE", "RS384"])
        | json_values,
        "kid": st.sampled_from([ISSUER.kid, "../jwks", ""]) | json_values,
        "crit": json_values,
        "jwk": json_values,
        "typ": st.just("JWT"),
    },
)

claims_json = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from([ISSUER.issuer, "kubernetes/serviceaccount"])
        | json_values,
        "sub": st.sampled_from(
            [
                "system:serviceaccount:default:oidc-test",
                "system:serviceaccount:ops:admin",
                "system:serviceaccount:default:oidc-test,x",
            ]
        )
        | json_values,
        "aud": st.sampled_from([ECHO, [ECHO], ["x", ECHO]]) | json_values,
        "exp": st.sampled_from([NOW + 600, NOW - 600, 1e308]) | json_values,
        "nbf": st.sampled_from([NOW - 10, NOW + 600]) | json_values,
        "iat": st.sampled_from([NOW - 10, NOW + 600]) | json_values,
    },
)


@st.composite
def forged_tokens(draw: st.DrawFn) -> str:
    """A token from generated JSON: unsigned, randomly signed or truly signed."""
    header = json.dumps(draw(headers_json)).encode()
    claims = json.dumps(draw(claims_json)).encode()
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    how = draw(st.sampled_from(["empty", "random", "genuine"]))
    if how == "genuine":
        return f"{signing_input}.{_b64(SIGNER.sign(signing_input.encode()))}"
    if how == "random":
        return f"{signing_input}.{_b64(draw(st.binary(max_size=300)))}"
    return f"{signing_input}."


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    """A genuine token with one change: a character, a cut, a swap, a splice."""
    token = draw(st.sampled_from(GENUINE))
    parts = token.split(".")
    kind = draw(st.sampled_from(["char", "cut", "swap", "splice", "append"]))
    if kind == "char":
        index = draw(st.integers(0, len(token) - 1))
        char = draw(st.sampled_from(_BASE64URL + ".=+/ "))
        return token[:index] + char + token[index + 1 :]
    if kind == "cut":
        return token[: draw(st.integers(0, len(token)))]
    if kind == "swap":
        first, second = draw(st.permutations(range(3)))[:2]
        parts[first], parts[second] = parts[second], parts[first]
        return ".".join(parts)
    if kind == "splice":
        other = draw(st.sampled_from(GENUINE)).split(".")
        index = draw(st.integers(0, 2))
        parts[index] = other[index]
        return ".".join(parts)
    return token + draw(st.text(_BASE64URL + ".=", max_size=8))


token_like = st.one_of(
    st.sampled_from(GENUINE),
    mutated_tokens(),
    forged_tokens(),
    st.text(_BASE64URL + ".=", max_size=120),
    st.text(max_size=40),
)

authorization_values = st.one_of(
    token_like.map(lambda t: f"Bearer {t}"),
    st.tuples(
        st.sampled_from(["bearer", "BEARER", "Basic", "Bearer ", " Bearer", ""]),
        st.sampled_from([" ", "  ", "\t", ""]),
        token_like,
    ).map("".join),
    st.text(max_size=30),
)

header_names = st.sampled_from(
    [
        "authorization",
        "Authorization",
        "AUTHORIZATION",
        "x-auth-request-user",
        "X-Auth-Request-User",
        "cookie",
        "x-access-token",
    ]
) | st.text(max_size=10)

header_lists = st.lists(
    st.tuples(header_names, authorization_values | st.text(max_size=20)),
    max_size=3,
)

segments = st.sampled_from(
    [
        "",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        ".%2e",
        "healthz",
        "admin",
        "%61dmin",
        "ADMIN",
        "x",
        "%2F",
        "%5c",
        "\\",
        "%00",
        "%0a",
        "%C0%AE",
        "%EF%BC%8E",
        "%E2%80%A5",
        "%C3%A9",
        "%25",
        "%252e",
        "%zz",
        "%",
        ";",
        "..;",
        "..%3B",
        "a;b",
        "?",
        "?x=/../admin",
        "#",
        "é",
        " ",
        "~",
        "%7E",
    ]
) | st.text(alphabet="abc.%/;?#2eEF", max_size=4)

paths = st.one_of(
    st.lists(segments, max_size=7).map(lambda s: "/" + "/".join(s)),
    st.lists(segments, min_size=1, max_size=4).map("/".join),
    st.text(max_size=30),
)

hosts = st.one_of(
    st.sampled_from(
        [
            ECHO,
            ECHO.upper(),
            f"{ECHO}:8080",
            f"{ECHO}.",
            f"{ECHO}..",
            f"user@{ECHO}",
            "[::1]:80",
            "other.example",
            "",
        ]
    ),
    st.text(max_size=20),
)

methods = st.sampled_from(["GET", "HEAD", "POST", "DELETE", "get", ""]) | st.text(
    max_size=6
)

authorization_headers = st.one_of(
    authorization_values.map(lambda v: (("authorization", v),)),
    header_lists.map(tuple),
)
valid_hosts = st.sampled_from([ECHO, ECHO.upper(), f"{ECHO}:8080", f"{ECHO}."])
valid_paths = st.sampled_from(["/", "/api?q=1", "/admin", "/admin/x", "/healthz"])


def _requests(method: Any, host: Any, path: Any, headers: Any) -> Any:
    return st.builds(
        HttpRequest,
        method=method,
        host=host,
        path=path,
        headers=headers,
        request_id=st.just("p"),
    )


# Most requests are well-formed but for their token, so the token checks see
# thousands of hostile tokens; the rest vary the path, or everything at once.
token_requests = _requests(
    st.sampled_from(["GET", "POST"]), valid_hosts, valid_paths, authorization_headers
)
requests = st.one_of(
    token_requests,
    token_requests,
    token_requests,
    _requests(st.just("GET"), valid_hosts, paths, authorization_headers),
    _requests(methods, hosts, paths | valid_paths, authorization_headers),
)


# The independent check an allow must pass


def _verified_claims(token: str) -> dict[str, Any]:
    """Verify with python-jose directly and return the claims, or fail."""
    payload = jws.verify(token, ISSUER.public_pem, algorithms=["RS256"])
    claims: dict[str, Any] = json.loads(payload)
    return claims


def _acceptable(claims: dict[str, Any], route: str | None) -> bool:
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    sub = claims["sub"]
    allowed = {
        "echo-server": "system:serviceaccount:default:oidc-test",
        "admin": "system:serviceaccount:ops:",
    }
    return (
        claims["iss"] == ISSUER.issuer
        and ECHO in aud
        and all(isinstance(a, str) for a in aud)
        and claims["exp"] + LEEWAY > NOW
        and claims.get("nbf", 0) <= NOW + LEEWAY
        and claims.get("iat", 0) <= NOW + LEEWAY
        and isinstance(sub, str)
        and route in allowed
        and sub.startswith(allowed[route])
        and re.fullmatch(r"system:serviceaccount:[a-z0-9-]+:[a-z0-9.-]+", sub)
        is not None
    )


def _lenient_utf8(data: bytes) -> str:
    """Decode UTF-8 the careless way: overlong forms count, bad bytes are kept."""
    chars: list[str] = []
    index = 0
    while index < len(data):
        lead = data[index]
        width = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 1
        tail = data[index + 1 : index + width]
        if width == 1 or len(tail) < width - 1 or any(b >> 6 != 0b10 for b in tail):
            chars.append(chr(lead))
            index += 1
            continue
        code = lead & (0x1F if width == 2 else 0x0F)
        for byte in tail:
            code = code << 6 | byte & 0x3F
        chars.append(chr(code))
        index += width
    return "".join(chars)


def _resolve(segments: list[str]) -> list[str]:
    output: list[str] = []
    for index, segment in enumerate(segments):
        if segment == "..":
            output = output[:-1]
        elif segment != ".":
            output.append(segment)
            continue
        if index == len(segments) - 1:
            output.append("")
    return output


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]")


def _rfc_decoded(path: str) -> str:
    """Decode escapes of unreserved characters, which RFC 3986 says are equal."""

    def decode(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if _UNRESERVED.fullmatch(char) else match.group(0)

    return _ESCAPE.sub(decode, path.split("?", 1)[0])


def _readings(path: str) -> set[str]:
    """Return the paths differently built RFC 3986 servers could read.

    All of them take %2E for a dot; beyond that, escapes decoded or not,
    leniently (overlong forms), NFKC-folded, `;` parameters cut after
    decoding, backslashes read as slashes, slashes merged before or after
    dot segments are resolved.
    """
    raw = _rfc_decoded(path)
    decoded = _lenient_utf8(unquote_to_bytes(raw))
    texts = {raw, decoded, unicodedata.normalize("NFKC", decoded)}
    texts |= {re.sub(r";[^/]*", "", t) for t in texts}
    texts |= {t.replace("\\", "/") for t in texts}
    readings = set()
    for text in texts:
        segments = text.split("/")[1:]
        merged = [s for s in segments if s]
        readings.add("/" + "/".join(_resolve(merged)))
        readings.add("/" + "/".join(s for s in _resolve(segments) if s))
    return readings


def _canonical(path: str) -> str:
    """Return `path` fully decoded and folded, empty segments dropped."""
    text = unicodedata.normalize("NFKC", _lenient_utf8(unquote_to_bytes(path)))
    return "/" + "/".join(s for s in text.split("/") if s)


def _attempt(function: Callable[[Any], Any], argument: Any) -> tuple[Any, Any]:
    """Return (result, None), or (None, the DenyError) if `function` refused."""
    try:
        return function(argument), None
    except DenyError as error:
        return None, error


@pytest.fixture(scope="module")
def lookup() -> Any:
    """Return the key lookup every generated request is decided with."""
    return {ISSUER.issuer: KEYS}.get


def _assert_sound(decision: Decision, request: HttpRequest) -> None:
    """An allow rests on a verified token, a public allow on /healthz."""
    event(decision.reason.value)

    assert decision.reason in OUTCOMES
    if decision.reason is Reason.ALLOWED:
        (value,) = request.header_values("authorization")
        scheme, token = value[:7], value[7:]
        assert scheme.lower() == "bearer "
        claims = _verified_claims(token)
        assert _acceptable(claims, decision.route)
        assert decision.identity is not None
        assert decision.identity.subject == claims["sub"]
    elif decision.reason is Reason.PUBLIC_ROUTE:
        assert decision.route == "health"
        for reading in _readings(request.path):
            assert reading.split("/")[1] == "healthz", reading
    else:
        assert decision.upstream_headers == ()
        assert decision.downstream_headers == ()


@settings(SETTINGS, max_examples=MANY)
@given(request=requests)
def test_decision_core_never_raises_and_never_allows_unverified(
    request: HttpRequest, policy: Policy, lookup: Any
) -> None:
    """Any request gets a decision; an allow has a verified token behind it."""
    _assert_sound(decide(request, policy, lookup, NOW), request)


@settings(SETTINGS, max_examples=MANY)
@given(request=token_requests)
def test_hostile_tokens_never_pass(
    request: HttpRequest, policy: Policy, lookup: Any
) -> None:
    """On a well-formed request, only a token that verifies gets through."""
    _assert_sound(decide(request, policy, lookup, NOW), request)


@settings(SETTINGS, max_examples=MANY)
@given(token=token_like)
def test_token_parser_refuses_with_a_reason_or_parses(token: str) -> None:
    """parse() either returns a token or raises DenyError, never anything else."""
    parsed, error = _attempt(parse, token)

    if error is not None:
        assert error.reason in OUTCOMES
        assert len(token) < 16 or token not in str(error)
    else:
        assert isinstance(parsed.algorithm, str)
        assert 0 < len(parsed.kid) <= 256
        assert isinstance(parsed.issuer, str)


@settings(SETTINGS, max_examples=FEW)
@given(headers=header_lists)
def test_bearer_token_is_exactly_what_follows_bearer(
    headers: list[tuple[str, str]],
) -> None:
    """A token read is one Authorization value's text after "Bearer "."""
    request = HttpRequest("GET", ECHO, "/", tuple(headers))
    token, error = _attempt(lambda r: bearer_token(r, MAX_TOKEN_BYTES), request)
    if error is not None:
        assert error.reason in OUTCOMES
        return

    (value,) = request.header_values("authorization")
    assert value.lower() == f"bearer {token}".lower()
    assert re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", token)
    assert len(token) <= MAX_TOKEN_BYTES


@settings(SETTINGS, max_examples=MANY)
@given(raw=paths)
def test_normalised_path_is_clean_and_stable(raw: str) -> None:
    """A normalised path has no dot segments, no //, and normalises to itself."""
    path, error = _attempt(normalize_path, raw)
    if error is not None:
        assert error.reason is Reason.PATH_INVALID
        return

    assert path.startswith("/")
    assert "//" not in path
    assert not {".", ".."} & set(path.split("/"))
    assert not set(path) & set("?#;\\")
    assert not re.search(r"%(2[fFeE]|5[cC]|[01][0-9a-fA-F]|7[fF])", path)
    assert normalize_path(path) == path


@settings(SETTINGS, max_examples=MANY)
@given(raw=paths)
def test_every_upstream_reads_an_accepted_path_alike(raw: str) -> None:
    """A path we accept means one thing to decoding, folding or Tomcat servers."""
    path, error = _attempt(normalize_path, raw)
    if error is not None:
        return

    assert {_canonical(reading) for reading in _readings(raw)} == {_canonical(path)}


clean_segments = st.lists(
    st.text(alphabet="abcxyz-_~0123456789", min_size=1, max_size=6), max_size=5
)


@settings(SETTINGS, max_examples=FEW)
@given(
    parts=clean_segments,
    detours=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["d", "u"])), max_size=4
    ),
    trailing=st.booleans(),
)
def test_dot_segments_and_detours_change_nothing(
    parts: list[str], detours: list[tuple[int, str]], trailing: bool
) -> None:
    """/a/./b and /a/x/../b normalise to /a/b, as RFC 3986 resolves them."""
    clean = "/" + "/".join(parts) + ("/" if trailing and parts else "")
    noisy = list(parts)
    for index, kind in sorted(detours, reverse=True):
        # A dot segment at the very end leaves a trailing slash behind it.
        at = min(index, len(parts) - (0 if trailing else 1))
        noisy[at:at] = ["."] if kind == "d" else ["detour", ".."]
    noisy_path = "/" + "/".join(noisy) + ("/" if trailing and parts else "")

    assert normalize_path(noisy_path) == normalize_path(clean) == clean


@settings(SETTINGS, max_examples=FEW)
@given(parts=clean_segments, data=st.data())
def test_percent_encoding_unreserved_characters_changes_nothing(
    parts: list[str], data: st.DataObject
) -> None:
    """%61 is a: escaping unreserved characters leaves the path as it was."""
    clean = "/" + "/".join(parts)
    encoded = "".join(
        f"%{ord(char):02{data.draw(st.sampled_from('xX'))}}"
        if char != "/" and data.draw(st.booleans())
        else char
        for char in clean
    )

    assert normalize_path(encoded) == clean


@settings(SETTINGS, max_examples=FEW)
@given(raw=hosts)
def test_normalised_host_is_lowercase_portless_and_stable(raw: str) -> None:
    """A normalised host is lowercase ASCII, has no port and normalises to itself."""
    host, error = _attempt(normalize_host, raw)
    if error is not None:
        assert error.reason is Reason.REQUEST_INVALID
        return

    assert host == host.lower()
    assert host.isascii()
    assert not host.endswith(".")
    assert ":" not in host or host.startswith("[")
    assert "@" not in host
    assert normalize_host(host) == host
