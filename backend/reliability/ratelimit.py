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

Redis is an accelerator, never a dependency: when it is unreachable, hung or answers with an
error, checks fall back to the PostgreSQL limiter (`FallbackRateLimiter`). Each Redis call is
bounded (REDIS_TIMEOUT_SECONDS per socket operation, REDIS_CALL_SECONDS in all) and a stale
pooled connection (Redis restarted) is retried once on a fresh one. After a failure a small
circuit breaker (`RedisCircuit`) keeps requests off Redis and lets one probe through every
PROBE_SECONDS; one warning is logged when Redis goes and one when it is back, and
`task_assistant_rate_limit_fallbacks` counts the checks PostgreSQL answered instead.

Why fall back rather than fail open or closed: failing closed (503) would let a cache take the
service down; failing open would switch abuse protection off exactly while something is already
wrong. PostgreSQL is needed to answer any request anyway, so falling back to it adds no new way
to fail. Its TAT is a separate copy, so across a switch a user may get at most one extra burst.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.config import Settings
from backend.core.errors import RateLimited
from backend.core.timeutil import Clock
from backend.observability import metrics

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.3
"""Connect and socket timeout of one Redis operation."""
REDIS_CALL_SECONDS = 0.6
"""The most one rate-limit check waits for Redis (its one retry included)."""
PROBE_SECONDS = 1.0
"""While Redis is down, at most one request per this many seconds tries it again."""


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

    async def take(self, user_id: str, cost: int = 1) -> float:
        """Spend `cost` requests at once and return 0, or spend nothing and return the seconds
        until they would fit (a refusal that is not an error: `PrepaidReads` asks for several
        and falls back to one)."""


class Limiter:
    """`hit` in terms of a limiter's `take`."""

    budget: Budget

    async def take(self, user_id: str, cost: int = 1) -> float:
        raise NotImplementedError

    async def hit(self, user_id: str) -> None:
        wait = await self.take(user_id)
        if wait > 0:
            raise self.budget.refuse(wait)


class NoRateLimit:
    async def hit(self, user_id: str) -> None:
        return None

    async def take(self, user_id: str, cost: int = 1) -> float:
        return 0.0


# GCRA in one statement. `interval` is the cost of what is counted (one interval per request);
# a first request's row is inserted only if that cost fits the window. The conditional DO UPDATE
# is evaluated on the locked, latest row, so concurrent requests of one user serialise on it.
# Its commit does not wait for the WAL flush (synchronous_commit off for this transaction only):
# a database crash may lose the last instant of budget state, which only forgives a request or
# two, and the request is spared a disk flush behind everyone's writes. When it refuses, `wait`
# reads the TAT as the statement's snapshot saw it (a refused request leaves it unchanged); a
# row inserted by a concurrent first request is not in that snapshot, and the TAT is at most
# `window` ahead, so `interval` is then the right upper bound.
# The limiters read the database's (or Redis's) clock unless given one (`Clock`, for tests).
_PG_HIT = text(
    """
    WITH clock AS (
        SELECT coalesce(to_timestamp(CAST(:at AS double precision)), now()) AS now,
               set_config('synchronous_commit', 'off', true) AS unflushed
    ),
    hit AS (
        INSERT INTO rate_limits AS r (user_id, budget, tat)
        SELECT :uid, :budget, c.now + make_interval(secs => :interval) FROM clock c
         WHERE :interval <= :window
        ON CONFLICT (user_id, budget) DO UPDATE
           SET tat = greatest(r.tat, (SELECT now FROM clock)) + make_interval(secs => :interval)
         WHERE greatest(r.tat, (SELECT now FROM clock)) + make_interval(secs => :interval)
               <= (SELECT now FROM clock) + make_interval(secs => :window)
        RETURNING 1
    )
    SELECT EXISTS (SELECT FROM hit) AS allowed,
           coalesce(
               (SELECT extract(epoch FROM greatest(r.tat, c.now) - c.now)
                  FROM rate_limits r, clock c WHERE r.user_id = :uid AND r.budget = :budget),
               :window
           ) + :interval - :window AS wait
    """
)


class PostgresRateLimiter(Limiter):
    def __init__(
        self, autocommit_engine: AsyncEngine, budget: Budget, clock: Clock | None = None
    ) -> None:
        self.engine = autocommit_engine  # one statement per hit: it commits on its own
        self.budget = budget
        self.clock = clock

    async def take(self, user_id: str, cost: int = 1) -> float:
        params = {
            "uid": user_id,
            "budget": self.budget.name,
            "interval": self.budget.interval * cost,
            "window": self.budget.window_seconds,
            "at": self.clock() if self.clock is not None else None,
        }
        async with self.engine.connect() as conn:
            row = (await conn.execute(_PG_HIT, params)).one()
        return 0.0 if row.allowed else max(float(row.wait), 1e-6)


