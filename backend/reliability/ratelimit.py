"""Per-user rate limit on chat turns: RATE_LIMIT_REQUESTS per RATE_LIMIT_WINDOW_SECONDS.

Fixed windows counted in PostgreSQL (one row per user, one statement per check) or in Redis
when REDIS_URL is set, so every replica shares the same counters. Time comes from the
database (or Redis) clock, not the replica's.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.errors import RateLimited
from backend.observability import metrics

_PG_HIT = text(
    """
    INSERT INTO rate_limits AS r (user_id, window_start, count)
    VALUES (:uid, to_timestamp(floor(extract(epoch FROM now()) / :w) * :w), 1)
    ON CONFLICT (user_id) DO UPDATE
       SET count = CASE WHEN r.window_start = EXCLUDED.window_start THEN r.count + 1 ELSE 1 END,
           window_start = EXCLUDED.window_start
    RETURNING count AS hits, extract(epoch FROM (window_start + make_interval(secs => :w) - now())) AS remaining
    """
)


class RateLimiter(Protocol):
    async def hit(self, user_id: str) -> None: ...


class NoRateLimit:
    async def hit(self, user_id: str) -> None:
        return None


def _refuse(remaining_seconds: float) -> RateLimited:
    retry_after = max(1, math.ceil(remaining_seconds))
    metrics.rate_limit_refused()
    return RateLimited(f"Too many messages; try again in {retry_after} s", retry_after=retry_after)


class PostgresRateLimiter:
    def __init__(self, engine: AsyncEngine, limit: int, window_seconds: int) -> None:
        self.engine = engine
        self.limit = limit
        self.window = window_seconds

    async def hit(self, user_id: str) -> None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(_PG_HIT, {"uid": user_id, "w": self.window})).one()
        if row.hits > self.limit:
            raise _refuse(float(row.remaining))


class RedisRateLimiter:
    def __init__(self, redis: Any, limit: int, window_seconds: int) -> None:
        self.redis = redis
        self.limit = limit
        self.window = window_seconds

    async def hit(self, user_id: str) -> None:
        seconds, _ = await self.redis.time()
        window_start = int(seconds) // self.window * self.window
        key = f"task-assistant:rl:{user_id}:{window_start}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window + 5)
            count, _ = await pipe.execute()
        if int(count) > self.limit:
            raise _refuse(window_start + self.window - seconds)
