"""The README quickstart with the built-in offline model, through the real app and Runner."""

from __future__ import annotations

import httpx
import pytest

from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import running_app


async def _say(
    client: httpx.AsyncClient, headers: dict[str, str], message: str, cid: str | None
) -> dict:
    r = await client.post(
        "/api/chat", json={"message": message, "conversation_id": cid}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_quickstart_flow_survives_a_new_app_instance(
    settings: Settings, alice: dict[str, str]
) -> None:
    async with running_app(create_app(settings)) as client:
        hello = await _say(client, alice, "hi", None)
        assert hello["tool_calls"] == [] and "offline" in hello["response"]
        cid = hello["conversation_id"]

        added = await _say(client, alice, "add a task to buy milk", cid)
        assert [c["tool"] for c in added["tool_calls"]] == ["add_task"]
        task_id = added["tool_calls"][0]["result"]["task_id"]
        assert f"task {task_id}" in added["response"]

        listed = await _say(client, alice, "show me my tasks", cid)
        assert [c["tool"] for c in listed["tool_calls"]] == ["list_tasks"]
        assert "Buy milk" in listed["response"]

        done = await _say(client, alice, "mark the milk task as done", cid)
        assert [c["tool"] for c in done["tool_calls"]] == ["list_tasks", "complete_task"]
        assert done["tool_calls"][1]["arguments"] == {"task_id": task_id}

    # a brand-new process (app instance) continues the same conversation from PostgreSQL
    async with running_app(create_app(settings)) as client:
        conv = (await client.get(f"/api/conversations/{cid}", headers=alice)).json()
        assert len(conv["messages"]) == 8
        completed = await _say(client, alice, "show completed tasks", cid)
        assert "Buy milk" in completed["response"]
        renamed = await _say(client, alice, f"rename task {task_id} to call mom", cid)
        assert renamed["tool_calls"][0]["result"]["title"] == "Call mom"
        gone = await _say(client, alice, "delete the mom task", cid)
        assert [c["tool"] for c in gone["tool_calls"]] == ["list_tasks", "delete_task"]
        assert (await client.get("/api/tasks", headers=alice)).json()["tasks"] == []


@pytest.mark.parametrize(
    ("message", "expect"),
    [
        ("delete the unicorn task", "couldn't find"),
        ("complete task 999999", "not found"),
        ("what is the weather", "offline"),
    ],
)
async def test_offline_model_says_what_went_wrong(
    settings: Settings, alice: dict[str, str], message: str, expect: str
) -> None:
    async with running_app(create_app(settings)) as client:
        await _say(client, alice, "add a task to buy milk", None)
        reply = await _say(client, alice, message, None)
        assert expect in reply["response"].lower()


async def test_ambiguous_name_asks_which(settings: Settings, alice: dict[str, str]) -> None:
    async with running_app(create_app(settings)) as client:
        await _say(client, alice, "add a task to buy milk", None)
        await _say(client, alice, "add a task to buy oat milk", None)
        reply = await _say(client, alice, "mark the milk task as done", None)
        assert "which one" in reply["response"]
        assert [c["tool"] for c in reply["tool_calls"]] == ["list_tasks"]


async def test_offline_streaming(settings: Settings, alice: dict[str, str]) -> None:
    async with running_app(create_app(settings)) as client:
        r = await client.post(
            "/api/chat",
            json={"message": "add a task to water plants", "stream": True},
            headers=alice,
        )
        lines = [line for line in r.text.splitlines() if line.startswith("data: ")]
        assert '"type":"tool_call"' in lines[1]
        assert "Water plants" in r.text and '"type":"done"' in lines[-1]


async def test_ready_names_the_offline_model(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/ready")).json()["model"] == "offline-rules"
