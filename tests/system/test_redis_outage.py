"""Redis (REDIS_URL) is an accelerator: killed, hung or restarted, requests keep being answered.

Each test runs its own `redis-server` on a free port and kills, stops (SIGSTOP) and restarts it
under requests; rate limits then fall back to PostgreSQL and readiness names Redis as degraded.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from backend.auth.devkeys import load_or_create_dev_key, mint_token
from backend.main import create_app
from tests.support.app import LIVE_STATES, free_port, make_settings, running_app

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NO_PERSISTENCE = ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
READ_LIMIT = 6
"""GETs per minute and user in these tests: small, so a burst shows the limit holds."""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.settimeout(0.2)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A throwaway redis-server: no persistence, so a restart starts empty (no scripts either)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", *NO_PERSISTENCE],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not _answers(self.port):
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.01)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.kill()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("no redis-server binary")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


class Api:
    """The app with REDIS_URL set, a way to see its Redis keys, and its fallback counter."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, data_dir: Path, redis: Any):
        self.app, self.client, self.redis = app, client, redis
        self.key = load_or_create_dev_key(data_dir)

    def user(self) -> str:
        return f"u-{uuid.uuid4().hex[:8]}"

    async def get(self, user: str) -> tuple[int, float]:
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {mint_token(self.key, user)}"}
        r = await self.client.get("/api/tasks", headers=headers)
        return r.status_code, time.monotonic() - started

    async def burst(self, user: str | None, n: int) -> list[tuple[int, float]]:
        """`n` requests at once, by `user` (None: each by a new user)."""
        users = [user or self.user() for _ in range(n)]
        return list(await asyncio.gather(*(self.get(u) for u in users)))

    async def in_redis(self, user: str) -> bool:
        """True when `user`'s read budget is kept in Redis (the Redis limiter counted it)."""
        return bool(await self.redis.exists(f"task-assistant:gcra:read:{user}"))

    async def redis_used(self) -> bool:
        """One request (answered 200), and whether the Redis limiter counted it."""
        user = self.user()
        assert (await self.get(user))[0] == 200
        return await self.in_redis(user)

    async def ready(self) -> dict[str, Any]:
        r = await self.client.get("/health/ready")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    @property
    def redis_up(self) -> bool:
        circuit = LIVE_STATES[self.app].rate_limits.redis
        assert circuit is not None
        return circuit.up


def fallbacks() -> float:
    return REGISTRY.get_sample_value("task_assistant_rate_limit_fallbacks_total") or 0.0


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def api(database_url: str, data_dir: Path, redis_server: RedisServer) -> AsyncIterator[Api]:
    import redis.asyncio as redis

    settings = make_settings(
        database_url, data_dir, redis_url=redis_server.url, read_rate_limit_requests=READ_LIMIT
    )
    app = create_app(settings)
    observer = redis.from_url(redis_server.url, socket_timeout=0.5, retry_on_error=[OSError])
    async with running_app(app) as client:
        yield Api(app, client, data_dir, observer)
    await observer.aclose()


async def test_redis_killed_then_restarted(
    api: Api, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="backend.reliability.ratelimit")
    user = api.user()
    assert [s for s, _ in await api.burst(user, 2)] == [200, 200]
    assert await api.in_redis(user)
    assert (await api.ready())["redis"] == "ok"

    redis_server.kill()
    before = fallbacks()
    user = api.user()
    statuses = [s for s, _ in await api.burst(user, READ_LIMIT + 4)]
    assert set(statuses) == {200, 429}, statuses  # answered, and the limit still holds
    assert statuses.count(200) in (READ_LIMIT, READ_LIMIT + 1)
    assert fallbacks() - before == len(statuses)
    body = await api.ready()  # 200: the service works without Redis
    assert body["status"] == "degraded" and body["redis"] == "unavailable"
    assert body["database"] == "ok"
    for _ in range(5):  # still answered, and no Redis round trip each time (the breaker is open)
        status, seconds = await api.get(api.user())
        assert status == 200 and seconds < 0.5

    redis_server.start()  # back, empty: no keys and no cached script
    await until(api.redis_used)
    assert (await api.ready())["redis"] == "ok"
    assert [s for s, _ in await api.burst(None, 5)] == [200] * 5
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("ratelimit")]
    assert len(warnings) == 2, warnings  # one when it went, one when it came back
    assert "fall back to PostgreSQL" in warnings[0] and "back" in warnings[1]


async def test_redis_hung_answers_within_a_second(api: Api, redis_server: RedisServer) -> None:
    await api.burst(api.user(), 4)  # some pooled connections
    redis_server.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        answers = await api.burst(None, 10)
        assert [s for s, _ in answers] == [200] * 10
        # A check waits at most REDIS_CALL_SECONDS (0.6 s) for Redis; the margin is for a busy
        # test machine (before the fix: 2 s socket timeouts and 10 retries, then a 500).
        assert max(seconds for _, seconds in answers) < 1.5, answers
        for _ in range(5):  # afterwards the breaker keeps requests off the hung Redis
            status, seconds = await api.get(api.user())
            assert status == 200 and seconds < 1.0
        assert time.monotonic() - started < 5
        assert not api.redis_up
        body = await api.ready()
        assert body["status"] == "degraded" and body["redis"] == "unavailable"
    finally:
        redis_server.signal(signal.SIGCONT)
    await until(api.redis_used)
    assert [s for s, _ in await api.burst(None, 5)] == [200] * 5


async def test_stale_connections_after_a_restart_are_retried(
    api: Api, redis_server: RedisServer
) -> None:
    """Redis restarted between requests: its pooled connections are dead, and nobody notices."""
    await api.burst(api.user(), 8)  # several pooled connections, all about to go stale
    redis_server.kill()
    redis_server.start()
    before = fallbacks()
    user = api.user()
    assert [s for s, _ in await api.burst(user, 5)] == [200] * 5
    assert await api.in_redis(user)
    assert api.redis_up and fallbacks() == before  # retried on fresh connections, no fallback
