"""Read a JWKS document from a file or fetch it over HTTPS.

Errors from the file system, httpx and JSON are translated here, once, into
`KeySourceError` with a message safe to log.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx

from authz.keys.keyset import KeySet, KeySetError
from authz.policy import IssuerConfig

__all__ = ["MAX_JWKS_BYTES", "KeySourceError", "fetch_jwks", "read_jwks_file"]

MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT = httpx.Timeout(5.0)


class KeySourceError(Exception):
    """Keys could not be read; the message says why, without secrets."""


def read_jwks_file(path: Path) -> KeySet:
    """Read a JWKS document from disk."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise KeySourceError(f"{path}: {error.strerror or error}") from None
    return _keyset(raw, str(path))


async def fetch_jwks(issuer: IssuerConfig) -> KeySet:
    """Fetch the issuer's JWKS document from its `jwks_uri`."""
    assert issuer.jwks_uri is not None
    headers = {"Accept": "application/json"}
    if issuer.bearer_token_file is not None:
        headers["Authorization"] = f"Bearer {_read_token(issuer.bearer_token_file)}"

    async with httpx.AsyncClient(
        verify=_tls_context(issuer.ca_file), timeout=FETCH_TIMEOUT
    ) as client:
        raw = await _get(client, issuer.jwks_uri, headers)
    return _keyset(raw, issuer.jwks_uri)


async def _get(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> bytes:
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                raise KeySourceError(f"{url}: HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise KeySourceError(f"{url}: response over {MAX_JWKS_BYTES} bytes")
            return bytes(body)
    except httpx.HTTPError as error:
        kind = type(error).__name__
        raise KeySourceError(f"{url}: {kind}: {error}") from None


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as error:
        raise KeySourceError(f"{ca_file}: cannot load CA: {error}") from None


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise KeySourceError(f"{path}: cannot read bearer token: {error}") from None


def _keyset(raw: bytes, origin: str) -> KeySet:
    try:
        return KeySet.from_jwks(json.loads(raw))
    except (ValueError, KeySetError) as error:
        raise KeySourceError(f"{origin}: {error}") from None
