"""Task numbers are per user: each user's tasks are 1, 2, 3... and "task 1" is the caller's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.clients import error, mcp_session, ok
from tests.support.tasks import create


async def _ids(client: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
    return [t["id"] for t in (await client.get("/api/tasks", headers=headers)).json()["tasks"]]


async def test_a_new_users_first_task_is_1_while_another_user_has_tasks(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    for title in ("a", "b", "c"):
        await create(client, alice, title)
    r = await create(client, bob, "bob's first")
    assert r.status_code == 201 and r.json()["id"] == 1
    assert (await create(client, bob, "bob's second")).json()["id"] == 2
    assert await _ids(client, alice) == [1, 2, 3]
    assert await _ids(client, bob) == [1, 2]


async def test_a_deleted_number_is_not_reused(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for title in ("one", "two"):
        await create(client, alice, title)
    assert (await client.delete("/api/tasks/2", headers=alice)).status_code == 204
    assert (await create(client, alice, "three")).json()["id"] == 3
    # the highest number too, and a user whose tasks were all deleted goes on counting
    for task_id in (1, 3):
        assert (await client.delete(f"/api/tasks/{task_id}", headers=alice)).status_code == 204
    assert await _ids(client, alice) == []
    assert (await create(client, alice, "four")).json()["id"] == 4
    assert (await client.get("/api/tasks/2", headers=alice)).status_code == 404


async def test_two_users_task_1_are_different_tasks(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    await create(client, alice, "alice's")
    await create(client, bob, "bob's")
    assert (await client.get("/api/tasks/1", headers=alice)).json()["title"] == "alice's"
    assert (await client.get("/api/tasks/1", headers=bob)).json()["title"] == "bob's"
    r = await client.patch("/api/tasks/1", json={"completed": True}, headers=bob)
    assert r.status_code == 200 and r.json()["title"] == "bob's"
    assert (await client.get("/api/tasks/1", headers=alice)).json()["completed"] is False
    assert (await client.delete("/api/tasks/1", headers=bob)).status_code == 204
    assert (await client.get("/api/tasks/1", headers=alice)).json()["title"] == "alice's"
    assert (await client.get("/api/tasks/1", headers=bob)).status_code == 404


async def test_mcp_task_1_is_the_callers_own(
    base_url: str, token_for: Callable[..., str], alice: dict[str, str], bob: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=base_url) as rest:
        await create(rest, alice, "alice's")
        await create(rest, bob, "bob's")
        async with mcp_session(base_url, token_for("bob")) as session:
            done = ok(await session.call_tool("complete_task", {"task_id": 1}))
            assert done == {"task_id": 1, "status": "completed", "title": "bob's"}
            ok(await session.call_tool("delete_task", {"task_id": 1}))
            assert error(await session.call_tool("delete_task", {"task_id": 1})) == (
                "Task 1 not found"
            )
            added = ok(await session.call_tool("add_task", {"title": "bob's next"}))
            assert added["task_id"] == 2
        alice_task = (await rest.get("/api/tasks/1", headers=alice)).json()
    assert alice_task["title"] == "alice's" and alice_task["completed"] is False


async def test_the_agent_on_task_1_acts_on_the_callers_own(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    await create(client, alice, "alice's")
    await create(client, bob, "bob's")
    r = await client.post("/api/chat", json={"message": "complete task 1"}, headers=bob)
    assert r.status_code == 200, r.text
    [call] = r.json()["tool_calls"]
    assert call["tool"] == "complete_task" and call["result"]["task_id"] == 1
    assert call["result"]["title"] == "bob's"
    assert (await client.get("/api/tasks/1", headers=bob)).json()["completed"] is True
    assert (await client.get("/api/tasks/1", headers=alice)).json()["completed"] is False
    r = await client.post("/api/chat", json={"message": "add task buy milk"}, headers=alice)
    [call] = r.json()["tool_calls"]
    assert call["result"]["task_id"] == 2  # alice's own second task


async def test_concurrent_creates_take_distinct_numbers_and_the_counter_follows(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    results = await asyncio.gather(*(create(client, alice, f"t{n}") for n in range(20)))
    assert sorted(r.json()["id"] for r in results) == list(range(1, 21))
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT tasks, last_number FROM task_counts WHERE user_id = 'alice'")
            )
        ).one()
    assert tuple(row) == (20, 20)
