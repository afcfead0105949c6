"""The service's Prometheus metrics, and the small functions the code calls to move them.

Metrics live in prometheus-client's process-wide registry (that is how the library works). With
several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR to an empty directory before starting: the
library then keeps every value in a memory-mapped file under it, and a scrape of any worker
reports the sum over all of them (`endpoint.py`). The variable must be in the environment before
this module is imported; one process needs nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

_PREFIX = "task_assistant"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    f"{_PREFIX}_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    f"{_PREFIX}_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of the body), by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TURN_SECONDS = Histogram(
    f"{_PREFIX}_chat_turn_duration_seconds",
    "Chat turn latency, from claiming the conversation to storing the turn, by outcome",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
)
TURNS_IN_PROGRESS = Gauge(
    f"{_PREFIX}_chat_turns_in_progress",
    "Chat turns running now",
    multiprocess_mode="livesum",
)
MODEL_CALL_SECONDS = Histogram(
    f"{_PREFIX}_model_call_duration_seconds",
    "Latency of one model call (retries included), by outcome",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30),
)
MODEL_TOKENS = Counter(
    f"{_PREFIX}_model_tokens",
    "Tokens the model read (input) and wrote (output), as the provider reported them",
    ["direction"],
)
TOOL_CALLS = Counter(
    f"{_PREFIX}_tool_calls",
    "Task tool calls made by the agent, by tool and outcome (error: the action was refused)",
    ["tool", "outcome"],
)
RATE_LIMIT_REFUSALS = Counter(
    f"{_PREFIX}_rate_limit_refusals",
    "Chat turns refused by the per-user rate limit (answered 429)",
)
RATE_LIMIT_FALLBACKS = Counter(
    f"{_PREFIX}_rate_limit_fallbacks",
    "Rate-limit checks answered by PostgreSQL because Redis (REDIS_URL) was unavailable",
)
SLOW_READERS_DROPPED = Counter(
    f"{_PREFIX}_http_slow_readers_dropped",
    "Connections aborted because the client read none of a response for "
    "RESPONSE_WRITE_TIMEOUT_SECONDS",
)
POOL_IN_USE = Gauge(
    f"{_PREFIX}_db_pool_connections_in_use",
    "Database connections checked out of the pool",
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    f"{_PREFIX}_db_pool_waiting",
    "Requests waiting for a free pooled database connection",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    f"{_PREFIX}_db_pool_size",
    "Connections the pool keeps (DATABASE_POOL_SIZE per process)",
    multiprocess_mode="livesum",
)

_INPUT = MODEL_TOKENS.labels("input")
_OUTPUT = MODEL_TOKENS.labels("output")


def outcome_of(error: BaseException | None) -> str:
    """A small, fixed set of outcome labels for a failed (or not) turn or model call."""
    if error is None:
        return "ok"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, TimeoutError):
        return "timeout"
    status = getattr(error, "status", None) or getattr(error, "status_code", None)
    if status == 429:
        return "rate_limited"
    if status is None and isinstance(error, (ConnectionError, OSError)):
        return "connection_error"
    return "error"


def request_done(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in _METHODS else "OTHER"
    REQUESTS.labels(method, route, str(status)).inc()
    REQUEST_SECONDS.labels(method, route).observe(seconds)


def slow_reader_dropped() -> None:
    SLOW_READERS_DROPPED.inc()


def turn_started() -> None:
    TURNS_IN_PROGRESS.inc()


def turn_finished(started: float, error: BaseException | None = None) -> None:
    """`started` is the turn's `time.perf_counter()` at its start."""
    TURNS_IN_PROGRESS.dec()
    TURN_SECONDS.labels(outcome_of(error)).observe(time.perf_counter() - started)


def model_call(outcome: str, seconds: float) -> None:
    MODEL_CALL_SECONDS.labels(outcome).observe(seconds)


def tokens(input_tokens: int | None, output_tokens: int | None) -> None:
    if input_tokens:
        _INPUT.inc(input_tokens)
    if output_tokens:
        _OUTPUT.inc(output_tokens)


def tool_call(tool: str, result: dict[str, Any]) -> None:
    """Count one agent tool call; a result with an `error` key is a refused action."""
    TOOL_CALLS.labels(tool, "error" if "error" in result else "ok").inc()


def rate_limit_refused() -> None:
    RATE_LIMIT_REFUSALS.inc()


def rate_limit_fallback() -> None:
    RATE_LIMIT_FALLBACKS.inc()


def watch_pool(engine: AsyncEngine) -> None:
    """Keep the pool gauges current between scrapes.

    With several workers a scrape reaches only one of them, so each worker's gauges must be right
    without one: checkouts and checkins move "in use" as they happen, and "waiting" is sampled at
    each checkout (under contention there is one every few milliseconds).
    """
    pool: Any = engine.sync_engine.pool  # a QueuePool (db.create_engine)

    def checked_out(*_: Any) -> None:
        POOL_IN_USE.inc()
        POOL_WAITING.set(_waiting(pool))

    def checked_in(*_: Any) -> None:
        POOL_IN_USE.dec()

    event.listen(pool, "checkout", checked_out)
    event.listen(pool, "checkin", checked_in)
    POOL_SIZE.set(pool.size())


def sample_pool(pool: Any) -> None:
    """Read a SQLAlchemy QueuePool's occupancy into the pool gauges (at scrape time)."""
    POOL_SIZE.set(pool.size())
    POOL_IN_USE.set(max(0, pool.checkedout()))
    POOL_WAITING.set(_waiting(pool))


def _waiting(pool: Any) -> int:
    # SQLAlchemy has no public waiter count: the async pool's waiters are the pending getters of
    # its asyncio.Queue. Anything unexpected (another pool class) reads as 0 rather than failing.
    try:
        getters = pool._pool._queue._getters
    except AttributeError:
        return 0
    return sum(1 for waiter in getters if not waiter.done())
