"""Bounded by design: every limit on what one user can grow, and a 4xx where a 500 used to be."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from chatkit.types import (
    InferenceOptions,
    ItemsListParams,
    ItemsListReq,
    ThreadAddUserMessageParams,
    ThreadCreateParams,
    ThreadListParams,
    ThreadRetryAfterItemParams,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    UserMessageInput,
    UserMessageTagContent,
    UserMessageTextContent,
)
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.agent.context import Call
from backend.chat.history import count_tokens, count_tokens_async, warm_up
from backend.chat.journal import Unrecorded
from backend.core.config import Settings
from backend.core.errors import AppError
from backend.main import create_app
from backend.tasks.registry import LIST_LIMIT, cap_output
from tests.support.app import make_settings, running_app, serving
from tests.support.fakes import MCP_HEADERS


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


HUGE = "9" * 5000  # past Python's 4,300-digit int/str conversion limit


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


def limited(database_url: str, data_dir: Path, **values: Any) -> Settings:
    return make_settings(database_url, data_dir, **values)


@pytest.fixture
async def small(database_url: str, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with small limits: 5 tasks per user, 4,000-character tool output, 10 KB pages."""
    settings = limited(
        database_url,
        data_dir,
        max_tasks_per_user=5,
        max_tool_output_chars=4000,
        max_page_bytes=10_000,
    )
    async with running_app(create_app(settings)) as client:
        yield client


async def create(client: httpx.AsyncClient, headers: dict[str, str], title: str) -> httpx.Response:
    return await client.post("/api/tasks", json={"title": title}, headers=headers)


def assert_invalid(r: httpx.Response, field: str | None = None) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_input" and body["detail"], body
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body


# --- tasks per user ---------------------------------------------------------------------------


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


async def test_the_agent_says_the_limit_was_reached(
    small: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for n in range(5):
        await create(small, alice, f"task {n}")
    r = await small.post("/api/chat", json={"message": "add a task to buy milk"}, headers=alice)
    assert r.status_code == 200
    assert "5 tasks" in r.json()["response"]
    [call] = r.json()["tool_calls"]
    assert call["tool"] == "add_task" and "5 tasks" in call["result"]["error"]
    assert len((await small.get("/api/tasks", headers=alice)).json()["tasks"]) == 5


# --- GET /api/tasks pages ----------------------------------------------------------------------


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


async def test_offline_model_finds_a_named_task_past_the_first_50(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for n in range(55):
        await create(client, alice, f"errand {n}")
    milk = (await create(client, alice, "Buy milk")).json()
    r = await client.post(
        "/api/chat", json={"message": "mark the milk task as done"}, headers=alice
    )
    body = r.json()
    assert [c["tool"] for c in body["tool_calls"]] == ["list_tasks", "list_tasks", "complete_task"]
    assert body["tool_calls"][0]["result"]["count"] == 56
    assert body["response"] == f"Marked 'Buy milk' (task {milk['id']}) as done."
    shown = await client.post("/api/chat", json={"message": "show my tasks"}, headers=alice)
    assert "(the first 50 of 56)" in shown.json()["response"]


def test_cap_output_keeps_whole_tasks_that_fit() -> None:
    tasks = [
        {"id": n, "title": "t" * 200, "description": "d" * 2000, "completed": False}
        for n in range(50)
    ]
    capped = cap_output({"tasks": tasks, "count": 900}, 16_000)
    assert len(orjson.dumps(capped).decode()) <= 16_000
    assert 1 <= len(capped["tasks"]) < 50 and capped["tasks"] == tasks[: len(capped["tasks"])]
    assert capped["count"] == 900 and f"first {len(capped['tasks'])} of 900" in capped["hint"]
    small = {"tasks": tasks[:1], "count": 1}
    assert cap_output(small, 16_000) is small
    other = cap_output({"error": "x" * 50_000}, 4000)
    assert other["truncated"] is True and len(orjson.dumps(other)) <= 4000


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
    done = await run_action(engine, "complete_task", "dora", {"task_id": task_id})
    assert orjson.loads(done) == {"task_id": task_id, "status": "completed", "title": title}
    gone = await run_action(engine, "delete_task", "dora", {"task_id": task_id})
    assert orjson.loads(gone) == {"task_id": task_id, "status": "deleted", "title": title}
    with pytest.raises(AppError, match="not found"):
        await run_action(engine, "delete_task", "dora", {"task_id": task_id})


async def test_stored_tool_output_is_capped(
    small: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for n in range(5):
        body = {"title": f"{n} " + "t" * 190, "description": "d" * 2000}
        assert (await small.post("/api/tasks", json=body, headers=alice)).status_code == 201
    r = await small.post("/api/chat", json={"message": "show my tasks"}, headers=alice)
    result = r.json()["tool_calls"][0]["result"]
    assert len(orjson.dumps(result).decode()) <= 4000
    assert result["count"] == 5 and 0 < len(result["tasks"]) < 5 and "hint" in result
    conversation = (
        await small.get(f"/api/conversations/{r.json()['conversation_id']}", headers=alice)
    ).json()
    stored = conversation["messages"][-1]["tool_calls"][0]["result"]
    assert stored == result


# --- conversation pages ------------------------------------------------------------------------


async def seed_conversation(engine: AsyncEngine, contents: list[str]) -> uuid.UUID:
    """Alice's conversation holding these messages (user and assistant in turn)."""
    cid = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO conversations (id, user_id, title) VALUES (:c, 'alice', 'big')"),
            {"c": cid},
        )
        for n, content in enumerate(contents):
            await conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, user_id, role, content) "
                    "VALUES (:c, 'alice', :role, :content)"
                ),
                {"c": cid, "role": "user" if n % 2 == 0 else "assistant", "content": content},
            )
    return cid


