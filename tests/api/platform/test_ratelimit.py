"""Rate limits: GCRA on PostgreSQL and Redis, three budgets, and only work that passed the checks counts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.testing import ScriptedModel, assistant_message
from sqlalchemy.ext.asyncio import create_async_engine

from backend.core.errors import RateLimited
from backend.main import create_app
from backend.reliability.prepaid import PrepaidReads
from backend.reliability.ratelimit import (
    Budget,
    PostgresRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from tests.support.app import make_settings, running_app, serving
from tests.support.clients import error, mcp_session, ok
from tests.support.fakes import redis_up

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    """An injected clock: the limiters read it instead of the database's or Redis's, so a test
    steps through time instead of sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["postgres", "redis"])
async def make_limiter(
    request: pytest.FixtureRequest, database_url: str, clock: Clock
) -> AsyncIterator[Callable[[Budget], RateLimiter]]:
    """A factory of limiters on one backend, on the injected clock (Redis is required: CI and
    this machine run it)."""
    if request.param == "postgres":
        engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
        yield lambda budget: PostgresRateLimiter(engine, budget, clock)
        await engine.dispose()
        return
    if not redis_up():
        pytest.fail("no Redis on 127.0.0.1:6379 (start one: the Redis limiter must be tested)")
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    yield lambda budget: RedisRateLimiter(client, budget, clock)
    await client.aclose()


async def _hits(limiter: RateLimiter, user: str, n: int) -> list[int | None]:
    """None for each allowed request, the Retry-After seconds for each refused one."""
    outcomes: list[int | None] = []
    for _ in range(n):
        try:
            await limiter.hit(user)
            outcomes.append(None)
        except RateLimited as exc:
            assert exc.headers["Retry-After"] == str(exc.retry_after)
            outcomes.append(exc.retry_after)
    return outcomes


async def test_no_burst_of_twice_the_limit_across_a_window_boundary(
    make_limiter: Callable[[Budget], RateLimiter], clock: Clock
) -> None:
    # The old fixed windows reset at multiples of the window: a full burst just before the
    # boundary and another just after got 2 x limit through in well under a second.
    limit, window = 10, 2.0
    limiter = make_limiter(Budget("chat", limit, window, "messages"))
    user = f"u-{uuid.uuid4().hex}"
    clock.now -= clock.now % window - (window - 0.3)  # 0.3 s before an old window boundary
    before = await _hits(limiter, user, limit)
    clock.advance(0.35)  # 0.05 s after it
    after = await _hits(limiter, user, limit)
    assert before == [None] * limit
    # A burst of `limit`, then one per window/limit seconds: 10 + 0.35 s / 0.2 s.
    assert (before + after).count(None) == limit + 1
    assert {wait for wait in after if wait is not None} == {1}  # the next one is < 1 s away


async def test_sustained_rate_after_the_burst(
    make_limiter: Callable[[Budget], RateLimiter], clock: Clock
) -> None:
    limiter = make_limiter(Budget("write", 3, 3.0, "changes"))
    user = f"u-{uuid.uuid4().hex}"
    assert await _hits(limiter, user, 5) == [None, None, None, 1, 1]
    clock.advance(0.9)  # not yet one interval (1 s) later
    assert await _hits(limiter, user, 1) == [1]
    clock.advance(0.2)  # one interval later exactly one more request fits
    assert await _hits(limiter, user, 2) == [None, 1]


async def test_refused_requests_do_not_push_the_limit_further(
    make_limiter: Callable[[Budget], RateLimiter], clock: Clock
) -> None:
    limiter = make_limiter(Budget("read", 2, 2.0, "requests"))
    user = f"u-{uuid.uuid4().hex}"
    assert await _hits(limiter, user, 20) == [None, None] + [1] * 18
    clock.advance(2.1)  # a hammering client is not locked out for longer
    assert await _hits(limiter, user, 3) == [None, None, 1]


