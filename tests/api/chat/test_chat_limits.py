"""Bounded by design: every limit on what one user can grow, and a 4xx where a 500 used to be."""

from __future__ import annotations

import httpx
import orjson

from tests.support.tasks import HUGE, create


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


async def test_offline_model_with_a_huge_task_number_says_it_cannot_find_it(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for text_ in (f"mark task {HUGE} as done", f"delete task #{HUGE}", f"rename task {HUGE} to x"):
        r = await client.post("/api/chat", json={"message": text_}, headers=alice)
        assert r.status_code == 200, r.text
        assert r.json()["response"].startswith("I couldn't find that task")
        assert r.json()["tool_calls"] == []
