"""The turn journal under faults: a tool's change is never missing from the conversation, and a
retry with the same Idempotency-Key never runs a committed tool twice.

Each failure strikes after `add_task` committed: the model answers 500, the model stalls past
the timeout, the database goes away (a TCP proxy the test cuts), the server process is killed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from backend.main import create_app
from tests.support.app import running_app
from tests.support.journal import (
    ADD_MILK,
    _assert_recorded,
    _messages,
    _model_called,
    _tasks,
    journal_settings,
)
from tests.support.stub_llm import StubLLM

NEXT_TURN = ["system", "user", "assistant", "tool", "assistant", "user"]
"""The roles the model is sent in the turn after one with a tool call (and its note or reply)."""


def _only_cid(listed: httpx.Response) -> str:
    conversations = listed.json()["conversations"]
    assert len(conversations) == 1
    return str(conversations[0]["id"])


@pytest.mark.parametrize(
    ("fault", "status", "note_part"),
    [
        ({"status": 500}, 503, "the AI service failed"),
        ({"hang": 5}, 504, "did not answer in time"),
    ],
)
async def test_model_failure_after_a_tool(
    database_url: str,
    data_dir: Path,
    stub: StubLLM,
    alice: dict[str, str],
    fault: dict[str, Any],
    status: int,
    note_part: str,
) -> None:
    settings = journal_settings(database_url, data_dir, stub, chat_timeout_seconds=1.5)
    async with running_app(create_app(settings)) as client:
        stub.script(ADD_MILK, fault)
        key = {**alice, "Idempotency-Key": "k-1"}
        r = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
        assert r.status_code == status, r.text
        cid = _only_cid(await client.get("/api/conversations", headers=alice))
        _assert_recorded(await _messages(client, cid, alice), note_part)

        # The repeat returns the turn as recorded: no second task, no model call.
        calls = len(stub.requests)
        again = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["interrupted"] is True and body["conversation_id"] == cid
        assert [c["tool"] for c in body["tool_calls"]] == ["add_task"]
        assert len(stub.requests) == calls
        assert await _tasks(client, alice) == ["Milk"]

        # The conversation takes a new turn at once, and the model sees the interruption.
        stub.script("Sure.")
        r = await client.post(
            "/api/chat", json={"message": "thanks", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 200, r.text
        sent = [m.get("role") for m in stub.requests[-1]["messages"]]
        assert sent == NEXT_TURN


async def test_an_interrupted_turn_replays_the_models_own_call_and_what_it_read(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    """The journal keeps the model's function call as made (id, Gemini thought signature) and
    the tool output exactly as the model read it, so the next turn's history is the real one."""
    signature = {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    settings = journal_settings(database_url, data_dir, stub, llm_model="gemini-3-pro")
    call = {"name": "add_task", "arguments": {"title": 'Milk "2%" \\ ü'}, "id": "c7"}
    async with running_app(create_app(settings)) as client:
        stub.script({"tool_calls": [{**call, "extra_content": signature}]}, {"status": 500})
        r = await client.post("/api/chat", json={"message": "add milk"}, headers=alice)
        assert r.status_code == 503, r.text
        read = stub.requests[-1]["messages"][-1]  # the failed request carried the tool output
        assert read["role"] == "tool" and read["tool_call_id"] == "c7"
        assert orjson.loads(read["content"])["title"] == 'Milk "2%" \\ ü'
        cid = _only_cid(await client.get("/api/conversations", headers=alice))

        stub.script("Sure.")
        r = await client.post(
            "/api/chat", json={"message": "thanks", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 200, r.text
        replayed = stub.requests[-1]["messages"]
        assert [m["role"] for m in replayed] == NEXT_TURN
        [made] = replayed[2]["tool_calls"]
        assert made["id"] == "c7" and made["extra_content"] == signature
        assert replayed[3] == read


async def test_failure_before_any_tool_runs_afresh_and_is_not_listed(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    async with running_app(create_app(journal_settings(database_url, data_dir, stub))) as client:
        stub.script({"status": 500})
        key = {**alice, "Idempotency-Key": "k-2"}
        r = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
        assert r.status_code == 503
        assert (await client.get("/api/conversations", headers=alice)).json()["conversations"] == []
        stub.script(ADD_MILK, "Added.")
        r = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
        assert r.status_code == 200 and r.json()["interrupted"] is False
        assert await _tasks(client, alice) == ["Milk"]
        cid = _only_cid(await client.get("/api/conversations", headers=alice))
        assert [m[1] for m in await _messages(client, cid, alice)] == ["add milk", "Added."]


async def test_streaming_with_idempotency_key_runs_once_and_repeats_at_once(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    async with running_app(create_app(journal_settings(database_url, data_dir, stub))) as client:
        stub.script(ADD_MILK, "Added.")
        key = {**alice, "Idempotency-Key": "k-4"}
        body = {"message": "add milk", "stream": True}
        first = await client.post("/api/chat", json=body, headers=key)
        assert first.status_code == 200 and '"type":"done"' in first.text
        started = time.monotonic()
        again = await client.post("/api/chat", json=body, headers=key)
        assert time.monotonic() - started < 2
        assert '"type":"done"' in again.text and "Added." in again.text
        assert len(stub.requests) == 2 and await _tasks(client, alice) == ["Milk"]


async def test_turn_in_progress_says_when_to_retry(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    async with running_app(create_app(journal_settings(database_url, data_dir, stub))) as client:
        stub.script("one", {"hang": 1, "text": "two"})
        cid = (await client.post("/api/chat", json={"message": "a"}, headers=alice)).json()[
            "conversation_id"
        ]
        slow = asyncio.create_task(
            client.post("/api/chat", json={"message": "b", "conversation_id": cid}, headers=alice)
        )
        await _model_called(stub, 2)  # add_task has committed; the model is thinking
        r = await client.post(
            "/api/chat", json={"message": "c", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 409 and r.json()["code"] == "turn_in_progress"
        assert 1 <= int(r.headers["Retry-After"]) <= 5
        assert (await slow).status_code == 200