async def test_budgets_and_users_are_separate(
    make_limiter: Callable[[Budget], RateLimiter],
) -> None:
    chat = make_limiter(Budget("chat", 1, 60, "messages"))
    write = make_limiter(Budget("write", 1, 60, "changes"))
    alice, bob = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    assert await _hits(chat, alice, 2) == [None, 60]
    assert await _hits(write, alice, 2) == [None, 60]
    assert await _hits(chat, bob, 1) == [None]


async def test_postgres_and_redis_agree(database_url: str) -> None:
    if not redis_up():
        pytest.fail("no Redis on 127.0.0.1:6379")
    import redis.asyncio as redis

    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    client = redis.from_url(REDIS_URL)
    budget = Budget("chat", 4, 2.0, "messages")  # one request every 0.5 s, bursts of 4
    script = [(0.0, 6), (0.625, 2), (1.125, 3), (2.25, 6)]  # binary fractions: exact sums
    try:

        async def run(make: Callable[[Clock], RateLimiter]) -> list[list[int | None]]:
            user, clock = f"u-{uuid.uuid4().hex}", Clock()
            limiter = make(clock)
            results = []
            for pause, n in script:
                clock.advance(pause)
                results.append(await _hits(limiter, user, n))
            return results

        on_postgres = await run(lambda clock: PostgresRateLimiter(engine, budget, clock))
        on_redis = await run(lambda clock: RedisRateLimiter(client, budget, clock))
    finally:
        await client.aclose()
        await engine.dispose()
    assert on_postgres == on_redis
    assert on_postgres == [
        [None, None, None, None, 1, 1],
        [None, 1],
        [None, None, 1],
        [None, None, None, None, 1, 1],
    ]


async def test_concurrent_requests_never_exceed_the_burst(
    make_limiter: Callable[[Budget], RateLimiter],
) -> None:
    limiter = make_limiter(Budget("write", 5, 60, "changes"))
    user = f"u-{uuid.uuid4().hex}"

    async def one() -> bool:
        try:
            await limiter.hit(user)
        except RateLimited:
            return False
        return True

    assert sum(await asyncio.gather(*(one() for _ in range(40)))) == 5


# --- through the API ---


