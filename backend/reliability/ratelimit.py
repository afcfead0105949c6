"""Per-user rate limits, one budget per kind of work: chat turns, writes and reads.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp):
a budget of `limit` requests per `window` lets a burst of up to `limit` through, then one request
every `window / limit` seconds. Unlike fixed windows, no instant lets 2 x `limit` through
(the old windows did, across their boundary). Each user and budget keeps one "theoretical arrival
time" (TAT); a request is allowed when, after adding one interval, the TAT lies at most `window`
ahead of now, and a refused request changes nothing (Retry-After says when the next one fits).

The TAT lives in PostgreSQL (one row per user and budget, one statement per check) or in Redis
when REDIS_URL is set (one Lua script per check), so every replica shares it. Time comes from the
database (or Redis) clock, not the replica's. Both backends run the same arithmetic.
"""

from __future__ import annotations

import logging
import math
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.config import Settings
from backend.core.errors import RateLimited
from backend.observability import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Budget:
    """One kind of work and how much of it a user may do."""

    name: str
    """Keys the stored state: `chat`, `write` or `read`."""
    limit: int
    """Requests per window, and the largest burst."""
    window_seconds: float
    noun: str
    """What the 429's detail says there were too many of."""

    @property
    def interval(self) -> float:
        """Seconds between requests at the sustained rate."""
        return self.window_seconds / self.limit

    def refuse(self, wait_seconds: float) -> RateLimited:
        retry_after = max(1, math.ceil(wait_seconds))
        metrics.rate_limit_refused()
        return RateLimited(
            f"Too many {self.noun}; try again in {retry_after} s", retry_after=retry_after
        )


class RateLimiter(Protocol):
    async def hit(self, user_id: str) -> None:
        """Count one request, or raise RateLimited (with Retry-After) without counting it."""


class NoRateLimit:
    async def hit(self, user_id: str) -> None:
        return None


# GCRA in one statement. The conditional DO UPDATE is evaluated on the locked, latest row, so
# concurrent requests of one user serialise on it. When it refuses, `wait` reads the TAT as the
# statement's snapshot saw it (a refused request leaves it unchanged); a row inserted by a
# concurrent first request is not in that snapshot, and the TAT is at most `window` ahead, so
# `interval` is then the right upper bound.
_PG_HIT = text(
    """
    WITH hit AS (
        INSERT INTO rate_limits AS r (user_id, budget, tat)
        VALUES (:uid, :budget, now() + make_interval(secs => :interval))
        ON CONFLICT (user_id, budget) DO UPDATE
           SET tat = greatest(r.tat, now()) + make_interval(secs => :interval)
         WHERE greatest(r.tat, now()) + make_interval(secs => :interval)
               <= now() + make_interval(secs => :window)
        RETURNING 1
    )
    SELECT EXISTS (SELECT FROM hit) AS allowed,
           coalesce(
               (SELECT extract(epoch FROM greatest(r.tat, now()) - now())
                  FROM rate_limits r WHERE r.user_id = :uid AND r.budget = :budget),
               :window
           ) + :interval - :window AS wait
    """
)


class PostgresRateLimiter:
    def __init__(self, autocommit_engine: AsyncEngine, budget: Budget) -> None:
        self.engine = autocommit_engine  # one statement per hit: it commits on its own
        self.budget = budget

    async def hit(self, user_id: str) -> None:
        params = {
            "uid": user_id,
            "budget": self.budget.name,
            "interval": self.budget.interval,
            "window": self.budget.window_seconds,
        }
        async with self.engine.connect() as conn:
            row = (await conn.execute(_PG_HIT, params)).one()
        if not row.allowed:
            raise self.budget.refuse(float(row.wait))


# The same arithmetic in Lua: atomic in Redis, with Redis's own clock. Numbers cross the Lua
# boundary as strings (Redis truncates Lua numbers to integers).
_REDIS_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > window then
    return {0, string.format('%.6f', new_tat - now - window)}
end
redis.call('SET', KEYS[1], string.format('%.6f', new_tat),
           'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, '0'}
"""


class RedisRateLimiter:
    def __init__(self, redis: Any, budget: Budget) -> None:
        self.redis = redis
        self.budget = budget
        self._script = redis.register_script(_REDIS_GCRA)

    async def hit(self, user_id: str) -> None:
        key = f"task-assistant:gcra:{self.budget.name}:{user_id}"
        allowed, wait = await self._script(
            keys=[key], args=[repr(self.budget.interval), repr(self.budget.window_seconds)]
        )
        if not int(allowed):
            raise self.budget.refuse(float(wait))


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The three budgets every replica enforces per user."""

    chat: RateLimiter
    """Chat turns (REST and ChatKit): RATE_LIMIT_REQUESTS per RATE_LIMIT_WINDOW_SECONDS."""
    write: RateLimiter
    """REST task writes and MCP tool calls: WRITE_RATE_LIMIT_REQUESTS per minute."""
    read: RateLimiter
    """GET endpoints: READ_RATE_LIMIT_REQUESTS per minute."""


def budgets(settings: Settings) -> tuple[Budget, Budget, Budget]:
    return (
        Budget(
            "chat", settings.rate_limit_requests, settings.rate_limit_window_seconds, "messages"
        ),
        Budget("write", settings.write_rate_limit_requests, 60, "changes"),
        Budget("read", settings.read_rate_limit_requests, 60, "requests"),
    )


async def build_rate_limits(
    settings: Settings, engine: AsyncEngine, stack: AsyncExitStack
) -> RateLimits:
    """PostgreSQL-backed limits, or Redis-backed ones when REDIS_URL is set; limit 0: unlimited."""
    redis_client: Any = None
    if settings.redis_url:
        import redis.asyncio as redis

        redis_client = redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        stack.push_async_callback(redis_client.aclose)
        log.info("rate limits kept in Redis")

    def limiter(budget: Budget) -> RateLimiter:
        if budget.limit <= 0:
            return NoRateLimit()
        if redis_client is not None:
            return RedisRateLimiter(redis_client, budget)
        return PostgresRateLimiter(engine, budget)

    chat, write, read = budgets(settings)
    return RateLimits(chat=limiter(chat), write=limiter(write), read=limiter(read))
