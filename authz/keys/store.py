"""Every issuer's current keys, kept fresh without trusting the caller.

Each issuer's keys are loaded at start-up, refreshed on an interval, and
refetched when a token names an unknown `kid`, at most once per cooldown
whatever the number of such tokens; concurrent requests share one fetch.
A failed refresh keeps the last good keys and retries with backoff.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from authz.keys.keyset import KeySet
from authz.keys.sources import KeySourceError, read_keys
from authz.policy import IssuerConfig, Policy

__all__ = ["IssuerKeys", "KeyStore"]

_LOG = structlog.get_logger(__name__)
Clock = Callable[[], float]
_FIRST_RETRY_SECONDS = 1.0


class IssuerKeys:
    """The keys of one issuer, with their fetching rules."""

    def __init__(self, config: IssuerConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.keyset: KeySet | None = None
        self.attempted = False
        self.fetches = 0
        self._clock = clock
        self._loaded_at: float | None = None
        self._last_started = -math.inf
        self._inflight: asyncio.Task[None] | None = None

    @property
    def age_seconds(self) -> float | None:
        """Return how long ago the current keys were loaded."""
        return None if self._loaded_at is None else self._clock() - self._loaded_at

    async def fetch(self) -> None:
        """Load the keys now, joining a fetch already under way."""
        await asyncio.shield(self._join_or_start())

    def _join_or_start(self) -> asyncio.Task[None]:
        """Return the fetch under way, or start one; never awaits in between."""
        if self._inflight is None or self._inflight.done():
            self._last_started = self._clock()
            self._inflight = asyncio.create_task(self._load())
            # A fetch whose waiters gave up still ends with its error read.
            self._inflight.add_done_callback(_consume_error)
        return self._inflight

    async def refetch_for(self, kid: str, wait_seconds: float) -> bool:
        """Fetch again for an unknown `kid`, if the cooldown allows.

        Waits at most `wait_seconds`; a fetch that takes longer goes on in
        the background. Tells whether `kid` is known afterwards.
        """
        if self.keyset is not None and self.keyset.has(kid):
            return True
        busy = self._inflight is not None and not self._inflight.done()
        cooled = (
            self._clock() - self._last_started >= self.config.refetch_cooldown_seconds
        )
        if not (busy or cooled):
            return False
        # Joined now, not when wait_for first runs it: by then the fetch seen
        # busy may have ended, and a new one would break the cooldown.
        task = self._join_or_start()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=max(wait_seconds, 0.0))
        except (TimeoutError, KeySourceError):
            return False
        return self.keyset is not None and self.keyset.has(kid)

    async def run(self) -> None:
        """Refresh forever: retry until loaded, then once per interval."""
        if self.keyset is None:
            if self.attempted:  # the start-up fetch just failed: back off first
                await asyncio.sleep(_FIRST_RETRY_SECONDS)
            await self._fetch_with_retry()
        while True:
            await asyncio.sleep(self.config.refresh_seconds)
            await self._fetch_with_retry()

    async def _fetch_with_retry(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(KeySourceError),
            wait=wait_exponential_jitter(
                initial=1, max=min(60, self.config.refresh_seconds)
            ),
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.fetch()

    def _log_retry(self, state: RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        _LOG.warning(
            "keys_retry_scheduled",
            issuer=self.config.issuer,
            attempt=state.attempt_number,
            next_attempt_in_seconds=round(delay, 1),
            keys_age_seconds=_rounded(self.age_seconds),
        )

    async def _load(self) -> None:
        """Fetch once; any failure, even a bug, leaves a `KeySourceError`.

        Only `KeySourceError` is retried, so nothing else may escape: an
        unexpected error would end the refresh for good and keep keys the
        issuer has dropped verifying.
        """
        self.fetches += 1
        try:
            keyset = await read_keys(self.config)
        except KeySourceError as error:
            self._log_failure(str(error))
            raise
        except Exception as error:
            self._log_failure(f"unexpected {type(error).__name__}", exc_info=True)
            raise KeySourceError(f"unexpected {type(error).__name__}") from error
        finally:
            self.attempted = True

        previous = self.keyset.kids if self.keyset else frozenset()
        self.keyset = keyset
        self._loaded_at = self._clock()
        _LOG.info(
            "keys_loaded",
            issuer=self.config.issuer,
            kids=sorted(keyset.kids),
            added=sorted(keyset.kids - previous),
            removed=sorted(previous - keyset.kids),
        )

    def _log_failure(self, error: str, exc_info: bool = False) -> None:
        _LOG.error(
            "keys_fetch_failed",
            issuer=self.config.issuer,
            error=error,
            serving_cached=self.keyset is not None,
            keys_age_seconds=_rounded(self.age_seconds),
            exc_info=exc_info,
        )


def _consume_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


class KeyStore:
    """Key sets by issuer name, for every issuer in the policy."""

    def __init__(self, policy: Policy, clock: Clock = time.monotonic) -> None:
        self.issuers = {i.issuer: IssuerKeys(i, clock) for i in policy.issuers}
        self._tasks: list[asyncio.Task[None]] = []

    def lookup(self, issuer: str) -> KeySet | None:
        """Return the key set of `issuer`, or None if none was loaded."""
        keys = self.issuers.get(issuer)
        return keys.keyset if keys else None

    def ready(self, require_keys: bool = False) -> bool:
        """Tell whether every issuer has tried (or, if required, got) keys."""
        if require_keys:
            return all(k.keyset is not None for k in self.issuers.values())
        return all(k.attempted for k in self.issuers.values())

    async def load_all(self) -> None:
        """Load every issuer's keys once; failures are logged, not raised."""
        results = await asyncio.gather(
            *(k.fetch() for k in self.issuers.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, KeySourceError
            ):
                raise result

    async def refetch_for(self, issuer: str, kid: str, wait_seconds: float) -> bool:
        """Refetch `issuer`'s keys for an unknown `kid`; see `IssuerKeys`."""
        keys = self.issuers.get(issuer)
        return False if keys is None else await keys.refetch_for(kid, wait_seconds)

    def start_refreshing(self) -> None:
        """Start the background refresh of every issuer."""
        self._tasks = [asyncio.create_task(k.run()) for k in self.issuers.values()]

    async def stop(self) -> None:
        """Stop the background refresh."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
