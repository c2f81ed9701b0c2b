"""The current key set of every issuer in the policy."""

from __future__ import annotations

import asyncio

import structlog

from authz.keys.keyset import KeySet
from authz.keys.sources import KeySourceError, fetch_jwks, read_jwks_file
from authz.policy import IssuerConfig, Policy

__all__ = ["KeyStore"]

_LOG = structlog.get_logger(__name__)


class KeyStore:
    """Key sets by issuer, loaded from each issuer's configured source."""

    def __init__(self, policy: Policy) -> None:
        self._issuers = {issuer.issuer: issuer for issuer in policy.issuers}
        self._keys: dict[str, KeySet] = {}

    def lookup(self, issuer: str) -> KeySet | None:
        """Return the key set of `issuer`, or None if none was loaded."""
        return self._keys.get(issuer)

    async def load_all(self) -> None:
        """Load every issuer's keys once; failures are logged, not raised."""
        await asyncio.gather(*(self.load(name) for name in self._issuers))

    async def load(self, issuer: str) -> bool:
        """Load one issuer's keys; tell whether it worked."""
        config = self._issuers[issuer]
        try:
            keyset = await _read(config)
        except KeySourceError as error:
            _LOG.error("keys_load_failed", issuer=issuer, error=str(error))
            return False
        self._keys[issuer] = keyset
        _LOG.info("keys_loaded", issuer=issuer, kids=sorted(keyset.kids))
        return True


async def _read(issuer: IssuerConfig) -> KeySet:
    if issuer.jwks_file is not None:
        return read_jwks_file(issuer.jwks_file)
    return await fetch_jwks(issuer)
