"""One declaration per task action: a throwaway action registered in a test appears as an agent
tool, as an MCP tool and with its ChatKit progress label, with no other file touched."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from agents.testing import ScriptedModel, assistant_message, function_call
from chatkit.types import ThreadCreateParams, ThreadsCreateReq

from backend.core.config import Settings
from backend.main import create_app
from backend.tasks import registry, service
from backend.tasks.registry import Action
from tests.support.app import LIVE_STATES, running_app
from tests.support.clients import stream, user_input
from tests.support.fakes import MCP_HEADERS


def _reopen(user_id: str, max_tasks: int, task_id: Any) -> service.Change:
    return service.update(user_id, registry.coerce_task_id(task_id), completed=False)


@pytest.fixture
def reopen() -> Iterator[Action]:
    action = Action(
        name="reopen_task",
        description="Mark a completed task as not done again.",
        parameters={
            "type": "object",
            "properties": {"task_id": {"type": "integer", "description": "The task's id."}},
            "required": ["task_id"],
        },
        progress="Reopening a task…",
        verb="reopened",
        plan=_reopen,
        status="reopened",
    )
    with registry.registered(action):
        yield action
    assert "reopen_task" not in registry.ACTIONS


async def test_a_registered_action_is_offered_everywhere(
    reopen: Action, settings: Settings, alice: dict[str, str]
) -> None:
    model = ScriptedModel()
    app = create_app(settings, model=model)
    async with running_app(app) as client:
        task = (await client.post("/api/tasks", json={"title": "Milk"}, headers=alice)).json()
        await client.patch(f"/api/tasks/{task['id']}", json={"completed": True}, headers=alice)

        # an agent tool, with the registry's schema
        tools = {t.name: t for t in LIVE_STATES[app].chat.agent.tools}
        assert tools["reopen_task"].params_json_schema == reopen.parameters  # type: ignore[union-attr]

        # an MCP tool, listed and callable
        listed = await mcp(client, alice, "tools/list", {})
        [tool] = [t for t in listed["tools"] if t["name"] == "reopen_task"]
        assert tool["description"] == reopen.description
        assert tool["inputSchema"] == reopen.parameters
        called = await mcp(
            client,
            alice,
            "tools/call",
            {"name": "reopen_task", "arguments": {"task_id": task["id"]}},
        )
        assert called["structuredContent"] == {
            "task_id": task["id"],
            "status": "reopened",
            "title": "Milk",
        }

        # a ChatKit turn that calls it shows its progress label, and the change is made
        await client.patch(f"/api/tasks/{task['id']}", json={"completed": True}, headers=alice)
        model.extend(
            [
                [function_call("reopen_task", {"task_id": task["id"]}, call_id="c1")],
                [assistant_message("Reopened it.")],
            ]
        )
        events = await stream(
            client,
            ThreadsCreateReq(params=ThreadCreateParams(input=user_input("reopen the milk task"))),
            alice,
        )
        labels = [e.text for e in events if e.type == "progress_update"]
        assert "Reopening a task…" in labels
        shown = (await client.get(f"/api/tasks/{task['id']}", headers=alice)).json()
        assert shown["completed"] is False


async def mcp(
    client: httpx.AsyncClient, headers: dict[str, str], method: str, params: dict[str, Any]
) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    r = await client.post("/mcp", content=orjson.dumps(body), headers={**headers, **MCP_HEADERS})
    assert r.status_code == 200, r.text
    return r.json()["result"]
