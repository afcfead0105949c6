"""Streaming /api/chat: the SSE events, storage identical to the non-streaming call, disconnects."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from agents import Model
from agents.testing import ScriptedModel, assistant_message, function_call

from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import LIVE_STATES, running_app, serving
from tests.support.fakes import GatedModel


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_stream_events_and_storage(settings: Settings, alice: dict[str, str]) -> None:
    model = ScriptedModel(
        [
            [function_call("add_task", {"title": "Buy milk"}, call_id="c1")],
            [assistant_message("Added Buy milk.")],
        ]
    )
    async with running_app(create_app(settings, model=model)) as client:
        r = await client.post(
            "/api/chat", json={"message": "add milk", "stream": True}, headers=alice
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.text)
        types = [e["type"] for e in events]
        assert types[0] == "conversation" and types[-1] == "done"
        assert types.index("tool_call") < types.index("tool_result") < types.index("text.delta")
        assert "".join(e["delta"] for e in events if e["type"] == "text.delta") == "Added Buy milk."
        done = events[-1]
        assert done["response"] == "Added Buy milk."
        assert done["conversation_id"] == events[0]["conversation_id"]
        assert done["tool_calls"][0]["tool"] == "add_task"
        tool_call = next(e for e in events if e["type"] == "tool_call")
        assert tool_call == {
            "type": "tool_call",
            "tool": "add_task",
            "arguments": {"title": "Buy milk"},
        }

        conv = (
            await client.get(f"/api/conversations/{done['conversation_id']}", headers=alice)
        ).json()
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
        assert conv["messages"][1]["tool_calls"] == done["tool_calls"]

        # Accept: text/event-stream works too, and continues the conversation
        model.enqueue([assistant_message("Still here.")])
        r = await client.post(
            "/api/chat",
            json={"message": "hello again", "conversation_id": done["conversation_id"]},
            headers={**alice, "Accept": "text/event-stream"},
        )
        assert _events(r.text)[-1]["response"] == "Still here."


async def test_stream_errors_before_and_during(settings: Settings, alice: dict[str, str]) -> None:
    model = ScriptedModel([RuntimeError("boom")])
    async with running_app(create_app(settings, model=model)) as client:
        r = await client.post("/api/chat", json={"message": " ", "stream": True}, headers=alice)
        assert r.status_code == 422  # validation happens before the stream starts
        r = await client.post(
            "/api/chat",
            json={
                "message": "hi",
                "stream": True,
                "conversation_id": "00000000-0000-0000-0000-000000000000",
            },
            headers=alice,
        )
        assert r.status_code == 404
        r = await client.post("/api/chat", json={"message": "hi", "stream": True}, headers=alice)
        events = _events(r.text)
        assert events[-1]["type"] == "error"
        assert "boom" not in r.text and "Traceback" not in r.text
        conv = await client.get(f"/api/conversations/{events[0]['conversation_id']}", headers=alice)
        assert conv.status_code == 404  # nothing half-stored: the new conversation is gone
        listed = (await client.get("/api/conversations", headers=alice)).json()
        assert listed["conversations"] == []


async def test_client_disconnect_mid_stream_still_stores_the_whole_turn(
    settings: Settings, alice: dict[str, str]
) -> None:
    model = GatedModel(
        [
            [function_call("add_task", {"title": "Walk the dog"}, call_id="c1")],
            [assistant_message("Added it.")],
        ]
    )
    assert isinstance(model, Model)
    app = create_app(settings, model=model)
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        async with http.stream(
            "POST", "/api/chat", json={"message": "add walk the dog", "stream": True}, headers=alice
        ) as r:
            first = json.loads((await r.aiter_lines().__anext__())[6:])
            assert first["type"] == "conversation"
            await asyncio.wait_for(model.entered.wait(), 5)
        # the client is gone; now the model answers
        model.gate.set()
        for _ in range(200):
            if not LIVE_STATES[app].chat.background:
                break
            await asyncio.sleep(0.05)
        conv = (
            await http.get(f"/api/conversations/{first['conversation_id']}", headers=alice)
        ).json()
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
        assert conv["messages"][1]["content"] == "Added it."
        tasks = (await http.get("/api/tasks", headers=alice)).json()["tasks"]
        assert [t["title"] for t in tasks] == ["Walk the dog"]