# The same arithmetic in Lua: atomic in Redis, with Redis's own clock. Numbers cross the Lua
# boundary as strings (Redis truncates Lua numbers to integers).
_REDIS_GCRA = """
local now = tonumber(ARGV[3])
if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
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


class RedisRateLimiter(Limiter):
    def __init__(self, redis: Any, budget: Budget, clock: Clock | None = None) -> None:
        self.redis = redis
        self.budget = budget
        self.clock = clock
        self._script = redis.register_script(_REDIS_GCRA)

    async def take(self, user_id: str, cost: int = 1) -> float:
        key = f"task-assistant:gcra:{self.budget.name}:{user_id}"
        allowed, wait = await self._script(
            keys=[key],
            args=[
                repr(self.budget.interval * cost),
                repr(self.budget.window_seconds),
                repr(self.clock()) if self.clock is not None else "",
            ],
        )
        return 0.0 if int(allowed) else max(float(wait), 1e-6)


class RedisCircuit:
    """Whether Redis is worth asking: yes while it answers; after a failure, one probe a second.

    Transitions are logged once each (down, back); requests never wait for a probe they do not
    make. Single-threaded asyncio: no lock needed between the check and the update.
    """

    def __init__(
        self, client: Any, errors: tuple[type[BaseException], ...], probe_seconds: float
    ) -> None:
        self.client = client
        self.errors = errors
        """What counts as "Redis failed": its own errors, OS errors, timeouts."""
        self.probe_seconds = probe_seconds
        self.up = True
        self._probe_at = 0.0

    def allows(self) -> bool:
        """True when this caller should ask Redis; while it is down, one caller per interval."""
        if self.up:
            return True
        now = time.monotonic()
        if now < self._probe_at:
            return False
        self._probe_at = now + self.probe_seconds  # this caller probes, the others fall back
        return True

    def failed(self, exc: BaseException) -> None:
        self._probe_at = time.monotonic() + self.probe_seconds
        if self.up:
            self.up = False
            log.warning(
                "Redis unavailable (%s); rate limits fall back to PostgreSQL, "
                "retrying Redis every %g s",
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                self.probe_seconds,
            )

    def succeeded(self) -> None:
        if not self.up:
            self.up = True
            log.warning("Redis is back; rate limits use Redis again")

    async def status(self) -> str:
        """`ok` or `unavailable`, for readiness: a PING, unless the breaker says not yet."""
        if not self.allows():
            return "unavailable"
        try:
            async with asyncio.timeout(REDIS_CALL_SECONDS):
                await self.client.ping()
        except self.errors as exc:
            self.failed(exc)
            return "unavailable"
        self.succeeded()
        return "ok"


class FallbackRateLimiter(Limiter):
    """The Redis limiter while Redis answers; the PostgreSQL one (same budget) when it does not."""

    def __init__(
        self, redis: RedisRateLimiter, postgres: PostgresRateLimiter, circuit: RedisCircuit
    ) -> None:
        self.redis = redis
        self.postgres = postgres
        self.circuit = circuit
        self.budget = postgres.budget

    async def take(self, user_id: str, cost: int = 1) -> float:
        if self.circuit.allows():
            try:
                async with asyncio.timeout(REDIS_CALL_SECONDS):
                    wait = await self.redis.take(user_id, cost)
            except self.circuit.errors as exc:
                self.circuit.failed(exc)
            else:
                self.circuit.succeeded()
                return wait
        metrics.rate_limit_fallback()
        return await self.postgres.take(user_id, cost)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The three budgets every replica enforces per user."""

    chat: RateLimiter
    """Chat turns (REST and ChatKit): RATE_LIMIT_REQUESTS per RATE_LIMIT_WINDOW_SECONDS."""
    write: RateLimiter
    """REST task writes and MCP tool calls: WRITE_RATE_LIMIT_REQUESTS per minute."""
    read: RateLimiter
    """GET endpoints: READ_RATE_LIMIT_REQUESTS per minute."""
    redis: RedisCircuit | None = None
    """Redis's state when REDIS_URL is set (readiness reports it)."""


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
    """PostgreSQL-backed limits, or Redis-backed ones (PostgreSQL as fallback) when REDIS_URL is
    set; limit 0: unlimited."""
    circuit: RedisCircuit | None = None
    if settings.redis_url:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        client = redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            # A connection Redis dropped (it restarted) fails once, then the command goes
            # through a fresh one; idle connections are PINGed before reuse.
            retry=Retry(NoBackoff(), retries=1),
            retry_on_error=[ConnectionResetError, BrokenPipeError],
            health_check_interval=15,
        )
        stack.push_async_callback(client.aclose)
        circuit = RedisCircuit(client, (RedisError, OSError), PROBE_SECONDS)
        log.info("rate limits kept in Redis (PostgreSQL while Redis is unavailable)")

    def limiter(budget: Budget) -> RateLimiter:
        if budget.limit <= 0:
            return NoRateLimit()
        postgres = PostgresRateLimiter(engine, budget)
        if circuit is None:
            return postgres
        return FallbackRateLimiter(RedisRateLimiter(circuit.client, budget), postgres, circuit)

    chat, write, read = budgets(settings)
    return RateLimits(chat=limiter(chat), write=limiter(write), read=limiter(read), redis=circuit)
