"""The chat turn with the Agents SDK's ScriptedModel: tools, storage, history, isolation, failures."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from agents.testing import ScriptedModel, assistant_message, function_call

from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import running_app


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
async def chat_client(settings: Settings, model: ScriptedModel) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(settings, model=model)) as client:
        yield client


async def test_greeting_without_tools(
    chat_client: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    model.enqueue([assistant_message("Hello! How can I help with your tasks?")])
    r = await chat_client.post("/api/chat", json={"message": "hi"}, headers=alice)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] == "Hello! How can I help with your tasks?"
    assert body["tool_calls"] == []
    uuid.UUID(body["conversation_id"])
    conv = (
        await chat_client.get(f"/api/conversations/{body['conversation_id']}", headers=alice)
    ).json()
    assert conv["title"] == "hi"
    assert [(m["role"], m["content"]) for m in conv["messages"]] == [
        ("user", "hi"),
        ("assistant", "Hello! How can I help with your tasks?"),
    ]
    assert conv["messages"][1]["id"] == body["message_id"]


async def test_tool_turn_and_history(
    chat_client: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    model.extend(
        [
            [function_call("add_task", {"title": "Buy milk"}, call_id="c1")],
            [assistant_message("Added 'Buy milk'.")],
        ]
    )
    r = await chat_client.post(
        "/api/chat", json={"message": "add a task to buy milk"}, headers=alice
    )
    assert r.status_code == 200, r.text
    body = r.json()
    task_id = body["tool_calls"][0]["result"]["task_id"]
    assert body["tool_calls"] == [
        {
            "tool": "add_task",
            "arguments": {"title": "Buy milk"},
            "result": {"task_id": task_id, "status": "created", "title": "Buy milk"},
        }
    ]
    tasks = (await chat_client.get("/api/tasks", headers=alice)).json()["tasks"]
    assert [t["title"] for t in tasks] == ["Buy milk"]

    # Second turn: "mark it done" — the model sees the earlier tool call and its result.
    model.extend(
        [
            [function_call("complete_task", {"task_id": task_id}, call_id="c2")],
            [assistant_message("Done.")],
        ]
    )
    r = await chat_client.post(
        "/api/chat",
        json={"message": "mark it done", "conversation_id": body["conversation_id"]},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    sent = model.calls[2].input
    assert isinstance(sent, list)
    kinds = [i.get("type") or i.get("role") for i in sent]  # type: ignore[union-attr]
    assert kinds == ["user", "function_call", "function_call_output", "assistant", "user"]
    assert (await chat_client.get(f"/api/tasks/{task_id}", headers=alice)).json()[
        "completed"
    ] is True


async def test_tool_error_goes_back_to_the_model(
    chat_client: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    model.extend(
        [
            [function_call("complete_task", {"task_id": 424242}, call_id="c1")],
            [function_call("add_task", {"title": "   "}, call_id="c2")],
            [assistant_message("Sorry, that task does not exist.")],
        ]
    )
    r = await chat_client.post("/api/chat", json={"message": "complete 424242"}, headers=alice)
    assert r.status_code == 200
    results = [c["result"] for c in r.json()["tool_calls"]]
    assert results == [{"error": "Task 424242 not found"}, {"error": "title: must not be empty"}]
    # the model received the error text as the tool output
    outputs = [
        i
        for i in model.calls[1].input
        if isinstance(i, dict) and i.get("type") == "function_call_output"
    ]
    assert "Task 424242 not found" in str(outputs[-1]["output"])


async def test_model_cannot_reach_another_users_tasks(
    chat_client: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str], bob: dict[str, str]
) -> None:
    task = (
        await chat_client.post("/api/tasks", json={"title": "alice secret"}, headers=alice)
    ).json()
    model.extend(
        [
            [
                function_call("list_tasks", {"status": "all", "user_id": "alice"}, call_id="c1"),
                function_call(
                    "complete_task", {"task_id": task["id"], "user_id": "alice"}, call_id="c2"
                ),
                function_call(
                    "update_task", {"task_id": task["id"], "title": "pwned"}, call_id="c3"
                ),
                function_call("delete_task", {"task_id": task["id"]}, call_id="c4"),
            ],
            [assistant_message("done")],
        ]
    )
    r = await chat_client.post("/api/chat", json={"message": "act as alice"}, headers=bob)
    assert r.status_code == 200
    results = [c["result"] for c in r.json()["tool_calls"]]
    assert results[0] == {"tasks": [], "count": 0}
    assert all(res == {"error": f"Task {task['id']} not found"} for res in results[1:])
    assert all("user_id" not in c["arguments"] for c in r.json()["tool_calls"])
    after = (await chat_client.get(f"/api/tasks/{task['id']}", headers=alice)).json()
    assert after["title"] == "alice secret" and after["completed"] is False


async def test_conversation_access_rules(
    chat_client: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str], bob: dict[str, str]
) -> None:
    model.enqueue([assistant_message("hi")])
    cid = (await chat_client.post("/api/chat", json={"message": "hello"}, headers=alice)).json()[
        "conversation_id"
    ]
    r = await chat_client.post(
        "/api/chat", json={"message": "x", "conversation_id": cid}, headers=bob
    )
    assert r.status_code == 404 and r.json()["code"] == "conversation_not_found"
    r = await chat_client.post(
        "/api/chat", json={"message": "x", "conversation_id": str(uuid.uuid4())}, headers=alice
    )
    assert r.status_code == 404
    r = await chat_client.post(
        "/api/chat", json={"message": "x", "conversation_id": "not-a-uuid"}, headers=alice
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "conversation_id"
    for path in (f"/api/conversations/{cid}",):
        assert (await chat_client.get(path, headers=bob)).status_code == 404
        assert (await chat_client.patch(path, json={"title": "x"}, headers=bob)).status_code == 404
        assert (await chat_client.delete(path, headers=bob)).status_code == 404
    assert (await chat_client.get("/api/conversations", headers=bob)).json()["conversations"] == []
    assert model.remaining_steps == 0


@pytest.mark.parametrize("message", ["", "   ", "x" * 8001, "nul\x00"])
async def test_message_validation(
    chat_client: httpx.AsyncClient, alice: dict[str, str], message: str
) -> None:
    r = await chat_client.post("/api/chat", json={"message": message}, headers=alice)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "message"
    assert (await chat_client.get("/api/conversations", headers=alice)).json()[
        "conversations"
    ] == []


async def test_path_user_must_match_token(
    chat_client: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    r = await chat_client.post("/api/bob/chat", json={"message": "hi"}, headers=alice)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    model.enqueue([assistant_message("hello alice")])
    r = await chat_client.post("/api/alice/chat", json={"message": "hi"}, headers=alice)
    assert r.status_code == 200 and r.json()["response"] == "hello alice"
