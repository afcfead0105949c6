"""The MCP server at /mcp, driven by the official `mcp` client over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backend.main import create_app
from backend.tasks.registry import ACTIONS
from tests.support.clients import error, mcp_session, ok
from tests.support.fakes import MCP_HEADERS


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
async def test_tools_are_the_agents_tools(
    base_url: str, token_for: Callable[..., str], path: str
) -> None:
    async with mcp_session(base_url, token_for("alice"), path) as session:
        tools = (await session.list_tools()).tools
    assert {t.name: (t.description, t.input_schema) for t in tools} == {
        name: (action.description, action.parameters) for name, action in ACTIONS.items()
    }
    for tool in tools:
        schema = json.dumps(tool.input_schema)
        for word in ("user", "$ref", "$schema", "additionalProperties"):
            assert word not in schema


async def test_every_tool_changes_what_rest_shows(
    base_url: str, token_for: Callable[..., str], alice: dict[str, str]
) -> None:
    async with (
        mcp_session(base_url, token_for("alice")) as session,
        httpx.AsyncClient(base_url=base_url, headers=alice) as rest,
    ):
        added = ok(
            await session.call_tool("add_task", {"title": "Buy milk", "description": "2 litres"})
        )
        task_id = added["task_id"]
        assert added == {"task_id": task_id, "status": "created", "title": "Buy milk"}
        listed = (await rest.get("/api/tasks")).json()["tasks"]
        assert [(t["id"], t["title"], t["description"]) for t in listed] == [
            (task_id, "Buy milk", "2 litres")
        ]

        pending = ok(await session.call_tool("list_tasks", {"status": "pending"}))
        assert pending == {
            "tasks": [
                {"id": task_id, "title": "Buy milk", "description": "2 litres", "completed": False}
            ],
            "count": 1,
        }

        updated = ok(
            await session.call_tool("update_task", {"task_id": task_id, "title": "Oat milk"})
        )
        assert updated == {
            "task_id": task_id,
            "status": "updated",
            "title": "Oat milk",
            "description": "2 litres",
        }
        assert (await rest.get(f"/api/tasks/{task_id}")).json()["title"] == "Oat milk"

        completed = ok(await session.call_tool("complete_task", {"task_id": task_id}))
        assert completed == {"task_id": task_id, "status": "completed", "title": "Oat milk"}
        assert (await rest.get(f"/api/tasks/{task_id}")).json()["completed"] is True
        assert ok(await session.call_tool("list_tasks", {"status": "pending"})) == {
            "tasks": [],
            "count": 0,
        }

        deleted = ok(await session.call_tool("delete_task", {"task_id": task_id}))
        assert deleted == {"task_id": task_id, "status": "deleted", "title": "Oat milk"}
        assert (await rest.get(f"/api/tasks/{task_id}")).status_code == 404
        assert ok(await session.call_tool("list_tasks", {})) == {"tasks": [], "count": 0}


async def test_failed_actions_are_tool_errors_worded_like_the_agents(
    base_url: str, token_for: Callable[..., str]
) -> None:
    async with mcp_session(base_url, token_for("alice")) as session:
        assert error(await session.call_tool("complete_task", {"task_id": 987654})) == (
            "Task 987654 not found"
        )
        assert error(await session.call_tool("add_task", {"title": "   "})) == (
            "title: must not be empty"
        )
        assert error(await session.call_tool("add_task", {"title": "x" * 201})) == (
            "title: must be at most 200 characters"
        )
        assert error(await session.call_tool("update_task", {"task_id": "abc"})) == (
            "title: give a new title or description"
        )
        assert error(await session.call_tool("delete_task", {"task_id": "abc"})) == (
            "task_id: must be an integer task id"
        )
        assert "task_id" in error(await session.call_tool("complete_task", {}))
        # the session still works after errors, and nothing was created
        assert ok(await session.call_tool("list_tasks", {})) == {"tasks": [], "count": 0}


async def test_two_users_are_isolated(
    base_url: str, token_for: Callable[..., str], alice: dict[str, str]
) -> None:
    async with mcp_session(base_url, token_for("alice")) as a:
        task_id = ok(await a.call_tool("add_task", {"title": "alice only"}))["task_id"]
    async with mcp_session(base_url, token_for("bob")) as b:
        assert ok(await b.call_tool("list_tasks", {})) == {"tasks": [], "count": 0}
        for name, args in [
            ("complete_task", {"task_id": task_id}),
            ("update_task", {"task_id": task_id, "title": "pwned"}),
            ("delete_task", {"task_id": task_id}),
        ]:
            assert error(await b.call_tool(name, args)) == f"Task {task_id} not found"
        # arguments cannot name another user
        ok(await b.call_tool("add_task", {"title": "bob's", "user_id": "alice"}))
    async with httpx.AsyncClient(base_url=base_url, headers=alice) as rest:
        tasks = (await rest.get("/api/tasks")).json()["tasks"]
    assert [(t["id"], t["title"], t["completed"]) for t in tasks] == [
        (task_id, "alice only", False)
    ]


async def test_one_request_calls_act_for_the_tokens_user(
    base_url: str, token_for: Callable[..., str]
) -> None:
    """Stateless: a tools/call needs no session, on the handshake and the 2026-07-28 protocol."""
    async with mcp_session(base_url, token_for("alice")) as a:
        ok(await a.call_tool("add_task", {"title": "alice only"}))
    call = {"name": "list_tasks", "arguments": {}}
    modern_meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    requests = [
        ({"MCP-Protocol-Version": "2025-11-25"}, call),
        (
            {
                "MCP-Protocol-Version": "2026-07-28",
                "Mcp-Method": "tools/call",
                "Mcp-Name": "list_tasks",
            },
            {**call, "_meta": modern_meta},
        ),
    ]
    async with httpx.AsyncClient(base_url=base_url, headers=MCP_HEADERS) as http:
        for headers, params in requests:
            titles = {}
            for user in ("alice", "bob"):
                r = await http.post(
                    "/mcp",
                    json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
                    headers={**headers, "Authorization": f"Bearer {token_for(user)}"},
                )
                assert r.status_code == 200, r.text
                result = r.json()["result"]
                titles[user] = [t["title"] for t in result["structuredContent"]["tasks"]]
            assert titles == {"alice": ["alice only"], "bob": []}


@pytest.mark.parametrize("auth", [None, "Bearer garbage", "Bearer", "Basic YTpi", "expired"])
async def test_401_before_any_mcp_handling(
    base_url: str, token_for: Callable[..., str], auth: str | None
) -> None:
    headers = dict(MCP_HEADERS)
    if auth == "expired":
        headers["Authorization"] = f"Bearer {token_for('alice', ttl_seconds=-3600)}"
    elif auth is not None:
        headers["Authorization"] = auth
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        for path in ("/mcp", "/mcp/"):
            r = await http.post(path, json=body, headers=headers)
            assert r.status_code == 401
            assert r.json()["code"] == "unauthorized" and set(r.json()) == {"detail", "code"}
            assert r.headers["www-authenticate"].startswith("Bearer")


async def test_no_stream_or_session_endpoints_on_a_stateless_server(
    base_url: str, alice: dict[str, str]
) -> None:
    """GET would open an SSE stream that nothing can ever write to (and that holds up shutdown)."""
    async with httpx.AsyncClient(base_url=base_url, headers=alice, timeout=5) as http:
        for method in ("GET", "DELETE"):
            r = await http.request(method, "/mcp", headers={"Accept": "text/event-stream"})
            assert r.status_code == 405 and r.headers["allow"] == "POST"


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
    from tests.support.app import make_settings, running_app

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
