"""The YAML policy: trusted issuers, identity header names and routes.

`load` reads a file with a YAML parser that refuses duplicate keys, checks
its shape with pydantic, and reports any problem as one `PolicyError` line
naming the file, the line and the key.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from authz.reasons import DenyError
from authz.request import normalize_host, normalize_path
from authz.tokens import Identity, Issuer

__all__ = [
    "DownstreamHeaders",
    "Headers",
    "IssuerConfig",
    "Policy",
    "PolicyError",
    "Route",
    "UpstreamHeaders",
    "check_https_url",
    "load",
]

Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"
]
HeaderName = Annotated[
    StrictStr,
    StringConstraints(
        # At most five separators: every `-`/`_` spelling of an identity
        # header is removed from requests, 2**separators names in all.
        pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+){0,5}$",
        max_length=128,
    ),
]
NonEmpty = Annotated[StrictStr, StringConstraints(min_length=1)]


def _printable_path(value: Path) -> Path:
    if not str(value).isprintable():
        raise ValueError("a file path of printable characters")
    return value


FilePath = Annotated[Path, Field(strict=False), AfterValidator(_printable_path)]
_SERVICE_ACCOUNT = re.compile(
    r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?/"
    r"(?:\*|[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*)"
)
_METHOD = re.compile(r"[A-Z]+")


class PolicyError(Exception):
    """A policy file that cannot be used; the message is one line."""


class _At(ValueError):
    """A problem found across keys that belongs to one of them."""

    def __init__(self, message: str, *where: int | str) -> None:
        super().__init__(message)
        self.where = where


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_https_url(value: object) -> str:
    """Return `value` if httpx can fetch it over HTTPS, else raise ValueError."""
    if not isinstance(value, str) or not _URL_TEXT.fullmatch(value):
        raise ValueError("not an https:// URL of printable ASCII")
    try:
        url = httpx.URL(value)
        port = url.port
    except (httpx.InvalidURL, ValueError):
        raise ValueError("not a valid URL") from None
    if url.scheme != "https" or not url.host:
        raise ValueError("not an https:// URL with a host")
    if url.userinfo:
        raise ValueError("credentials in a URL are refused: use bearer_token_file")
    if port is not None and not 0 < port < 65536:
        raise ValueError("port out of range")
    return value


_URL_TEXT = re.compile(r"https://[\x21-\x7e]{1,2048}")
HttpsUrl = Annotated[StrictStr, AfterValidator(check_https_url)]
IN_CLUSTER_API = "https://kubernetes.default.svc"
IN_CLUSTER_SECRETS = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class IssuerConfig(_Strict):
    """One trusted token issuer and where its signing keys come from.

    Keys are read from `jwks_file`, fetched from `jwks_uri`, or found by
    OpenID discovery at `discovery_url` (default: the issuer itself).
    `in_cluster` fills in the pod's own mounted CA and token and the API
    server's address, so no extra RBAC is needed.
    """

    issuer: NonEmpty
    jwks_file: FilePath | None = None
    jwks_uri: HttpsUrl | None = None
    discovery_url: HttpsUrl | None = None
    in_cluster: StrictBool = False
    ca_file: FilePath | None = None
    bearer_token_file: FilePath | None = None
    algorithms: tuple[Algorithm, ...] = Field(default=("RS256",), min_length=1)
    leeway_seconds: StrictInt = Field(default=30, ge=0, le=300)
    refresh_seconds: StrictInt = Field(default=300, ge=10, le=86400)
    refetch_cooldown_seconds: StrictInt = Field(default=30, ge=1, le=3600)
    fetch_timeout_seconds: StrictFloat = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.jwks_uri is not None and self.discovery_url is not None:
            raise ValueError("give jwks_uri or discovery_url, not both")
        if self.jwks_file is None:
            return self
        remote = ("jwks_uri", "discovery_url", "in_cluster", "ca_file")
        given = [name for name in (*remote, "bearer_token_file") if getattr(self, name)]
        if given:
            raise ValueError(f"jwks_file cannot be combined with {given[0]}")
        return self

    @property
    def discovery_document_url(self) -> str:
        """Return the URL of the OpenID discovery document to read."""
        base = self.discovery_url or (
            IN_CLUSTER_API if self.in_cluster else self.issuer
        )
        suffix = "/.well-known/openid-configuration"
        return base if base.endswith(suffix) else base.rstrip("/") + suffix

    @property
    def effective_ca_file(self) -> Path | None:
        """Return the CA file, the pod's mounted one when in cluster."""
        if self.ca_file is None and self.in_cluster:
            return IN_CLUSTER_SECRETS / "ca.crt"
        return self.ca_file

    @property
    def effective_bearer_token_file(self) -> Path | None:
        """Return the token file sent when fetching, the pod's own in cluster."""
        if self.bearer_token_file is None and self.in_cluster:
            return IN_CLUSTER_SECRETS / "token"
        return self.bearer_token_file

    def for_verification(self) -> Issuer:
        """Return what token verification needs from this issuer."""
        return Issuer(self.issuer, self.algorithms, self.leeway_seconds)


