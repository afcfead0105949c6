"""The MCP server at /mcp, driven by the official `mcp` client over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from backend.config import Settings
from backend.main import create_app
from tests.conftest import serving

TOOLS = {"add_task", "list_tasks", "complete_task", "update_task", "delete_task"}


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with serving(create_app(settings)) as url:
        yield url


@asynccontextmanager
async def mcp_session(base_url: str, token: str) -> AsyncIterator[ClientSession]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, streamable_http_client(f"{base_url}/mcp", http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def _result(result: Any) -> Any:
    text = result.content[0].text
    return text if result.is_error else json.loads(text)


async def test_tools_listed_without_user_parameter(
    base_url: str, token_for: Callable[..., str]
) -> None:
    async with mcp_session(base_url, token_for("alice")) as session:
        tools = (await session.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    for tool in tools:
        schema = json.dumps(tool.input_schema)
        assert (
            "user" not in schema.lower()
            and "$ref" not in schema
            and "additionalProperties" not in schema
        )


async def test_every_tool_changes_what_rest_shows(
    base_url: str, token_for: Callable[..., str], alice: dict[str, str]
) -> None:
    async with (
        mcp_session(base_url, token_for("alice")) as session,
        httpx.AsyncClient(base_url=base_url) as rest,
    ):
        added = _result(
            await session.call_tool("add_task", {"title": "Buy milk", "description": "2 litres"})
        )
        assert added["status"] == "created" and added["title"] == "Buy milk"
        task_id = added["task_id"]
        listed = (await rest.get("/api/tasks", headers=alice)).json()["tasks"]
        assert [(t["id"], t["description"]) for t in listed] == [(task_id, "2 litres")]

        assert (
            _result(await session.call_tool("list_tasks", {"status": "pending"}))["tasks"][0]["id"]
            == task_id
        )
        assert (
            _result(
                await session.call_tool("update_task", {"task_id": task_id, "title": "Oat milk"})
            )["title"]
            == "Oat milk"
        )
        assert (
            _result(await session.call_tool("complete_task", {"task_id": task_id}))["status"]
            == "completed"
        )
        task = (await rest.get(f"/api/tasks/{task_id}", headers=alice)).json()
        assert task["title"] == "Oat milk" and task["completed"] is True
        assert (
            _result(await session.call_tool("list_tasks", {"status": "completed"}))["tasks"][0][
                "title"
            ]
            == "Oat milk"
        )
        assert (
            _result(await session.call_tool("delete_task", {"task_id": task_id}))["status"]
            == "deleted"
        )
        assert (await rest.get(f"/api/tasks/{task_id}", headers=alice)).status_code == 404


async def test_tool_errors_are_tool_errors(base_url: str, token_for: Callable[..., str]) -> None:
    async with mcp_session(base_url, token_for("alice")) as session:
        missing = await session.call_tool("complete_task", {"task_id": 987654})
        assert missing.is_error and "Task 987654 not found" in _result(missing)
        bad = await session.call_tool("add_task", {"title": "   "})
        assert bad.is_error and "title: must not be empty" in _result(bad)
        # the session still works after errors
        assert not (await session.call_tool("list_tasks", {})).is_error


async def test_two_users_are_isolated(
    base_url: str, token_for: Callable[..., str], alice: dict[str, str]
) -> None:
    async with mcp_session(base_url, token_for("alice")) as a:
        task_id = _result(await a.call_tool("add_task", {"title": "alice only"}))["task_id"]
    async with mcp_session(base_url, token_for("bob")) as b:
        assert _result(await b.call_tool("list_tasks", {})) == {"tasks": []}
        for name, args in [
            ("complete_task", {"task_id": task_id}),
            ("update_task", {"task_id": task_id, "title": "pwned"}),
            ("delete_task", {"task_id": task_id}),
        ]:
            result = await b.call_tool(name, args)
            assert result.is_error and f"Task {task_id} not found" in _result(result)
    async with httpx.AsyncClient(base_url=base_url) as rest:
        task = (await rest.get(f"/api/tasks/{task_id}", headers=alice)).json()
    assert task["title"] == "alice only" and task["completed"] is False


@pytest.mark.parametrize("auth", [None, "Bearer garbage", "Bearer", "Basic YTpi"])
async def test_401_before_any_mcp_handling(base_url: str, auth: str | None) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if auth is not None:
        headers["Authorization"] = auth
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        for path in ("/mcp", "/mcp/"):
            r = await http.post(path, json=body, headers=headers)
            assert r.status_code == 401
            assert r.json()["code"] == "unauthorized" and r.headers["www-authenticate"].startswith(
                "Bearer"
            )


@pytest.mark.parametrize("transport", ["inprocess", "mcp"])
async def test_agent_tools_over_mcp_behave_the_same(
    base_url: str,
    database_url: str,
    data_dir: Any,
    alice: dict[str, str],
    bob: dict[str, str],
    transport: str,
) -> None:
    """TOOLS_TRANSPORT=mcp: the agent reaches its tools through /mcp with the caller's token."""
    from tests.conftest import make_settings, running_app

    extra = (
        {"tools_transport": "mcp", "mcp_server_url": f"{base_url}/mcp"}
        if transport == "mcp"
        else {}
    )
    agent_app = create_app(make_settings(database_url, data_dir, **extra))
    async with running_app(agent_app) as client:

        async def say(message: str, headers: dict[str, str]) -> dict[str, Any]:
            r = await client.post("/api/chat", json={"message": message}, headers=headers)
            assert r.status_code == 200, r.text
            return r.json()

        added = await say("add a task to buy milk", alice)
        task_id = added["tool_calls"][0]["result"]["task_id"]
        assert added["tool_calls"][0]["result"] == {
            "task_id": task_id,
            "status": "created",
            "title": "Buy milk",
        }
        done = await say("mark the milk task as done", alice)
        assert [c["tool"] for c in done["tool_calls"]] == ["list_tasks", "complete_task"]
        # the same error text as in-process, and bob cannot reach alice's task
        stolen = await say(f"delete task {task_id}", bob)
        assert stolen["tool_calls"][0]["result"] == {"error": f"Task {task_id} not found"}
    async with httpx.AsyncClient(base_url=base_url) as rest:
        task = (await rest.get(f"/api/tasks/{task_id}", headers=alice)).json()
    assert task["completed"] is True
