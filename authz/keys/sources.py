"""Read a JWKS document from a file, a URL, or by OpenID discovery.

Errors from the file system, httpx and JSON are translated here, once, into
`KeySourceError` with a message safe to log. TLS verification is always on;
responses are bounded in size and time.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from pathlib import Path
from typing import Any

import httpx

from authz import policy
from authz.keys.keyset import KeySet, KeySetError
from authz.policy import IssuerConfig, check_https_url

__all__ = ["MAX_DOCUMENT_BYTES", "KeySourceError", "read_keys"]

MAX_DOCUMENT_BYTES = 1 << 20
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")


class KeySourceError(Exception):
    """Keys could not be read; the message says why, without secrets."""


async def read_keys(issuer: IssuerConfig) -> KeySet:
    """Read the issuer's current key set from wherever the policy says."""
    if issuer.jwks_file is not None:
        return _keyset(_read_file(issuer.jwks_file), str(issuer.jwks_file))

    limit = issuer.fetch_timeout_seconds
    try:
        async with asyncio.timeout(limit), _client(issuer) as client:
            trusted = issuer.jwks_uri or issuer.discovery_document_url
            fetch = _Fetch(client, trusted, _credentials(issuer))
            uri = issuer.jwks_uri or await _discover(fetch, issuer)
            return _keyset(await fetch.get(uri), _shown(uri))
    except TimeoutError:
        raise KeySourceError(f"no answer within {limit:g} s") from None


async def _discover(fetch: _Fetch, issuer: IssuerConfig) -> str:
    """Return where the issuer's keys are, after checking its discovery document."""
    url = issuer.discovery_document_url
    document = _json(await fetch.get(url), _shown(url))
    if document.get("issuer") != issuer.issuer:
        raise KeySourceError(f"{_shown(url)}: the document names another issuer")
    jwks_uri = document.get("jwks_uri")
    try:
        check_https_url(jwks_uri)
    except ValueError as error:
        raise KeySourceError(f"{_shown(url)}: jwks_uri: {error}") from None
    if issuer.in_cluster and issuer.discovery_url is None:
        # The API server serves its keys here to every service account,
        # whatever address the document advertises.
        return f"{policy.IN_CLUSTER_API}/openid/v1/jwks"
    return str(jwks_uri)


def _client(issuer: IssuerConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=_tls_context(issuer.effective_ca_file),
        timeout=httpx.Timeout(issuer.fetch_timeout_seconds),
        headers={"Accept": "application/json"},
        follow_redirects=False,
    )


def _credentials(issuer: IssuerConfig) -> dict[str, str]:
    token_file = issuer.effective_bearer_token_file
    if token_file is None:
        return {}
    # Re-read on every fetch: the kubelet rotates the mounted token.
    return {"Authorization": f"Bearer {_read_token(token_file)}"}


class _Fetch:
    """GETs that carry the credentials only to the origin they are meant for.

    A discovery document may name a key URL on another host; the pod's
    token is not handed to it.
    """

    def __init__(
        self, client: httpx.AsyncClient, trusted: str, credentials: dict[str, str]
    ) -> None:
        self._client = client
        self._origin = _origin(trusted)
        self._credentials = credentials

    async def get(self, url: str) -> bytes:
        """Return the body of a 200 answer, or raise `KeySourceError`."""
        withheld = bool(self._credentials) and _origin(url) != self._origin
        headers = {} if withheld else self._credentials
        try:
            return await _read(self._client, url, headers, withheld)
        except httpx.TransportError as error:
            # Connection, TLS and timeout errors say where it failed; protocol
            # errors may quote the request's headers, so only their kind is told.
            detail = "" if isinstance(error, httpx.ProtocolError) else f": {error}"
            problem = f"{type(error).__name__}{detail}"
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            problem = type(error).__name__
        raise KeySourceError(f"{_shown(url)}: {problem}")


async def _read(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], withheld: bool
) -> bytes:
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            hint = ""
            if withheld and response.status_code in (401, 403):
                hint = (
                    " (credentials go only to the discovery URL's origin: set jwks_uri)"
                )
            raise KeySourceError(f"{_shown(url)}: HTTP {response.status_code}{hint}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise KeySourceError(f"{_shown(url)}: over {MAX_DOCUMENT_BYTES} bytes")
        return bytes(body)


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


def _shown(url: str) -> str:
    """Return `url` as it may be logged: without its query or fragment."""
    return url.split("#", 1)[0].split("?", 1)[0]


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as error:
        raise KeySourceError(f"{ca_file}: cannot load CA: {error}") from None


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise KeySourceError(f"{path}: {error.strerror or error}") from None


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise KeySourceError(f"{path}: cannot read bearer token: {reason}") from None
    if not _HEADER_TOKEN.fullmatch(token):
        raise KeySourceError(f"{path}: the bearer token is not one printable word")
    return token


def _json(raw: bytes, origin: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise KeySourceError(f"{origin}: not JSON, or nested too deep") from None
    if not isinstance(document, dict):
        raise KeySourceError(f"{origin}: not a JSON object")
    return document


def _keyset(raw: bytes, origin: str) -> KeySet:
    try:
        return KeySet.from_jwks(_json(raw, origin))
    except KeySetError as error:
        raise KeySourceError(f"{origin}: {error}") from None