def _first_repeat(values: list[str]) -> int | None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            return index
        seen.add(value)
    return None


_RESERVED_HEADERS = frozenset(
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "x-request-id",
    ]
)


class _HeaderNames(_Strict):
    """Names for the parts of an identity; None leaves a part out."""

    user: HeaderName | None = None
    namespace: HeaderName | None = None
    service_account: HeaderName | None = None
    issuer: HeaderName | None = None

    @model_validator(mode="after")
    def _distinct_and_free(self) -> Self:
        # Compared as servers that read `_` as `-` would see them.
        names = [name.replace("_", "-") for name in self.named().values()]
        index = _first_repeat(names)
        if index is not None:
            field = list(self.named())[index]
            raise _At("two identity parts cannot share one header", field)
        for field, name in zip(self.named(), names, strict=True):
            if name in _RESERVED_HEADERS:
                raise _At(f"{name!r} is not free for an identity header", field)
        return self

    def named(self) -> dict[str, str]:
        """Return each identity part that has a header, with its name."""
        parts = ("user", "namespace", "service_account", "issuer")
        return {p: name for p in parts if (name := getattr(self, p)) is not None}


class UpstreamHeaders(_HeaderNames):
    """Headers set on the request the service receives, on allow."""

    user: HeaderName | None = "x-auth-request-user"
    namespace: HeaderName | None = "x-auth-request-namespace"
    service_account: HeaderName | None = "x-auth-request-serviceaccount"


class DownstreamHeaders(_HeaderNames):
    """Headers set on the response the caller receives, on allow."""


class Headers(_Strict):
    """Names of the identity headers."""

    upstream: UpstreamHeaders = UpstreamHeaders()
    downstream: DownstreamHeaders = DownstreamHeaders()


