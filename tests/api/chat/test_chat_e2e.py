"""End to end over real HTTP: the service talks to an OpenAI-compatible stub, and we check what it sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from backend.main import create_app
from tests.support.app import running_app
from tests.support.fakes import llm_settings
from tests.support.stub_llm import StubLLM


@pytest.fixture
async def llm_client(
    database_url: str, data_dir: Path, stub: StubLLM
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(llm_settings(database_url, data_dir, stub))) as client:
        yield client


async def test_multi_step_turn_sends_prompt_tools_and_results(
    llm_client: httpx.AsyncClient, stub: StubLLM, alice: dict[str, str]
) -> None:
    task = (await llm_client.post("/api/tasks", json={"title": "Buy milk"}, headers=alice)).json()
    stub.script(
        {
            "tool_calls": [
                {"name": "list_tasks", "arguments": {"status": "pending"}, "id": "call_list"}
            ]
        },
        {
            "tool_calls": [
                {"name": "complete_task", "arguments": {"task_id": task["id"]}, "id": "call_done"}
            ]
        },
        {"text": "Marked 'Buy milk' as done."},
    )
    r = await llm_client.post(
        "/api/chat", json={"message": "mark the milk task as done"}, headers=alice
    )
    assert r.status_code == 200, r.text
    assert [c["tool"] for c in r.json()["tool_calls"]] == ["list_tasks", "complete_task"]
    assert r.json()["response"] == "Marked 'Buy milk' as done."
    assert (await llm_client.get(f"/api/tasks/{task['id']}", headers=alice)).json()[
        "completed"
    ] is True

    first, second, third = stub.requests
    assert first["model"] == "stub-model"
    system = first["messages"][0]
    assert system["role"] == "system" and "task assistant" in system["content"].lower()
    assert "never invent" in system["content"].lower()
    assert first["messages"][1:] == [{"role": "user", "content": "mark the milk task as done"}]
    tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(tools) == {"add_task", "list_tasks", "complete_task", "update_task", "delete_task"}
    schema_text = json.dumps(first["tools"])
    for forbidden in ("user_id", "user", "$ref", "$schema", "additionalProperties", "$defs"):
        assert f'"{forbidden}"' not in schema_text, forbidden
    assert tools["complete_task"]["parameters"]["required"] == ["task_id"]
    # the tool result went back to the model
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_list"
    assert json.loads(tool_message["content"]) == {
        "tasks": [{"id": task["id"], "title": "Buy milk", "description": None, "completed": False}],
        "count": 1,
    }
    assert third["messages"][-1]["tool_call_id"] == "call_done"


async def test_history_with_tool_calls_and_provider_extras_is_replayed(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    # The SDK sends Gemini's thought signatures back only to models named gemini-*.
    settings = llm_settings(database_url, data_dir, stub, llm_model="gemini-2.5-flash")
    async with running_app(create_app(settings)) as client:
        await _replay_extras(client, stub, alice)


async def _replay_extras(
    llm_client: httpx.AsyncClient, stub: StubLLM, alice: dict[str, str]
) -> None:
    signature = {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    stub.script(
        {
            "tool_calls": [
                {
                    "name": "add_task",
                    "arguments": {"title": "Call mom"},
                    "id": "call_a",
                    "extra_content": signature,
                }
            ]
        },
        {"text": "Added."},
    )
    r = await llm_client.post("/api/chat", json={"message": "add call mom"}, headers=alice)
    cid = r.json()["conversation_id"]
    stub.script({"text": "You asked me to add 'Call mom'."})
    r = await llm_client.post(
        "/api/chat", json={"message": "what did I ask?", "conversation_id": cid}, headers=alice
    )
    assert r.status_code == 200
    history = stub.requests[-1]["messages"][1:]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant", "user"]
    call = history[1]["tool_calls"][0]
    assert call["id"] == "call_a" and call["function"]["name"] == "add_task"
    assert call.get("extra_content") == signature  # Gemini thought signatures survive storage
    assert json.loads(history[2]["content"])["status"] == "created"
    assert history[3] == {"role": "assistant", "content": "Added."}


@pytest.mark.parametrize(
    ("fault", "status", "detail"),
    [
        ({"status": 500}, 503, "AI service temporarily unavailable"),
        ({"status": 502}, 503, "AI service temporarily unavailable"),
        (
            {"status": 401, "body": {"error": {"message": "bad key"}}},
            502,
            "The AI provider refused this server's API key: its operator must check LLM_API_KEY "
            "(or GEMINI_API_KEY) (the provider answered HTTP 401)",
        ),
        ({"status": 429}, 503, "The AI service is rate limited; retry later"),
        ({"status": 429, "headers": {"Retry-After": "7"}}, 429, None),
        ({"drop": True}, 503, "AI service temporarily unavailable"),
    ],
)
async def test_provider_faults(
    llm_client: httpx.AsyncClient,
    stub: StubLLM,
    alice: dict[str, str],
    fault: dict[str, Any],
    status: int,
    detail: str | None,
) -> None:
    stub.script(fault)
    r = await llm_client.post("/api/chat", json={"message": "hi"}, headers=alice)
    assert r.status_code == status, r.text
    if detail:
        assert r.json()["detail"] == detail
    else:
        assert r.headers["retry-after"] == "7"
    assert "bad key" not in r.text and "stub" not in r.text
    # nothing was stored: the conversation reads as if the message was never sent
    conversations = (await llm_client.get("/api/conversations", headers=alice)).json()[
        "conversations"
    ]
    for conv in conversations:
        detail_body = (
            await llm_client.get(f"/api/conversations/{conv['id']}", headers=alice)
        ).json()
        assert detail_body["messages"] == []


async def test_timeout_answers_504(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    settings = llm_settings(database_url, data_dir, stub, chat_timeout_seconds=1)
    async with running_app(create_app(settings)) as client:
        stub.script({"hang": 5})
        r = await client.post("/api/chat", json={"message": "hi"}, headers=alice)
        assert r.status_code == 504 and r.json()["code"] == "timeout"
        # a first turn that committed nothing leaves no conversation behind
        assert (await client.get("/api/conversations", headers=alice)).json()["conversations"] == []
        stub.script({"text": "first"}, {"hang": 5})
        cid = (await client.post("/api/chat", json={"message": "one"}, headers=alice)).json()[
            "conversation_id"
        ]
        r = await client.post(
            "/api/chat", json={"message": "two", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 504
        # the conversation is free again for the next message, and the failed one left nothing
        stub.script({"text": "back"})
        r = await client.post(
            "/api/chat", json={"message": "again", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 200 and r.json()["response"] == "back"
        messages = (await client.get(f"/api/conversations/{cid}", headers=alice)).json()["messages"]
        assert [m["content"] for m in messages] == ["one", "first", "again", "back"]


async def test_retries_with_backoff_recover(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    settings = llm_settings(database_url, data_dir, stub, llm_max_retries=2)
    async with running_app(create_app(settings)) as client:
        stub.script({"status": 503}, {"status": 500}, {"text": "made it"})
        r = await client.post("/api/chat", json={"message": "hi"}, headers=alice)
        assert r.status_code == 200 and r.json()["response"] == "made it"
        assert len(stub.requests) == 3


async def test_failure_after_a_tool_stores_the_whole_turn(
    llm_client: httpx.AsyncClient, stub: StubLLM, alice: dict[str, str]
) -> None:
    stub.script(
        {"tool_calls": [{"name": "add_task", "arguments": {"title": "Pay rent"}}]}, {"status": 500}
    )
    r = await llm_client.post("/api/chat", json={"message": "add pay rent"}, headers=alice)
    assert r.status_code == 503
    cid = (await llm_client.get("/api/conversations", headers=alice)).json()["conversations"][0][
        "id"
    ]
    messages = (await llm_client.get(f"/api/conversations/{cid}", headers=alice)).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["tool_calls"][0]["result"]["title"] == "Pay rent"
    assert "interrupted" in messages[1]["content"]
    # a retry sees the complete earlier turn (call + result), so the model need not repeat it
    stub.script({"text": "Already added."})
    await llm_client.post(
        "/api/chat", json={"message": "add pay rent", "conversation_id": cid}, headers=alice
    )
    roles = [m["role"] for m in stub.requests[-1]["messages"][1:]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert len((await llm_client.get("/api/tasks", headers=alice)).json()["tasks"]) == 1


async def test_database_failure_while_storing_the_turn(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    """The turn's final write fails: the client gets a clear error and no half turn is stored."""
    engine = create_async_engine(database_url)
    try:
        async with running_app(create_app(llm_settings(database_url, data_dir, stub))) as client:
            stub.script({"text": "hello"}, {"text": "lost"})
            cid = (await client.post("/api/chat", json={"message": "hi"}, headers=alice)).json()[
                "conversation_id"
            ]
            async with engine.begin() as conn:  # make writing a finished reply fail in the DB
                await conn.execute(
                    text(
                        "CREATE OR REPLACE FUNCTION fail_assistant() RETURNS trigger AS $$ BEGIN "
                        "IF NEW.role = 'assistant' AND NEW.status = 'done' THEN "
                        "RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                    )
                )
                await conn.execute(
                    text(
                        "CREATE TRIGGER fail_assistant BEFORE UPDATE ON messages FOR EACH ROW "
                        "EXECUTE FUNCTION fail_assistant()"
                    )
                )
            r = await client.post(
                "/api/chat", json={"message": "second", "conversation_id": cid}, headers=alice
            )
            assert r.status_code == 500 and r.json() == {
                "detail": "Internal server error",
                "code": "internal_error",
            }
            assert "disk full" not in r.text
            messages = (await client.get(f"/api/conversations/{cid}", headers=alice)).json()[
                "messages"
            ]
            assert [m["content"] for m in messages] == ["hi", "hello"]  # nothing half-stored
            async with engine.begin() as conn:
                await conn.execute(text("DROP TRIGGER fail_assistant ON messages"))
            # the claim was released: the same conversation continues
            stub.script({"text": "works now"})
            r = await client.post(
                "/api/chat", json={"message": "hi again", "conversation_id": cid}, headers=alice
            )
            assert r.status_code == 200
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER IF EXISTS fail_assistant ON messages"))
            await conn.execute(text("DROP FUNCTION IF EXISTS fail_assistant()"))
        await engine.dispose()


async def test_ready_names_the_remote_model(llm_client: httpx.AsyncClient) -> None:
    assert (await llm_client.get("/health/ready")).json()["model"] == "stub-model"
