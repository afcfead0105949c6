"""The one model client against the stub over real HTTP: Gemini's shapes, plain and streamed.

Every test runs twice, as a plain `POST /api/chat` and with `stream: true` (the path ChatKit
takes), and checks what the service sent back to the model as well as what it answered.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.chat.conftest import StubApp
from tests.support.stub_llm import StubLLM

SIGNATURE = {"google": {"thought_signature": "c2lnbmF0dXJl"}}


@pytest.fixture
async def client(stub_app: StubApp) -> AsyncIterator[httpx.AsyncClient]:
    async with stub_app(
        llm_model="gemini-3-pro"
    ) as client:  # thought signatures are sent back to gemini-* models only
        yield client


async def chat(
    client: httpx.AsyncClient, headers: dict[str, str], streamed: bool, **body: Any
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """(status, final body or error, text deltas and other events)."""
    r = await client.post("/api/chat", json={**body, "stream": streamed}, headers=headers)
    if not streamed or r.status_code != 200:
        return r.status_code, r.json(), []
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    last = events[-1]
    status = 200 if last["type"] == "done" else int(last["status"])
    return status, last, events


async def test_thought_signatures_survive_tool_turns(
    client: httpx.AsyncClient, stub: StubLLM, alice: dict[str, str], streamed: bool
) -> None:
    stub.script(
        {
            "tool_calls": [
                {
                    "name": "add_task",
                    "arguments": {"title": "Milk"},
                    "id": "c1",
                    "extra_content": SIGNATURE,
                }
            ]
        },
        "Added Milk.",
        "You're welcome.",
    )
    status, body, events = await chat(client, alice, streamed, message="add milk")
    assert status == 200 and body["response"] == "Added Milk.", body
    # the follow-up call in the same turn carries the signature back
    sent = stub.requests[1]["messages"]
    assert sent[-2]["tool_calls"][0]["extra_content"] == SIGNATURE
    assert sent[-1] == {"role": "tool", "tool_call_id": "c1", "content": sent[-1]["content"]}
    # and so does the next turn's history
    status, _, _ = await chat(
        client, alice, streamed, message="thanks", conversation_id=body["conversation_id"]
    )
    assert status == 200
    replay = stub.requests[2]["messages"]
    calls = [m for m in replay if m.get("tool_calls")]
    assert calls[0]["tool_calls"][0]["extra_content"] == SIGNATURE
    if streamed:
        assert "".join(e["delta"] for e in events if e["type"] == "text.delta") == "Added Milk."


async def test_parallel_tool_calls_and_text_before_them(
    client: httpx.AsyncClient, stub: StubLLM, alice: dict[str, str], streamed: bool
) -> None:
    stub.script(
        {
            "text": "I'll add both.",
            "tool_calls": [
                {"name": "add_task", "arguments": {"title": "Milk " + "x" * 80}, "id": "a"},
                {"name": "add_task", "arguments": {"title": "Bread"}, "id": "b"},
            ],
        },
        "Done.",
    )
    status, body, events = await chat(client, alice, streamed, message="milk and bread")
    assert status == 200, body
    assert sorted(c["result"]["title"] for c in body["tool_calls"]) == ["Bread", "Milk " + "x" * 80]
    assert body["response"] == "I'll add both.\n\nDone."
    # one assistant message with both calls, then both results
    sent = stub.requests[1]["messages"]
    assistant = [m for m in sent if m["role"] == "assistant"][-1]
    assert assistant["content"] == "I'll add both."
    assert [c["id"] for c in assistant["tool_calls"]] == ["a", "b"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ["a", "b"]
    if streamed:  # the stream says what is stored
        assert "".join(e["delta"] for e in events if e["type"] == "text.delta") == body["response"]


async def test_empty_content_with_a_tool_call(
    client: httpx.AsyncClient, stub: StubLLM, alice: dict[str, str], streamed: bool
) -> None:
    stub.script(
        {"text": "", "tool_calls": [{"name": "list_tasks", "arguments": {}, "id": "l"}]},
        "Nothing yet.",
    )
    status, body, _ = await chat(client, alice, streamed, message="my tasks?")
    assert status == 200 and body["response"] == "Nothing yet."
    assert body["tool_calls"][0]["tool"] == "list_tasks"


@pytest.mark.parametrize(
    "fault",
    [
        {"text": "partial answer", "stream_error": {"message": "overloaded", "code": 503}},
        {"text": "partial answer that is cut off", "cut_stream": True},
        {"drop": True},
        {"status": 500},
    ],
    ids=["error-chunk", "cut-stream", "dropped", "http-500"],
)
async def test_provider_failures_are_the_ai_error(
    client: httpx.AsyncClient,
    stub: StubLLM,
    alice: dict[str, str],
    streamed: bool,
    fault: dict[str, Any],
) -> None:
    stub.script(fault)
    status, body, _ = await chat(client, alice, streamed, message="hello")
    if not streamed and ("stream_error" in fault or "cut_stream" in fault):
        # the fault is in the stream's framing; a plain call gets the whole answer
        assert status == 200
        return
    assert status == 503, body
    assert body["code"] == "service_unavailable"
    assert body["detail"] == "AI service temporarily unavailable"
    assert "overloaded" not in json.dumps(body)
    assert (await client.get("/api/conversations", headers=alice)).json()["conversations"] == []


async def test_usage_and_stream_options(
    client: httpx.AsyncClient, stub: StubLLM, alice: dict[str, str], streamed: bool
) -> None:
    stub.script("Hi.")
    status, _, _ = await chat(client, alice, streamed, message="hello")
    assert status == 200
    request = stub.requests[-1]
    assert request.get("stream", False) is streamed
    if streamed:
        assert request["stream_options"] == {"include_usage": True}
    assert stub.request_headers[-1]["authorization"] == "Bearer test-key"