class Route(_Strict):
    """Which requests a rule covers and who may make them."""

    name: NonEmpty
    hosts: tuple[NonEmpty, ...] | None = Field(default=None, min_length=1)
    paths: tuple[NonEmpty, ...] | None = Field(default=None, min_length=1)
    methods: tuple[NonEmpty, ...] | None = Field(default=None, min_length=1)
    audiences: tuple[NonEmpty, ...] | None = Field(default=None, min_length=1)
    service_accounts: tuple[NonEmpty, ...] | None = Field(default=None, min_length=1)
    issuers: tuple[NonEmpty, ...] | None = Field(default=None, min_length=1)
    public: StrictBool = False

    @field_validator("hosts")
    @classmethod
    def _hosts_as_matched(cls, hosts: tuple[str, ...] | None) -> Any:
        for index, host in enumerate(hosts or ()):
            _as_matched(host, normalize_host, "a lowercase name without port", index)
        return hosts

    @field_validator("paths")
    @classmethod
    def _paths_as_matched(cls, paths: tuple[str, ...] | None) -> Any:
        for index, path in enumerate(paths or ()):
            if not path.startswith("/") or "?" in path:
                raise _At("paths start with / and have no query", index)
            if "*" in path or (path.endswith("/") and path != "/"):
                # Prefixes, not patterns: `/admin/` would not cover `/admin`.
                message = "a path covers itself and all below it: no * or final /"
                raise _At(message, index)
            _as_matched(path, normalize_path, "a normalised path", index)
        return paths

    @field_validator("methods")
    @classmethod
    def _methods_upper(cls, methods: tuple[str, ...] | None) -> Any:
        if methods and not all(_METHOD.fullmatch(m) for m in methods):
            raise ValueError("methods are uppercase, like GET")
        return methods

    @field_validator("service_accounts")
    @classmethod
    def _accounts_shape(cls, accounts: tuple[str, ...] | None) -> Any:
        bad = [a for a in accounts or () if not _SERVICE_ACCOUNT.fullmatch(a)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not NAMESPACE/NAME or NAMESPACE/*")
        return accounts

    @model_validator(mode="after")
    def _protected_or_public(self) -> Self:
        if self.public and (self.audiences or self.service_accounts or self.issuers):
            raise ValueError(
                "a public route takes no audiences, service_accounts or issuers"
            )
        if not self.public and not self.audiences:
            raise ValueError("a protected route needs audiences")
        if not self.public and not self.service_accounts:
            raise ValueError("a protected route needs service_accounts")
        return self

    def matches(
        self, host: str, path: str, method: str, fold_case: bool = False
    ) -> bool:
        """Tell whether this route covers a normalised request.

        HEAD is covered wherever GET is: servers answer it with their GET
        handler. With `fold_case`, paths compare as a case-blind server
        would compare them.
        """
        if self.hosts is not None and host not in self.hosts:
            return False
        if self.methods is not None and method not in self.methods:
            head_of_get = method == "HEAD" and "GET" in self.methods
            if not head_of_get:
                return False
        if self.paths is None:
            return True
        prefixes = _lowered(self.paths) if fold_case else self.paths
        path = path.lower() if fold_case else path
        return any(_under(path, prefix) for prefix in prefixes)

    def accepts_issuer(self, issuer: str) -> bool:
        """Tell whether tokens of `issuer` may be presented on this route."""
        return self.issuers is None or issuer in self.issuers

    def permits(self, identity: Identity) -> bool:
        """Tell whether the service account may call this route."""
        for allowed in self.service_accounts or ():
            namespace, _, name = allowed.partition("/")
            if namespace == identity.namespace and name in (
                "*",
                identity.service_account,
            ):
                return True
        return False


def _as_matched(
    value: str, normalize: Callable[[str], str], form: str, index: int
) -> None:
    """Refuse a route entry that no request could match as written.

    Requests are normalised before matching, so an entry must already be in
    that form; `Example.com.` or `/caf%c3%a9` would silently never match and
    let requests fall through to a later, perhaps public, route.
    """
    try:
        normalized = normalize(value)
    except DenyError:
        raise _At(f"{value!r} can never match a request", index) from None
    if normalized != value:
        raise _At(f"{value!r} is not {form}: write {normalized!r}", index)


def _check_route_issuers(route: Route, issuers: list[str], index: int) -> None:
    """Refuse a route naming an unknown issuer, or silent about several."""
    for position, name in enumerate(route.issuers or ()):
        if name not in issuers:
            message = f"{name!r} is not one of the policy's issuers"
            raise _At(message, "routes", index, "issuers", position)
    if len(issuers) > 1 and not route.public and route.issuers is None:
        # default/oidc-test of one cluster is not default/oidc-test of another.
        message = "with several issuers, a protected route lists those it accepts"
        raise _At(message, "routes", index, "name")


@functools.cache
def _lowered(paths: tuple[str, ...]) -> tuple[str, ...]:
    """Return a route's paths lowercased, once per policy rather than per check."""
    return tuple(path.lower() for path in paths)


def _under(path: str, prefix: str) -> bool:
    if prefix == "/" or path == prefix:
        return True
    return path.startswith(prefix.rstrip("/") + "/")


class Policy(_Strict):
    """The whole policy file."""

    issuers: tuple[IssuerConfig, ...] = Field(min_length=1)
    headers: Headers = Headers()
    routes: tuple[Route, ...] = Field(min_length=1)
    max_token_bytes: StrictInt = Field(default=8192, ge=1024, le=65536)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        issuers = [i.issuer for i in self.issuers]
        index = _first_repeat(issuers)
        if index is not None:
            raise _At("each issuer may appear only once", "issuers", index, "issuer")
        index = _first_repeat([r.name for r in self.routes])
        if index is not None:
            raise _At("route names must be unique", "routes", index, "name")
        for index, route in enumerate(self.routes):
            _check_route_issuers(route, issuers, index)
        return self

    def issuer(self, iss: str) -> IssuerConfig | None:
        """Return the issuer whose name equals `iss` byte for byte."""
        return next((i for i in self.issuers if i.issuer == iss), None)

    def route(
        self, host: str, path: str, method: str, fold_case: bool = False
    ) -> Route | None:
        """Return the first route that covers the request, in file order."""
        return next(
            (r for r in self.routes if r.matches(host, path, method, fold_case)),
            None,
        )


def load(path: Path) -> Policy:
    """Read and validate a policy file, or raise `PolicyError`."""
    tree = _read_yaml(path)
    try:
        plain = _plain(tree, [_MAX_VALUES])
    except (_TooLarge, RecursionError):
        message = f"more than {_MAX_VALUES} values once aliases are expanded"
        raise PolicyError(f"{path}: {message}, or nested too deep") from None
    try:
        policy = Policy.model_validate(plain)
    except ValidationError as error:
        raise PolicyError(_describe(path, tree, error)) from None
    return _resolve_files(policy, path.parent)


_MAX_VALUES = 1_000_000
"""A policy expanding to more values than this is refused (YAML aliases can
multiply a small file into billions)."""


class _TooLarge(Exception):
    pass


def _read_yaml(path: Path) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path}: cannot read: {_reason(error)}") from None
    try:
        return yaml.load(text)
    except MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else "?"
        problem = " ".join((error.problem or "invalid YAML").split())
        raise PolicyError(f"{path}:{line}: {problem}") from None
    except ReaderError as error:
        line = text[: error.position].count("\n") + 1
        character = chr(error.character) if isinstance(error.character, int) else ""
        message = f"character {character!r} is not allowed in YAML"
        raise PolicyError(f"{path}:{line}: {message}") from None
    except YAMLError as error:
        problem = " ".join(str(error).split())
        raise PolicyError(f"{path}: invalid YAML: {problem}") from None
    except ValueError:  # Python refuses to read an integer this long
        huge = re.search(r"\d{4000,}", text)
        line = text[: huge.start()].count("\n") + 1 if huge else "?"
        raise PolicyError(f"{path}:{line}: a number with too many digits") from None
    except RecursionError:
        raise PolicyError(f"{path}: nested too deep") from None


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _plain(node: Any, budget: list[int]) -> Any:
    """Turn ruamel's round-trip nodes into plain dicts, lists and scalars.

    `budget` holds how many more values may be made; aliases are expanded,
    so it is what keeps a small hostile file from taking all memory.
    """
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if isinstance(node, dict):
        return {str(k): _plain(v, budget) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, budget) for v in node]
    for kind in (bool, int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _describe(path: Path, tree: Any, error: ValidationError) -> str:
    problems = _real_problems(error.errors())
    first = problems[0]
    location = tuple(first["loc"])
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _At):
        location += cause.where
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location)
    message = first["msg"].removeprefix("Value error, ")
    message = message.replace("Tuple", "List").replace("tuple", "list")
    more = len(problems) - 1
    suffix = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    return (
        f"{path}:{_line(tree, location)}: {key[1:] or 'top level'}: {message}{suffix}"
    )


def _real_problems(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop "too short" errors for lists whose only item was itself refused."""

    def echo(problem: ErrorDetails) -> bool:
        loc = problem["loc"]
        return problem["type"] == "too_short" and any(
            other["loc"][: len(loc)] == loc and len(other["loc"]) > len(loc)
            for other in errors
        )

    return [problem for problem in errors if not echo(problem)] or errors


def _line(tree: Any, location: tuple[int | str, ...]) -> int:
    """Return the 1-based line of the deepest node of `location` that exists."""
    line = 0
    node = tree
    for part in location:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        if isinstance(node, dict) and (key := _original_key(node, part)) is not None:
            line = lc.key(key)[0]
            part = key
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            line = lc.item(part)[0]
        else:
            line = lc.line
            break
        node = node[part]
    return line + 1


def _original_key(node: dict[Any, Any], part: int | str) -> Any:
    """Return the YAML key that `_plain` turned into `part`, if any."""
    return next((key for key in node if str(key) == str(part)), None)


def _resolve_files(policy: Policy, base: Path) -> Policy:
    """Make file paths in issuers relative to the policy file's folder."""

    def absolute(value: Path | None) -> Path | None:
        return None if value is None else base / value

    issuers = tuple(
        issuer.model_copy(
            update={
                "jwks_file": absolute(issuer.jwks_file),
                "ca_file": absolute(issuer.ca_file),
                "bearer_token_file": absolute(issuer.bearer_token_file),
            }
        )
        for issuer in policy.issuers
    )
    return policy.model_copy(update={"issuers": issuers})
