"""A cached JSON Web Key Set, fetched asynchronously from the Better Auth server.

Keys are chosen by `kid`. An unknown `kid` triggers at most one refetch per cooldown, so a
stream of junk tokens cannot make us hammer the auth server; concurrent misses share one fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson

log = logging.getLogger(__name__)


_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


class JWKSUnavailable(Exception):
    """The key set could not be fetched and no earlier copy is cached."""


class JWKSCache:
    def __init__(
        self,
        url: str | None,
        client: aiohttp.ClientSession | None,
        *,
        cache_seconds: float = 3600,
        cooldown_seconds: float = 30,
        static_keys: list[dict[str, Any]] | None = None,
    ) -> None:
        self.url = url
        self._client = client
        self._cache_seconds = cache_seconds
        self._cooldown = cooldown_seconds
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._miss_fetch_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0
        if static_keys is not None:
            self._store(static_keys)
            self._fetched_at = float("inf")  # never stale, never refetched

    def _store(self, keys: list[dict[str, Any]]) -> None:
        self._keys = {
            str(k.get("kid", "")): k for k in keys if isinstance(k, dict) and k.get("kty")
        }

    @property
    def keys(self) -> list[dict[str, Any]]:
        return list(self._keys.values())

    async def get(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for `kid` (None: the only key, if there is exactly one), refetching if allowed."""
        now = time.monotonic()
        stale = now - self._fetched_at > self._cache_seconds
        key = self._lookup(kid)
        if key is not None and not stale:
            return key
        if self.url and self._may_fetch(now, missing=key is None, stale=stale):
            await self._refresh(now)
            key = self._lookup(kid) or key
        if key is None and not self._keys and self.url:
            raise JWKSUnavailable("no signing keys available")
        return key

    def _may_fetch(self, now: float, *, missing: bool, stale: bool) -> bool:
        """First fetch, a stale cache, or an unknown kid: each bounded by the cooldown."""
        if not self._keys or (stale and not missing):
            # Nothing cached yet, or time to refresh: retry failures only once per cooldown.
            return now - self._attempted_at >= self._cooldown
        if missing and now - self._miss_fetch_at >= self._cooldown:
            self._miss_fetch_at = now  # unknown kid: at most one such refetch per cooldown
            return True
        return stale and now - self._attempted_at >= self._cooldown

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, requested_at: float) -> None:
        async with self._lock:
            if self._attempted_at >= requested_at:  # another coroutine fetched while we waited
                return
            self._attempted_at = time.monotonic()
            assert self.url is not None and self._client is not None
            self.fetch_count += 1
            try:
                async with self._client.get(self.url, timeout=_FETCH_TIMEOUT) as response:
                    response.raise_for_status()
                    document = orjson.loads(await response.read())
                keys = document.get("keys", []) if isinstance(document, dict) else None
                if not isinstance(keys, list):
                    raise ValueError("JWKS `keys` is not a list")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("could not fetch JWKS from %s: %s", self.url, type(exc).__name__)
                return
            self._store(keys)
            self._fetched_at = time.monotonic()
            log.info("fetched %d signing key(s) from %s", len(self._keys), self.url)