@pytest.fixture(params=["postgres", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that pick the limiter's backend."""
    if request.param == "postgres":
        return {}
    if not redis_up():
        pytest.fail("no Redis on 127.0.0.1:6379")
    return {"redis_url": REDIS_URL}


def _user(token_for: Callable[..., str]) -> tuple[str, dict[str, str]]:
    # Unique per test: Redis keeps its state between runs.
    user = f"user-{uuid.uuid4().hex[:8]}"
    return user, {"Authorization": f"Bearer {token_for(user)}"}


def _assert_429(r: httpx.Response, noun: str, interval: float = 60) -> None:
    """Refused with Retry-After: at most one interval (window / limit) away."""
    assert r.status_code == 429, (r.status_code, r.text)
    assert r.json()["code"] == "rate_limited"
    assert r.json()["detail"].startswith(f"Too many {noun}")
    assert 1 <= int(r.headers["retry-after"]) <= interval
    assert r.headers["x-request-id"]


async def test_task_writes_are_limited_and_refusals_before_work_do_not_count(
    database_url: str, data_dir: Path, token_for: Callable[..., str], backend: dict[str, Any]
) -> None:
    settings = make_settings(database_url, data_dir, write_rate_limit_requests=3, **backend)
    _, me = _user(token_for)
    _, other = _user(token_for)
    async with running_app(create_app(settings)) as client:
        # Refused before any work: bad token (401), invalid body or path (422). None counts.
        for _ in range(5):
            assert (await client.post("/api/tasks", json={"title": "x"})).status_code == 401
            assert (await client.post("/api/tasks", json={}, headers=me)).status_code == 422
            r = await client.post("/api/tasks", json={"title": ["no"]}, headers=me)
            assert r.status_code == 422
            r = await client.patch("/api/tasks/abc", json={"title": "x"}, headers=me)
            assert r.status_code == 422
            assert (await client.delete("/api/tasks/1.5", headers=me)).status_code == 422
            # ... and the task rules' own checks (blank or over-long title, bad description)
            r = await client.post("/api/tasks", json={"title": "   "}, headers=me)
            assert r.status_code == 422
            r = await client.post("/api/tasks", json={"title": "x" * 201}, headers=me)
            assert r.status_code == 422
            r = await client.patch("/api/tasks/1", json={"title": " "}, headers=me)
            assert r.status_code == 422
            r = await client.patch("/api/tasks/1", json={"description": "d" * 2001}, headers=me)
            assert r.status_code == 422
        created = await client.post("/api/tasks", json={"title": "one"}, headers=me)
        assert created.status_code == 201
        task_id = created.json()["id"]
        r = await client.patch(f"/api/tasks/{task_id}", json={"completed": True}, headers=me)
        assert r.status_code == 200
        assert (await client.delete(f"/api/tasks/{task_id}", headers=me)).status_code == 204
        # The budget of 3 is spent: every kind of write is refused, with Retry-After.
        _assert_429(await client.post("/api/tasks", json={"title": "four"}, headers=me), "changes")
        _assert_429(
            await client.patch(f"/api/tasks/{task_id}", json={"title": "x"}, headers=me), "changes"
        )
        _assert_429(await client.delete(f"/api/tasks/{task_id}", headers=me), "changes")
        # Nothing was written by the refused requests; reads and other users are unaffected.
        assert (await client.get("/api/tasks", headers=me)).json()["tasks"] == []
        r = await client.post("/api/tasks", json={"title": "theirs"}, headers=other)
        assert r.status_code == 201


async def test_reads_are_limited(
    database_url: str, data_dir: Path, token_for: Callable[..., str], backend: dict[str, Any]
) -> None:
    settings = make_settings(database_url, data_dir, read_rate_limit_requests=3, **backend)
    _, me = _user(token_for)
    async with running_app(create_app(settings)) as client:
        for _ in range(5):  # invalid queries are refused before any work
            r = await client.get("/api/tasks?status=bogus", headers=me)
            assert r.status_code == 422
            r = await client.get("/api/conversations?limit=0", headers=me)
            assert r.status_code == 422
        assert (await client.get("/api/tasks", headers=me)).status_code == 200
        assert (await client.get("/api/conversations", headers=me)).status_code == 200
        assert (await client.get("/api/tasks/123", headers=me)).status_code == 404
        _assert_429(await client.get("/api/tasks", headers=me), "requests")
        _assert_429(await client.get(f"/api/conversations/{uuid.uuid4()}", headers=me), "requests")
        # writes have their own budget
        r = await client.post("/api/tasks", json={"title": "still fine"}, headers=me)
        assert r.status_code == 201


async def test_two_replicas_serve_a_user_s_reads_up_to_its_budget_and_no_more(
    database_url: str, data_dir: Path, token_for: Callable[..., str], backend: dict[str, Any]
) -> None:
    # Each replica pays for READ_BUDGET_BATCH (10) reads at once and serves the rest itself.
    settings = make_settings(database_url, data_dir, read_rate_limit_requests=100, **backend)
    _, me = _user(token_for)
    async with (
        running_app(create_app(settings)) as one,
        running_app(create_app(settings)) as two,
    ):
        statuses = [
            (await (one, two)[n % 2].get("/api/tasks", headers=me)).status_code for n in range(106)
        ]
    assert statuses == [200] * 100 + [429] * 6


async def test_chat_turns_with_invalid_bodies_do_not_count(
    database_url: str, data_dir: Path, token_for: Callable[..., str]
) -> None:
    settings = make_settings(
        database_url, data_dir, rate_limit_requests=2, rate_limit_window_seconds=3600
    )
    model = ScriptedModel([[assistant_message("ok")] for _ in range(3)])
    user, me = _user(token_for)
    async with running_app(create_app(settings, model=model)) as client:
        for bad in ({}, {"message": 5}, {"message": "hi", "unknown": 1}, {"message": ""}):
            r = await client.post("/api/chat", json=bad, headers=me)
            assert r.status_code == 422, (bad, r.status_code)
            r = await client.post(f"/api/{user}/chat", json=bad, headers=me)
            assert r.status_code == 422, (bad, r.status_code)
        assert (
            await client.post("/api/chat", json={"message": "hi"}, headers=me)
        ).status_code == 200
        r = await client.post(f"/api/{user}/chat", json={"message": "hi"}, headers=me)
        assert r.status_code == 200
        r = await client.post("/api/chat", json={"message": "hi"}, headers=me)
        _assert_429(r, "messages", interval=1800)
        r = await client.post(f"/api/{user}/chat", json={"message": "hi"}, headers=me)
        _assert_429(r, "messages", interval=1800)


async def test_mcp_tool_calls_spend_the_write_budget(
    database_url: str, data_dir: Path, token_for: Callable[..., str]
) -> None:
    settings = make_settings(database_url, data_dir, write_rate_limit_requests=3)
    user, me = _user(token_for)
    async with serving(create_app(settings)) as base_url:
        async with mcp_session(base_url, token_for(user)) as session:
            for _ in range(4):  # invalid calls are refused before they count
                assert error(await session.call_tool("add_task", {"title": " "}))
                assert error(await session.call_tool("delete_task", {"task_id": "abc"}))
            task_id = ok(await session.call_tool("add_task", {"title": "via MCP"}))["task_id"]
            ok(await session.call_tool("complete_task", {"task_id": task_id}))
            ok(await session.call_tool("list_tasks", {}))
            refused = error(await session.call_tool("add_task", {"title": "one too many"}))
            assert refused.startswith("Too many changes; try again in ")
        async with httpx.AsyncClient(base_url=base_url, headers=me) as rest:
            titles = [t["title"] for t in (await rest.get("/api/tasks")).json()["tasks"]]
            assert titles == ["via MCP"]
            # MCP and REST share one write budget
            _assert_429(await rest.post("/api/tasks", json={"title": "rest"}), "changes")


async def test_chatkit_reads_and_changes_spend_their_budgets(
    database_url: str, data_dir: Path, token_for: Callable[..., str]
) -> None:
    """Besides turns (the chat budget), ChatKit's requests spend what the REST ones spend:
    thread updates and deletes a write, listings a read; refused requests nothing."""
    settings = make_settings(
        database_url, data_dir, read_rate_limit_requests=3, write_rate_limit_requests=2
    )
    model = ScriptedModel([[assistant_message("ok")]])
    _, me = _user(token_for)
    async with running_app(create_app(settings, model=model)) as client:
        turn = await client.post("/api/chat", json={"message": "hi"}, headers=me)
        thread = turn.json()["conversation_id"]

        async def chatkit(kind: str, **params: Any) -> httpx.Response:
            body = {"type": kind, "params": params}
            return await client.post("/api/chatkit", json=body, headers=me)

        for _ in range(4):
            assert (await chatkit("threads.update", thread_id=thread, title=" ")).status_code == 422
            assert (await chatkit("threads.list", limit=0)).status_code == 422
        for title in ("one", "two"):
            assert (
                await chatkit("threads.update", thread_id=thread, title=title)
            ).status_code == 200
        _assert_429(await chatkit("threads.update", thread_id=thread, title="three"), "changes")
        _assert_429(await chatkit("threads.delete", thread_id=thread), "changes")
        _assert_429(await client.post("/api/tasks", json={"title": "x"}, headers=me), "changes")
        for _ in range(3):
            assert (await chatkit("threads.list", limit=10)).status_code == 200
        _assert_429(await chatkit("threads.list", limit=10), "requests")
        _assert_429(await chatkit("items.list", thread_id=thread), "requests")
        _assert_429(await client.get("/api/tasks", headers=me), "requests")


async def test_a_batch_is_taken_whole_or_not_at_all(
    make_limiter: Callable[[Budget], RateLimiter], clock: Clock
) -> None:
    limiter = make_limiter(Budget("read", 10, 10.0, "requests"))  # one a second, bursts of 10
    user = f"u-{uuid.uuid4().hex}"
    assert await limiter.take(user, 11) > 0  # more than a whole burst, even as a first request
    assert await limiter.take(user, 4) == 0
    assert await limiter.take(user, 4) == 0
    assert await limiter.take(user, 4) == pytest.approx(2.0)  # 2 left: 2 s until 4 fit
    assert await _hits(limiter, user, 3) == [None, None, 1]  # the refusal spent nothing
    clock.advance(4.0)
    assert await limiter.take(user, 4) == 0


async def test_prepaid_reads_never_exceed_the_budget_across_replicas(
    make_limiter: Callable[[Budget], RateLimiter], clock: Clock
) -> None:
    budget = Budget("read", 25, 60.0, "requests")
    shared = make_limiter(budget)
    replicas = [PrepaidReads(shared, budget, 10) for _ in range(2)]
    user = f"u-{uuid.uuid4().hex}"
    served = [await _hits(replicas[n % 2], user, 1) for n in range(40)]
    # Each replica paid for 10 then 10 more; the last 5 of the budget went one at a time.
    assert served.count([None]) == 25
    assert all(s != [None] for s in served[25:])
    # Paid reads a replica had not used are given up with the replica: no more than the budget.
    assert await _hits(PrepaidReads(shared, budget, 10), user, 1) != [None]
    clock.advance(60.0)
    assert await _hits(replicas[0], user, 30) == [None] * 25 + [3] * 5  # 60 s / 25, rounded up


class Counted:
    """A limiter that counts the checks that reach it."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter, self.checks = limiter, 0

    async def hit(self, user_id: str) -> None:
        raise AssertionError("PrepaidReads only takes")

    async def take(self, user_id: str, cost: int = 1) -> float:
        self.checks += 1
        return await self.limiter.take(user_id, cost)


async def test_after_a_refused_batch_reads_go_one_at_a_time_until_one_fits(
    make_limiter: Callable[[Budget], RateLimiter], clock: Clock
) -> None:
    budget = Budget("read", 25, 50.0, "requests")  # one every 2 s
    shared = Counted(make_limiter(budget))
    reads = PrepaidReads(shared, budget, 10, clock)
    user = f"u-{uuid.uuid4().hex}"
    assert await _hits(reads, user, 20) == [None] * 20 and shared.checks == 2
    # 5 left: the batch is refused (it fits in 10 s), then one check a read, not two.
    assert await _hits(reads, user, 8) == [None] * 5 + [2] * 3
    assert shared.checks == 2 + 1 + 8
    clock.advance(9.0)  # the batch does not fit yet: still one check a read
    assert await _hits(reads, user, 1) == [None]
    assert shared.checks == 12
    clock.advance(13.0)  # now it does (the read just served pushed it back by 2 s)
    assert await _hits(reads, user, 1) == [None]
    assert shared.checks == 13


async def test_the_limiter_s_unflushed_commit_stays_in_its_own_statement(
    database_url: str,
) -> None:
    # The budget's row is written with synchronous_commit off (losing the last instant of rate
    # limit state in a crash is harmless); the connection's next unit must not inherit it.
    engine = create_async_engine(
        database_url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0
    )
    try:
        await PostgresRateLimiter(engine, Budget("write", 5, 60, "changes")).hit("alice")
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar() == "on"
    finally:
        await engine.dispose()
