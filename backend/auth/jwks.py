"""A cached JSON Web Key Set, fetched asynchronously from the Better Auth server.

Keys are chosen by `kid`. When a token names a `kid` we do not know, we refetch the set, within
a small budget: a token bucket of `refetch_budget` refetches per cooldown, refilled steadily. So
a flood of junk kids costs the auth server at most a few requests per cooldown, while a real key
rotation is still honoured at once (or, under a flood of distinct junk kids, at the next refill:
cooldown / budget seconds). Concurrent misses share one fetch, and a kid the latest fetch did not
contain never spends the budget again until the set is fetched anew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson

log = logging.getLogger(__name__)

_MAX_ABSENT_KIDS = 4096
"""How many kids known to be absent from the current key set we remember (then we stop adding)."""


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
        refetch_budget: int = 3,
        static_keys: list[dict[str, Any]] | None = None,
    ) -> None:
        self.url = url
        self._client = client
        self._cache_seconds = cache_seconds
        self._cooldown = cooldown_seconds
        self._budget = max(1, refetch_budget)
        self._tokens = float(self._budget)
        self._tokens_at = time.monotonic()
        self._keys: dict[str, dict[str, Any]] = {}
        self._absent: set[str] = set()
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetch_count = 0
        if static_keys is not None:
            self._store(static_keys)
            self._fetched_at = float("inf")  # never stale, never refetched

    def _store(self, keys: list[dict[str, Any]]) -> None:
        self._keys = {
            str(k.get("kid", "")): k for k in keys if isinstance(k, dict) and k.get("kty")
        }
        self._absent.clear()

    @property
    def keys(self) -> list[dict[str, Any]]:
        return list(self._keys.values())

    async def get(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for `kid` (None: the only key, if there is exactly one), refetching if allowed."""
        arrived = time.monotonic()
        stale = arrived - self._fetched_at > self._cache_seconds
        key = self._lookup(kid)
        if key is not None and not stale:
            return key
        if self.url:
            async with self._lock:  # concurrent misses wait for one fetch and share it
                if self._attempted_at < arrived and self._may_fetch(kid, missing=key is None):
                    await self._refresh()
            key = self._lookup(kid) or key
            checked = self._attempted_at >= arrived  # against a fetch newer than the token
            if key is None and kid is not None and checked and len(self._absent) < _MAX_ABSENT_KIDS:
                self._absent.add(kid)
        if key is None and not self._keys and self.url:
            raise JWKSUnavailable("no signing keys available")
        return key

    def _may_fetch(self, kid: str | None, *, missing: bool) -> bool:
        """First fetch or a stale cache: once per cooldown. An unknown kid: from the budget."""
        now = time.monotonic()
        if not self._keys or not missing:
            # Nothing cached yet, or time to refresh: retry failures only once per cooldown.
            return now - self._attempted_at >= self._cooldown
        return kid not in self._absent and self._take_refetch(now)

    def _take_refetch(self, now: float) -> bool:
        """Token bucket: `budget` refetches per cooldown, refilled steadily."""
        if self._cooldown > 0:
            refill = (now - self._tokens_at) * self._budget / self._cooldown
            self._tokens = min(float(self._budget), self._tokens + refill)
        else:
            self._tokens = float(self._budget)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
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