async def test_a_page_of_messages_stops_at_max_page_bytes(
    small: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    cid = await seed_conversation(engine, [f"{n:02d}" + "x" * 2998 for n in range(20)])
    seen: list[str] = []
    after = None
    while True:
        url = f"/api/conversations/{cid}?limit=200" + (f"&after={after}" if after else "")
        r = await small.get(url, headers=alice)
        assert r.status_code == 200
        page = r.json()
        # 3,000-byte messages against a 10,000-byte page: 4 messages (the last one crosses it)
        assert len(page["messages"]) <= 4 and len(r.content) < 20_000
        seen += [m["content"][:2] for m in page["messages"]]
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == [f"{n:02d}" for n in range(20)]


async def test_one_message_larger_than_a_page_still_comes_back(
    small: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    cid = await seed_conversation(engine, ["y" * 50_000])
    page = (await small.get(f"/api/conversations/{cid}", headers=alice)).json()
    assert len(page["messages"]) == 1 and page["next_cursor"] is None


# --- ChatKit -----------------------------------------------------------------------------------


async def chatkit(
    client: httpx.AsyncClient, req: BaseModel | str, headers: dict[str, str]
) -> httpx.Response:
    body = req if isinstance(req, str) else req.model_dump_json()
    return await client.post(
        "/api/chatkit", content=body, headers={**headers, "content-type": "application/json"}
    )


def message(
    text: str = "hello",
    *,
    quoted: str | None = None,
    tags: list[UserMessageTagContent] | None = None,
) -> UserMessageInput:
    return UserMessageInput(
        content=[UserMessageTextContent(text=text), *(tags or [])],
        attachments=[],
        quoted_text=quoted,
        inference_options=InferenceOptions(),
    )


@pytest.mark.parametrize("limit", [-1, 0, 101, 1_000_000, 2**63, 2**64])
async def test_chatkit_page_size_must_be_1_to_100(
    client: httpx.AsyncClient, alice: dict[str, str], limit: int
) -> None:
    threads = ThreadsListReq(params=ThreadListParams(limit=limit))
    assert_invalid(await chatkit(client, threads, alice), "params.limit")
    items = ItemsListReq(params=ItemsListParams(thread_id=str(uuid.uuid4()), limit=limit))
    assert_invalid(await chatkit(client, items, alice), "params.limit")


async def test_chatkit_page_sizes_within_bounds_answer(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for limit in (None, 1, 100):
        r = await chatkit(client, ThreadsListReq(params=ThreadListParams(limit=limit)), alice)
        assert r.status_code == 200 and r.json()["has_more"] is False


@pytest.mark.parametrize("after", ["\x00", "thr\x00", "not-a-uuid", "x" * 1000])
async def test_chatkit_cursors_must_be_well_formed(
    client: httpx.AsyncClient, alice: dict[str, str], after: str
) -> None:
    threads = ThreadsListReq(params=ThreadListParams(after=after))
    assert_invalid(await chatkit(client, threads, alice), "params.after")
    if after != "not-a-uuid":  # a well-formed item id (of no item)
        items = ItemsListReq(params=ItemsListParams(thread_id=str(uuid.uuid4()), after=after))
        assert_invalid(await chatkit(client, items, alice), "params.after")
    retry = ThreadsRetryAfterItemReq(
        params=ThreadRetryAfterItemParams(thread_id=str(uuid.uuid4()), item_id=after + "\x00")
    )
    assert_invalid(await chatkit(client, retry, alice), "params.item_id")


def tag(data: dict[str, Any], label: str = "milk") -> UserMessageTagContent:
    return UserMessageTagContent(id="tag_1", text=label, data=data)


@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("input.quoted_text", lambda: message(quoted="q" * 900_000)),
        ("input.quoted_text", lambda: message(quoted="nul\x00")),
        ("input.content", lambda: message(tags=[tag({"blob": "d" * 900_000})])),
        ("input.content", lambda: message(tags=[tag({"a": "d" * 5000}), tag({"b": "d" * 5000})])),
        ("input.content.data", lambda: message(tags=[tag({"nul": "\x00"})])),
        ("input.content", lambda: message(tags=[tag({}, label="l" * 9000)])),
        (
            "input.inference_options.model",
            lambda: UserMessageInput(
                content=[UserMessageTextContent(text="hi")],
                attachments=[],
                inference_options=InferenceOptions(model="m" * 1000),
            ),
        ),
    ],
)
async def test_chatkit_free_text_is_capped(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    field: str,
    make: Callable[[], UserMessageInput],
) -> None:
    create = ThreadsCreateReq(params=ThreadCreateParams(input=make()))
    assert_invalid(await chatkit(client, create, alice), field)
    add = ThreadsAddUserMessageReq(
        params=ThreadAddUserMessageParams(thread_id=str(uuid.uuid4()), input=make())
    )
    assert_invalid(await chatkit(client, add, alice), field)
    assert (await client.get("/api/conversations", headers=alice)).json()["conversations"] == []


async def test_chatkit_message_with_a_small_tag_is_accepted(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    req = ThreadsCreateReq(
        params=ThreadCreateParams(
            input=message("show my tasks", quoted="earlier", tags=[tag({"id": 3})])
        )
    )
    r = await chatkit(client, req, alice)
    assert r.status_code == 200 and "thread.created" in r.text


# --- the offline model and MCP: ids no task can have ------------------------------------------


async def test_offline_model_with_a_huge_task_number_says_it_cannot_find_it(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for text_ in (f"mark task {HUGE} as done", f"delete task #{HUGE}", f"rename task {HUGE} to x"):
        r = await client.post("/api/chat", json={"message": text_}, headers=alice)
        assert r.status_code == 200, r.text
        assert r.json()["response"].startswith("I couldn't find that task")
        assert r.json()["tool_calls"] == []


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with serving(create_app(settings)) as url:
        yield url


async def mcp_post(base_url: str, token: str, name: str, raw_arguments: str) -> httpx.Response:
    """A tools/call with arguments written as raw JSON (Python cannot dump a 5,000-digit int)."""
    body = (
        '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", '
        f'"params": {{"name": "{name}", "arguments": {raw_arguments}}}}}'
    )
    async with httpx.AsyncClient(base_url=base_url, headers=MCP_HEADERS) as http:
        return await http.post(
            "/mcp",
            content=body,
            headers={"MCP-Protocol-Version": "2025-11-25", "Authorization": f"Bearer {token}"},
        )


async def mcp_call(base_url: str, token: str, name: str, raw_arguments: str) -> dict[str, Any]:
    r = await mcp_post(base_url, token, name, raw_arguments)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["result"]
    return result


async def test_mcp_json_number_too_long_to_parse_is_a_parse_error(
    base_url: str, token_for: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    r = await mcp_post(base_url, token_for("alice"), "complete_task", f'{{"task_id": {HUGE}}}')
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize(
    ("raw_id", "message_"),
    [
        ("1" + "0" * 100, "No task has that id"),
        (f'"{HUGE}"', "No task has that id"),
        ("-1" + "0" * 100, "No task has that id"),
        (str(2**63), "No task has that id"),
        ("1e300", "No task has that id"),
        ('"٣"', "must be an integer task id"),
        ('"²"', "must be an integer task id"),
        ('"①"', "must be an integer task id"),
        ("1e400", "must be an integer task id"),
        ('"3.5"', "must be an integer task id"),
    ],
)
async def test_mcp_ids_no_task_can_have_are_tool_errors_without_a_traceback(
    base_url: str,
    token_for: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    raw_id: str,
    message_: str,
) -> None:
    caplog.set_level(logging.WARNING)
    for name, extra in (
        ("complete_task", ""),
        ("delete_task", ""),
        ("update_task", ', "title": "x"'),
    ):
        result = await mcp_call(
            base_url, token_for("alice"), name, f'{{"task_id": {raw_id}{extra}}}'
        )
        assert result["isError"] is True, result
        assert message_ in result["content"][0]["text"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_mcp_list_tasks_is_capped_too(
    base_url: str, token_for: Callable[..., str], alice: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=alice) as rest:
        for n in range(52):
            await rest.post("/api/tasks", json={"title": f"task {n}"})
    result = await mcp_call(base_url, token_for("alice"), "list_tasks", "{}")
    listed = result["structuredContent"]
    assert len(listed["tasks"]) == 50 and listed["count"] == 52 and "hint" in listed
    pending = await mcp_call(base_url, token_for("alice"), "list_tasks", '{"search": "task 5"}')
    assert [t["title"] for t in pending["structuredContent"]["tasks"]] == [
        "task 5",
        "task 50",
        "task 51",
    ]


# --- token counting off the event loop ---------------------------------------------------------


async def test_count_tokens_async_matches_and_leaves_the_loop_free() -> None:
    warm_up()
    small = "Buy milk"
    items = [{"type": "function_call_output", "output": "x" * 100}]
    assert await count_tokens_async(small, items) == count_tokens(small, items)
    large = "Buy milk and eggs, then call mom. " * 30_000  # ~1 MB: ~100 ms of counting
    expected = count_tokens(large)
    ticks = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.005)
    before = ticks
    started = time.perf_counter()
    assert await count_tokens_async(large) == expected
    stop.set()
    await ticker
    # Counting inline would let the ticker run 0 times while it lasted.
    assert ticks - before >= 10, (ticks - before, time.perf_counter() - started)
