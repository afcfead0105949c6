"""Bounded by design: every limit on what one user can grow, and a 4xx where a 500 used to be."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.agent.context import Call
from backend.chat.journal import Unrecorded
from backend.core.errors import AppError
from backend.tasks.registry import LIST_LIMIT, cap_output
from tests.support.tasks import HUGE, assert_invalid, create


async def run_action(
    engine: AsyncEngine,
    name: str,
    user: str,
    arguments: dict[str, Any],
    *,
    max_tasks: int = 1000,
    max_output_chars: int = 16_000,
) -> str:
    """One action outside a turn (as MCP runs it): its result as JSON text."""
    auto = engine.execution_options(isolation_level="AUTOCOMMIT")
    return await Unrecorded(auto, user, max_tasks).run(Call(name, arguments, {}), max_output_chars)


async def action_result(
    engine: AsyncEngine, name: str, user: str, arguments: dict[str, Any], **kw: Any
) -> Any:
    return orjson.loads(await run_action(engine, name, user, arguments, **kw))


async def test_one_task_past_the_limit_is_409_and_deleting_makes_room(
    small: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    for n in range(5):
        assert (await create(small, alice, f"task {n}")).status_code == 201
    r = await create(small, alice, "one too many")
    assert r.status_code == 409
    assert r.json()["code"] == "task_limit_reached"
    assert "5 tasks" in r.json()["detail"]
    assert (await create(small, bob, "bob is not affected")).status_code == 201
    first = (await small.get("/api/tasks", headers=alice)).json()["tasks"][0]
    assert (await small.delete(f"/api/tasks/{first['id']}", headers=alice)).status_code == 204
    assert (await create(small, alice, "room again")).status_code == 201
    assert (await create(small, alice, "full again")).status_code == 409


async def test_concurrent_creates_never_pass_the_limit(
    small: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for _ in range(3):
        answers = await asyncio.gather(*(create(small, alice, f"race {n}") for n in range(20)))
        codes = sorted(r.status_code for r in answers)
        listed = (await small.get("/api/tasks", headers=alice)).json()["tasks"]
        assert len(listed) == 5
        for task in listed:  # empty the list for the next round
            await small.delete(f"/api/tasks/{task['id']}", headers=alice)
        assert codes == [201] * 5 + [409] * 15


@pytest.mark.parametrize("autocommit", [False, True])
async def test_concurrent_creates_through_the_actions(
    database_url: str, data_dir: Path, engine: AsyncEngine, autocommit: bool
) -> None:
    """The agent's and MCP's tools create through the actions; the limit holds there too
    (also on an autocommit engine: a create is one statement either way)."""
    if autocommit:
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    outcomes = await asyncio.gather(
        *(
            action_result(engine, "add_task", "carol", {"title": f"t{n}"}, max_tasks=4)
            for n in range(16)
        ),
        return_exceptions=True,
    )
    created = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if not isinstance(o, dict)]
    assert len(created) == 4
    assert {getattr(e, "code", repr(e)) for e in refused} == {"task_limit_reached"}
    async with engine.connect() as conn:
        count = (
            await conn.execute(text("SELECT count(*) FROM tasks WHERE user_id = 'carol'"))
        ).scalar_one()
    assert count == 4


async def test_task_list_is_paginated_with_a_cursor(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for n in range(7):
        await create(client, alice, f"task {n}")
    seen: list[str] = []
    after: int | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if after is not None:
            params["after"] = after
        body = (await client.get("/api/tasks", params=params, headers=alice)).json()
        seen += [t["title"] for t in body["tasks"]]
        pages += 1
        after = body["next_cursor"]
        if after is None:
            break
    assert seen == [f"task {n}" for n in range(7)] and pages == 3
    default = (await client.get("/api/tasks", headers=alice)).json()
    assert len(default["tasks"]) == 7 and default["next_cursor"] is None


async def test_task_list_default_page_is_50(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for n in range(51):
        await create(client, alice, f"task {n}")
    body = (await client.get("/api/tasks", headers=alice)).json()
    assert len(body["tasks"]) == 50 and body["next_cursor"] == body["tasks"][-1]["id"]
    rest = (await client.get(f"/api/tasks?after={body['next_cursor']}", headers=alice)).json()
    assert [t["title"] for t in rest["tasks"]] == ["task 50"] and rest["next_cursor"] is None


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        f"limit={2**63}",
        "limit=abc",
        "after=-1",
        f"after={2**63}",
        f"after={HUGE}",
        "after=x",
        "status=later",
    ],
)
async def test_task_list_parameters_are_validated(
    client: httpx.AsyncClient, alice: dict[str, str], query: str
) -> None:
    assert_invalid(await client.get(f"/api/tasks?{query}", headers=alice))


@pytest.mark.parametrize("task_id", [HUGE, str(2**63), "-1", "٣", "1e3"])
async def test_task_ids_no_task_can_have_are_4xx(
    client: httpx.AsyncClient, alice: dict[str, str], task_id: str
) -> None:
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"/api/tasks/{task_id}", headers=alice)
        assert r.status_code in (404, 422), r.text
    r = await client.patch(f"/api/tasks/{task_id}", json={"completed": True}, headers=alice)
    assert r.status_code in (404, 422), r.text


# --- what the model gets from list_tasks ------------------------------------------------------


async def test_list_tasks_tool_gives_at_most_50_with_count_and_hint(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    for n in range(60):
        await create(client, alice, f"errand {n}" if n != 57 else "buy milk")
    listed = await action_result(engine, "list_tasks", "alice", {})
    assert len(listed["tasks"]) == LIST_LIMIT == 50
    assert listed["count"] == 60
    assert "search" in listed["hint"] and "ask the user" in listed["hint"]
    found = await action_result(engine, "list_tasks", "alice", {"search": "MILK"})
    assert [t["title"] for t in found["tasks"]] == ["buy milk"]
    assert found["count"] == 1 and "hint" not in found
    # `%` and `_` are text to search for, not patterns
    by_percent = await action_result(engine, "list_tasks", "alice", {"search": "%"})
    assert by_percent["count"] == 0


async def test_write_results_are_the_text_orjson_gives(engine: AsyncEngine) -> None:
    """A write's result is built as JSON text by its own statement (so that the journal can keep
    it in that statement): it is the text orjson writes for the result, escapes included, and it
    is capped at MAX_TOOL_OUTPUT_CHARS exactly as `cap_output` caps any other result."""
    title = 'Quote " backslash \\ accents é 😀'
    description = "lines\nand\ttabs \x01 \u2028 end"
    added = await run_action(engine, "add_task", "dora", {"title": title})
    task_id = orjson.loads(added)["task_id"]
    assert added == orjson.dumps({"task_id": task_id, "status": "created", "title": title}).decode()
    updated = await run_action(
        engine, "update_task", "dora", {"task_id": task_id, "description": description}
    )
    expected = {
        "task_id": task_id,
        "status": "updated",
        "title": title,
        "description": description,
    }
    assert updated == orjson.dumps(expected).decode()
    long = {"task_id": str(task_id), "description": "d" * 2000}
    capped = await run_action(engine, "update_task", "dora", long, max_output_chars=1000)
    full = {**expected, "description": "d" * 2000}
    assert capped == orjson.dumps(cap_output(full, 1000)).decode()
    assert orjson.loads(capped)["truncated"] is True and len(capped) <= 1000
    # quotes grow when the cut text is encoded again: SQL cuts them exactly as cap_output does
    quoted = {"task_id": str(task_id), "description": '"' * 2000}
    capped = await run_action(engine, "update_task", "dora", quoted, max_output_chars=1000)
    full = {**expected, "description": '"' * 2000}
    assert capped == orjson.dumps(cap_output(full, 1000)).decode()
    assert orjson.loads(capped)["truncated"] is True and len(capped) <= 1000
    done = await run_action(engine, "complete_task", "dora", {"task_id": task_id})
    assert orjson.loads(done) == {"task_id": task_id, "status": "completed", "title": title}
    gone = await run_action(engine, "delete_task", "dora", {"task_id": task_id})
    assert orjson.loads(gone) == {"task_id": task_id, "status": "deleted", "title": title}
    with pytest.raises(AppError, match="not found"):
        await run_action(engine, "delete_task", "dora", {"task_id": task_id})
